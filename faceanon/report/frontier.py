"""The privacy-utility frontier: what each (method, k) hides against what it leaves usable.

x is worst-case privacy, the strongest attack's rank-1 over every mode and attack the run
measured (:func:`faceanon.report.worst_case.worst_case`; lower = more private); y is a
utility measure of the ``utility_metrics`` view (:mod:`faceanon.utility`), one figure per
measure of :data:`UTILITY_MEASURES`. One point per (method, k), a method's points joined
across k in its own colour; the Pareto-optimal points (no other point is at least as
private and at least as useful, and better in one) are ringed; chance level, the rank-1
of an attacker who guesses, is a vertical line.

Ties: two points with equal rank-1 and equal utility do not dominate each other, so both
are Pareto-optimal. A (method, k) without a utility value (no face in any original for
retention or NME, or a run measured with ``--no-bench-utility``) or without a rank-1 is
left out of that measure's figure and frontier, never drawn as 0.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np

__all__ = ["UTILITY_MEASURES", "frontier_figure", "frontier_points", "make_frontier",
           "method_colours", "pareto_optimal"]

#: measure -> how it is drawn: axis label, whether higher is more utility, the factor the
#: axis shows it at. Retention, NME and SSIM are the issue's three.
UTILITY_MEASURES: dict[str, dict] = {
    "retention": {"label": "faces still detected (dlib HOG), %", "higher": True,
                  "scale": 100.0},
    "nme": {"label": "landmark error (NME, lower keeps pose and expression)",
            "higher": False, "scale": 1.0},
    "ssim": {"label": "SSIM of the whole image", "higher": True, "scale": 1.0},
}
#: One colour per method, in the run's order (Okabe and Ito's palette, then tab10's).
METHOD_COLOURS = ("#0072B2", "#D55E00", "#009E73", "#CC79A7", "#E69F00", "#56B4E9",
                  "#000000", "#8c564b", "#7f7f7f", "#bcbd22")


def _k_order(k) -> tuple:
    return (k is not None, k or 0)


def frontier_points(worst: Sequence[Mapping], utility: Sequence[Mapping]) -> list[dict]:
    """Join worst-case privacy and utility per (method, k).

    Parameters
    ----------
    worst : sequence of mapping
        :func:`faceanon.report.worst_case.worst_case` rows of one run.
    utility : sequence of mapping
        ``utility_metrics`` rows of the same run (:meth:`ResultsDB.utility_metrics`).

    Returns
    -------
    list of dict
        One per (method, k) that has utility rows, in the order of ``worst`` (most
        private first): the utility row's columns plus ``rank1`` (worst case),
        ``rank1_by`` and ``pareto``, the set of measures on whose frontier it lies.
    """
    by_variant = {(u["method"], u["k"]): u for u in utility}
    points = []
    for row in worst:
        found = by_variant.get((row["method"], row["k"]))
        if found is not None:
            points.append({**found, "rank1": row["rank1"], "rank1_by": row["rank1_by"],
                           "pareto": set()})
    for measure in UTILITY_MEASURES:
        for index in pareto_optimal(points, measure):
            points[index]["pareto"].add(measure)
    return points


def pareto_optimal(points: Sequence[Mapping], measure: str) -> list[int]:
    """Indices of the points no other point dominates on (rank-1, ``measure``).

    A point dominates another when its rank-1 is lower or equal (at least as private) and
    its utility better or equal (higher, or lower for NME), and it is strictly better in
    one of the two. Points without either value take no part.
    """
    higher = UTILITY_MEASURES[measure]["higher"]
    defined = [(i, float(p["rank1"]), float(p[measure]) * (1 if higher else -1))
               for i, p in enumerate(points)
               if p.get("rank1") is not None and p.get(measure) is not None
               and np.isfinite(float(p[measure]))]
    optimal = []
    for i, privacy, use in defined:
        dominated = any(
            other_privacy <= privacy and other_use >= use
            and (other_privacy < privacy or other_use > use)
            for j, other_privacy, other_use in defined if j != i)
        if not dominated:
            optimal.append(i)
    return optimal


def method_colours(points: Sequence[Mapping]) -> dict[str, str]:
    """One colour per method, in the order the points list them, the same in every figure."""
    methods = dict.fromkeys(p["method"] for p in points)
    return {m: METHOD_COLOURS[i % len(METHOD_COLOURS)] for i, m in enumerate(methods)}


def frontier_figure(points: Sequence[Mapping], *, measure: str, chance: float | None,
                    name: str, colours: Mapping[str, str] | None = None) -> str | None:
    """One frontier as inline SVG; None when no point has both values.

    Parameters
    ----------
    points : sequence of mapping
        :func:`frontier_points`.
    measure : str
        A key of :data:`UTILITY_MEASURES`.
    chance : float or None
        Chance-level rank-1 (a vertical dashed line).
    name : str
        Unique on the page (the SVG's ids are salted with it).
    colours : mapping, optional
        Method -> colour (default :func:`method_colours` of ``points``), so that a method
        keeps its colour in every figure of the page.
    """
    from faceanon.report.plots import _new_figure, _styled, _text, _to_svg

    spec = UTILITY_MEASURES[measure]
    drawable = [p for p in points if p.get("rank1") is not None
                and p.get(measure) is not None and np.isfinite(float(p[measure]))]
    if not drawable:
        return None
    colours = colours or method_colours(points)

    @_styled
    def draw() -> str:
        figure = _new_figure(5.0, 3.3)
        ax = figure.add_subplot()
        for method in dict.fromkeys(p["method"] for p in drawable):
            mine = sorted((p for p in drawable if p["method"] == method),
                          key=lambda p: _k_order(p["k"]))
            x = [100 * float(p["rank1"]) for p in mine]
            y = [spec["scale"] * float(p[measure]) for p in mine]
            colour = colours[method]
            ax.plot(x, y, marker="o", markersize=4.5, linewidth=1.3, color=colour,
                    label=_text(method))
            for p, px, py in zip(mine, x, y, strict=True):
                if p["k"] is not None:
                    ax.annotate(str(p["k"]), (px, py), textcoords="offset points",
                                xytext=(4, 3), fontsize=7, color=colour)
        best = [p for p in drawable if measure in p["pareto"]]
        if best:
            ax.scatter([100 * float(p["rank1"]) for p in best],
                       [spec["scale"] * float(p[measure]) for p in best], s=110,
                       facecolors="none", edgecolors="#222222", linewidths=1.2,
                       label="Pareto-optimal", zorder=3)
        if chance is not None:
            ax.axvline(100 * chance, color="#888888", linestyle="--", linewidth=1.0,
                       label=f"chance ({100 * chance:.1f} %)")
        ax.set_xlabel("worst-case rank-1, % (strongest attack; lower = more private)")
        ax.set_ylabel(_text(spec["label"]))
        ax.set_xlim(left=0)
        ax.legend(loc="upper left", bbox_to_anchor=(1.02, 1.0), frameon=False)
        return _to_svg(figure, name=name)

    return draw()


def make_frontier(worst: Sequence[Mapping], utility: Sequence[Mapping], *,
                  chance: float | None, detectors: Sequence[Mapping] = ()) -> dict | None:
    """What the page's frontier section shows; None when the run measured no utility.

    Parameters
    ----------
    detectors : sequence of mapping, optional
        ``detector_retention`` rows of the run (:meth:`faceanon.store.ResultsDB.
        detector_retention`): each point gets ``found_by``, attack -> the share of its
        images in which that detector still finds a face.

    Returns
    -------
    dict or None
        ``points`` (:func:`frontier_points`), ``figures``: one
        ``{"measure", "label", "svg"}`` per measure that has a drawable point, and
        ``detectors``: the detector attacks that have a column (sorted).
    """
    points = frontier_points(worst, utility)
    if not points:
        return None
    found_by: dict[tuple, dict[str, float]] = {}
    for row in detectors:
        found_by.setdefault((row["method"], row["k"]), {})[row["attack"]] = row["retention"]
    for point in points:
        point["found_by"] = found_by.get((point["method"], point["k"]), {})
    figures, colours = [], method_colours(points)
    for measure, spec in UTILITY_MEASURES.items():
        svg = frontier_figure(points, measure=measure, chance=chance,
                              name=f"frontier-{measure}", colours=colours)
        if svg is not None:
            figures.append({"measure": measure, "label": spec["label"], "svg": svg})
    return {"points": points, "figures": figures,
            "detectors": sorted({row["attack"] for row in detectors})}
