"""The report's figures, drawn with matplotlib and returned as inline SVG text.

Every function takes plain data (lists of dicts, numpy arrays) and returns the markup of
one ``<svg>`` element, ready to be placed in HTML. Text stays text (``svg.fonttype =
none``): the SVG is small, selectable, and matplotlib escapes it as XML. Figures are made
with :class:`matplotlib.figure.Figure` directly, never through pyplot, so no GUI backend
and no global figure registry are involved.
"""

from __future__ import annotations

import functools
import io
from collections.abc import Mapping, Sequence
from statistics import NormalDist

import matplotlib
import numpy as np
from matplotlib.figure import Figure

__all__ = ["attack_styles", "det_figure", "eer_vs_k_figure", "fta_vs_k_figure", "probit",
           "thin_curve"]

#: DET axes run from 0.05 % to 99.8 %; rates outside are drawn on the frame.
DET_LIMITS = (0.0005, 0.998)
DET_TICKS = (0.001, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.4, 0.6, 0.8, 0.9, 0.95, 0.99)
#: Probit-spaced buckets used to thin a DET curve to what a figure can show.
_THIN_BUCKETS = 600

_NORMAL = NormalDist()
_STYLE = {
    "svg.fonttype": "none",
    "font.family": "sans-serif",
    "font.sans-serif": ["DejaVu Sans"],
    "font.size": 9,
    "axes.titlesize": 10,
    "axes.labelsize": 9,
    "legend.fontsize": 8,
    "axes.spines.top": False,
    "axes.spines.right": False,
    "axes.grid": True,
    "grid.color": "#d9d9d9",
    "grid.linewidth": 0.6,
}
CLEAR_STYLE = {"color": "#222222", "linestyle": "--", "linewidth": 1.4}
#: Okabe and Ito's colour-blind-safe palette (black and yellow left out: black is the clear
#: baseline, yellow does not show on white), one colour per attack.
ATTACK_COLOURS = ("#0072B2", "#D55E00", "#009E73", "#CC79A7", "#E69F00", "#56B4E9")
#: A line style per attack too, so attacks stay apart in grey print and where colours
#: repeat (a seventh attack).
ATTACK_DASHES = ("solid", (0, (5, 1.6)), (0, (1.2, 1.4)), (0, (6, 1.6, 1.2, 1.6)),
                 (0, (2.8, 1.4)), (0, (6, 1.4, 1.2, 1.4, 1.2, 1.4)), (0, (9, 2.5)))
ATTACK_MARKERS = ("o", "s", "^", "D", "v", "P", "X")


def attack_styles(attacks: Sequence[str]) -> dict[str, dict]:
    """One colour, line style and marker per attack, the same in every figure of a page.

    Parameters
    ----------
    attacks : sequence of str
        The run's attacks in their order (:func:`faceanon.report.worst_case.attack_order`).

    Returns
    -------
    dict
        ``attack -> {'color', 'linestyle', 'marker'}``; the first attack is drawn solid.
    """
    return {name: {"color": ATTACK_COLOURS[i % len(ATTACK_COLOURS)],
                   "linestyle": ATTACK_DASHES[i % len(ATTACK_DASHES)],
                   "marker": ATTACK_MARKERS[i % len(ATTACK_MARKERS)]}
            for i, name in enumerate(attacks)}


def probit(p: np.ndarray | Sequence[float] | float) -> np.ndarray:
    """The normal deviate (inverse standard normal CDF) of probabilities.

    Parameters
    ----------
    p : array_like
        Probabilities; clipped to :data:`DET_LIMITS` first, so 0 and 1 land on the
        figure's frame instead of at infinity.

    Returns
    -------
    ndarray
    """
    clipped = np.clip(np.asarray(p, dtype=np.float64), *DET_LIMITS)
    return np.fromiter((_NORMAL.inv_cdf(float(v)) for v in clipped.ravel()),
                       dtype=np.float64, count=clipped.size).reshape(clipped.shape)


_BUCKET_EDGES = np.array([_NORMAL.cdf(z) for z in np.linspace(
    _NORMAL.inv_cdf(DET_LIMITS[0]), _NORMAL.inv_cdf(DET_LIMITS[1]), _THIN_BUCKETS)])


