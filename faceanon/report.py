"""``faceanon report``: the HTML leaderboard of a benchmark run, as a static site.

The site is one ``index.html`` (every script, style and figure inline) plus a folder of
thumbnails, so it opens from disk with no server and no network. Every number of ours
comes from the results database (the ``case_metrics``, ``confusion`` and ``det_curve``
views, see ``metrics.sql``); the only constants are the seed study's published figures,
labelled as the study's.

The output is written atomically: the site is rendered into a temporary folder next to
``--out`` and renamed into place at the end, so a failed render never leaves a half
report that looks complete. An existing ``--out`` is replaced only when it is an earlier
report (it carries the marker file :data:`MARKER`); nothing outside ``--out`` is deleted.
"""

from __future__ import annotations

import shutil
import tempfile
import time
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import click
import numpy as np

from faceanon.store import DEFAULT_DB, ResultsDB

__all__ = [
    "MARKER",
    "SEED_STUDY",
    "ReportError",
    "choose_runs",
    "compare_runs",
    "leaderboard",
    "render_report",
    "report_command",
]

#: Templates ship at the top of the repository (faceanon is installed editable).
DEFAULT_TEMPLATES = Path(__file__).resolve().parent.parent / "templates"
#: A file every report folder carries; only such a folder is ever replaced.
MARKER = ".faceanon-report"
#: An EER read from fewer acquired mated comparisons than this moves in steps of more
#: than 5 points per face, so the page flags it instead of ranking on it.
MIN_RELIABLE_MATED = 20
#: A change larger than this (absolute, as a fraction) in rank-1 or an EER is flagged.
METRIC_TOLERANCE = 0.02
#: A time per image that grows by more than this share (and by 0.5 ms) is flagged.
TIME_TOLERANCE = 0.25
MODE_ORDER = ("clear", "naive", "reverse", "parrot")
#: The modes whose probes are anonymized: their FTA is the anonymized faces' FTA.
ANONYMIZED_PROBE_MODES = ("naive", "parrot")

#: The seed study's reported figures (Heimes, "Ad-hoc and Deep-Learning based Face
#: Anonymization Experiments", 500 FERET images). Constants on purpose: they are facts
#: from the paper, shown beside our own measurements for the same settings.
SEED_STUDY: tuple[dict, ...] = (
    {"setting": "noise, naive", "method": "noise", "mode": "naive", "ks": (30,),
     "metric": "eer", "study": 0.03, "source": "Fig. 11: EER about 3 %"},
    {"setting": "blur, naive", "method": "blur", "mode": "naive", "ks": (50,),
     "metric": "eer", "study": 0.10, "source": "Fig. 11: EER about 10 %"},
    {"setting": "blur, naive", "method": "blur", "mode": "naive", "ks": (90,),
     "metric": "eer", "study": 0.40, "source": "Fig. 11: EER about 40 %"},
    {"setting": "noise, reverse", "method": "noise", "mode": "reverse", "ks": (25, 35, 50),
     "metric": "eer", "study": 0.40, "source": "Fig. 13: EER around 40 %"},
    {"setting": "blur, reverse", "method": "blur", "mode": "reverse", "ks": (25, 35, 50, 90),
     "metric": "eer", "study": 0.40, "source": "Fig. 13: EER around 40 %"},
    {"setting": "DeepPrivacy, naive", "method": "deepprivacy", "mode": "naive", "ks": (None,),
     "metric": "eer", "study": 0.22, "source": "Fig. 10: EER around 22 %"},
    {"setting": "DeepPrivacy, naive, threshold 0.575", "method": "deepprivacy",
     "mode": "naive", "ks": (None,), "metric": "true_accept_575", "study": 0.72289160,
     "source": "Fig. 9: 72.3 % of mated attempts accepted"},
    {"setting": "DeepPrivacy, naive, threshold 0.575", "method": "deepprivacy",
     "mode": "naive", "ks": (None,), "metric": "false_accept_575", "study": 0.22253530,
     "source": "Fig. 9: 22.3 % of non-mated attempts accepted"},
)
STUDY_THRESHOLD = 0.575
METRIC_NAMES = {
    "eer": "EER",
    "true_accept_575": "true accepts",
    "false_accept_575": "false accepts",
}


