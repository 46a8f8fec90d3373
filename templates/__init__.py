"""The report's Jinja templates, installed as the package ``faceanon.templates``.

This folder stays at the top of the repository; ``pyproject.toml`` maps it into the
package, and :mod:`faceanon.report.site` reads it through ``importlib.resources``.
"""
