"""Worst-case privacy on the leaderboard: the strongest attack per (method, k).

The selection is checked against rank-1 recomputed with numpy from the synthetic
distances (an outside reference for what the database and the report compute), and the
tie, polarity and "not reached" rules on hand-made rows.
"""

from __future__ import annotations

import html
import itertools
import re

import numpy as np
import pytest
from test_report import CASES, N, add_run, leaderboard_groups

from faceanon.report import compare_runs, render_report, worst_case
from faceanon.report.figures import det_ks, make_figures
from faceanon.report.plots import attack_styles
from faceanon.report.seed_study import reproduction
from faceanon.report.tables import leaderboard
from faceanon.store import ResultsDB

_ids = itertools.count(1)


def row(method, k, mode, attack, rank1, *, tar=None, geer=None, crossed=True, gallery=10):
    return {"case_id": next(_ids), "method": method, "k": k, "mode": mode, "attack": attack,
            "rank1": rank1, "tar_at_fmr_1pct_all": tar, "geer": geer,
            "geer_crossed": crossed, "n_gallery": gallery, "is_reference": False}


def rank1_of(distances: np.ndarray) -> float:
    """Closed-set rank-1 over all probes: the nearest gallery image is the probe's own
    (probe i's mate is gallery i); a probe without a face (all NaN) is a miss."""
    finite = np.where(np.isnan(distances), np.inf, distances)
    found = np.isfinite(finite).any(axis=1)
    return float(np.mean(found & (np.argmin(finite, axis=1) == np.arange(len(finite)))))


@pytest.fixture(scope="module")
def synthetic(tmp_path_factory):
    path = tmp_path_factory.mktemp("worst") / "results.duckdb"
    distances: dict[int, np.ndarray] = {}
    with ResultsDB(path) as db:
        run = add_run(db, seed=7, distances=distances)
        rows = leaderboard(db, run)
    return path, rows, distances


def test_worst_case_is_the_strongest_attack_recomputed_from_the_scores(synthetic):
    _, rows, distances = synthetic
    expected: dict[tuple, list] = {}
    for r in rows:
        if r["mode"] == "clear":
            continue
        # the reference agrees with the database case by case ...
        assert r["rank1"] == pytest.approx(rank1_of(distances[r["case_id"]]), abs=1e-12)
        expected.setdefault((r["method"], r["k"]), []).append(
            (rank1_of(distances[r["case_id"]]), r["attack"], r["mode"]))
    worst = worst_case(rows)
    assert {(w["method"], w["k"]) for w in worst} == set(expected)
    for w in worst:
        cases = expected[(w["method"], w["k"])]
        top = max(value for value, _, _ in cases)
        # ... and the headline is the largest, achieved by the attack it names
        assert w["rank1"] == pytest.approx(top, abs=1e-12)
        assert {(b["attack"], b["mode"]) for b in w["rank1_by"]} == {
            (attack, mode) for value, attack, mode in cases if abs(value - top) < 1e-12}
        assert w["chance_rank1"] == pytest.approx(1 / N)
    # Ranked most private first.
    assert [w["rank1"] for w in worst] == sorted(w["rank1"] for w in worst)
    # The synthetic deblur separates blur k90's faces far better than detect, which
    # misses half of them: the worst case is deblur's, not the seed study's attacker's.
    (blur90,) = [w for w in worst if (w["method"], w["k"]) == ("blur", 90)]
    assert blur90["rank1_by"][0]["attack"] == "deblur"
    assert blur90["attacks"] == ["detect", "deblur"] and blur90["modes"] == ["naive", "reverse"]


def test_ties_list_every_attack_and_name_detect_first():
    rows = [row("noise", 30, "naive", "median", 0.5, tar=0.3),
            row("noise", 30, "reverse", "detect", 0.5, tar=0.2),
            row("noise", 30, "naive", "detect", 0.5, tar=0.3)]
    (w,) = worst_case(rows)
    # detect first (the seed study's attacker), then the run's order; within an attack
    # the order of the modes
    assert [(b["attack"], b["mode"]) for b in w["rank1_by"]] == [
        ("detect", "naive"), ("detect", "reverse"), ("median", "naive")]
    assert [(b["attack"], b["mode"]) for b in w["tar_by"]] == [
        ("detect", "naive"), ("median", "naive")]


