"""Regression bounds: a TOML file of limits that fail a case when one of its metrics crosses.

Each ``[[bound]]`` has

``case``
    An fnmatch pattern over case labels (``"clear"``, ``"blur-k90-*"``). It must match at
    least one case of the grid the run uses, before ``-k`` and the ``--bench-methods``,
    ``--bench-k`` and ``--bench-modes`` selections narrow it: a pattern that matches
    nothing (a typo, a case that was renamed) would check nothing, so it is an error.
``metric``
    A column of the ``case_metrics`` view (rates as fractions).
``max`` and/or ``min``
    The limits; at least one. A metric that is undefined for a matching case (e.g. an
    EER with no acquired comparison) fails it too, so an unmeasurable number is never
    taken for a good one.
``min_acquired`` (optional)
    The fewest acquired mated comparisons (``n_mated_acquired``: both faces found) the
    case must have: an EER over a handful of faces is noise, so such a bound fails with
    a message saying how many there were rather than passing or failing on noise.
``attack`` (optional, default ``"detect"``)
    What the attacker runs on the published images: any registered
    :mod:`faceanon.attacks` name (plugins included). A bound checks only the cases of its
    attack, so ``case = "mask-*"`` (attack ``detect``) does not bound
    ``mask-naive-located``; a bound for ``located`` says ``case = "mask-naive-located"``
    and ``attack = "located"``. An unknown attack is an error, never silently skipped.

Any other key is an error too: a misspelt ``mx`` must not switch a bound off.
"""

from __future__ import annotations

import tomllib
from collections.abc import Iterable, Mapping, Sequence
from fnmatch import fnmatch
from numbers import Real
from pathlib import Path

from faceanon.errors import FaceanonError
from faceanon.protocol import DEFAULT_ATTACK, Case

__all__ = ["DEFAULT_ATTACK", "BOUND_KEYS", "BoundsError", "bound_attack", "check_bounds",
           "check_patterns", "load_bounds"]

#: The keys a ``[[bound]]`` may have.
BOUND_KEYS = frozenset({"case", "metric", "min", "max", "min_acquired", "attack"})


class BoundsError(FaceanonError, ValueError):
    """A bounds file that cannot be read or holds a bound that cannot be checked."""


def _number(value) -> bool:
    return isinstance(value, Real) and not isinstance(value, bool)


def _check_bound(path: str | Path, number: int, bound: Mapping) -> None:
    where = f"{path}: bound {number}"
    if not isinstance(bound, Mapping):
        raise BoundsError(f"{where} is not a table")
    unknown = sorted(set(bound) - BOUND_KEYS)
    if unknown:
        raise BoundsError(f"{where} has unknown key(s) {', '.join(unknown)}; a bound takes "
                          f"{', '.join(sorted(BOUND_KEYS))}")
    if not {"case", "metric"} <= bound.keys() or not {"min", "max"} & bound.keys():
        raise BoundsError(f"{where} needs case, metric and min or max")
    for key in ("case", "metric"):
        if not isinstance(bound[key], str) or not bound[key]:
            raise BoundsError(f"{where}: {key} must be a non-empty string")
    for key in ("min", "max"):
        if key in bound and not _number(bound[key]):
            raise BoundsError(f"{where}: {key} must be a number, got {bound[key]!r}")
    if "min" in bound and "max" in bound and bound["min"] > bound["max"]:
        raise BoundsError(f"{where}: min {bound['min']} is above max {bound['max']}, so "
                          "every value fails")
    if "min_acquired" in bound and not (isinstance(bound["min_acquired"], int)
                                        and not isinstance(bound["min_acquired"], bool)
                                        and bound["min_acquired"] >= 1):
        raise BoundsError(f"{where}: min_acquired must be a whole number >= 1, got "
                          f"{bound['min_acquired']!r}")
    if "attack" in bound:
        from faceanon.attacks import available_attacks

        known = available_attacks()
        if bound["attack"] not in known:
            raise BoundsError(f"{where}: attack {bound['attack']!r} is not a registered "
                              f"attack ({', '.join(known)})")


def bound_attack(bound: Mapping) -> str:
    """The attack whose cases ``bound`` checks (:data:`DEFAULT_ATTACK` when it names none)."""
    return bound.get("attack", DEFAULT_ATTACK)