class ReportError(click.ClickException):
    """The report cannot be rendered as asked (no runs, unknown run, unsafe --out)."""


# -- choosing runs ---------------------------------------------------------------------------


def choose_runs(runs: Sequence[Mapping], run_ids: Sequence[int] = ()) -> tuple[dict, dict | None]:
    """Which run the leaderboard shows, and which run it is compared with.

    Parameters
    ----------
    runs : sequence of mapping
        All runs, newest first (:meth:`ResultsDB.runs`).
    run_ids : sequence of int
        Empty: the newest complete run (the newest run of any status when none is
        complete; the page then marks it). One id: that run. Two ids: the second run,
        compared against the first.

    Returns
    -------
    (dict, dict or None)
        The shown run, and the baseline run of the comparison.

    Raises
    ------
    ReportError
        No runs, an unknown id, or more than two ids.
    """
    if not runs:
        raise ReportError("the database holds no runs; run the benchmark first (pytest bench)")
    by_id = {int(r["id"]): dict(r) for r in runs}
    if not run_ids:
        complete = [r for r in runs if r["status"] == "complete"]
        return dict(complete[0] if complete else runs[0]), None
    if len(run_ids) > 2:
        raise ReportError("give --run once (one run) or twice (compare two runs)")
    missing = [i for i in run_ids if i not in by_id]
    if missing:
        known = ", ".join(str(i) for i in sorted(by_id))
        raise ReportError(f"no run {missing[0]} in the database (runs: {known})")
    if len(run_ids) == 1:
        return by_id[run_ids[0]], None
    return by_id[run_ids[1]], by_id[run_ids[0]]


# -- data ------------------------------------------------------------------------------------


def _case_order(row: Mapping) -> tuple:
    mode = row["mode"]
    return (row["mode"] != "clear", MODE_ORDER.index(mode) if mode in MODE_ORDER else 9)


def leaderboard(db: ResultsDB, run_id: int, *,
                min_mated: int = MIN_RELIABLE_MATED) -> list[dict]:
    """The leaderboard rows of one run: a row per case, metrics and times per image.

    Parameters
    ----------
    db : ResultsDB
    run_id : int
    min_mated : int
        An EER over fewer acquired mated comparisons is flagged ``eer_unreliable``.

    Returns
    -------
    list of dict
        Every column of ``case_metrics`` plus ``method, k, mode, detector, backend``,
        ``n_mated_acquired``, ``eer_unreliable``, ``is_reference`` (the clear
        baseline), ``anonymize_ms`` and ``recognize_ms`` (mean milliseconds per image,
        None when not timed), in case order with the clear baseline first.
    """
    rows = db.case_metrics(run_id=run_id)
    timings = db.con.execute(
        """SELECT t.case_id, t.name, t.mean FROM timings t JOIN cases c ON c.id = t.case_id
           WHERE c.run_id = ? AND t.unit = 'seconds per image'""", [run_id]).fetchall()
    per_image = {(case, name): mean for case, name, mean in timings}
    # Counted here rather than read from a helper view: the reliability flag only needs
    # this one figure, and scores is the one table every database has.
    mated = dict(db.con.execute(
        """SELECT s.case_id, count(s.distance) FILTER (WHERE s.mated)
           FROM scores s JOIN cases c ON c.id = s.case_id
           WHERE c.run_id = ? GROUP BY s.case_id""", [run_id]).fetchall())
    out = []
    for row in rows:
        case = row["case_id"]
        anonymize = per_image.get((case, "anonymize"))
        recognize = per_image.get((case, "recognize"))
        n_mated_acquired = int(mated.get(case, 0))
        out.append({
            **row,
            "n_mated_acquired": n_mated_acquired,
            "eer_unreliable": row["eer"] is not None and n_mated_acquired < min_mated,
            "is_reference": row["mode"] == "clear",
            "anonymize_ms": None if anonymize is None else 1000 * anonymize,
            "recognize_ms": None if recognize is None else 1000 * recognize,
        })
    # Stable: keeps the run's own case order (the grid's) inside each group.
    out.sort(key=_case_order)
    return out