def test_a_generalized_eer_not_reached_is_never_the_worst_case():
    rows = [row("blur", 50, "naive", "detect", 0.0, geer=None, crossed=False),
            row("blur", 50, "naive", "deblur", 0.3, geer=0.4),
            row("blur", 50, "parrot", "deblur", 0.2, geer=0.45),
            row("blackout", None, "naive", "detect", 0.0, geer=None, crossed=False),
            row("blackout", None, "naive", "located", 0.0, geer=None, crossed=False),
            # no mated comparison at all: undefined, which is not "not reached"
            row("empty", None, "naive", "detect", None, geer=None, crossed=None)]
    worst = {w["method"]: w for w in worst_case(rows)}
    # lower generalized EER = less privacy: the smallest REACHED one
    assert worst["blur"]["geer"] == 0.4 and not worst["blur"]["geer_not_reached"]
    assert worst["blur"]["geer_by"][0]["attack"] == "deblur"
    assert worst["blackout"]["geer"] is None and worst["blackout"]["geer_not_reached"]
    assert worst["empty"]["geer"] is None and not worst["empty"]["geer_not_reached"]
    # an undefined rank-1 ranks last, never as 0 (most private)
    assert [w["method"] for w in worst_case(rows)] == ["blackout", "blur", "empty"]


def test_ranking_breaks_rank1_ties_by_tar_then_keeps_the_run_order():
    rows = [row("a", 1, "naive", "detect", 0.1, tar=0.3),
            row("b", 1, "naive", "detect", 0.1, tar=0.2),
            row("c", 1, "naive", "detect", 0.1, tar=0.2),
            row("d", 1, "naive", "detect", 0.05, tar=0.9),
            row("e", 1, "naive", "detect", 0.1, tar=None)]
    assert [w["method"] for w in worst_case(rows)] == ["d", "b", "c", "a", "e"]


def test_leaderboard_groups_cases_under_their_worst_case(synthetic, tmp_path):
    path, rows, _ = synthetic
    page = render_report(path, tmp_path / "report", identities=0).read_text()
    groups = leaderboard_groups(page)
    worst = worst_case(rows)
    assert [name for name, _, _ in groups] == [
        w["method"] + ("" if w["k"] is None else f" k={w['k']}") for w in worst]
    for (_, head, cases), w in zip(groups, worst, strict=True):
        assert len(cases) == len(w["case_ids"])
        shown = re.search(r'data-worst="rank1"[^>]*>([\d.]+)<span class="by"[^>]*>([^<]+)<',
                          head)
        assert float(shown.group(1)) == pytest.approx(100 * w["rank1"], abs=0.05)
        by = w["rank1_by"]
        assert html.unescape(shown.group(2)).startswith(f"{by[0]['attack']} · {by[0]['mode']}")
        # the row(s) that achieved it are marked
        strongest = {int(c) for c in re.findall(r'class="case strongest" data-case="(\d+)"',
                                                "".join(cases))}
        assert strongest == {b["case_id"] for b in by}
    chance = page[page.index('id="chance-level"'):][:600]
    assert f"{100 / N:.1f} %" in chance and f"1 / {N} identities" in chance


def test_the_seed_study_reads_the_detect_attack_only(synthetic):
    _, rows, _ = synthetic
    (blur90,) = [e for e in reproduction(rows, {})
                 if e["setting"] == "blur, naive" and e["ks"] == (90,)]
    (detect,) = [r for r in rows if (r["method"], r["k"], r["mode"], r["attack"])
                 == ("blur", 90, "naive", "detect")]
    assert [o["value"] for o in blur90["ours"]] == [detect["eer"]]


def test_figures_draw_a_line_per_attack(synthetic):
    path, rows, _ = synthetic
    with ResultsDB(path, read_only=True) as db:
        curves = db.det_points(rows[0]["run_id"])
    figures = make_figures(rows, curves)
    assert figures["attacks"] == ["detect", "deblur", "located"]
    # one DET figure per (method, mode), the legend naming each attack measured there
    assert [(d["method"], d["mode"]) for d in figures["det"]] == [
        ("blur", "naive"), ("blur", "reverse"), ("pixelate", "naive"), ("blackout", "naive"),
        ("mask", "naive")]
    blur = figures["det"][0]["svg"]
    assert ">detect<" in blur and ">deblur<" in blur and ">located<" not in blur
    assert ">k = 15<" in blur and ">k = 90<" in blur
    # the located blackout faces are found, detect finds none: only its curve is missing
    assert figures["det"][3]["missing"] == ["detect (no k)"]
    (naive,) = [e for e in figures["eer_vs_k"] if e["mode"] == "naive"]
    for attack in ("detect", "deblur", "located"):
        assert f">{attack}<" in naive["svg"] and f">{attack}<" in figures["fta_vs_k"]


