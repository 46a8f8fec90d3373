"""Regression bounds: a TOML file of limits that fail a case when one of its metrics crosses.

Each ``[[bound]]`` has ``case`` (an fnmatch pattern over case labels: ``"clear"``,
``"blur-k90-*"``), ``metric`` (a column of the ``case_metrics`` view) and ``max`` and/or
``min``. A metric that is undefined for a matching case (e.g. an EER with no acquired
comparison) fails it too, so an unmeasurable number is never taken for a good one.
"""

from __future__ import annotations

import tomllib
from collections.abc import Mapping, Sequence
from fnmatch import fnmatch
from pathlib import Path

from faceanon.errors import FaceanonError

__all__ = ["BoundsError", "check_bounds", "load_bounds"]


class BoundsError(FaceanonError, ValueError):
    """A bounds file that cannot be read or holds a bound that cannot be checked."""


def load_bounds(path: str | Path) -> list[dict]:
    """The ``[[bound]]`` tables of a TOML file.

    Raises
    ------
    BoundsError
        When the file is missing or not TOML, or a bound lacks ``case`` or ``metric`` or
        has neither ``min`` nor ``max``; the message names the file.
    """
    try:
        with open(path, "rb") as handle:
            bounds = tomllib.load(handle).get("bound", [])
    except (OSError, tomllib.TOMLDecodeError) as error:
        raise BoundsError(f"{path}: cannot read the bounds ({error})") from None
    for number, bound in enumerate(bounds, start=1):
        if not {"case", "metric"} <= bound.keys() or not {"min", "max"} & bound.keys():
            raise BoundsError(f"{path}: bound {number} needs case, metric and min or max")
    return bounds


def check_bounds(label: str, metrics: Mapping, bounds: Sequence[Mapping]) -> list[str]:
    """Messages for every bound that the case called ``label`` crosses.

    Parameters
    ----------
    label : str
        The case's label (:attr:`faceanon.protocol.Case.label`).
    metrics : mapping
        The case's row of ``case_metrics``.
    bounds : sequence of mapping
        From :func:`load_bounds`.

    Returns
    -------
    list of str
        Empty when every bound holds.
    """
    problems = []
    for bound in bounds:
        if not fnmatch(label, bound["case"]):
            continue
        metric = bound["metric"]
        value = metrics.get(metric)
        if value is None:
            problems.append(f"{label}: {metric} is undefined (no comparisons to measure it)")
            continue
        if "max" in bound and value > bound["max"]:
            problems.append(f"{label}: {metric} = {value:.4f} is above its bound {bound['max']}")
        if "min" in bound and value < bound["min"]:
            problems.append(f"{label}: {metric} = {value:.4f} is below its bound {bound['min']}")
    return problems