def _case_key(row: Mapping) -> tuple:
    return (row["method"], row["k"], row["mode"], row["detector"], row["backend"])


def _delta(new: Any, old: Any) -> float | None:
    return None if new is None or old is None else float(new) - float(old)


def compare_runs(base: Sequence[Mapping], new: Sequence[Mapping], *,
                 tolerance: float = METRIC_TOLERANCE,
                 time_tolerance: float = TIME_TOLERANCE) -> list[dict]:
    """Per case, the change from a baseline run to a new run, regressions flagged.

    A regression is a change that makes the benchmark's answer less protective. For an
    anonymized case: rank-1 up, or EER / generalized EER down, by more than
    ``tolerance`` (the method hides less). For the clear baseline: rank-1 down or EER
    up (the attacker got weaker, which flatters every method). A time per image that
    grows by more than ``time_tolerance`` (and 0.5 ms) is a regression too.

    Parameters
    ----------
    base, new : sequence of mapping
        :func:`leaderboard` rows of the two runs.
    tolerance : float
        Absolute change (fraction, 0.02 = 2 points) below which nothing is flagged.
    time_tolerance : float
        Relative growth of a time below which nothing is flagged.

    Returns
    -------
    list of dict
        One per case present in either run: ``method, k, mode``, ``status``
        (``'both'``, ``'only base'``, ``'only new'``), ``base`` and ``new`` (the rows or
        None), ``d_eer``, ``d_geer``, ``d_rank1``, ``d_anonymize_ms``,
        ``d_recognize_ms``, ``flags`` (set of the columns that regressed) and
        ``regression`` (bool).
    """
    old_rows = {_case_key(r): r for r in base}
    new_rows = {_case_key(r): r for r in new}
    keys = list(dict.fromkeys([*new_rows, *old_rows]))
    out = []
    for key in keys:
        a, b = old_rows.get(key), new_rows.get(key)
        status = "both" if a and b else ("only base" if a else "only new")
        row = {"method": key[0], "k": key[1], "mode": key[2], "detector": key[3],
               "backend": key[4], "status": status, "base": a, "new": b, "flags": set()}
        for metric in ("eer", "geer", "rank1", "anonymize_ms", "recognize_ms"):
            row[f"d_{metric}"] = _delta(b and b[metric], a and a[metric])
        if status == "both":
            clear = key[2] == "clear"
            sign = -1 if clear else 1
            if row["d_rank1"] is not None and sign * row["d_rank1"] > tolerance:
                row["flags"].add("rank1")
            if row["d_eer"] is not None and -sign * row["d_eer"] > tolerance:
                row["flags"].add("eer")
            if not clear and row["d_geer"] is not None and -row["d_geer"] > tolerance:
                row["flags"].add("geer")
            for metric in ("anonymize_ms", "recognize_ms"):
                change, before = row[f"d_{metric}"], a[metric]
                if (change is not None and before and change > 0.5
                        and change / before > time_tolerance):
                    row["flags"].add(metric)
        row["regression"] = bool(row["flags"])
        out.append(row)
    return out


