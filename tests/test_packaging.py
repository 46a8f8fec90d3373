"""faceanon as it is installed: where it is imported from, what it ships, what it loads.

Under tox (``FACEANON_REQUIRE_INSTALLED=1``) the tests must exercise the wheel installed
in the environment's site-packages, never this checkout; in a development environment
with an editable install that check is skipped with the reason.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import sysconfig
from importlib import resources
from importlib.metadata import entry_points
from pathlib import Path

import pytest

import faceanon

ROOT = Path(__file__).resolve().parent.parent


def test_the_tested_faceanon_is_the_installed_one():
    location = Path(faceanon.__file__).resolve().parent
    site_packages = Path(sysconfig.get_paths()["purelib"]).resolve()
    if not location.is_relative_to(site_packages):
        reason = (f"faceanon is imported from {location}, not from {site_packages}: an "
                  "editable install (tox installs the wheel and requires this)")
        if os.environ.get("FACEANON_REQUIRE_INSTALLED") == "1":
            pytest.fail(reason)
        pytest.skip(reason)
    assert location != ROOT / "faceanon", "the checkout's package, not the installed one"


def test_the_package_carries_templates_sql_and_weights():
    package = resources.files("faceanon")
    for name in ("schema.sql", "metrics.sql", "weights/deepprivacy64.pt",
                 "weights/deepprivacy64.md"):
        assert package.joinpath(name).is_file(), name
    templates = resources.files("faceanon.templates")
    assert "{% include" in templates.joinpath("report.html.j2").read_text(encoding="utf-8")
    for name in ("leaderboard.html.j2", "style.css", "sort.js"):
        assert templates.joinpath("partials").joinpath(name).is_file(), name


def test_the_benchmark_plugin_and_the_command_are_registered():
    (plugin,) = [ep for ep in entry_points(group="pytest11") if ep.name == "faceanon"]
    assert plugin.value == "faceanon.benchmark.plugin"
    (script,) = [ep for ep in entry_points(group="console_scripts") if ep.name == "faceanon"]
    assert script.load().name == "main"


LOADED = """
import json, sys
from click.testing import CliRunner
import faceanon, faceanon.benchmark.plugin, faceanon.benchmark.run
from faceanon.cli import main
outputs = [CliRunner().invoke(main, args).output for args in (["--help"], ["anonymize", "--help"])]
print(json.dumps({"outputs": outputs,
                  "heavy": sorted(m for m in ("dlib", "torch", "duckdb") if m in sys.modules)}))
"""


def test_help_and_the_plugin_load_nothing_heavy():
    result = subprocess.run([sys.executable, "-P", "-c", LOADED], capture_output=True,
                            text=True, timeout=120, check=True)
    seen = json.loads(result.stdout)
    assert seen["heavy"] == []
    top, anonymize = seen["outputs"]
    for command in ("anonymize", "data", "report", "runs", "train-gan"):
        assert f"  {command} " in top
    assert "-o, --output" in anonymize
