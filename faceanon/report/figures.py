"""The report's figures: DET curves, EER and FTA against k, a line per attack, as inline SVG.

Which figures a page has: a DET figure per (method, mode), with a panel per strength k
(at most :data:`MAX_DET_PANELS`, spread over the method's strengths) and a curve per
attack; an EER-against-k figure per anonymized mode and one FTA-against-k figure, with a
column per method and a line per attack. Every attack keeps one colour and line style
on the whole page (:func:`faceanon.report.plots.attack_styles`).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np

from faceanon.protocol import Mode
from faceanon.report.tables import mode_rank
from faceanon.report.worst_case import attack_of, attack_order

__all__ = ["ANONYMIZED_PROBE_MODES", "MAX_DET_PANELS", "det_ks", "make_figures"]

#: The modes whose probes are anonymized: their FTA is the anonymized faces' FTA.
ANONYMIZED_PROBE_MODES = tuple(m.value for m in Mode if m.probes_anonymized)
#: A DET figure shows at most this many strengths; the others are named in its caption
#: (their numbers are in the leaderboard), so a paper grid's eight strengths times six
#: attacks stay readable.
MAX_DET_PANELS = 4


def _mode_sort(modes) -> list[str]:
    return sorted(set(modes), key=mode_rank)


def det_ks(ks: Sequence, *, most: int = MAX_DET_PANELS) -> list:
    """The strengths a DET figure draws: all when few, else ``most`` spread evenly.

    Parameters
    ----------
    ks : sequence
        The method's strengths in this mode (None: a method without one).
    most : int
        At most this many.

    Returns
    -------
    list
        Sorted (None first); the weakest and strongest always among them.
    """
    ordered = sorted(set(ks), key=lambda k: (k is not None, k or 0))
    if len(ordered) <= most:
        return ordered
    picks = np.unique(np.round(np.linspace(0, len(ordered) - 1, most)).astype(int))
    return [ordered[i] for i in picks]


def _k_label(k) -> str:
    return "no k" if k is None else f"k = {k}"


def _det_figures(anonymized: Sequence[Mapping], curves: Mapping[int, Mapping],
                 styles: Mapping[str, dict], baseline: Mapping | None) -> list[dict]:
    from faceanon.report import plots  # matplotlib is imported only when drawing

    det = []
    for method in dict.fromkeys(r["method"] for r in anonymized):
        method_rows = [r for r in anonymized if r["method"] == method]
        for mode in _mode_sort(r["mode"] for r in method_rows):
            rows = [r for r in method_rows if r["mode"] == mode]
            all_ks = sorted({r["k"] for r in rows}, key=lambda k: (k is not None, k or 0))
            shown = det_ks(all_ks)
            panels = {}
            for k in shown:
                by_attack = {attack_of(r): r for r in rows if r["k"] == k}
                panels[_k_label(k)] = [
                    {"label": attack, "eer": by_attack[attack]["eer"], "style": style,
                     **curves.get(by_attack[attack]["case_id"], {"fmr": [], "fnmr": []})}
                    for attack, style in styles.items() if attack in by_attack]
            # A case whose anonymized faces were never found has no curve; say so rather
            # than let its absence pass for a curve hidden under another.
            missing = [f"{c['label']} ({panel})" for panel, items in panels.items()
                       for c in items
                       if not np.any(np.isfinite(np.asarray(c["fmr"], dtype=np.float64)))]
            index = len(det)
            det.append({
                "method": method, "mode": mode, "missing": missing,
                "omitted_ks": [k for k in all_ks if k not in shown],
                "svg": plots.det_figure(panels, title=f"{method} · {mode}",
                                        name=f"det{index}", baseline=baseline),
            })
    return det


def make_figures(rows: Sequence[Mapping], curves: Mapping[int, Mapping]) -> dict:
    """Every figure of the page as inline SVG.

    Parameters
    ----------
    rows : sequence of mapping
        :func:`faceanon.report.tables.leaderboard` rows of the shown run.
    curves : mapping
        ``case_id -> {'fmr', 'fnmr'}`` (:meth:`faceanon.store.ResultsDB.det_points`).

    Returns
    -------
    dict
        ``det``: list of ``{'method', 'mode', 'svg', 'missing', 'omitted_ks'}``
        (``missing``: the curves that could not be drawn, ``omitted_ks``: strengths left
        out of the figure); ``eer_vs_k``: list of ``{'mode', 'svg'}``; ``fta_vs_k``: SVG
        text or None when no mode anonymizes the probes; ``fta_mode``; ``attacks``: the
        run's attacks in the order of the legends.
    """
    from faceanon.report import plots  # matplotlib is imported only when drawing

    reference = next((r for r in rows if r["is_reference"]), None)
    anonymized = [r for r in rows if not r["is_reference"]]
    attacks = attack_order(anonymized)
    styles = plots.attack_styles(attacks)
    baseline_curve = None
    if reference is not None and reference["case_id"] in curves:
        baseline_curve = {**curves[reference["case_id"]], "eer": reference["eer"]}
    modes = _mode_sort(r["mode"] for r in anonymized)
    eer_vs_k = [{"mode": mode,
                 "svg": plots.eer_vs_k_figure([r for r in anonymized if r["mode"] == mode],
                                              mode=mode, styles=styles, name=f"eerk{i}",
                                              baseline=reference)}
                for i, mode in enumerate(modes)]
    fta_mode = next((m for m in ANONYMIZED_PROBE_MODES if m in modes), None)
    fta_vs_k = None
    if fta_mode is not None:
        fta_vs_k = plots.fta_vs_k_figure([r for r in anonymized if r["mode"] == fta_mode],
                                         styles=styles, name="ftak", baseline=reference)
    return {"det": _det_figures(anonymized, curves, styles, baseline_curve),
            "eer_vs_k": eer_vs_k, "fta_vs_k": fta_vs_k, "fta_mode": fta_mode,
            "attacks": attacks}