def confusion_rows(db: ResultsDB, run_id: int, *, threshold: float) -> dict[int, dict]:
    """The confusion matrices of a run's cases at one threshold, both scopes.

    Parameters
    ----------
    db : ResultsDB
    run_id : int
    threshold : float
        Must be the decision threshold or one of the ``confusion_thresholds``.

    Returns
    -------
    dict
        ``case_id -> {'acquired': row, 'all': row}``; each row has the counts of the
        ``confusion`` view and the seed study's class rates ``true_accept``
        (mated predicted mated, share of mated), ``false_reject``, ``false_accept``
        (non-mated predicted mated, share of non-mated), ``true_reject``.
    """
    cursor = db.con.execute(
        """SELECT f.* FROM confusion f JOIN cases c ON c.id = f.case_id
           WHERE c.run_id = ? AND abs(f.threshold - ?) < 1e-12""", [run_id, threshold])
    names = [d[0] for d in cursor.description]
    out: dict[int, dict] = {}
    for values in cursor.fetchall():
        row = dict(zip(names, values, strict=True))
        mated = row["mated_as_mated"] + row["mated_as_nonmated"]
        nonmated = row["nonmated_as_mated"] + row["nonmated_as_nonmated"]
        # The study's matrix is normalised per actual class (its columns sum to 100 %),
        # not over all comparisons as the view's *_pct columns are.
        row["true_accept"] = row["mated_as_mated"] / mated if mated else None
        row["false_reject"] = row["mated_as_nonmated"] / mated if mated else None
        row["false_accept"] = row["nonmated_as_mated"] / nonmated if nonmated else None
        row["true_reject"] = row["nonmated_as_nonmated"] / nonmated if nonmated else None
        out.setdefault(int(row["case_id"]), {})[row["scope"]] = row
    return out


def reproduction(rows: Sequence[Mapping], study_confusion: Mapping[int, Mapping]) -> list[dict]:
    """The seed study's figures beside ours for the same settings.

    Parameters
    ----------
    rows : sequence of mapping
        :func:`leaderboard` rows of the shown run.
    study_confusion : mapping
        :func:`confusion_rows` at the study's threshold (0.575); may be empty.

    Returns
    -------
    list of dict
        One per :data:`SEED_STUDY` entry: its fields plus ``ours`` (a list of
        ``{'k', 'value', 'unreliable', 'n_mated_acquired'}``, empty when this run did
        not measure the setting).
    """
    out = []
    for entry in SEED_STUDY:
        ours = []
        for row in rows:
            if row["method"] != entry["method"] or row["mode"] != entry["mode"]:
                continue
            if row["k"] not in entry["ks"]:
                continue
            if entry["metric"] == "eer":
                value, unreliable = row["eer"], row["eer_unreliable"]
            else:
                matrix = study_confusion.get(row["case_id"], {}).get("acquired")
                rate = "true_accept" if entry["metric"].startswith("true") else "false_accept"
                value, unreliable = (matrix or {}).get(rate), row["eer_unreliable"]
            ours.append({"k": row["k"], "value": value, "unreliable": unreliable,
                         "n_mated_acquired": row["n_mated_acquired"]})
        out.append({**entry, "metric_name": METRIC_NAMES[entry["metric"]], "ours": ours})
    return out


def det_curves(db: ResultsDB, run_id: int) -> dict[int, dict[str, np.ndarray]]:
    """The classic DET curve (FMR, FNMR over acquired comparisons) of each case.

    Returns
    -------
    dict
        ``case_id -> {'fmr': ndarray, 'fnmr': ndarray}`` ordered by threshold.
    """
    data = db.con.execute(
        """SELECT d.case_id, d.fmr, d.fnmr FROM det_curve d
           JOIN cases c ON c.id = d.case_id
           WHERE c.run_id = ? ORDER BY d.case_id, d.threshold""", [run_id]).fetchnumpy()
    cases = np.asarray(data["case_id"])
    fmr = np.ma.filled(np.ma.asarray(data["fmr"], dtype=np.float64), np.nan)
    fnmr = np.ma.filled(np.ma.asarray(data["fnmr"], dtype=np.float64), np.nan)
    out = {}
    if cases.size == 0:
        return out
    starts = np.flatnonzero(np.r_[True, cases[1:] != cases[:-1]])
    ends = np.r_[starts[1:], cases.size]
    for start, end in zip(starts, ends, strict=True):
        out[int(cases[start])] = {"fmr": fmr[start:end], "fnmr": fnmr[start:end]}
    return out