def test_attack_styles_keep_attacks_apart():
    names = [f"a{i}" for i in range(7)]
    styles = attack_styles(names)
    assert styles["a0"]["linestyle"] == "solid"
    assert len({(s["color"], str(s["linestyle"])) for s in styles.values()}) == 7
    assert len({str(s["linestyle"]) for s in styles.values()}) == 7


def test_det_ks_spread_from_weakest_to_strongest():
    assert det_ks([5, 10, 15, 20, 30, 35, 50, 90]) == [5, 15, 35, 90]
    assert det_ks([90, 15, 15]) == [15, 90]
    assert det_ks([None]) == [None]


def test_compare_runs_keeps_attacks_apart():
    def case(attack, rank1):
        return {"method": "noise", "k": 30, "mode": "naive", "attack": attack,
                "detector": "hog", "backend": "b", "eer": 0.2, "geer": 0.3, "rank1": rank1,
                "anonymize_ms": 1.0, "recognize_ms": 10.0}

    # A run from before the attack axis has no attack: it is the detect attack.
    old = {k: v for k, v in case("detect", 0.1).items() if k != "attack"}
    changes = compare_runs([old, case("median", 0.9)],
                           [case("detect", 0.1), case("median", 0.95)])
    assert [(c["attack"], c["status"]) for c in changes] == [("detect", "both"),
                                                             ("median", "both")]
    assert changes[0]["d_rank1"] == 0 and changes[1]["flags"] == {"rank1"}


def test_every_case_of_the_builder_is_on_the_page(synthetic, tmp_path):
    path, _, _ = synthetic
    page = render_report(path, tmp_path / "report", identities=0).read_text()
    named = re.findall(r'<td class="text attack" data-sort="([^"]+)"', page)
    assert sorted(named) == sorted(attack for _, _, _, attack, _, _ in CASES)


@pytest.mark.realdata
def test_pictures_show_what_each_restoration_attack_recovered(lfw, tmp_path):
    from faceanon.attacks import get_attack, largest_box
    from faceanon.datasets import protocol_split
    from faceanon.detect import anonymization_regions
    from faceanon.imageio import read_image
    from faceanon.methods import get_method
    from faceanon.protocol import image_rng
    from faceanon.report.pictures import _thumbnail, make_pictures

    split = protocol_split(lfw, identities=2, seed=0)
    probes = [s.key for s in split.probes]
    gallery = [s.key for s in split.gallery]
    path = tmp_path / "results.duckdb"
    with ResultsDB(path) as db:
        run_id = db.start_run(name="pictures", dataset_name="lfw",
                              dataset_fingerprint=lfw.fingerprint,
                              config={"dataset_root": str(lfw.root), "seed": 0,
                                      "detector": "hog", "region": "face"},
                              git_commit=None, git_dirty=None, packages={}, machine={},
                              threshold=0.6)
        for method, k, attack in [("pixelate", 10, "detect"), ("pixelate", 10, "unpixelate"),
                                  ("noise", 30, "located"), ("noise", 30, "median")]:
            case = db.add_case(run_id, method=method, k=k, mode="naive", detector="hog",
                               backend="dlib-resnet", attack=attack)
            db.add_scores(case, probe=np.repeat(probes, 2), gallery=np.tile(gallery, 2),
                          mated=np.repeat([0, 1], 2) == np.tile([0, 1], 2),
                          distance=np.full(4, 0.5))
        rows = leaderboard(db, run_id)
        pictures = make_pictures(db, db.run(run_id), rows, tmp_path / "img", identities=2)
    # located and detect encode the anonymized pixels as they are: nothing to show
    assert [(r["method"], r["k"], r["attack"]) for r in pictures.restorations] == [
        ("pixelate", 10, "unpixelate"), ("noise", 30, "median")]
    assert not pictures.notes
    row = pictures.rows[0]
    image = read_image(lfw.root / row["key"])
    regions = anonymization_regions(image, detector="hog", region="face")
    for r, restoration in enumerate(pictures.restorations):
        method, k = restoration["method"], restoration["k"]
        anonymized = get_method(method).anonymize(image, list(regions.boxes), k=k,
                                                  rng=image_rng(0, method, k, row["key"]))
        # the shown picture is the attack's restore() of the anonymized one, in the face box
        expected = get_attack(restoration["attack"]).restore(
            anonymized, region=largest_box(regions.boxes), method=method, k=k)
        _thumbnail(expected, tmp_path / "expected.jpg")
        shown = tmp_path / row["restored"][r]
        assert shown.read_bytes() == (tmp_path / "expected.jpg").read_bytes()
        assert shown.read_bytes() != (tmp_path / row["cells"][restoration["column"]]).read_bytes()
