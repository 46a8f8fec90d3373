"""The report's figures: DET curves per method, EER and FTA against k, as inline SVG."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np

from faceanon.protocol import Mode
from faceanon.report.tables import mode_rank

__all__ = ["ANONYMIZED_PROBE_MODES", "make_figures"]

#: The modes whose probes are anonymized: their FTA is the anonymized faces' FTA.
ANONYMIZED_PROBE_MODES = tuple(m.value for m in Mode if m.probes_anonymized)


def _mode_sort(modes) -> list[str]:
    return sorted(set(modes), key=mode_rank)


def make_figures(rows: Sequence[Mapping], curves: Mapping[int, Mapping]) -> dict:
    """Every figure of the page as inline SVG.

    Returns
    -------
    dict
        ``det``: list of ``{'method', 'svg', 'missing'}`` (labels of the cases without
        a curve); ``eer_vs_k`` and ``fta_vs_k``: SVG text
        or None when the run has no anonymized case.
    """
    from faceanon.report import plots  # matplotlib is imported only when drawing

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