# -- figures ---------------------------------------------------------------------------------


def _mode_sort(modes) -> list[str]:
    return sorted(set(modes), key=lambda m: MODE_ORDER.index(m) if m in MODE_ORDER else 9)


def make_figures(rows: Sequence[Mapping], curves: Mapping[int, Mapping]) -> dict:
    """Every figure of the page as inline SVG.

    Returns
    -------
    dict
        ``det``: list of ``{'method', 'svg', 'missing'}`` (labels of the cases without
        a curve); ``eer_vs_k`` and ``fta_vs_k``: SVG text
        or None when the run has no anonymized case.
    """
    from faceanon import plots  # matplotlib is imported only when a page is drawn

    reference = next((r for r in rows if r["is_reference"]), None)
    anonymized = [r for r in rows if not r["is_reference"]]
    baseline_curve = None
    if reference is not None and reference["case_id"] in curves:
        baseline_curve = {**curves[reference["case_id"]], "eer": reference["eer"]}
    det = []
    for index, method in enumerate(dict.fromkeys(r["method"] for r in anonymized)):
        method_rows = [r for r in anonymized if r["method"] == method]
        panels = {}
        for mode in _mode_sort(r["mode"] for r in method_rows):
            panel = sorted((r for r in method_rows if r["mode"] == mode),
                           key=lambda r: (r["k"] is not None, r["k"] or 0))
            panels[mode] = [
                {"label": "no k" if r["k"] is None else f"k = {r['k']}",
                 "eer": r["eer"], **curves.get(r["case_id"], {"fmr": [], "fnmr": []})}
                for r in panel
            ]
        # A case whose anonymized faces were never found has no curve; say so rather than
        # let its absence pass for a curve hidden under another.
        missing = [f"{c['label']} ({mode})" for mode, items in panels.items() for c in items
                   if not np.any(np.isfinite(np.asarray(c["fmr"], dtype=np.float64)))]
        det.append({"method": method, "missing": missing,
                    "svg": plots.det_figure(panels, title=f"{method}", name=f"det{index}",
                                            baseline=baseline_curve)})
    modes = _mode_sort(r["mode"] for r in anonymized)
    eer_vs_k = (plots.eer_vs_k_figure(anonymized, modes=modes, name="eerk",
                                      baseline=reference) if anonymized else None)
    fta_mode = next((m for m in ANONYMIZED_PROBE_MODES if m in modes), None)
    fta_vs_k = None
    if fta_mode is not None:
        fta_vs_k = plots.fta_vs_k_figure([r for r in anonymized if r["mode"] == fta_mode],
                                         name="ftak", baseline=reference)
    return {"det": det, "eer_vs_k": eer_vs_k, "fta_vs_k": fta_vs_k, "fta_mode": fta_mode}


# -- pictures --------------------------------------------------------------------------------


@dataclass
class Pictures:
    """The picture strip: originals and every (method, k) of a few identities."""

    dataset: str = ""
    root: str = ""
    columns: list[dict] = field(default_factory=list)   # {'method', 'k'}
    rows: list[dict] = field(default_factory=list)      # {'identity', 'key', 'cells'}
    notes: list[str] = field(default_factory=list)


def _probe_keys(db: ResultsDB, run_id: int, identities: int) -> list[str]:
    # Every case of a run searches the same probes; one case is enough to list them.
    keys = db.con.execute(
        """WITH first AS (SELECT min(id) AS id FROM cases WHERE run_id = $run)
           SELECT s.probe, bool_or(coalesce(i.acquired, false)) AS acquired
           FROM scores s JOIN first f ON s.case_id = f.id
           LEFT JOIN images i ON i.run_id = $run AND i.key = s.probe AND i.role = 'original'
           GROUP BY s.probe ORDER BY acquired DESC, s.probe""", {"run": run_id}).fetchall()
    chosen, seen = [], set()
    for key, _ in keys:
        identity = key.split("/", 1)[0]
        if identity not in seen:
            seen.add(identity)
            chosen.append(key)
        if len(chosen) == identities:
            break
    return chosen


