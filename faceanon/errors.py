"""The base of every exception faceanon raises on purpose.

Library code raises a subclass of :class:`FaceanonError` whose message names what was
wrong (the file, the option, the value); it never raises a command-line error. The
command layer (:mod:`faceanon.cli`) turns a :class:`FaceanonError` into a one-line
``Error: ...`` and a non-zero exit code, so a user never sees a traceback for bad input.

Several subclasses also derive from the built-in exception they refined before this base
existed (``ValueError``, ``RuntimeError``), so code that caught those keeps working.
"""

from __future__ import annotations

__all__ = ["FaceanonError"]


class FaceanonError(Exception):
    """Something faceanon was asked to do cannot be done; the message says why."""
