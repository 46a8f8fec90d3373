"""`faceanon data fetch` against a local HTTP server serving archives the tests make."""

from __future__ import annotations

import functools
import hashlib
import http.server
import io
import tarfile
import threading

import numpy as np
import pytest
from click.testing import CliRunner
from PIL import Image

from faceanon.cli import main
from faceanon.fetch import FetchError, fetch_dataset


def jpeg_bytes(value):
    buffer = io.BytesIO()
    Image.fromarray(np.full((10, 10, 3), value, np.uint8)).save(buffer, format="JPEG")
    return buffer.getvalue()


def make_archive(path, files, links=()):
    with tarfile.open(path, "w:gz") as archive:
        for name, data in files.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            archive.addfile(info, io.BytesIO(data))
        for name, target in links:
            info = tarfile.TarInfo(name)
            info.type = tarfile.SYMTYPE
            info.linkname = target
            archive.addfile(info)
    return "sha256:" + hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.fixture
def server(tmp_path):
    root = tmp_path / "served"
    root.mkdir()
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(root))
    handler.log_message = lambda *args: None
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield root, f"http://127.0.0.1:{httpd.server_address[1]}"
    httpd.shutdown()


GOOD = {
    "lfw-deepfunneled/Ann_A/Ann_A_0001.jpg": jpeg_bytes(10),
    "lfw-deepfunneled/Ann_A/Ann_A_0002.jpg": jpeg_bytes(20),
    "lfw-deepfunneled/Bob_B/Bob_B_0001.jpg": jpeg_bytes(30),
    "lfw-deepfunneled/Bob_B/notes.txt": b"dropped: not an image",
    "lfw-deepfunneled/README": b"dropped: not <identity>/<image>",
}


def test_fetch_verifies_unpacks_and_splits_singletons(server, tmp_path):
    root, base = server
    checksum = make_archive(root / "lfw.tgz", GOOD)
    dest = tmp_path / "data"
    result = CliRunner().invoke(
        main,
        ["data", "fetch", "lfw", "--dest", str(dest), "--url", f"{base}/lfw.tgz",
         "--checksum", checksum],
    )
    assert result.exit_code == 0, result.output
    assert sorted(p.name for p in (dest / "lfw" / "Ann_A").iterdir()) == [
        "Ann_A_0001.jpg", "Ann_A_0002.jpg"]
    assert [p.name for p in (dest / "lfw-singletons").iterdir()] == ["Bob_B"]
    assert not (dest / "lfw-singletons" / "Bob_B" / "notes.txt").exists()
    assert sorted(p.name for p in dest.iterdir()) == ["lfw", "lfw-singletons"]


def test_checksum_mismatch_leaves_nothing(server, tmp_path):
    root, base = server
    make_archive(root / "lfw.tgz", GOOD)
    dest = tmp_path / "data"
    with pytest.raises(FetchError, match="checksum mismatch"):
        fetch_dataset("lfw", destination=dest, url=f"{base}/lfw.tgz",
                      checksum="sha256:" + "0" * 64, progress=False)
    assert list(dest.iterdir()) == []


def test_broken_archive_leaves_nothing(server, tmp_path):
    root, base = server
    make_archive(root / "full.tgz", GOOD)
    data = (root / "full.tgz").read_bytes()
    (root / "cut.tgz").write_bytes(data[: len(data) // 2])
    checksum = "sha256:" + hashlib.sha256(data[: len(data) // 2]).hexdigest()
    dest = tmp_path / "data"
    with pytest.raises(FetchError, match="broken archive"):
        fetch_dataset("lfw", destination=dest, url=f"{base}/cut.tgz", checksum=checksum,
                      progress=False)
    assert list(dest.iterdir()) == []


@pytest.mark.parametrize(
    "files, links, problem",
    [
        ({"../evil/x.jpg": jpeg_bytes(1)}, (), "outside"),
        ({"/abs/x.jpg": jpeg_bytes(1)}, (), "outside"),
        (GOOD, [("lfw-deepfunneled/Ann_A/link.jpg", "/etc/passwd")], "link"),
    ],
)
def test_unsafe_archives_are_refused(server, tmp_path, files, links, problem):
    root, base = server
    checksum = make_archive(root / "bad.tgz", files, links)
    dest = tmp_path / "data"
    with pytest.raises(FetchError, match=problem):
        fetch_dataset("lfw", destination=dest, url=f"{base}/bad.tgz", checksum=checksum,
                      progress=False)
    assert list(dest.iterdir()) == []
    assert not (tmp_path / "evil").exists()


def test_existing_dataset_is_not_overwritten_without_force(server, tmp_path):
    root, base = server
    checksum = make_archive(root / "lfw.tgz", GOOD)
    dest = tmp_path / "data"
    (dest / "lfw" / "Keep_Me").mkdir(parents=True)
    with pytest.raises(FetchError, match="already exists"):
        fetch_dataset("lfw", destination=dest, url=f"{base}/lfw.tgz", checksum=checksum,
                      progress=False)
    assert (dest / "lfw" / "Keep_Me").is_dir()
    fetch_dataset("lfw", destination=dest, url=f"{base}/lfw.tgz", checksum=checksum,
                  progress=False, force=True)
    assert not (dest / "lfw" / "Keep_Me").exists()