def _thumbnail(image: np.ndarray, path: Path, *, height: int = 112) -> None:
    from PIL import Image

    picture = Image.fromarray(np.ascontiguousarray(image[..., :3]))
    width = max(1, round(picture.width * height / picture.height))
    picture.resize((width, height), Image.Resampling.LANCZOS).save(path, quality=88)


def make_pictures(db: ResultsDB, run: Mapping, rows: Sequence[Mapping], folder: Path, *,
                  identities: int = 3) -> Pictures:
    """Re-create originals and anonymized versions of a few probes as thumbnails.

    The regions are found again with the run's detector and region settings and each
    method is applied with the same per-image generator as the run, so the pictures are
    what the recognizer saw. Set-based methods (k-Same) depend on the whole set and are
    skipped with a note, as is everything when the dataset folder is not on this machine.

    Parameters
    ----------
    db : ResultsDB
    run : mapping
        The run (its config holds ``dataset_root``, ``detector``, ``region``, ``seed``).
    rows : sequence of mapping
        The run's leaderboard rows: which (method, k) to show.
    folder : Path
        Where the thumbnails are written (``img/`` of the report).
    identities : int
        How many identities (one probe image each).

    Returns
    -------
    Pictures
    """
    from faceanon.detect import find_regions
    from faceanon.imageio import read_image
    from faceanon.methods import get_method
    from faceanon.pipeline import image_rng, is_set_method

    config = run.get("config") or {}
    pictures = Pictures(dataset=str(run.get("dataset_name") or ""),
                        root=str(config.get("dataset_root") or ""))
    if identities <= 0:
        return pictures
    root = Path(pictures.root) if pictures.root else None
    if root is None or not root.is_dir():
        where = f"{pictures.root}" if pictures.root else "(the run did not record it)"
        pictures.notes.append(f"The dataset folder {where} is not on this machine, so no "
                              "pictures were made.")
        return pictures
    keys = _probe_keys(db, int(run["id"]), identities)
    variants = list(dict.fromkeys((r["method"], r["k"]) for r in rows if not r["is_reference"]))
    methods = {}
    for name, _ in variants:
        if name in methods:
            continue
        try:
            methods[name] = get_method(name)
        except Exception as error:  # a plugin missing here must not stop the report
            methods[name] = None
            pictures.notes.append(f"{name}: not available here ({error}); not shown.")
            continue
        if is_set_method(methods[name]):
            pictures.notes.append(f"{name} anonymizes a whole set at once, so a single "
                                  "picture cannot be re-created; not shown.")
            methods[name] = None
    pictures.columns = [{"method": m, "k": k} for m, k in variants if methods.get(m)]
    detector = config.get("detector", "hog")
    region = config.get("region", "face")
    margin = float(config.get("margin", 0.0) or 0.0)
    seed = int(config.get("seed", 0) or 0)
    folder.mkdir(parents=True, exist_ok=True)
    resolved_root = root.resolve()
    failed: dict[str, str] = {}
    for i, key in enumerate(keys):
        path = (root / key).resolve()
        row = {"identity": key.split("/", 1)[0], "key": key, "original": None, "cells": []}
        pictures.rows.append(row)
        if not path.is_relative_to(resolved_root):
            pictures.notes.append(f"{key}: outside the dataset folder; skipped.")
            continue
        try:
            image = read_image(path)
            boxes = [tuple(int(v) for v in b) for b in
                     find_regions(image, detector=detector, region=region, margin=margin)]
        except Exception as error:
            pictures.notes.append(f"{key}: could not be read ({error}).")
            continue
        if not boxes and config.get("on_miss", "whole") == "whole":
            # As in the run: a face the detector misses is anonymized as a whole image.
            boxes = [(0, 0, image.shape[1], image.shape[0])]
        _thumbnail(image, folder / f"{i}-original.jpg")
        row["original"] = f"img/{i}-original.jpg"
        row["found"] = bool(boxes)
        for j, column in enumerate(pictures.columns):
            method, k = column["method"], column["k"]
            cell = None
            try:
                anonymized = methods[method].anonymize(
                    image, boxes, k=k, rng=image_rng(seed, method, k, key))
                _thumbnail(anonymized, folder / f"{i}-{j}.jpg")
                cell = f"img/{i}-{j}.jpg"
            except Exception as error:
                failed.setdefault(method, str(error))
            row["cells"].append(cell)
    for method, error in failed.items():
        pictures.notes.append(f"{method}: could not be re-created here ({error}).")
    return pictures


