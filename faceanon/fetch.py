"""Download datasets safely: the library behind ``faceanon data fetch`` and ``--bench-fetch``.

Downloading is all-or-nothing: the archive is checked against its published checksum,
unpacked into a hidden temporary folder with every member checked (no absolute paths, no
``..``, no links, images only), and only then renamed into place. A failure at any step
removes the temporary folder, so a half-unpacked dataset never looks like a real one.
"""

from __future__ import annotations

import hashlib
import shutil
import tarfile
import tempfile
import urllib.request
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from faceanon.datasets import DEFAULT_CACHE
from faceanon.errors import FaceanonError
from faceanon.imageio import is_image_path


@dataclass(frozen=True)
class DataSource:
    """Where a dataset comes from and how to recognise the right bytes.

    ``checksum`` is ``"ALGORITHM:HEX"``. The LFW site publishes only an MD5 for its
    archives, so that is what can be checked against an independent source; a user who has
    measured a sha256 of a mirror passes it with ``--checksum sha256:...``.
    """

    url: str
    checksum: str
    archive_root: str
    #: Identities with at least two images go to ``name``, the others to ``name-singletons``.
    split_singletons: bool = True


SOURCES = {
    "lfw": DataSource(
        url="http://vis-www.cs.umass.edu/lfw/lfw-deepfunneled.tgz",
        checksum="md5:68331da3eb755a505a502b5aacb3c201",
        archive_root="lfw-deepfunneled",
    ),
}


class FetchError(FaceanonError, RuntimeError):
    """A download or an archive was not what it should be; nothing was left behind."""


def _hasher(checksum: str):
    algorithm, _, expected = checksum.partition(":")
    if algorithm not in {"md5", "sha1", "sha256", "sha512"} or not expected:
        raise FetchError(f"checksum must look like sha256:HEX, got {checksum!r}")
    return hashlib.new(algorithm), expected.lower()


def download(url: str, target: Path, *, checksum: str, progress: bool = True) -> None:
    """Stream ``url`` into ``target`` and verify it; on any failure ``target`` is removed."""
    digest, expected = _hasher(checksum)
    try:
        with urllib.request.urlopen(url, timeout=60) as response, open(target, "wb") as out:
            total = int(response.headers.get("Content-Length") or 0) or None
            from tqdm import tqdm

            with tqdm(
                total=total, unit="B", unit_scale=True, desc=Path(url).name, disable=not progress
            ) as bar:
                while chunk := response.read(1 << 20):
                    out.write(chunk)
                    digest.update(chunk)
                    bar.update(len(chunk))
    except OSError as error:
        target.unlink(missing_ok=True)
        raise FetchError(f"download of {url} failed: {error}") from None
    if digest.hexdigest() != expected:
        target.unlink(missing_ok=True)
        raise FetchError(
            f"checksum mismatch for {url}: expected {checksum}, got "
            f"{digest.name}:{digest.hexdigest()}; the file was deleted"
        )


def _safe_members(archive: tarfile.TarFile, archive_root: str):
    """Yield (member, path inside the dataset) for the images worth keeping."""
    for member in archive:
        path = PurePosixPath(member.name)
        if path.is_absolute() or ".." in path.parts:
            raise FetchError(f"archive member {member.name!r} points outside the target folder")
        if member.issym() or member.islnk():
            raise FetchError(f"archive member {member.name!r} is a link; refusing to unpack")
        if not member.isfile() or not is_image_path(member.name):
            continue
        parts = path.parts
        if archive_root:
            if parts[0] != archive_root:
                continue
            parts = parts[1:]
        if len(parts) != 2:  # keep only <identity>/<image>
            continue
        yield member, PurePosixPath(*parts)


def unpack(archive_path: Path, destination: Path, *, source: DataSource, name: str) -> list[Path]:
    """Unpack an archive into ``destination/name`` (and ``name-singletons``), atomically.

    Returns the dataset folders created. Raises :class:`FetchError` when a folder already
    exists or the archive is broken or unsafe; nothing is left behind then.
    """
    targets = {"many": destination / name}
    if source.split_singletons:
        targets["one"] = destination / f"{name}-singletons"
    for folder in targets.values():
        if folder.exists():
            raise FetchError(f"{folder} already exists; remove it or use --force")
    destination.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(dir=destination, prefix=f".partial-{name}-"))
    try:
        counts: dict[str, int] = {}
        try:
            with tarfile.open(archive_path) as archive:
                for member, inner in _safe_members(archive, source.archive_root):
                    out = staging / "all" / inner
                    out.parent.mkdir(parents=True, exist_ok=True)
                    with archive.extractfile(member) as data, open(out, "wb") as handle:
                        shutil.copyfileobj(data, handle)
                    counts[inner.parts[0]] = counts.get(inner.parts[0], 0) + 1
        except (tarfile.TarError, EOFError, OSError) as error:
            raise FetchError(f"{archive_path}: broken archive ({error})") from None
        if not counts:
            raise FetchError(f"{archive_path}: no <identity>/<image> files found in the archive")
        for folder in {"many", "one"} & targets.keys():
            (staging / folder).mkdir()
        for identity, count in counts.items():
            group = "many" if count >= 2 or not source.split_singletons else "one"
            (staging / "all" / identity).rename(staging / group / identity)
        created = []
        for group, folder in targets.items():
            (staging / group).rename(folder)
            created.append(folder)
        return created
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def fetch_dataset(
    name: str,
    *,
    destination: Path | None = None,
    url: str | None = None,
    checksum: str | None = None,
    force: bool = False,
    progress: bool = True,
) -> list[Path]:
    """Download, verify and unpack a known dataset.

    Parameters
    ----------
    name : str
        A key of :data:`SOURCES` (``"lfw"``).
    destination : Path, optional
        The folder that receives the dataset folders; default the user cache
        (:data:`faceanon.datasets.DEFAULT_CACHE`), where datasets are found by name.
    url, checksum : str, optional
        A mirror, and the ``ALGORITHM:HEX`` its archive must have.
    force : bool
        Replace dataset folders that already exist.
    progress : bool
        Show a download progress bar.

    Returns
    -------
    list of Path
        The dataset folders created.

    Raises
    ------
    FetchError
        Unknown name, failed download, checksum mismatch, unsafe or broken archive, or a
        folder that exists already; nothing is left behind.
    """
    if destination is None:
        destination = DEFAULT_CACHE
    if name not in SOURCES:
        raise FetchError(f"no download known for {name!r}; known: {', '.join(SOURCES)}")
    source = SOURCES[name]
    if url or checksum:
        source = DataSource(
            url=url or source.url,
            checksum=checksum or source.checksum,
            archive_root=source.archive_root,
            split_singletons=source.split_singletons,
        )
    if force:
        for folder in (destination / name, destination / f"{name}-singletons"):
            shutil.rmtree(folder, ignore_errors=True)
    destination.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=destination, prefix=".download-") as scratch:
        archive = Path(scratch) / "archive"
        download(source.url, archive, checksum=source.checksum, progress=progress)
        return unpack(archive, destination, source=source, name=name)
