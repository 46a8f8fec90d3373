"""``faceanon report``: the HTML leaderboard of a benchmark run, as a static site.

One module per concern:

:mod:`~faceanon.report.tables`
    which run is shown, its leaderboard rows, the comparison of two runs (and how their
    protocols differ), confusion matrices (all read through
    :class:`faceanon.store.ResultsDB`);
:mod:`~faceanon.report.worst_case`
    per (method, k), the strongest attack over every mode and attack: the leaderboard's
    headline, and the privacy axis of a privacy-utility frontier;
:mod:`~faceanon.report.seed_study`
    the seed study's published figures beside ours (the ``detect`` attack's);
:mod:`~faceanon.report.figures` and :mod:`~faceanon.report.plots`
    which figures the page has, and drawing them with matplotlib as inline SVG;
:mod:`~faceanon.report.pictures`
    the picture strip, re-created from the dataset with the run's seed rule;
:mod:`~faceanon.report.site`
    the page from the templates (shipped in the package), written atomically.

Every number of ours comes from the results database; the only constants are the seed
study's published figures, labelled as the study's.
"""

from __future__ import annotations

from faceanon.report.seed_study import SEED_STUDY
from faceanon.report.site import MARKER, render_report
from faceanon.report.tables import (
    ReportError,
    choose_runs,
    compare_runs,
    leaderboard,
    protocol_differences,
)
from faceanon.report.worst_case import chance_rank1, worst_case

__all__ = [
    "MARKER",
    "SEED_STUDY",
    "ReportError",
    "chance_rank1",
    "choose_runs",
    "compare_runs",
    "leaderboard",
    "protocol_differences",
    "render_report",
    "worst_case",
]
