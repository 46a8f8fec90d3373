"""Worst-case privacy: per (method, k), what the strongest attacker achieved.

A case is (method, k, mode, attack). A method is as private as the best attack on it
allows, so the leaderboard's headline for a (method, k) is the strongest attack over
every mode and attack the run measured, named, beside chance level. The privacy-utility
frontier reads its x axis from the same :func:`worst_case` rows.

Polarity
--------
``rank1`` and ``tar_at_fmr_1pct_all`` are linkage rates over all probes (a face the
attacker cannot find is a miss): higher = the attacker links more = less privacy. The
worst case is their **maximum** over the (method, k)'s cases. The generalized EER runs
the other way (lower = less privacy), so its worst case is the **minimum**, taken over
the cases whose generalized curves cross only: a generalized EER that was not reached
has no value (ISO/IEC 19795-1 defines none; it is not 50 %) and is never compared. When
no case of the (method, k) reached one, the worst case is "not reached" too.

Ties
----
Every (attack, mode) that achieved the worst value is listed; the one named first is the
first in :func:`attack_order` (the seed study's ``detect`` first, then the run's own order
of attacks), then in the order of :class:`faceanon.protocol.Mode`. Values are compared
exactly: two attacks tie only when they link the same number of probes.

A case whose value is undefined (None, e.g. no mated comparison) is left out of that
metric's worst case; a (method, k) none of whose cases defines it has None.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence

from faceanon.report.tables import mode_rank

__all__ = [
    "DEFAULT_ATTACK",
    "WORST_CASE_METRICS",
    "attack_of",
    "attack_order",
    "chance_rank1",
    "worst_case",
]

#: The seed study's attacker (the recognizer's own detector); rows of a database written
#: before the attack axis carry no attack and are this one.
DEFAULT_ATTACK = "detect"

#: metric -> True when a higher value is worse for privacy (the worst case is the max).
WORST_CASE_METRICS: dict[str, bool] = {
    "rank1": True,
    "tar_at_fmr_1pct_all": True,
    "geer": False,
}


def attack_of(row: Mapping) -> str:
    """The attack of a leaderboard row (``'detect'`` for rows that name none)."""
    return row.get("attack") or DEFAULT_ATTACK


def attack_order(rows: Iterable[Mapping]) -> list[str]:
    """The attacks of a run: ``detect`` first, then in the order the run measured them.

    Parameters
    ----------
    rows : iterable of mapping
        Leaderboard rows in the run's case order.

    Returns
    -------
    list of str
        Each attack once. Figures give each attack one colour and line style by this order.
    """
    names = list(dict.fromkeys(attack_of(r) for r in rows))
    if DEFAULT_ATTACK in names:
        names.remove(DEFAULT_ATTACK)
        names.insert(0, DEFAULT_ATTACK)
    return names


def chance_rank1(rows: Iterable[Mapping]) -> float | None:
    """Rank-1 of an attacker who guesses: 1 / the number of identities in the gallery.

    Read from the rows' ``n_gallery`` (one gallery image per identity), the largest when
    cases differ; None when no row has a gallery.
    """
    galleries = [int(r["n_gallery"]) for r in rows if r.get("n_gallery")]
    return 1.0 / max(galleries) if galleries else None


def _worst(cases: Sequence[Mapping], metric: str, order: Mapping[str, int]) -> dict:
    if metric == "geer":
        # Not reached (geer_crossed false) has no value; it never takes part.
        cases = [c for c in cases if c.get("geer_crossed") is not False]
    defined = [c for c in cases if c.get(metric) is not None]
    if not defined:
        return {"value": None, "by": []}
    values = [float(c[metric]) for c in defined]
    value = max(values) if WORST_CASE_METRICS[metric] else min(values)
    achieved = sorted((c for c, v in zip(defined, values, strict=True) if v == value),
                      key=lambda c: (order[attack_of(c)], mode_rank(c["mode"])))
    return {"value": value,
            "by": [{"attack": attack_of(c), "mode": c["mode"], "case_id": c["case_id"]}
                   for c in achieved]}


def _rank_key(entry: Mapping) -> tuple:
    rank1, tar = entry["rank1"], entry["tar_at_fmr_1pct_all"]
    return (rank1 is None, rank1 or 0.0, tar is None, tar or 0.0)


def worst_case(rows: Sequence[Mapping]) -> list[dict]:
    """Per (method, k), the strongest attack's rank-1, TAR at FMR = 1 % and generalized EER.

    Parameters
    ----------
    rows : sequence of mapping
        Leaderboard rows (:func:`faceanon.report.tables.leaderboard`) of ONE run, with
        ``case_id, method, k, mode, attack, rank1, tar_at_fmr_1pct_all, geer,
        geer_crossed, n_gallery``; the clear baseline (``is_reference``) is left out.

    Returns
    -------
    list of dict
        One per (method, k), ranked most private first: by worst-case rank-1, then by
        worst-case TAR (lower first; an undefined value last; equal values keep the run's
        order). Keys: ``method``, ``k``; ``rank1``, ``tar_at_fmr_1pct_all``, ``geer`` (the
        worst values, None when undefined); ``rank1_by``, ``tar_by``, ``geer_by`` (the
        ``{'attack', 'mode', 'case_id'}`` that achieved each, ties all listed, the named
        one first; see the module's notes); ``geer_not_reached`` (no case reached a
        generalized EER: never rank by it); ``chance_rank1`` (1 / identities in the
        gallery); ``attacks`` and ``modes`` (what was measured, in order); ``case_ids``
        (the group's cases, in the run's order).
    """
    anonymized = [r for r in rows if not r.get("is_reference") and r["mode"] != "clear"]
    order = {name: i for i, name in enumerate(attack_order(anonymized))}
    groups: dict[tuple, list[Mapping]] = {}
    for row in anonymized:
        groups.setdefault((row["method"], row["k"]), []).append(row)
    out = []
    for (method, k), cases in groups.items():
        worst = {metric: _worst(cases, metric, order) for metric in WORST_CASE_METRICS}
        reached = [c for c in cases if c.get("geer_crossed") is not False]
        out.append({
            "method": method,
            "k": k,
            "rank1": worst["rank1"]["value"],
            "rank1_by": worst["rank1"]["by"],
            "tar_at_fmr_1pct_all": worst["tar_at_fmr_1pct_all"]["value"],
            "tar_by": worst["tar_at_fmr_1pct_all"]["by"],
            "geer": worst["geer"]["value"],
            "geer_by": worst["geer"]["by"],
            "geer_not_reached": not reached and any(c.get("geer_crossed") is False
                                                    for c in cases),
            "chance_rank1": chance_rank1(cases),
            "attacks": sorted(dict.fromkeys(attack_of(c) for c in cases), key=order.get),
            "modes": sorted(dict.fromkeys(c["mode"] for c in cases), key=mode_rank),
            "case_ids": [c["case_id"] for c in cases],
        })
    out.sort(key=_rank_key)  # stable: equal values keep the run's order
    return out