# -- rendering -------------------------------------------------------------------------------


def _fmt_pct(value: Any, digits: int = 1) -> str:
    if value is None or (isinstance(value, float) and not np.isfinite(value)):
        return "–"
    return f"{100 * value:.{digits}f}"


def _fmt_ms(value: Any) -> str:
    if value is None:
        return "–"
    return f"{value:.1f}" if value >= 10 else f"{value:.2f}"


def _fmt_delta(value: Any, *, scale: float = 100, digits: int = 1) -> str:
    if value is None:
        return "–"
    return f"{scale * value:+.{digits}f}"


def _fmt_when(value: Any) -> str:
    if isinstance(value, datetime):
        return value.strftime("%Y-%m-%d %H:%M UTC")
    return "–" if value is None else str(value)


def _sort_value(value: Any) -> str:
    # Empty sorts last whatever the direction (the table script treats it so).
    if value is None or (isinstance(value, float) and not np.isfinite(value)):
        return ""
    if isinstance(value, bool):
        return str(int(value))
    return repr(float(value)) if isinstance(value, int | float) else str(value)


def _environment(templates: Path):
    import jinja2

    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(str(templates)),
        # Every value from the database (run names, paths, method names) is escaped;
        # only the SVG made by matplotlib is marked safe in the templates.
        autoescape=True,
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
    )
    env.filters.update(pct=_fmt_pct, ms=_fmt_ms, delta=_fmt_delta, when=_fmt_when,
                       sortval=_sort_value)
    return env


def _check_out(out: Path) -> None:
    if out.is_symlink():
        raise ReportError(f"{out} is a symbolic link; give a real folder for --out")
    if out.exists():
        if not out.is_dir():
            raise ReportError(f"{out} exists and is not a folder")
        if any(out.iterdir()) and not (out / MARKER).is_file():
            raise ReportError(f"{out} is a non-empty folder that is not a faceanon report; "
                              "refusing to replace it (choose another --out)")


def _publish(staging: Path, out: Path) -> None:
    if not out.exists():
        staging.rename(out)
        return
    # Two renames in the same folder: the old report stays whole until the new one is in
    # place, and only then is it removed.
    old = out.with_name(f".{out.name}.old-{uuid.uuid4().hex[:8]}")
    out.rename(old)
    try:
        staging.rename(out)
    except BaseException:
        old.rename(out)
        raise
    shutil.rmtree(old)


