"""The vocabulary: modes, variants, cases and their labels, the seed rule, the threshold."""

from __future__ import annotations

import re
from importlib import resources

import numpy as np
import pytest

from faceanon.protocol import (
    DECISION_THRESHOLD,
    MODES,
    Case,
    CaseError,
    Mode,
    OnMiss,
    OnMissError,
    Variant,
    image_rng,
    set_rng,
)


def test_modes_say_which_side_is_anonymized():
    sides = {mode.value: (mode.gallery_anonymized, mode.probes_anonymized) for mode in Mode}
    assert sides == {"clear": (False, False), "naive": (False, True),
                     "reverse": (True, False), "parrot": (True, True)}
    assert MODES == ("clear", "naive", "reverse", "parrot")
    assert Mode.parse("naive") is Mode.NAIVE and Mode.NAIVE == "naive"


def test_the_schema_lists_the_same_modes():
    # schema.sql cannot import Python: its CHECK constraint is the one other list of the
    # modes, and this test keeps the two equal.
    schema = resources.files("faceanon").joinpath("schema.sql").read_text()
    check = re.search(r"mode\s+VARCHAR NOT NULL CHECK \(mode IN \(([^)]*)\)\)", schema)
    assert check, "cases.mode's CHECK constraint not found"
    assert tuple(v.strip(" '") for v in check.group(1).split(",")) == MODES


def test_a_new_database_uses_the_decision_threshold():
    from faceanon.store import ResultsDB

    with ResultsDB(":memory:") as db:
        run = db.start_run(name=None, dataset_name="toy", dataset_fingerprint="-", config={},
                           git_commit=None, git_dirty=None, packages={}, machine={})
        assert db.run(run)["threshold"] == DECISION_THRESHOLD
        assert DECISION_THRESHOLD in db.confusion_thresholds()


@pytest.mark.parametrize("case, label", [
    (Case.clear(), "clear"),
    (Case("blur", 15, "naive"), "blur-k15-naive"),
    (Case("blackout", None, Mode.PARROT), "blackout-parrot"),
    (Case("ksame", 3, "reverse"), "ksame-k3-reverse"),
])
def test_case_labels(case, label):
    assert case.label == label
    assert case.variant == (None if case.method is None else Variant(case.method, case.k))


def test_variant_labels():
    assert Variant("blur", 15).label == "blur-k15"
    assert Variant("mask").label == "mask"


def test_the_attack_is_appended_to_the_label_unless_it_is_the_default():
    assert Case("noise", 30, "naive", "median").label == "noise-k30-naive-median"
    assert Case("mask", None, "naive", "located").label == "mask-naive-located"
    assert Case("noise", 30, "naive").label == "noise-k30-naive"
    assert Case("noise", 30, "naive", "detect") == Case("noise", 30, "naive")
    assert Case("noise", 30, "naive", "median") != Case("noise", 30, "naive")
    # the variant is shared by every attack: it is anonymized once
    assert Case("noise", 30, "naive", "median").variant == Variant("noise", 30)


def test_the_clear_baseline_has_only_the_default_attack():
    assert Case.clear().attack == "detect"
    with pytest.raises(CaseError, match="attacks nothing"):
        Case(None, None, "clear", "median")
    with pytest.raises(CaseError, match="non-empty"):
        Case("noise", 30, "naive", "")


def test_bad_cases_are_refused():
    for args in [("blur", 5, "clear"), (None, None, "naive"), (None, 3, "clear"),
                 ("blur", 5, "sideways")]:
        with pytest.raises(CaseError):
            Case(*args)


def test_image_rng_is_the_benchmarks_rule():
    # Values drawn with the definition the benchmark used before it moved here: numbers
    # stored by earlier runs stay reproducible.
    assert image_rng(0, "noise", 30, "Aaron_Sorkin/Aaron_Sorkin_0001.jpg").integers(
        1 << 62) == 1709481023443814704
    assert image_rng(0, "blackout", None, "x.jpg").integers(1 << 62) == 4187320754018341807
    assert set_rng(7, "ksame", 3, ["a", "b"]).integers(1 << 62) == 2245440917796848942


def test_image_rng_depends_on_every_part():
    draws = [image_rng(0, "noise", 5, "a/b.jpg").random(),
             image_rng(1, "noise", 5, "a/b.jpg").random(),
             image_rng(0, "blur", 5, "a/b.jpg").random(),
             image_rng(0, "noise", 6, "a/b.jpg").random(),
             image_rng(0, "noise", 5, "a/c.jpg").random()]
    assert len(set(draws)) == 5
    assert image_rng(0, "noise", 5, "a/b.jpg").random() == draws[0]
    assert np.isfinite(draws).all()


def test_no_miss_policy_publishes_an_image_unchanged():
    assert {policy.value for policy in OnMiss} == {"whole", "skip", "fail"}
    assert OnMiss.parse("skip") is OnMiss.SKIP and OnMiss.parse(OnMiss.FAIL) is OnMiss.FAIL
    with pytest.raises(OnMissError, match="unknown on_miss 'publish'"):
        OnMiss.parse("publish")