def thin_curve(fmr: np.ndarray, fnmr: np.ndarray) -> np.ndarray:
    """Indices of the DET points worth drawing.

    A case of 250 x 250 comparisons has up to 62,500 distinct thresholds, far more than
    an SVG should carry. A point is kept when it moves the curve into a new probit-spaced
    bucket on either axis, so the drawn curve is exact to well under a pixel.

    Parameters
    ----------
    fmr, fnmr : ndarray, shape (n,)
        The curve, ordered by threshold.

    Returns
    -------
    ndarray of int
        Sorted indices; the first and last point are always kept.
    """
    n = len(fmr)
    if n <= 2:
        return np.arange(n)
    bx = np.searchsorted(_BUCKET_EDGES, np.nan_to_num(fmr, nan=1.0))
    by = np.searchsorted(_BUCKET_EDGES, np.nan_to_num(fnmr, nan=1.0))
    keep = np.ones(n, dtype=bool)
    keep[1:] = (bx[1:] != bx[:-1]) | (by[1:] != by[:-1])
    # Keep the point just before each move too, so the staircase shape survives.
    keep[:-1] |= keep[1:]
    keep[-1] = True
    return np.flatnonzero(keep)


def _text(value: object) -> str:
    # matplotlib reads $...$ as mathtext; names from data must be drawn as they are.
    return str(value).replace("$", r"\$")


def _to_svg(figure: Figure, *, name: str) -> str:
    buffer = io.StringIO()
    # A salt per figure keeps clip-path ids unique within the page and the output
    # reproducible from one render to the next.
    with matplotlib.rc_context({"svg.hashsalt": f"faceanon-{name}"}):
        figure.savefig(buffer, format="svg", bbox_inches="tight",
                       metadata={"Date": None, "Creator": "faceanon"})
    text = buffer.getvalue()
    start = text.find("<svg")
    svg = text[start:]
    # Drawn at its own size so text keeps one size across figures; the page's CSS only
    # shrinks a figure that is wider than the screen (viewBox keeps the aspect ratio).
    return svg.replace("<svg ", '<svg class="figure" role="img" ', 1)


def _new_figure(width: float, height: float) -> Figure:
    return Figure(figsize=(width, height), layout="constrained")


def _styled(function):
    # rcParams are read when axes and artists are made, so the whole drawing (not only
    # the save) runs inside the style; rc_context restores the caller's settings.
    @functools.wraps(function)
    def wrapper(*args, **kwargs):
        with matplotlib.rc_context(_STYLE):
            return function(*args, **kwargs)

    return wrapper


def _colours(n: int) -> list:
    cmap = matplotlib.colormaps["viridis"]
    if n == 1:
        return [cmap(0.35)]
    return [cmap(0.9 * i / (n - 1)) for i in range(n)]


def _det_axes(ax) -> None:
    ticks = probit(DET_TICKS)
    labels = [f"{100 * t:g}" for t in DET_TICKS]
    lo, hi = probit(DET_LIMITS)
    # A little room beyond the clipping limits: rates of exactly 0 or 1 (common with few
    # faces) are then drawn just inside the frame instead of hidden under it.
    pad = 0.12 * (hi - lo) / 8
    ax.set_xlim(lo - pad, hi + pad)
    ax.set_ylim(lo - pad, hi + pad)
    ax.set_xticks(ticks, labels, rotation=90)
    ax.set_yticks(ticks, labels)
    ax.set_aspect("equal")
    ax.plot([lo, hi], [lo, hi], color="#b0b0b0", linewidth=0.9, zorder=1,
            label="EER line (FMR = FNMR)")
    ax.set_xlabel("FMR (%), normal-deviate scale")
    ax.set_ylabel("FNMR (%), normal-deviate scale")


