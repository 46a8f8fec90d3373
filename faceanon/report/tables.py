"""The numbers of the report's tables: which run, its leaderboard, a comparison, confusion.

Every figure comes from :class:`faceanon.store.ResultsDB`'s queries; nothing here reads
SQL of its own.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from faceanon.errors import FaceanonError
from faceanon.protocol import Mode
from faceanon.store import ResultsDB

__all__ = [
    "METRIC_TOLERANCE",
    "MIN_RELIABLE_MATED",
    "TIME_TOLERANCE",
    "ReportError",
    "choose_runs",
    "PROTOCOL_FIELDS",
    "compare_runs",
    "confusion_rows",
    "leaderboard",
    "mode_rank",
    "protocol_differences",
]

#: An EER read from fewer acquired mated comparisons than this moves in steps of more
#: than 5 points per face, so the page flags it instead of ranking on it.
MIN_RELIABLE_MATED = 20
#: A change larger than this (absolute, as a fraction) in rank-1 or an EER is flagged.
METRIC_TOLERANCE = 0.02
#: A time per image that grows by more than this share (and by 0.5 ms) is flagged.
TIME_TOLERANCE = 0.25


class ReportError(FaceanonError):
    """The report cannot be rendered as asked (no runs, unknown run, unsafe output)."""


def mode_rank(mode: str) -> int:
    """Where a mode sorts: the order of :class:`faceanon.protocol.Mode`, unknown last."""
    names = [m.value for m in Mode]
    return names.index(mode) if mode in names else len(names)


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



def _case_order(row: Mapping) -> tuple:
    return (row["mode"] != Mode.CLEAR, mode_rank(row["mode"]))


def leaderboard(db: ResultsDB, run_id: int, *,
                min_mated: int = MIN_RELIABLE_MATED) -> list[dict]:
    """The leaderboard rows of one run: a row per case, metrics and times per image.

    Parameters
    ----------
    db : ResultsDB
    run_id : int
        The run to rank.
    min_mated : int
        An EER over fewer acquired mated comparisons is flagged ``eer_unreliable``.

    Returns
    -------
    list of dict
        Every column of ``case_metrics`` plus ``method, k, mode, attack, detector,
        backend``,
        ``eer_unreliable``, ``geer_not_reached`` (the generalized curves never cross:
        ``geer`` is None and must not be read as a number), ``is_reference`` (the clear
        baseline), ``anonymize_ms`` and ``recognize_ms`` (mean milliseconds per image,
        None when not timed), in case order with the clear baseline first.
    """
    rows = db.case_metrics(run_id=run_id)
    per_image = db.per_image_timings(run_id)
    out = []
    for row in rows:
        case = row["case_id"]
        anonymize = per_image.get((case, "anonymize"))
        recognize = per_image.get((case, "recognize"))
        out.append({
            **row,
            "eer_unreliable": row["eer"] is not None and row["n_mated_acquired"] < min_mated,
            "geer_not_reached": row["geer_crossed"] is False,
            "is_reference": row["mode"] == "clear",
            "anonymize_ms": None if anonymize is None else 1000 * anonymize,
            "recognize_ms": None if recognize is None else 1000 * recognize,
        })
    # Stable: keeps the run's own case order (the grid's) inside each group.
    out.sort(key=_case_order)
    return out


#: What makes two runs measure the same thing: name -> how to read it from a run. Runs
#: that differ in any of them are not comparable case by case (see :func:`compare_runs`).
PROTOCOL_FIELDS: dict[str, Any] = {
    "dataset fingerprint": lambda run: run.get("dataset_fingerprint"),
    "identities": lambda run: _config(run).get("identities"),
    "seed": lambda run: _config(run).get("seed"),
    "threshold": lambda run: run.get("threshold"),
    "detector": lambda run: _config(run).get("detector"),
    "region": lambda run: _config(run).get("region"),
    "backend": lambda run: _config(run).get("backend"),
    "backend options": lambda run: _config(run).get("backend_options") or None,
    "code version": lambda run: _code_version(run),
}


def _config(run: Mapping) -> Mapping:
    return run.get("config") or {}


def _code_version(run: Mapping) -> str | None:
    commit = run.get("git_commit")
    version = (run.get("packages") or {}).get("faceanon")
    if commit is None and version is None:
        return None
    return " ".join(filter(None, [
        None if version is None else f"faceanon {version}",
        None if commit is None else f"commit {commit[:10]}"
                                    + ("+dirty" if run.get("git_dirty") else ""),
    ]))


def protocol_differences(base: Mapping, new: Mapping) -> list[dict]:
    """How two runs differ in what they measure (:data:`PROTOCOL_FIELDS`).

    Parameters
    ----------
    base, new : mapping
        Runs as :meth:`ResultsDB.runs` gives them.

    Returns
    -------
    list of dict
        ``{'name', 'base', 'new'}`` for each field whose values differ; empty when the
        protocols match. A field neither run recorded does not differ.
    """
    out = []
    for name, read in PROTOCOL_FIELDS.items():
        old_value, new_value = read(base), read(new)
        if isinstance(old_value, float) and isinstance(new_value, float):
            same = abs(old_value - new_value) <= 1e-12
        else:
            same = old_value == new_value
        if not same:
            out.append({"name": name, "base": old_value, "new": new_value})
    return out


def _case_key(row: Mapping) -> tuple:
    # A run written before the attack axis measured the recognizer's own detector.
    return (row["method"], row["k"], row["mode"], row.get("attack") or "detect",
            row["detector"], row["backend"])


def _delta(new: Any, old: Any) -> float | None:
    return None if new is None or old is None else float(new) - float(old)


def compare_runs(base: Sequence[Mapping], new: Sequence[Mapping], *,
                 tolerance: float = METRIC_TOLERANCE,
                 time_tolerance: float = TIME_TOLERANCE,
                 protocols_match: bool = True) -> list[dict]:
    """Per case, the change from a baseline run to a new run, regressions flagged.

    A regression is a change that makes the benchmark's answer less protective. For an
    anonymized case: rank-1 up, or EER / generalized EER down, by more than
    ``tolerance`` (the method hides less). For the clear baseline: rank-1 down or EER
    up (the attacker got weaker, which flatters every method). A time per image that
    grows by more than ``time_tolerance`` (and 0.5 ms) is a regression too. A
    generalized EER that either run did not reach (the curves never cross) has no
    change and flags nothing.

    Parameters
    ----------
    base, new : sequence of mapping
        :func:`leaderboard` rows of the two runs.
    tolerance : float
        Absolute change (fraction, 0.02 = 2 points) below which nothing is flagged.
    time_tolerance : float
        Relative growth of a time below which nothing is flagged.
    protocols_match : bool
        False when the runs measured different things (:func:`protocol_differences`):
        the changes are still given, but nothing is flagged, since a change of protocol
        moves every number.

    Returns
    -------
    list of dict
        One per case present in either run: ``method, k, mode, attack``, ``status``
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
        row = {"method": key[0], "k": key[1], "mode": key[2], "attack": key[3],
               "detector": key[4], "backend": key[5], "status": status, "base": a,
               "new": b, "flags": set()}
        for metric in ("eer", "geer", "rank1", "anonymize_ms", "recognize_ms"):
            row[f"d_{metric}"] = _delta(b and b[metric], a and a[metric])
        if status == "both" and protocols_match:
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
    out: dict[int, dict] = {}
    for row in db.confusion(run_id, threshold=threshold):
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