def render_report(
    db_path: str | Path = DEFAULT_DB,
    out: str | Path = "report",
    *,
    run_ids: Sequence[int] = (),
    templates: str | Path | None = None,
    identities: int = 3,
    min_mated: int = MIN_RELIABLE_MATED,
) -> Path:
    """Render the leaderboard site of a run into ``out`` (atomically).

    Parameters
    ----------
    db_path : str or Path
        The results database (opened read-only).
    out : str or Path
        The report folder. Replaced as a whole when it is an earlier report; refused
        when it is any other non-empty folder.
    run_ids : sequence of int
        See :func:`choose_runs`: none (newest complete run), one, or two (comparison).
    templates : str or Path, optional
        Template folder; default the repository's ``templates/``.
    identities : int
        Identities in the picture strip (0: no pictures).
    min_mated : int
        Reliability minimum of an EER (acquired mated comparisons).

    Returns
    -------
    Path
        The report's ``index.html``.
    """
    started = time.perf_counter()
    out = Path(out)
    templates = Path(templates) if templates else DEFAULT_TEMPLATES
    if not (templates / "report.html.j2").is_file():
        raise ReportError(f"no report.html.j2 in {templates}")
    _check_out(out)
    if not Path(db_path).exists():
        raise ReportError(f"no results database at {db_path}")
    out.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{out.name}.tmp-", dir=out.parent))
    try:
        with ResultsDB(db_path, read_only=True) as db:
            runs = db.runs()
            run, base = choose_runs(runs, run_ids)
            rows = leaderboard(db, int(run["id"]), min_mated=min_mated)
            threshold = db.threshold
            figures = make_figures(rows, det_curves(db, int(run["id"])))
            confusion = confusion_rows(db, int(run["id"]), threshold=threshold)
            study_confusion = confusion_rows(db, int(run["id"]), threshold=STUDY_THRESHOLD)
            comparison = None
            if base is not None:
                base_rows = leaderboard(db, int(base["id"]), min_mated=min_mated)
                comparison = compare_runs(base_rows, rows)
            pictures = make_pictures(db, run, rows, staging / "img", identities=identities)
        context = {
            "run": run,
            "base": base,
            "runs": runs,
            "rows": rows,
            "reference": next((r for r in rows if r["is_reference"]), None),
            "threshold": threshold,
            "run_threshold": (run.get("config") or {}).get("threshold"),
            "figures": figures,
            "confusion": confusion,
            "reproduction": reproduction(rows, study_confusion),
            "study_threshold": STUDY_THRESHOLD,
            "comparison": comparison,
            "pictures": pictures,
            "min_mated": min_mated,
            "tolerance": METRIC_TOLERANCE,
            "time_tolerance": TIME_TOLERANCE,
            "db_path": str(db_path),
            "generated": datetime.now(UTC).replace(tzinfo=None),
        }
        page = _environment(templates).get_template("report.html.j2").render(**context)
        (staging / "index.html").write_text(page, encoding="utf-8")
        seconds = time.perf_counter() - started
        (staging / MARKER).write_text(
            f"faceanon report of run {run['id']} rendered in {seconds:.2f} s\n",
            encoding="utf-8")
        staging.chmod(0o755)  # mkdtemp makes it private; a report is meant to be shared
        _publish(staging, out)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return out / "index.html"


@click.command("report")
@click.option("--db", "db_path", default=DEFAULT_DB, show_default=True,
              type=click.Path(dir_okay=False), help="Results database.")
@click.option("--out", default="report", show_default=True,
              type=click.Path(file_okay=False), help="Report folder (replaced as a whole).")
@click.option("--run", "run_ids", type=int, multiple=True,
              help="Run to show (default: the newest complete run); twice to compare "
                   "the second run against the first.")
@click.option("--templates", default=None, type=click.Path(exists=True, file_okay=False),
              help="Template folder (default: the repository's templates/).")
@click.option("--identities", default=3, show_default=True, type=click.IntRange(0, 20),
              help="Identities in the picture strip; 0 leaves it out.")
def report_command(db_path: str, out: str, run_ids: tuple[int, ...], templates: str | None,
                   identities: int):
    """Render the HTML leaderboard of a run as a static site (opens from disk)."""
    started = time.perf_counter()
    index = render_report(db_path, out, run_ids=run_ids, templates=templates,
                          identities=identities)
    click.echo(f"report: {index} ({time.perf_counter() - started:.1f} s)")