@_styled
def det_figure(
    panels: Mapping[str, Sequence[Mapping]],
    *,
    title: str,
    name: str,
    baseline: Mapping | None = None,
) -> str:
    """DET curves: a panel each (e.g. per strength k), a curve each (e.g. per attack).

    Parameters
    ----------
    panels : mapping of str to sequence of mapping
        Panel title (e.g. "k = 15") to its curves, each a mapping with ``label`` (e.g.
        "median"), ``fmr`` and ``fnmr`` (arrays ordered by threshold, start point
        excluded), ``eer`` (float or None) and optionally ``style`` (line keywords such as
        :func:`attack_styles` gives; default: a viridis colour per curve of the panel).
    title : str
        Figure title (e.g. the method and mode).
    name : str
        Unique name of the figure within the page.
    baseline : mapping, optional
        The clear baseline's curve (same keys), drawn dashed in every panel.

    Returns
    -------
    str
        The ``<svg>`` element.
    """
    n = max(1, len(panels))
    figure = _new_figure(3.0 * n + 1.8, 3.7)
    axes = figure.subplots(1, n, squeeze=False)[0]
    handles, labels = {}, []
    for ax, (panel, curves) in zip(axes, panels.items(), strict=False):
        _det_axes(ax)
        ax.set_title(_text(panel))
        drawn = [*([("clear baseline", baseline, CLEAR_STYLE)] if baseline else []),
                 *((c["label"], c, {"color": colour, **c.get("style", {}),
                                    "marker": None, "linewidth": 1.6})
                   for c, colour in zip(curves, _colours(len(curves)), strict=True))]
        for label, curve, style in drawn:
            fmr = np.asarray(curve["fmr"], dtype=np.float64)
            fnmr = np.asarray(curve["fnmr"], dtype=np.float64)
            usable = ~(np.isnan(fmr) | np.isnan(fnmr))
            fmr, fnmr = fmr[usable], fnmr[usable]
            if fmr.size == 0:
                continue
            keep = thin_curve(fmr, fnmr)
            # The implicit start point (threshold -inf: FMR 0, FNMR 1) begins every curve.
            x = probit(np.concatenate([[0.0], fmr[keep]]))
            y = probit(np.concatenate([[1.0], fnmr[keep]]))
            (line,) = ax.plot(x, y, drawstyle="default", zorder=3, **style)
            if curve.get("eer") is not None:
                e = probit(curve["eer"])
                ax.plot([e], [e], marker="o", markersize=4.5, color=line.get_color(),
                        markeredgecolor="white", markeredgewidth=0.6, zorder=4)
            if label not in handles:
                handles[label] = line
                labels.append(label)
    diagonal = axes[0].get_lines()[0]
    legend_handles = [handles[label] for label in labels] + [diagonal]
    legend_labels = [_text(label) for label in labels] + ["EER line; dot = EER"]
    figure.legend(legend_handles, legend_labels, loc="outside right center",
                  frameon=False)
    figure.suptitle(_text(title), fontsize=11, fontweight="bold")
    return _to_svg(figure, name=name)


def _method_panels(rows: Sequence[Mapping]) -> tuple[list[str], list[str]]:
    """The methods drawn against k (one panel each), and those without a strength."""
    methods = list(dict.fromkeys(r["method"] for r in rows))
    with_k = [m for m in methods if any(r["k"] is not None for r in rows if r["method"] == m)]
    return with_k, [m for m in methods if m not in with_k]


def _attack_lines(ax, rows: Sequence[Mapping], metric: str, *, styles: Mapping[str, dict],
                  unreliable: str | None = None) -> None:
    """One line per attack against k (rows of one method and mode)."""
    for attack, style in styles.items():
        points = sorted((r for r in rows if r.get("attack", "detect") == attack
                         and r["k"] is not None and r.get(metric) is not None),
                        key=lambda r: r["k"])
        if not points:
            continue
        ks = [r["k"] for r in points]
        values = [100 * r[metric] for r in points]
        ax.plot(ks, values, markersize=4, linewidth=1.5, label=_text(attack), **style)
        if unreliable:
            # Hollow markers: too few acquired comparisons for the value to mean much.
            flagged = [(k, v) for k, v, r in zip(ks, values, points, strict=True)
                       if r.get(unreliable)]
            if flagged:
                fx, fy = zip(*flagged, strict=True)
                ax.plot(fx, fy, linestyle="none", marker=style["marker"], markersize=7,
                        markerfacecolor="white", markeredgecolor=style["color"], zorder=4)


def _attack_points(ax, rows: Sequence[Mapping], methods: Sequence[str], metric: str, *,
                   styles: Mapping[str, dict], unreliable: str | None = None) -> None:
    """Methods without a strength: a marker per attack above each method's name."""
    n = max(1, len(styles))
    for position, method in enumerate(methods):
        for i, (attack, style) in enumerate(styles.items()):
            found = [r for r in rows if r["method"] == method and r["k"] is None
                     and r.get("attack", "detect") == attack and r.get(metric) is not None]
            if not found:
                continue
            # Side by side, so equal values of different attacks stay visible.
            x = position + 0.5 * (i - (n - 1) / 2) / n
            hollow = bool(unreliable and found[0].get(unreliable))
            ax.plot([x], [100 * found[0][metric]], linestyle="none", marker=style["marker"],
                    markersize=6, color=style["color"], label=_text(attack),
                    markerfacecolor="white" if hollow else style["color"])
    ax.set_xticks(range(len(methods)), [_text(m) for m in methods])
    ax.set_xlim(-0.6, len(methods) - 0.4)


def _metric_row(axes, rows: Sequence[Mapping], metric: str, *, with_k: Sequence[str],
                without_k: Sequence[str], styles: Mapping[str, dict],
                baseline: float | None, unreliable: str | None = None) -> None:
    for ax, method in zip(axes, with_k, strict=False):
        method_rows = [r for r in rows if r["method"] == method]
        _attack_lines(ax, method_rows, metric, styles=styles, unreliable=unreliable)
        ks = {r["k"] for r in method_rows if r["k"] is not None}
        if len(ks) == 1:  # one strength: one tick, not a range around it
            ax.set_xticks(sorted(ks))
    if without_k:
        _attack_points(axes[len(with_k)], rows, without_k, metric, styles=styles,
                       unreliable=unreliable)
    for ax in axes:
        if baseline is not None:
            ax.axhline(100 * baseline, label="clear baseline", **CLEAR_STYLE)
        ax.set_ylim(-2, 102)


