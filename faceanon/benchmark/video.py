"""The video benchmark: per (method, k, attack), anonymize the clip, attack every frame, store.

A video is only as private as its worst frame. Each case of ``bench/test_video.py``
anonymizes the clip of ``$FACEANON_DATA/video`` (:data:`CLIP`) with one method and strength
(tracking on, :func:`faceanon.video_anonymize.anonymize_video`), then one attack searches
every frame for the clip's two people, their photos being the gallery
(:mod:`faceanon.video_bench` decides who is identified). The case's frame rows go into the
results database (``video_cases``, ``video_frames``; the views ``video_case_metrics`` and
``video_person_metrics`` compute the leak rates) in one transaction.

Attacks on a frame (the names of :mod:`faceanon.attacks`, where they apply)
    ``detect``
        ``face_recognition``'s pipeline on the anonymized frame: dlib HOG up-sampled once,
        every face encoded (:class:`faceanon.video_bench.DlibAttacker`).
    ``located``
        The attacker sees where the faces are: the descriptor runs in every face box the
        reference detector found in the original frame, no detection, so a face never
        "disappears".
    filter attacks (``median``, ``deblur``, ``unpixelate``, ``sharpen``)
        The attack's :meth:`~faceanon.attacks.Attack.restore` undoes the method inside each
        anonymized box of the frame, then as ``located``; only for the methods they undo.
    detector attacks (``detect:retinaface``, ``detect:cnn``)
        That detector finds every face of the anonymized frame; each is encoded.

"Detected but not covered" is judged against a reference detector on the *original*
frames, never the detector that anonymized (HOG): RetinaFace-MobileNet
(:mod:`faceanon.retinaface`, about 13 ms a frame) in every grid. It finds the pianist
(Alex Lacamoire, a face about 25 x 36 pixels at the left edge) in the clip's frames, which
both HOG and dlib's CNN (up-sampled once, about 4 s a frame on a CPU core) miss; ``cnn``
still works as a reference (:func:`reference_boxes`; its boxes are cached per clip under
``~/.cache/faceanon/``).

The clear case (``method == "clear"``) attacks the original clip: it is the baseline the
``leak_rate_visible`` column compares with.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import shutil
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import pytest

__all__ = ["CLIP", "PEOPLE", "VIDEO_GRIDS", "VideoBench", "VideoCase", "VideoGrid",
           "FrameAttacker", "reference_boxes", "video_cases"]

#: The clip and the gallery, in ``$FACEANON_DATA/video`` (see that folder's README).
VIDEO_FOLDER = "video"
CLIP = "short_hamilton_clip.mp4"
#: The people of the clip, each with ``<name>.png`` beside it; this order breaks ties.
PEOPLE = ("lin-manuel-miranda", "alex-lacamoire")
#: The name of the original clip's case.
CLEAR = "clear"
#: Width of the frames kept for the report's strip.
STRIP_WIDTH = 320


@dataclass(frozen=True)
class VideoCase:
    """One video case: a method (or ``clear``) at a strength, searched by one attack."""

    method: str
    k: int | None
    attack: str

    @property
    def label(self) -> str:
        strength = "" if self.k is None else f"-k{self.k}"
        return f"video-{self.method}{strength}-{self.attack}"


@dataclass(frozen=True)
class VideoGrid:
    """What a grid measures on video.

    ``frames`` is how many frames from the start (``None``: the whole clip);
    ``reference`` the reference detector; ``variants`` the (method, k) pairs, ``clear``
    first; ``attacks`` the attacks every variant gets; ``restorations`` the filter attacks
    a method gets besides them, the ones that undo it (each descriptor costs about as much
    as the HOG detector on a frame, so the video grid does not run every filter on every
    method as the image grid does).
    """

    frames: int | None
    reference: str
    variants: tuple[tuple[str, int | None], ...]
    attacks: tuple[str, ...]
    restorations: dict[str, tuple[str, ...]] = field(default_factory=dict)


_PAPER_VARIANTS = ((CLEAR, None), ("blur", 15), ("blur", 31), ("pixelate", 8), ("pixelate", 16),
                   ("noise", 50), ("blackout", None), ("ksame", 2), ("deepprivacy", None))
#: The filter attack that undoes each method (median: the salt-and-pepper filter for noise).
_RESTORATIONS = {"blur": ("deblur",), "pixelate": ("unpixelate",), "noise": ("median",)}

#: Per benchmark grid (``--bench-grid``). The smoke grid runs in CI: four variants, two
#: attacks, the first 60 frames (about 2 s of the clip).
VIDEO_GRIDS: dict[str, VideoGrid] = {
    "smoke": VideoGrid(frames=60, reference="retinaface",
                       variants=((CLEAR, None), ("blur", 15), ("pixelate", 8),
                                 ("blackout", None)),
                       attacks=("detect", "located")),
    "paper": VideoGrid(frames=None, reference="retinaface", variants=_PAPER_VARIANTS,
                       attacks=("detect", "located"), restorations=_RESTORATIONS),
    "full": VideoGrid(frames=None, reference="retinaface", variants=_PAPER_VARIANTS,
                      attacks=("detect", "located", "detect:retinaface"),
                      restorations=_RESTORATIONS),
}


def _applies(attack: str, method: str) -> bool:
    from faceanon.attacks import get_attack

    chosen = get_attack(attack)
    if method == CLEAR:  # nothing to undo on the original clip
        return chosen.locator != "box" or chosen.name == "located"
    return chosen.applies_to(method)


def video_cases(grid: str, *, methods: Sequence[str] | None = None,
                ks: Sequence[int] | None = None) -> list[VideoCase]:
    """The video cases of a grid, optionally only some methods and strengths.

    ``clear`` is always kept (it is the baseline); ``methods`` and ``ks`` filter the others
    as ``--bench-methods`` and ``--bench-k`` filter the image cases.
    """
    chosen = VIDEO_GRIDS[grid]
    cases = []
    for method, k in chosen.variants:
        if method != CLEAR and methods and method not in methods:
            continue
        if method != CLEAR and ks and k is not None and k not in ks:
            continue
        attacks = [*chosen.attacks, *chosen.restorations.get(method, ())]
        cases.extend(VideoCase(method, k, attack) for attack in attacks
                     if _applies(attack, method))
    return cases


# -- the reference detector -----------------------------------------------------------------


def _reference_detector(name: str):
    if name == "retinaface":
        from faceanon.retinaface import RetinaFaceDetector

        return RetinaFaceDetector()
    from faceanon.detect import get_detector

    return get_detector(name, upsample=1) if name == "cnn" else get_detector(name)


def _cache_file(cache: Path, detector: str) -> Path:
    # The CNN file is the one benchmarks/video_leak_rates.py writes, so both share it.
    return cache / ("video-reference.json" if detector == "cnn"
                    else f"video-reference-{detector}.json")


def reference_boxes(clip: Path, *, detector: str, frames: int | None, clip_sha256: str,
                    cache: Path | None = None) -> list[list[tuple[int, int, int, int]]]:
    """The faces the reference detector finds in every frame of the original clip.

    Read from ``cache`` when it holds this clip's boxes for at least ``frames`` frames
    (keyed by the clip's sha256, the detector and its up-sampling), else computed and,
    for the whole clip, written there (atomically).
    """
    upsample = 1 if detector == "cnn" else 0
    key = {"clip_sha256": clip_sha256, "detector": detector, "upsample": upsample}
    path = None if cache is None else _cache_file(cache, detector)
    if path is not None and path.is_file():
        try:
            stored = json.loads(path.read_text())
        except (OSError, ValueError):
            stored = {}
        if all(stored.get(name) == value for name, value in key.items()):
            boxes = stored["frames"]
            if frames is None or len(boxes) >= frames:
                return [[tuple(int(v) for v in b[:4]) for b in f] for f in boxes[:frames]]
    from faceanon.video import VideoReader

    found_by = _reference_detector(detector)
    boxes = []
    with VideoReader(clip, max_frames=frames) as reader:
        for frame in reader:
            boxes.append([tuple(int(v) for v in d.box) for d in found_by.detect(frame.image)])
    if path is not None and frames is None:
        path.parent.mkdir(parents=True, exist_ok=True)
        partial = path.with_name(f".{path.name}.partial-{os.getpid()}")
        partial.write_text(json.dumps({**key, "frames": [[list(b) for b in f] for f in boxes]}))
        partial.replace(path)
    return boxes


# -- attacking a frame ----------------------------------------------------------------------


def _clip_box(box: Sequence[int], shape: Sequence[int]) -> tuple[int, int, int, int] | None:
    x, y, w, h = (int(v) for v in box)
    left, top = max(x, 0), max(y, 0)
    right, bottom = min(x + w, shape[1]), min(y + h, shape[0])
    if right <= left or bottom <= top:
        return None
    return left, top, right - left, bottom - top


class FrameAttacker:
    """One attack of :mod:`faceanon.attacks` turned on every face of a video frame.

    Called as ``attacker(image, regions=..., reference=..., method=..., k=...)`` it returns
    ``[(box, embedding), ...]``, as :data:`faceanon.video_bench.Attacker` does; see the
    module docstring for what each kind of attack does.
    """

    def __init__(self, name: str):
        from faceanon.attacks import get_attack

        self.attack = get_attack(name)
        self.name = name
        self._detector = None
        self._hog = None

    def _encode_boxes(self, image, boxes):
        import dlib
        import numpy as np

        from faceanon.recognition import _dlib_models

        _, landmarks, descriptor = _dlib_models("hog")
        faces = []
        for box in boxes:
            x, y, w, h = box
            rect = dlib.rectangle(x, y, x + w, y + h)
            shape = landmarks(image, rect)
            faces.append((box, np.array(descriptor.compute_face_descriptor(image, shape, 1))))
        return faces

    def __call__(self, image, *, regions, reference, method: str, k: int | None):
        import numpy as np

        from faceanon.video_bench import DlibAttacker

        image = np.ascontiguousarray(image)
        locator = self.attack.locator
        if locator == "detector":
            if self._hog is None:
                self._hog = DlibAttacker()
            return self._hog(image)
        if locator == "box":
            restored = image
            if method != CLEAR:
                for region in regions:
                    clipped = _clip_box(region, image.shape)
                    if clipped is not None:
                        restored = self.attack.restore(restored, region=clipped, method=method,
                                                       k=k)
            boxes = [b for b in (_clip_box(r, image.shape) for r in reference) if b]
            return self._encode_boxes(np.ascontiguousarray(restored), boxes)
        if self._detector is None:
            self._detector = self.attack.make_detector()
        boxes = [b for b in (_clip_box(d.box, image.shape)
                             for d in self._detector.detect(image)) if b]
        return self._encode_boxes(image, boxes)


def strip_frame(reference: Sequence[Sequence]) -> int:
    """The frame the report's strip shows: most reference faces, nearest the middle."""
    most = max(len(faces) for faces in reference)
    middle = len(reference) / 2
    return min((i for i, faces in enumerate(reference) if len(faces) == most),
               key=lambda i: (abs(i - middle), i))


def _png(image) -> bytes:
    from PIL import Image

    picture = Image.fromarray(image)
    height = round(picture.height * STRIP_WIDTH / picture.width)
    buffer = io.BytesIO()
    picture.resize((STRIP_WIDTH, height), Image.Resampling.LANCZOS).save(buffer, "PNG")
    return buffer.getvalue()


# -- the session ----------------------------------------------------------------------------


@dataclass
class _Anonymized:
    """A variant's anonymized clip, kept while its attacks run."""

    variant: tuple[str, int | None]
    path: Path
    regions: list
    seconds: float | None
    fps: float | None
    describe: dict = field(default_factory=dict)


class VideoBench:
    """The video cases of one pytest session (the ``bench_video`` fixture).

    It starts its own database run (dataset ``video``, fingerprint the clip's sha256,
    ``config.kind == "video"``) with the first case and records its final status at the
    end, like :class:`faceanon.benchmark.run.BenchRun` does for the image cases.
    """

    def __init__(self, config: pytest.Config):
        self.config = config
        self.db = None
        self.run_id: int | None = None
        self.case_ids: list[int] = []
        self.errors = 0
        self.planned = 0  # the selected video cases; the plugin counts them at collection
        self.status: str | None = None
        self._data: dict | None = None
        self._scratch: Path | None = None
        self._current: _Anonymized | None = None
        self._attackers: dict[str, FrameAttacker] = {}

    def option(self, name: str):
        return self.config.getoption(f"--bench-{name}")

    @property
    def grid(self) -> VideoGrid:
        return VIDEO_GRIDS[self.option("grid")]

    @property
    def frames(self) -> int | None:
        return self.option("video-frames") or self.grid.frames

    def planned_cases(self) -> list[VideoCase]:
        methods = self.option("methods")
        ks = self.option("k")
        return video_cases(self.option("grid"),
                           methods=methods.split(",") if methods else None,
                           ks=[int(k) for k in ks.split(",")] if ks else None)

    # -- data ----------------------------------------------------------------------------

    def data(self) -> dict:
        """The clip, its gallery and its reference boxes (found once); skips without data."""
        if self._data is not None:
            return self._data
        from faceanon.datasets import DATA_ENV

        root = os.environ.get(DATA_ENV)
        folder = Path(root) / VIDEO_FOLDER if root else None
        clip = None if folder is None else folder / CLIP
        if clip is None or not clip.is_file():
            looked = str(folder) if folder else f"${DATA_ENV} is not set"
            pytest.skip(f"video clip {CLIP!r} not found (looked in {looked}); set {DATA_ENV} "
                        f"to a folder that holds {VIDEO_FOLDER}/{CLIP} and the gallery photos")
        gallery = {person: folder / f"{person}.png" for person in PEOPLE}
        missing = [str(p) for p in gallery.values() if not p.is_file()]
        if missing:
            pytest.skip(f"gallery photo(s) not found: {', '.join(missing)}")
        from faceanon.video import probe_video

        sha = hashlib.sha256(clip.read_bytes()).hexdigest()
        info = probe_video(clip)
        reference = reference_boxes(clip, detector=self.grid.reference, frames=self.frames,
                                    clip_sha256=sha,
                                    cache=Path.home() / ".cache" / "faceanon")
        self._data = {"clip": clip, "sha256": sha, "info": info, "gallery": gallery,
                      "reference": reference, "strip": strip_frame(reference)}
        return self._data

    def start(self) -> int:
        """Start the database run (once); return its id."""
        if self.run_id is not None:
            return self.run_id
        from faceanon import provenance
        from faceanon.store import DEFAULT_DB, ResultsDB

        data = self.data()
        self._scratch = Path(tempfile.mkdtemp(prefix="faceanon-video-"))
        self.db = ResultsDB(self.option("db") or DEFAULT_DB)
        commit, dirty = provenance.git_state(Path(self.config.rootpath))
        self.run_id = self.db.start_run(
            name=self.option("run-name"),
            dataset_name=f"{VIDEO_FOLDER}/{CLIP}",
            dataset_fingerprint=data["sha256"],
            config={"kind": "video", "grid": self.option("grid"), "frames": len(
                data["reference"]), "reference_detector": self.grid.reference,
                "detector": self.option("detector"), "seed": self.option("seed"),
                "people": list(PEOPLE), "clip_root": str(data["clip"].parent)},
            git_commit=commit, git_dirty=dirty, packages=provenance.package_versions(),
            machine=provenance.machine(), threshold=self.option("threshold"))
        return self.run_id

    # -- one case ------------------------------------------------------------------------

    def _anonymized(self, case: VideoCase) -> _Anonymized:
        data = self.data()
        variant = (case.method, case.k)
        if self._current is not None and self._current.variant == variant:
            return self._current
        if self._current is not None and self._current.path != data["clip"]:
            self._current.path.unlink(missing_ok=True)
        frames = len(data["reference"])
        if case.method == CLEAR:
            self._current = _Anonymized(variant, data["clip"], [[] for _ in range(frames)],
                                        None, None)
            return self._current
        from faceanon.video_anonymize import anonymize_video

        out = self._scratch / f"{case.method}-{case.k}.mp4"
        result = anonymize_video(data["clip"], out, method=case.method, k=case.k,
                                 detector=self.option("detector"), seed=self.option("seed"),
                                 audio="drop", max_frames=frames)
        self._current = _Anonymized(variant, out, [list(f.regions) for f in result.boxes],
                                    result.seconds, result.fps, result.describe())
        return self._current

    def measure(self, case: VideoCase) -> list[dict]:
        """Anonymize (once per variant), attack every frame, store; return the person rows."""
        try:
            return self._measure(case)
        except Exception:
            self.errors += 1
            raise

    def _measure(self, case: VideoCase) -> list[dict]:
        from faceanon.video import VideoReader
        from faceanon.video_bench import COVERED_SHARE, coverage, enrol, identify

        run_id = self.start()
        data = self.data()
        threshold = self.option("threshold")
        anonymized = self._anonymized(case)
        attacker = self._attackers.get(case.attack) or FrameAttacker(case.attack)
        self._attackers[case.attack] = attacker
        # The gallery photos are encoded by the recognizer's own pipeline for every attack:
        # the attacker holds ordinary photos of the people.
        enrolled = enrol(data["gallery"], self._gallery_attacker())
        reference = data["reference"]
        rows, strip = [], None
        started = time.perf_counter()
        with VideoReader(anonymized.path, max_frames=len(reference)) as reader:
            for frame in reader:
                regions = anonymized.regions[frame.index]
                faces = attacker(frame.image, regions=regions, reference=reference[frame.index],
                                 method=case.method, k=case.k)
                identified, distances = identify(faces, enrolled, threshold=threshold)
                shares = [coverage(face, regions) for face in reference[frame.index]]
                rows.append({
                    "frame": frame.index, "time": frame.time, "faces_found": len(faces),
                    "identified": list(identified),
                    "distances": [distances[p] for p in PEOPLE],
                    "anonymized_boxes": len(regions),
                    "reference_faces": len(shares),
                    "uncovered_faces": sum(share < COVERED_SHARE for share in shares),
                    "coverage": shares,
                })
                if frame.index == data["strip"]:
                    strip = _png(frame.image)
        if len(rows) != len(reference):
            from faceanon.video_bench import VideoBenchError

            raise VideoBenchError(f"{anonymized.path}: {len(rows)} frames decoded, "
                                  f"{len(reference)} expected")
        info = data["info"]
        case_id = self.db.write_video_case(run_id, {
            "label": case.label, "method": case.method, "k": case.k, "attack": case.attack,
            "clip": CLIP, "clip_sha256": data["sha256"], "frames": len(rows),
            "frame_rate": float(info.frame_rate), "people": list(PEOPLE),
            "threshold": threshold, "reference_detector": self.grid.reference,
            "tracking": True, "anonymize_seconds": anonymized.seconds,
            "anonymize_fps": anonymized.fps, "strip_frame": data["strip"], "strip_png": strip,
            "settings": {"detector": self.option("detector"), "seed": self.option("seed"),
                         "attack": attacker.attack.describe(),
                         "attack_seconds": round(time.perf_counter() - started, 3),
                         "anonymization": anonymized.describe},
        }, rows)
        self.case_ids.append(case_id)
        return [r for r in self.db.video_person_metrics(run_id) if r["case_id"] == case_id]

    def _gallery_attacker(self):
        from faceanon.video_bench import DlibAttacker

        if "_gallery" not in self._attackers:
            self._attackers["_gallery"] = DlibAttacker()
        return self._attackers["_gallery"]

    # -- the end -------------------------------------------------------------------------

    def finish(self, exitstatus) -> None:
        """Record the run's final status (as :meth:`BenchRun.finish`) and remove scratch."""
        if self._scratch is not None:
            shutil.rmtree(self._scratch, ignore_errors=True)
        if self.run_id is None:
            return
        if self.errors:
            status = "failed"
        elif (exitstatus == pytest.ExitCode.INTERRUPTED
              or len(self.case_ids) < self.planned):
            status = "interrupted"
        else:
            status = "complete"
        try:
            self.db.finish_run(self.run_id, status)
        finally:
            self.status = status
            self.db.close()

    def summary_lines(self) -> list[str]:
        """The end-of-session table: one line per video case."""
        from faceanon.store import ResultsDB

        with ResultsDB(self.db.path, read_only=True) as db:
            cases = {r["case_id"]: r for r in db.video_case_metrics(self.run_id)}
            people = db.video_person_metrics(self.run_id)
        short = [p.split("-")[0] for p in PEOPLE]
        lines = [f"{'video case':<34} " + " ".join(f"{'leak ' + s:>12}" for s in short)
                 + f" {'uncovered':>9} {'fps':>6}"]
        for case_id in self.case_ids:
            case = cases.get(case_id)
            if case is None:
                continue
            leaks = {r["person"]: r["leak_rate"] for r in people if r["case_id"] == case_id}
            fps = case["anonymize_fps"]
            lines.append(f"{case['label']:<34} "
                         + " ".join(f"{leaks.get(p, float('nan')):>12.2f}" for p in PEOPLE)
                         + f" {case['uncovered_frame_share']:>9.2f} "
                         + ("     -" if fps is None else f"{fps:>6.1f}"))
        return lines
