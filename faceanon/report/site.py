"""Render the report site: the page from the templates, written atomically.

The site is one ``index.html`` (every script, style and figure inline) plus a folder of
thumbnails, so it opens from disk with no server and no network. It is rendered into a
temporary folder next to the output folder and renamed into place at the end, so a
failed render never leaves a half report that looks complete. An existing output folder
is replaced only when it is an earlier report (it carries the marker file
:data:`MARKER`); nothing outside it is deleted.
"""

from __future__ import annotations

import shutil
import tempfile
import time
import uuid
from collections.abc import Sequence
from datetime import UTC, datetime
from importlib import resources
from pathlib import Path
from typing import Any

import numpy as np

from faceanon.report.figures import make_figures
from faceanon.report.frontier import make_frontier
from faceanon.report.pictures import make_pictures
from faceanon.report.seed_study import STUDY_THRESHOLD, reproduction
from faceanon.report.tables import (
    METRIC_TOLERANCE,
    MIN_RELIABLE_MATED,
    TIME_TOLERANCE,
    ReportError,
    choose_runs,
    compare_runs,
    confusion_rows,
    leaderboard,
    protocol_differences,
)
from faceanon.report.video import is_video_run, video_section
from faceanon.report.worst_case import chance_rank1, worst_case
from faceanon.store import DEFAULT_DB, ResultsDB

__all__ = ["MARKER", "TEMPLATES_PACKAGE", "render_report"]

#: Where the templates live in the installed package (the repository's ``templates/``).
TEMPLATES_PACKAGE = "faceanon.templates"
#: A file every report folder carries; only such a folder is ever replaced.
MARKER = ".faceanon-report"


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


def _packaged_template(name: str) -> str | None:
    node = resources.files(TEMPLATES_PACKAGE)
    for part in name.split("/"):
        node = node.joinpath(part)
    return node.read_text(encoding="utf-8") if node.is_file() else None


def _environment(templates: Path | None):
    import jinja2

    if templates is None:
        # Read through importlib.resources: the templates are wherever the installed
        # package keeps them (a wheel, an editable checkout, a zip).
        loader = jinja2.FunctionLoader(_packaged_template)
    else:
        loader = jinja2.FileSystemLoader(str(templates))
    env = jinja2.Environment(
        loader=loader,
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
        raise ReportError(f"{out} is a symbolic link; give a real folder as the output")
    if out.exists():
        if not out.is_dir():
            raise ReportError(f"{out} exists and is not a folder")
        if any(out.iterdir()) and not (out / MARKER).is_file():
            raise ReportError(f"{out} is a non-empty folder that is not a faceanon report; "
                              "refusing to replace it (choose another output folder)")


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
        A template folder to use instead of the package's own (the repository's
        ``templates/``, shipped as :data:`TEMPLATES_PACKAGE`).
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
    if templates is not None:
        templates = Path(templates)
        if not (templates / "report.html.j2").is_file():
            raise ReportError(f"no report.html.j2 in {templates}")
    elif _packaged_template("report.html.j2") is None:
        raise ReportError(f"no report.html.j2 in the installed package ({TEMPLATES_PACKAGE}); "
                          "reinstall faceanon")
    _check_out(out)
    if not Path(db_path).exists():
        raise ReportError(f"no results database at {db_path}")
    out.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{out.name}.tmp-", dir=out.parent))
    try:
        # ResultsDB opens the file for each query and closes it after, so a run that is
        # writing the database waits at most for one query, never for the pictures.
        with ResultsDB(db_path, read_only=True) as db:
            runs = db.runs()
            # The leaderboard shows image runs; the video runs have a section of their own.
            image_runs = [r for r in runs if not is_video_run(r)]
            if runs and not image_runs:
                raise ReportError(
                    f"{db_path} holds only video runs; the leaderboard is drawn around an "
                    "image run: run the image benchmark into the same database too "
                    "(pytest bench -k 'not video'), then render again")
            run, base = choose_runs(image_runs, run_ids)
            rows = leaderboard(db, int(run["id"]), min_mated=min_mated)
            # each run is read at its own decision threshold
            threshold = run["threshold"]
            figures = make_figures(rows, db.det_points(int(run["id"])))
            confusion = confusion_rows(db, int(run["id"]), threshold=threshold)
            study_confusion = confusion_rows(db, int(run["id"]), threshold=STUDY_THRESHOLD)
            comparison, differences = None, []
            if base is not None:
                base_rows = leaderboard(db, int(base["id"]), min_mated=min_mated)
                differences = protocol_differences(base, run)
                comparison = compare_runs(base_rows, rows, protocols_match=not differences)
            pictures = make_pictures(db, run, rows, staging / "img", identities=identities)
            frontier = make_frontier(worst_case(rows), db.utility_metrics(run_id=int(run["id"])),
                                     chance=chance_rank1(rows),
                                     detectors=db.detector_retention(run_id=int(run["id"])))
            video = video_section(db, runs, staging / "img")
        context = {
            "run": run,
            "base": base,
            "runs": runs,
            "rows": rows,
            "reference": next((r for r in rows if r["is_reference"]), None),
            "worst": worst_case(rows),
            "rows_by_case": {r["case_id"]: r for r in rows},
            "chance_rank1": chance_rank1(rows),
            "threshold": threshold,
            "differences": differences,
            "figures": figures,
            "frontier": frontier,
            "inf": float("inf"),
            "confusion": confusion,
            "reproduction": reproduction(rows, study_confusion),
            "study_threshold": STUDY_THRESHOLD,
            "comparison": comparison,
            "pictures": pictures,
            "video": video,
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
