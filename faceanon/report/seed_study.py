"""The seed study's published figures, and ours beside them for the same settings.

The only constants of the report: facts from the paper (Heimes, "Ad-hoc and
Deep-Learning based Face Anonymization Experiments", 500 FERET images), labelled as the
study's wherever they are shown.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from faceanon.report.worst_case import DEFAULT_ATTACK, attack_of

__all__ = ["SEED_STUDY", "STUDY_THRESHOLD", "reproduction"]

#: The seed study's reported figures (Heimes, "Ad-hoc and Deep-Learning based Face
#: Anonymization Experiments", 500 FERET images). Constants on purpose: they are facts
#: from the paper, shown beside our own measurements for the same settings.
SEED_STUDY: tuple[dict, ...] = (
    {"setting": "noise, naive", "method": "noise", "mode": "naive", "ks": (30,),
     "metric": "eer", "study": 0.03, "source": "Fig. 11: EER about 3 %"},
    {"setting": "blur, naive", "method": "blur", "mode": "naive", "ks": (50,),
     "metric": "eer", "study": 0.10, "source": "Fig. 11: EER about 10 %"},
    {"setting": "blur, naive", "method": "blur", "mode": "naive", "ks": (90,),
     "metric": "eer", "study": 0.40, "source": "Fig. 11: EER about 40 %"},
    {"setting": "noise, reverse", "method": "noise", "mode": "reverse", "ks": (25, 35, 50),
     "metric": "eer", "study": 0.40, "source": "Fig. 13: EER around 40 %"},
    {"setting": "blur, reverse", "method": "blur", "mode": "reverse", "ks": (25, 35, 50, 90),
     "metric": "eer", "study": 0.40, "source": "Fig. 13: EER around 40 %"},
    {"setting": "DeepPrivacy, naive", "method": "deepprivacy", "mode": "naive", "ks": (None,),
     "metric": "eer", "study": 0.22, "source": "Fig. 10: EER around 22 %"},
    {"setting": "DeepPrivacy, naive, threshold 0.575", "method": "deepprivacy",
     "mode": "naive", "ks": (None,), "metric": "true_accept_575", "study": 0.72289160,
     "source": "Fig. 9: 72.3 % of mated attempts accepted"},
    {"setting": "DeepPrivacy, naive, threshold 0.575", "method": "deepprivacy",
     "mode": "naive", "ks": (None,), "metric": "false_accept_575", "study": 0.22253530,
     "source": "Fig. 9: 22.3 % of non-mated attempts accepted"},
)
STUDY_THRESHOLD = 0.575
METRIC_NAMES = {
    "eer": "EER",
    "true_accept_575": "true accepts",
    "false_accept_575": "false accepts",
}



def reproduction(rows: Sequence[Mapping], study_confusion: Mapping[int, Mapping]) -> list[dict]:
    """The seed study's figures beside ours for the same settings.

    Ours are the ``detect`` attack's (the recognizer's own detector, the study's
    attacker), whatever other attacks the run measured, so the comparison stays like
    for like.

    Parameters
    ----------
    rows : sequence of mapping
        :func:`leaderboard` rows of the shown run.
    study_confusion : mapping
        :func:`confusion_rows` at the study's threshold (0.575); may be empty.

    Returns
    -------
    list of dict
        One per :data:`SEED_STUDY` entry: its fields plus ``ours`` (a list of
        ``{'k', 'value', 'unreliable', 'n_mated_acquired'}``, empty when this run did
        not measure the setting).
    """
    out = []
    for entry in SEED_STUDY:
        ours = []
        for row in rows:
            if row["method"] != entry["method"] or row["mode"] != entry["mode"]:
                continue
            if attack_of(row) != DEFAULT_ATTACK:
                continue
            if row["k"] not in entry["ks"]:
                continue
            if entry["metric"] == "eer":
                value, unreliable = row["eer"], row["eer_unreliable"]
            else:
                matrix = study_confusion.get(row["case_id"], {}).get("acquired")
                rate = "true_accept" if entry["metric"].startswith("true") else "false_accept"
                value, unreliable = (matrix or {}).get(rate), row["eer_unreliable"]
            ours.append({"k": row["k"], "value": value, "unreliable": unreliable,
                         "n_mated_acquired": row["n_mated_acquired"]})
        out.append({**entry, "metric_name": METRIC_NAMES[entry["metric"]], "ours": ours})
    return out