def _column_titles(axes, with_k: Sequence[str], without_k: Sequence[str]) -> None:
    for ax, method in zip(axes, with_k, strict=False):
        ax.set_title(_text(method))
        ax.set_xlabel("strength k")
    if without_k:
        axes[len(with_k)].set_title("no strength")


def _dedupe_legend(figure: Figure, axes, styles: Mapping[str, dict]) -> None:
    seen: dict[str, object] = {}
    for ax in axes:
        for handle, label in zip(*ax.get_legend_handles_labels(), strict=True):
            seen.setdefault(label, handle)
    # The attacks in the page's order, then the baseline.
    order = {_text(attack): i for i, attack in enumerate(styles)}
    labels = sorted(seen, key=lambda label: order.get(label, len(order)))
    if labels:
        figure.legend([seen[label] for label in labels], labels, loc="outside right center",
                      frameon=False, title="attack")


@_styled
def eer_vs_k_figure(rows: Sequence[Mapping], *, mode: str, styles: Mapping[str, dict],
                    name: str, baseline: Mapping | None = None) -> str:
    """EER and generalized EER against k in one mode: a column per method, a line per attack.

    Parameters
    ----------
    rows : sequence of mapping
        Leaderboard rows of ONE mode with ``method``, ``k``, ``attack``, ``eer``,
        ``geer`` and ``eer_unreliable``. Methods without a strength share one last
        column, a marker per attack above each name.
    mode : str
        The mode, for the title.
    styles : mapping
        :func:`attack_styles` of the page's attacks.
    name : str
        Unique name of the figure within the page.
    baseline : mapping, optional
        The clear row, drawn as a dashed line.

    Returns
    -------
    str
        The ``<svg>`` element.
    """
    with_k, without_k = _method_panels(rows)
    n = max(1, len(with_k) + bool(without_k))
    figure = _new_figure(2.4 * n + 1.6, 4.9)
    axes = figure.subplots(2, n, squeeze=False, sharey=True)
    _metric_row(axes[0], rows, "eer", with_k=with_k, without_k=without_k, styles=styles,
                baseline=baseline and baseline.get("eer"), unreliable="eer_unreliable")
    _metric_row(axes[1], rows, "geer", with_k=with_k, without_k=without_k, styles=styles,
                baseline=baseline and baseline.get("geer"))
    _column_titles(axes[0], with_k, without_k)
    for ax in axes[1][:len(with_k)]:
        ax.set_xlabel("strength k")
    for ax in axes[0]:
        ax.set_xlabel("")
    axes[0][0].set_ylabel("EER over acquired (%)")
    axes[1][0].set_ylabel("generalized EER (%)")
    _dedupe_legend(figure, axes.ravel(), styles)
    figure.suptitle(f"EER against strength k, {_text(mode)} mode (hollow: under the "
                    "reliability minimum)", fontsize=10, fontweight="bold")
    return _to_svg(figure, name=name)


@_styled
def fta_vs_k_figure(rows: Sequence[Mapping], *, styles: Mapping[str, dict], name: str,
                    baseline: Mapping | None = None) -> str:
    """Failure to acquire against k: a panel per method, a line per attack.

    Parameters
    ----------
    rows : sequence of mapping
        Leaderboard rows (``method``, ``k``, ``attack``, ``fta``) of ONE mode whose
        probes are anonymized (naive, else parrot), so FTA is the share of anonymized
        faces the attacker cannot find.
    styles : mapping
        :func:`attack_styles` of the page's attacks.
    name : str
        Unique name of the figure within the page.
    baseline : mapping, optional
        The clear row.

    Returns
    -------
    str
        The ``<svg>`` element.
    """
    with_k, without_k = _method_panels(rows)
    n = max(1, len(with_k) + bool(without_k))
    figure = _new_figure(2.4 * n + 1.6, 2.9)
    axes = figure.subplots(1, n, squeeze=False, sharey=True)[0]
    _metric_row(axes, rows, "fta", with_k=with_k, without_k=without_k, styles=styles,
                baseline=baseline and baseline.get("fta"))
    _column_titles(axes, with_k, without_k)
    axes[0].set_ylabel("failure to acquire (% of probes)")
    _dedupe_legend(figure, axes, styles)
    figure.suptitle("FTA against strength k: anonymized faces the attacker cannot find",
                    fontsize=10, fontweight="bold")
    return _to_svg(figure, name=name)