def load_bounds(path: str | Path) -> list[dict]:
    """The ``[[bound]]`` tables of a TOML file, each checked.

    Raises
    ------
    BoundsError
        When the file is missing or not TOML, or a bound lacks ``case`` or ``metric``,
        has neither ``min`` nor ``max``, has a key or value it cannot have (see the
        module docstring); the message names the file and the bound's number.
    """
    try:
        with open(path, "rb") as handle:
            bounds = tomllib.load(handle).get("bound", [])
    except (OSError, tomllib.TOMLDecodeError) as error:
        raise BoundsError(f"{path}: cannot read the bounds ({error})") from None
    if not isinstance(bounds, list):
        raise BoundsError(f"{path}: 'bound' must be an array of tables ([[bound]])")
    for number, bound in enumerate(bounds, start=1):
        _check_bound(path, number, bound)
    return [dict(bound) for bound in bounds]


def _label_and_attack(case: Case | str) -> tuple[str, str]:
    if isinstance(case, Case):
        return case.label, case.attack
    return case, DEFAULT_ATTACK


def check_patterns(bounds: Sequence[Mapping], labels: Iterable[Case | str], *,
                   source: str | Path, grid: str) -> None:
    """Refuse bounds whose ``case`` pattern matches no case of their attack.

    Parameters
    ----------
    bounds : sequence of mapping
        From :func:`load_bounds`.
    labels : iterable of Case or str
        Every case of the grid (every registered attack), before any selection narrows
        it; a bare label is a case of the ``detect`` attack.
    source : str or Path
        The bounds file, for the message.
    grid : str
        The grid's name, for the message.

    Raises
    ------
    BoundsError
        Naming every pattern that matches nothing.
    """
    cases = [_label_and_attack(case) for case in labels]
    unmatched = [f"{number} ({bound['case']!r}"
                 + ("" if "attack" not in bound else f", attack {bound['attack']!r}") + ")"
                 for number, bound in enumerate(bounds, start=1)
                 if not any(fnmatch(label, bound["case"]) and attack == bound_attack(bound)
                            for label, attack in cases)]
    if unmatched:
        raise BoundsError(f"{source}: bound(s) {', '.join(unmatched)} match no case of the "
                          f"{grid} grid, so they would check nothing; fix the pattern or "
                          "remove the bound")


def check_bounds(label: str, metrics: Mapping, bounds: Sequence[Mapping], *,
                 attack: str = DEFAULT_ATTACK) -> list[str]:
    """Messages for every bound that the case called ``label`` crosses.

    Parameters
    ----------
    label : str
        The case's label (:attr:`faceanon.protocol.Case.label`).
    metrics : mapping
        The case's row of ``case_metrics``.
    bounds : sequence of mapping
        From :func:`load_bounds`.
    attack : str
        The case's attack: only the bounds of that attack apply.

    Returns
    -------
    list of str
        Empty when every bound holds.
    """
    problems = []
    for bound in bounds:
        if not fnmatch(label, bound["case"]) or bound_attack(bound) != attack:
            continue
        metric = bound["metric"]
        if metric not in metrics:
            problems.append(f"{label}: there is no metric {metric!r} (a column of "
                            "case_metrics) to bound")
            continue
        if "min_acquired" in bound:
            acquired = metrics.get("n_mated_acquired") or 0
            if acquired < bound["min_acquired"]:
                problems.append(
                    f"{label}: {metric} rests on {acquired} acquired mated comparisons, "
                    f"fewer than the bound's min_acquired = {bound['min_acquired']}; "
                    "it is noise, not a measurement")
                continue
        value = metrics[metric]
        if value is None:
            if metric.startswith("geer") and metrics.get("geer_crossed") is False:
                why = "not reached: the generalized curves never cross"
            else:
                why = "undefined: no comparisons to measure it"
            problems.append(f"{label}: {metric} is {why}")
            continue
        if "max" in bound and value > bound["max"]:
            problems.append(f"{label}: {metric} = {value:.4f} is above its bound {bound['max']}")
        if "min" in bound and value < bound["min"]:
            problems.append(f"{label}: {metric} = {value:.4f} is below its bound {bound['min']}")
    return problems
