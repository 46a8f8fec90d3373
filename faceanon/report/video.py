"""The leaderboard's video section: leak rates per (method, k, attack) and a strip of frames.

The section shows the newest video run (the runs ``pytest bench -k video`` starts, see
:mod:`faceanon.benchmark.video`): complete if there is one, else the newest of any status,
marked. Per case it lists, for each person of the gallery, the leak rate (share of frames
in which the person is identified), the leak rate over the frames where the same attack
identifies them on the clear clip, and whether they are identified in at least one frame;
then the share of frames where the reference detector found a face the anonymized boxes
left uncovered, and the anonymization's frames per second. The strip shows the frame the
benchmark kept for each variant, clear first.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from faceanon.store import ResultsDB

__all__ = ["VideoSection", "is_video_run", "video_section"]


def is_video_run(run: Mapping) -> bool:
    """Whether a run holds the video benchmark's cases (its config says ``kind: video``)."""
    config = run.get("config") or {}
    return isinstance(config, Mapping) and config.get("kind") == "video"


@dataclass
class VideoSection:
    """What the template's video partial shows.

    ``rows`` has one dict per case: the ``video_case_metrics`` columns plus ``people``,
    a list (gallery order) of dicts with ``person``, ``leak_rate``, ``leak_rate_visible``,
    ``visible_frames`` and ``identified_anywhere``. ``strip`` has one dict per variant:
    ``method``, ``k``, ``src`` (the thumbnail's path relative to the page) and ``frame``.
    """

    run: dict
    people: list[str]
    rows: list[dict]
    strip: list[dict] = field(default_factory=list)
    clip: str | None = None
    frames: int | None = None
    frame_rate: float | None = None
    reference_detector: str | None = None
    threshold: float | None = None


def _chosen_run(runs: Sequence[Mapping], video_ids: Sequence[int]) -> dict | None:
    with_cases = [dict(r) for r in runs if int(r["id"]) in set(video_ids)]
    if not with_cases:
        return None
    complete = [r for r in with_cases if r["status"] == "complete"]
    return (complete or with_cases)[0]  # runs come newest first


def video_section(db: ResultsDB, runs: Sequence[Mapping], folder: Path) -> VideoSection | None:
    """Build the video section from the newest video run, writing its strip into ``folder``.

    Parameters
    ----------
    db : ResultsDB
    runs : sequence of mapping
        Every run, newest first (:meth:`ResultsDB.runs`).
    folder : Path
        The report's ``img/`` folder; thumbnails are written as ``video-<case id>.png``.

    Returns
    -------
    VideoSection or None
        ``None`` when no run holds video cases.
    """
    run = _chosen_run(runs, db.video_runs())
    if run is None:
        return None
    run_id = int(run["id"])
    cases = db.video_case_metrics(run_id)
    by_case: dict[int, list[dict]] = {}
    for row in db.video_person_metrics(run_id):
        by_case.setdefault(row["case_id"], []).append(row)
    people = list((run.get("config") or {}).get("people") or
                  sorted({p["person"] for rows in by_case.values() for p in rows}))
    order = {person: i for i, person in enumerate(people)}
    rows = []
    for case in cases:
        persons = sorted(by_case.get(case["case_id"], []),
                         key=lambda p: order.get(p["person"], len(order)))
        rows.append({**case, "people": persons})
    strip, seen = [], set()
    for kept in db.video_strips(run_id):
        variant = (kept["method"], kept["k"])
        if variant in seen or kept["strip_png"] is None:
            continue
        seen.add(variant)
        folder.mkdir(parents=True, exist_ok=True)
        name = f"video-{int(kept['case_id'])}.png"
        (folder / name).write_bytes(bytes(kept["strip_png"]))
        strip.append({"method": kept["method"], "k": kept["k"], "src": f"{folder.name}/{name}",
                      "frame": kept["strip_frame"]})
    first = cases[0] if cases else {}
    return VideoSection(run=run, people=people, rows=rows, strip=strip,
                        clip=first.get("clip"), frames=first.get("frames"),
                        frame_rate=first.get("frame_rate"),
                        reference_detector=first.get("reference_detector"),
                        threshold=first.get("threshold"))
