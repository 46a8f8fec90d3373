"""Shared fixtures. Real-face tests read datasets from ``FACEANON_DATA``.

When it is unset the tests are skipped with a reason, unless ``FACEANON_REQUIRE_DATA=1``
(CI sets it), in which case they fail: CI never skips silently.
"""

from __future__ import annotations

import functools
import http.server
import os
import threading
from pathlib import Path

import pytest

from faceanon.datasets import DATA_ENV, Dataset, load_dataset


def _require_dataset(name: str) -> Dataset:
    root = os.environ.get(DATA_ENV)
    required = os.environ.get("FACEANON_REQUIRE_DATA") == "1"
    folder = Path(root) / name if root else None
    if folder is None or not folder.is_dir():
        reason = f"real faces needed: set {DATA_ENV} to a folder holding {name}/"
        if required:
            pytest.fail(f"FACEANON_REQUIRE_DATA=1 but {reason}")
        pytest.skip(reason)
    return load_dataset(folder, name=name)


@pytest.fixture(scope="session")
def lfw() -> Dataset:
    """The shared LFW benchmark set (people with at least two images)."""
    return _require_dataset("lfw")


@pytest.fixture(scope="session")
def lfw_singletons() -> Dataset:
    """LFW people with one image: the only faces anything may be trained or fitted on."""
    return _require_dataset("lfw-singletons")


@pytest.fixture(scope="session")
def orl() -> Dataset:
    return _require_dataset("orl")


@pytest.fixture
def server(tmp_path):
    """A local HTTP server: ``(folder it serves, base URL)``."""
    root = tmp_path / "served"
    root.mkdir()
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(root))
    handler.log_message = lambda *args: None
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield root, f"http://127.0.0.1:{httpd.server_address[1]}"
    httpd.shutdown()
