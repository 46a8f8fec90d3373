"""The SQL metric views (faceanon/metrics.sql) against an independent numpy reference.

The reference below is written from the conventions documented at the top of metrics.sql,
by brute force (every threshold, every probe), without the SQL's shortcuts (bins, cumulative
counts, cross-multiplied comparisons). scikit-learn's ``det_curve`` is a second oracle for
the DET points.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sklearn.metrics import det_curve

from faceanon.store import ResultsDB

TOL = 1e-9


# -- numpy reference ---------------------------------------------------------------------


def _eer(thresholds, fa, fr):
    """First crossing of FMR >= FNMR, linear interpolation with the point before.

    thresholds[0] is -inf (the start point). Returns (eer, threshold, crossed); when the
    curves never cross there is no EER: (None, None, False).
    """
    crossing = np.flatnonzero(fa >= fr)
    if crossing.size == 0:
        return None, None, False
    i = int(crossing[0])
    assert i > 0, "the start point (FMR 0, FNMR 1) never crosses"
    d0, d1 = fr[i - 1] - fa[i - 1], fr[i] - fa[i]
    a = d0 / (d0 - d1)
    eer = fa[i - 1] + a * (fa[i] - fa[i - 1])
    assert abs(eer - (fr[i - 1] + a * (fr[i] - fr[i - 1]))) < 1e-12
    t0, t1 = thresholds[i - 1], thresholds[i]
    return eer, (t1 if math.isinf(t0) else t0 + a * (t1 - t0)), True


def reference(probe, gallery, mated, distance, *, threshold=0.6, probe_acquired=None,
              gallery_enrolled=None):
    """Every case_metrics column (and the DET points) by brute force."""
    probe = np.asarray(probe, dtype=object)
    gallery = np.asarray(gallery, dtype=object)
    mated = np.asarray(mated, dtype=bool)
    distance = np.asarray(distance, dtype=float)
    ok = ~np.isnan(distance)
    n_mated, n_nonmated = int(mated.sum()), int((~mated).sum())
    dm, dn = distance[mated & ok], distance[~mated & ok]
    out = {"n_mated": n_mated, "n_nonmated": n_nonmated, "n_acquired": int(ok.sum()),
           "n_mated_acquired": int((mated & ok).sum()),
           "n_nonmated_acquired": int((~mated & ok).sum())}

    def share_failed(names, flags):
        failed = []
        for name in dict.fromkeys(names):
            rows = names == name
            if flags is not None:
                got = bool(np.asarray(flags)[rows].any())
            else:
                got = bool(ok[rows].any())
            failed.append(not got)
        return (sum(failed) / len(failed)) if failed else None, len(failed)

    out["fta"], out["n_probes"] = share_failed(probe, probe_acquired)
    out["fte"], out["n_gallery"] = share_failed(gallery, gallery_enrolled)

    ts = np.concatenate([[-np.inf], np.unique(distance[ok])])
    matched_m = np.array([(dm <= t).sum() for t in ts])
    matched_n = np.array([(dn <= t).sum() for t in ts])
    out["threshold"] = threshold
    det = []
    both = dm.size > 0 and dn.size > 0
    if both:
        fa, fr = matched_n / dn.size, (dm.size - matched_m) / dm.size
        out["eer"], out["eer_threshold"], _ = _eer(ts, fa, fr)
        out["fnmr_at_fmr_1pct"] = fr[np.flatnonzero(fa <= 0.01).max()]
        out["fnmr_at_fmr_01pct"] = fr[np.flatnonzero(fa <= 0.001).max()]
    else:
        out.update(eer=None, eer_threshold=None, fnmr_at_fmr_1pct=None,
                   fnmr_at_fmr_01pct=None)
    # each rate at the decision threshold only needs its own class
    out["fmr"] = float((dn <= threshold).mean()) if dn.size else None
    out["fnmr"] = float((dm > threshold).mean()) if dm.size else None
    # ISO/IEC 19795-1 generalized rates; with FTA = 1 or FTE = 1 their limits 0 and 1
    fta, fte = out["fta"], out["fte"]
    if fta is None:
        out["gfar"] = out["gfrr"] = None
    elif fta == 1 or fte == 1:
        out["gfar"], out["gfrr"] = 0.0, 1.0
    else:
        out["gfar"] = None if out["fmr"] is None else out["fmr"] * (1 - fta) * (1 - fte)
        out["gfrr"] = (None if out["fnmr"] is None
                       else fte + (1 - fte) * fta + (1 - fte) * (1 - fta) * out["fnmr"])
    if n_mated and n_nonmated:
        fa_all, fr_all = matched_n / n_nonmated, (n_mated - matched_m) / n_mated
        out["geer"], out["geer_threshold"], out["geer_crossed"] = _eer(ts, fa_all, fr_all)
        out["tar_at_fmr_1pct_all"] = 1 - fr_all[np.flatnonzero(fa_all <= 0.01).max()]
        out["fmr_all"] = float((dn <= threshold).sum() / n_nonmated)
        out["fnmr_all"] = float((n_mated - (dm <= threshold).sum()) / n_mated)
    else:
        out.update(geer=None, geer_threshold=None, geer_crossed=None,
                   tar_at_fmr_1pct_all=None)
        out["fmr_all"] = float((dn <= threshold).sum() / n_nonmated) if n_nonmated else None
        out["fnmr_all"] = (float((n_mated - (dm <= threshold).sum()) / n_mated)
                           if n_mated else None)
    for i, t in enumerate(ts[1:], start=1):
        det.append({
            "threshold": t,
            "fmr": matched_n[i] / dn.size if dn.size else None,
            "fnmr": (dm.size - matched_m[i]) / dm.size if dm.size else None,
            "fmr_all": matched_n[i] / n_nonmated if n_nonmated else None,
            "fnmr_all": (n_mated - matched_m[i]) / n_mated if n_mated else None,
        })
    # rank-1 over probes with a mated comparison; fractional credit on ties
    credits = []
    for name in dict.fromkeys(probe):
        rows = probe == name
        if not mated[rows].any():
            continue
        d = distance[rows & ok]
        if d.size == 0:
            credits.append(0.0)
            continue
        nearest = rows & ok & (distance == d.min())
        credits.append(float(mated[nearest].mean()))
    out["rank1"] = float(np.mean(credits)) if credits else None
    return out, det


# -- helpers -----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def db():
    with ResultsDB(":memory:") as results:
        yield results


def _run(db: ResultsDB, threshold: float = 0.6) -> int:
    return db.start_run(name="t", dataset_name="synthetic", dataset_fingerprint="-",
                        config={}, git_commit=None, git_dirty=None, packages={}, machine={},
                        threshold=threshold)


def measure(db, probe, gallery, mated, distance, *, threshold=0.6, probe_acquired=None,
            gallery_enrolled=None):
    """Store a score set as a new case; return its case_metrics row and det_curve rows."""
    case = db.add_case(_run(db, threshold), method="test", k=None, mode="naive",
                       detector="-", backend="-")
    if len(distance):
        db.add_scores(case, probe=list(probe), gallery=list(gallery),
                      mated=np.asarray(mated, dtype=bool),
                      distance=np.asarray(distance, dtype=float),
                      probe_acquired=probe_acquired, gallery_enrolled=gallery_enrolled)
    cur = db.con.execute("SELECT * FROM case_metrics WHERE case_id = ?", [case])
    names = [d[0] for d in cur.description]
    rows = cur.fetchall()
    assert len(rows) == 1
    det = db.con.execute("SELECT threshold, fmr, fnmr, fmr_all, fnmr_all FROM det_curve "
                         "WHERE case_id = ? ORDER BY threshold", [case]).fetchall()
    det = [dict(zip(("threshold", "fmr", "fnmr", "fmr_all", "fnmr_all"), r, strict=True))
           for r in det]
    return case, dict(zip(names, rows[0], strict=True)), det


def assert_close(actual, expected, where=""):
    for key, want in expected.items():
        got = actual[key]
        if want is None or got is None:
            assert got is None and want is None, f"{where}{key}: got {got!r}, want {want!r}"
        elif isinstance(want, bool | np.bool_):
            assert got == want, f"{where}{key}: got {got!r}, want {want!r}"
        else:
            assert got == pytest.approx(float(want), abs=TOL, rel=0), \
                f"{where}{key}: got {got!r}, want {want!r}"


def check(db, probe, gallery, mated, distance, **options):
    case, row, det = measure(db, probe, gallery, mated, distance, **options)
    want, want_det = reference(probe, gallery, mated, distance, **options)
    assert_close(row, want)
    assert len(det) == len(want_det)
    for got, expected in zip(det, want_det, strict=True):
        assert_close(got, expected, where=f"det {expected['threshold']}: ")
    _check_sklearn(det, mated, distance)
    return case, row, det


def _check_sklearn(det, mated, distance):
    mated = np.asarray(mated, dtype=bool)
    distance = np.asarray(distance, dtype=float)
    ok = ~np.isnan(distance)
    if len(np.unique(mated[ok])) != 2:
        return
    fpr, fnr, thresholds = det_curve(mated[ok], -distance[ok])
    by_threshold = {row["threshold"]: row for row in det}
    # recent scikit-learn adds the start point at score +inf (distance -inf)
    by_threshold[-np.inf] = {"fmr": 0.0, "fnmr": 1.0}
    assert len(thresholds) > 0
    for f, n, s in zip(fpr, fnr, thresholds, strict=True):
        row = by_threshold[-s]
        assert row["fmr"] == pytest.approx(f, abs=TOL, rel=0)
        assert row["fnmr"] == pytest.approx(n, abs=TOL, rel=0)


def cross_product(n_probes, n_gallery):
    probe = [f"p{i}" for i in range(n_probes) for _ in range(n_gallery)]
    gallery = [f"g{j}" for _ in range(n_probes) for j in range(n_gallery)]
    mated = np.array([i % n_gallery == j for i in range(n_probes) for j in range(n_gallery)])
    return probe, gallery, mated


# -- random score sets -------------------------------------------------------------------


def test_random_scores_match_reference(db):
    rng = np.random.default_rng(7)
    for n_probes, n_gallery, fail in [(40, 20, 0.0), (60, 30, 0.3), (30, 30, 0.9)]:
        probe, gallery, mated = cross_product(n_probes, n_gallery)
        distance = rng.normal(0.7, 0.1, len(probe)) - 0.2 * mated
        failed = np.repeat(rng.random(n_probes) < fail, n_gallery)
        distance[failed] = np.nan
        check(db, probe, gallery, mated, distance)


def test_large_case_crosses_many_bins(db):
    """Enough distinct distances that the binned search in case_metrics really bins."""
    rng = np.random.default_rng(11)
    probe, gallery, mated = cross_product(150, 100)
    distance = np.round(rng.normal(0.7, 0.15, len(probe)) - 0.25 * mated, 4)
    distance[rng.random(len(probe)) < 0.05] = np.nan
    check(db, probe, gallery, mated, distance, threshold=0.575)


_comparison = st.tuples(
    st.integers(0, 5),                       # probe
    st.integers(0, 4),                       # gallery
    st.booleans(),                           # mated
    st.one_of(st.none(), st.integers(0, 6).map(lambda i: i / 4)),   # ties: few values
)


@settings(max_examples=150, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(rows=st.lists(_comparison, min_size=1, max_size=40),
       threshold=st.sampled_from([0.0, 0.5, 0.6, 1.25]))
def test_property_tied_scores(db, rows, threshold):
    probe = [f"p{r[0]}" for r in rows]
    gallery = [f"g{r[1]}" for r in rows]
    mated = np.array([r[2] for r in rows])
    distance = np.array([np.nan if r[3] is None else r[3] for r in rows])
    check(db, probe, gallery, mated, distance, threshold=threshold)


@settings(max_examples=60, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(n_probes=st.integers(1, 12), n_gallery=st.integers(1, 8),
       seed=st.integers(0, 2**32 - 1), fail=st.sampled_from([0.0, 0.5, 0.95]))
def test_property_float_scores(db, n_probes, n_gallery, seed, fail):
    rng = np.random.default_rng(seed)
    probe, gallery, mated = cross_product(n_probes, n_gallery)
    distance = rng.random(len(probe)) * 1.2 - 0.3 * mated
    acquired = rng.random(n_probes) >= fail
    distance[~np.repeat(acquired, n_gallery)] = np.nan
    check(db, probe, gallery, mated, distance,
          probe_acquired=np.repeat(acquired, n_gallery))


# -- edge cases --------------------------------------------------------------------------


def test_all_ties(db):
    probe, gallery, mated = cross_product(6, 3)
    _, row, det = check(db, probe, gallery, mated, np.full(len(probe), 0.5))
    assert row["eer"] == pytest.approx(0.5)
    assert row["eer_threshold"] == 0.5
    assert row["rank1"] == pytest.approx(1 / 3)        # chance level, not 100 %
    assert len(det) == 1


def test_perfect_separation(db):
    probe, gallery, mated = cross_product(10, 10)
    distance = np.where(mated, 0.2, 0.8)
    _, row, _ = check(db, probe, gallery, mated, distance)
    assert row["eer"] == 0.0
    assert row["eer_threshold"] == 0.2
    assert row["rank1"] == 1.0
    assert row["fnmr_at_fmr_1pct"] == 0.0
    assert row["tar_at_fmr_1pct_all"] == 1.0
    assert row["geer"] == 0.0 and row["geer_crossed"] is True


def test_perfectly_wrong(db):
    probe, gallery, mated = cross_product(10, 10)
    distance = np.where(mated, 0.8, 0.2)
    _, row, _ = check(db, probe, gallery, mated, distance)
    assert row["eer"] == 1.0
    assert row["rank1"] == 0.0


def test_all_distances_null(db):
    probe, gallery, mated = cross_product(5, 5)
    _, row, det = check(db, probe, gallery, mated, np.full(len(probe), np.nan))
    assert row["n_acquired"] == 0
    assert row["eer"] is None and row["fmr"] is None
    assert row["fta"] == 1.0 and row["fte"] == 1.0
    assert row["geer"] is None and row["geer_crossed"] is False     # never reached
    assert row["geer_threshold"] is None
    assert row["gfar"] == 0.0 and row["gfrr"] == 1.0
    assert row["rank1"] == 0.0 and row["tar_at_fmr_1pct_all"] == 0.0
    assert det == []


def test_fta_and_fte_told_apart(db):
    probe, gallery, mated = cross_product(4, 4)
    distance = np.full(len(probe), 0.3)
    gallery_ok = np.array([g != "g3" for g in gallery])
    probe_ok = np.array([p != "p0" for p in probe])
    distance[~(gallery_ok & probe_ok)] = np.nan
    _, row, _ = check(db, probe, gallery, mated, distance, probe_acquired=probe_ok,
                      gallery_enrolled=gallery_ok)
    assert row["fta"] == 0.25 and row["fte"] == 0.25


def test_no_mated(db):
    probe = ["p0", "p0", "p1"]
    gallery = ["g0", "g1", "g0"]
    _, row, _ = check(db, probe, gallery, [False, False, False], [0.1, 0.5, np.nan])
    assert row["eer"] is None and row["geer"] is None and row["rank1"] is None
    assert row["n_mated"] == 0 and row["n_nonmated"] == 3


def test_no_nonmated(db):
    _, row, _ = check(db, ["p0", "p1", "p2"], ["g0", "g1", "g2"], [True, True, True],
                      [0.1, 0.7, np.nan])
    assert row["eer"] is None and row["geer"] is None
    assert row["rank1"] == pytest.approx(2 / 3)
    assert row["fnmr_all"] == pytest.approx(2 / 3)


@pytest.mark.parametrize("mated", [True, False])
@pytest.mark.parametrize("distance", [0.3, np.nan])
def test_single_comparison(db, mated, distance):
    _, row, det = check(db, ["p"], ["g"], [mated], [distance])
    assert row["eer"] is None
    assert len(det) == (0 if np.isnan(distance) else 1)


def test_case_without_scores(db):
    _, row, det = measure(db, [], [], [], [])
    assert row["n_mated"] == row["n_nonmated"] == row["n_acquired"] == 0
    assert row["eer"] is None and row["fta"] is None
    assert det == []


def test_strong_anonymization_curves_never_cross(db):
    """92 % of probes without a face: FNMR_all stays >= 0.92, FMR_all <= 0.08."""
    rng = np.random.default_rng(3)
    probe, gallery, mated = cross_product(100, 50)
    distance = rng.random(len(probe))
    failed = np.repeat(np.arange(100) >= 8, 50)
    distance[failed] = np.nan
    _, row, _ = check(db, probe, gallery, mated, distance)
    assert row["geer_crossed"] is False
    assert row["fta"] == pytest.approx(0.92)
    assert row["geer"] is None and row["geer_threshold"] is None   # not 0.5: not reached
    assert row["n_acquired"] == 400
    assert row["n_mated_acquired"] == 8 and row["n_nonmated_acquired"] == 392


def test_cases_do_not_interact(db):
    probe, gallery, mated = cross_product(8, 4)
    rng = np.random.default_rng(5)
    a = rng.random(len(probe))
    b = rng.random(len(probe)) - 0.5 * mated
    case_a, row_a, _ = measure(db, probe, gallery, mated, a)
    case_b, row_b, _ = measure(db, probe, gallery, mated, b)
    assert_close(row_a, reference(probe, gallery, mated, a)[0])
    assert_close(row_b, reference(probe, gallery, mated, b)[0])


def test_threshold_setting(db):
    probe, gallery, mated = cross_product(4, 4)
    distance = np.linspace(0.1, 1.0, len(probe))
    for threshold in (0.3, 0.6, 0.9):
        _, row, _ = check(db, probe, gallery, mated, distance, threshold=threshold)
        assert row["threshold"] == threshold


def test_confusion_matrix(db):
    probe, gallery, mated = cross_product(10, 5)
    rng = np.random.default_rng(9)
    distance = rng.random(len(probe))
    distance[:7] = np.nan
    case, _, _ = measure(db, probe, gallery, mated, distance, threshold=0.5)
    cur = db.con.execute("SELECT * FROM confusion WHERE case_id = ? ORDER BY threshold, scope",
                         [case])
    names = [d[0] for d in cur.description]
    rows = [dict(zip(names, r, strict=True)) for r in cur.fetchall()]
    assert {(r["threshold"], r["scope"]) for r in rows} == {
        (t, s) for t in (0.5, 0.575, 0.6) for s in ("acquired", "all")}
    ok = ~np.isnan(distance)
    for r in rows:
        t = r["threshold"]
        scope = ok if r["scope"] == "acquired" else np.ones_like(ok)
        match = ok & (np.nan_to_num(distance, nan=np.inf) <= t)
        counts = {
            "mated_as_mated": (scope & mated & match).sum(),
            "mated_as_nonmated": (scope & mated & ~match).sum(),
            "nonmated_as_mated": (scope & ~mated & match).sum(),
            "nonmated_as_nonmated": (scope & ~mated & ~match).sum(),
        }
        total = scope.sum()
        assert r["n_comparisons"] == total
        for key, count in counts.items():
            assert r[key] == count
            assert r[key + "_pct"] == pytest.approx(100 * count / total, abs=TOL)
        assert sum(r[k + "_pct"] for k in counts) == pytest.approx(100)


def test_confusion_thresholds_configurable(db):
    db.set_confusion_thresholds([0.5, 0.7, 0.7])
    try:
        assert db.confusion_thresholds() == [0.5, 0.7]
        case, _, _ = measure(db, ["p"], ["g"], [True], [0.6], threshold=0.6)
        got = db.con.execute("SELECT DISTINCT threshold FROM confusion WHERE case_id = ? "
                             "ORDER BY 1", [case]).fetchall()
        assert [g[0] for g in got] == [0.5, 0.6, 0.7]
    finally:
        db.set_confusion_thresholds([0.6, 0.575])


# -- values worked out by hand ---------------------------------------------------------------
#
# Each case below is small enough to work out on paper from the definitions of ISO/IEC
# 19795-1 (FMR, FNMR over acquired comparisons; FTA, FTE over images;
# GFAR = FMR (1 - FTA)(1 - FTE), GFRR = FTE + (1 - FTE) FTA + (1 - FTE)(1 - FTA) FNMR) and
# of the EER as documented in metrics.sql. The expected numbers are written out, not
# computed: the numpy reference above shares the SQL's reading of the formulas and could
# share its mistakes.


def _hand_case(db, comparisons, *, threshold=0.6, probe_ok=None, gallery_ok=None):
    """comparisons: (probe, gallery, distance or None); mated = same identity letter."""
    probe = [p for p, _, _ in comparisons]
    gallery = [g for _, g, _ in comparisons]
    mated = np.array([p[1] == g[1] for p, g, _ in comparisons])
    distance = np.array([np.nan if d is None else d for _, _, d in comparisons])
    acquired = None if probe_ok is None else np.array([probe_ok[p] for p in probe])
    enrolled = None if gallery_ok is None else np.array([gallery_ok[g] for g in gallery])
    _, row, _ = measure(db, probe, gallery, mated, distance, threshold=threshold,
                        probe_acquired=acquired, gallery_enrolled=enrolled)
    return row


def _expect(row, **values):
    for key, want in values.items():
        if want is None or isinstance(want, bool):
            assert row[key] is want, f"{key}: got {row[key]!r}, want {want!r}"
        else:
            assert row[key] == pytest.approx(want, abs=1e-12), \
                f"{key}: got {row[key]!r}, want {want!r}"


def test_by_hand_fta_1(db):
    """No probe has a face: FTA = 1, FTE = 0. Nothing is compared, so FMR and FNMR are
    undefined; GFAR = FMR * 0 * 1 = 0 and GFRR = 0 + 1 * 1 + 0 = 1."""
    row = _hand_case(db, [("pa", "ga", None), ("pa", "gb", None),
                          ("pb", "ga", None), ("pb", "gb", None)],
                     probe_ok={"pa": False, "pb": False}, gallery_ok={"ga": True, "gb": True})
    _expect(row, fta=1.0, fte=0.0, fmr=None, fnmr=None, gfar=0.0, gfrr=1.0,
            geer=None, geer_threshold=None, geer_crossed=False, rank1=0.0,
            n_mated_acquired=0, n_nonmated_acquired=0)


def test_by_hand_fte_1(db):
    """No gallery image enrolled: FTE = 1, FTA = 0: GFAR = 0, GFRR = 1 + 0 + 0 = 1."""
    row = _hand_case(db, [("pa", "ga", None), ("pa", "gb", None),
                          ("pb", "ga", None), ("pb", "gb", None)],
                     probe_ok={"pa": True, "pb": True}, gallery_ok={"ga": False, "gb": False})
    _expect(row, fta=0.0, fte=1.0, fmr=None, fnmr=None, gfar=0.0, gfrr=1.0,
            geer=None, geer_crossed=False)


def test_by_hand_fta_and_fte_half(db):
    """Four people a-d; probes pc, pd have no face (FTA = 2/4), gallery gc, gd did not
    enrol (FTE = 2/4). The acquired comparisons are pa, pb x ga, gb:
    mated pa-ga 0.3 (match at 0.6), pb-gb 0.7 (no match): FNMR = 1/2;
    non-mated pa-gb 0.5 (match), pb-ga 0.9 (no match): FMR = 1/2.
    GFAR = 1/2 * 1/2 * 1/2 = 1/8; GFRR = 1/2 + 1/2 * 1/2 + 1/2 * 1/2 * 1/2 = 7/8.
    All comparisons: 4 mated, 12 non-mated; FNMR_all >= 2/4 > 2/12 >= FMR_all at every
    threshold, so the generalized curves never cross: no GEER.
    rank-1: pa (0.3 < 0.5) and pb (0.7 < 0.9) hit, pc and pd miss: 2/4."""
    distances = {("pa", "ga"): 0.3, ("pb", "gb"): 0.7, ("pa", "gb"): 0.5, ("pb", "ga"): 0.9}
    comparisons = [(p, g, distances.get((p, g))) for p in ("pa", "pb", "pc", "pd")
                   for g in ("ga", "gb", "gc", "gd")]
    row = _hand_case(db, comparisons,
                     probe_ok={"pa": True, "pb": True, "pc": False, "pd": False},
                     gallery_ok={"ga": True, "gb": True, "gc": False, "gd": False})
    _expect(row, fta=0.5, fte=0.5, fmr=0.5, fnmr=0.5, gfar=1 / 8, gfrr=7 / 8,
            n_mated=4, n_nonmated=12, n_mated_acquired=2, n_nonmated_acquired=2,
            fmr_all=1 / 12, fnmr_all=3 / 4, geer=None, geer_threshold=None,
            geer_crossed=False, rank1=0.5)


# Two probes, three gallery images: mated pa-ga 0.1, pb-gb 0.5; non-mated pa-gb 0.3,
# pa-gc 0.7, pb-ga 0.9, pb-gc 0.95.
_TWO_BY_THREE = {("pa", "ga"): 0.1, ("pb", "gb"): 0.5, ("pa", "gb"): 0.3,
                 ("pa", "gc"): 0.7, ("pb", "ga"): 0.9, ("pb", "gc"): 0.95}


def test_by_hand_interpolated_eer(db):
    """Thresholds (FMR, FNMR): 0.1 (0, 1/2), 0.3 (1/4, 1/2), 0.5 (1/4, 0): FMR >= FNMR
    first at 0.5. FNMR - FMR goes 1/4 -> -1/4, so a = 1/2: EER = 1/4 + 1/2 * 0 = 1/4
    (= 1/2 + 1/2 * (0 - 1/2)), at 0.3 + 1/2 * (0.5 - 0.3) = 0.4.
    At 0.6: FMR = 1/4 (only 0.3), FNMR = 0; FTA = FTE = 0: GFAR = 1/4, GFRR = 0."""
    row = _hand_case(db, [(p, g, d) for (p, g), d in _TWO_BY_THREE.items()])
    _expect(row, eer=0.25, eer_threshold=0.4, fmr=0.25, fnmr=0.0, fta=0.0, fte=0.0,
            gfar=0.25, gfrr=0.0, geer=0.25, geer_threshold=0.4, geer_crossed=True,
            rank1=1.0, fnmr_at_fmr_1pct=0.5, tar_at_fmr_1pct_all=0.5)


def test_by_hand_failure_to_acquire_a_third(db):
    """The case above plus a probe pc without a face (mated with gc): FTA = 1/3, FTE = 0.
    FMR = 1/4 and FNMR = 0 as before (acquired comparisons only).
    GFAR = 1/4 * 2/3 = 1/6; GFRR = 0 + 1 * 1/3 + 1 * 2/3 * 0 = 1/3.
    All comparisons: 3 mated, 6 non-mated. (FMR_all, FNMR_all) at 0.1 (0, 2/3),
    0.3 (1/6, 2/3), 0.5 (1/6, 1/3), 0.7 (2/6, 1/3): they meet exactly at 0.7, GEER = 1/3
    (= GFAR = 2/4 * 2/3 = GFRR = 1/3 + 0 there). TAR at FMR_all <= 1 %: threshold 0.1,
    1 of 3 mated comparisons."""
    comparisons = [(p, g, d) for (p, g), d in _TWO_BY_THREE.items()]
    comparisons += [("pc", g, None) for g in ("ga", "gb", "gc")]
    row = _hand_case(db, comparisons, probe_ok={"pa": True, "pb": True, "pc": False})
    _expect(row, fta=1 / 3, fte=0.0, fmr=0.25, fnmr=0.0, gfar=1 / 6, gfrr=1 / 3,
            geer=1 / 3, geer_threshold=0.7, geer_crossed=True, tar_at_fmr_1pct_all=1 / 3,
            rank1=2 / 3, n_mated=3, n_nonmated=6, n_mated_acquired=2)


def test_by_hand_failure_to_enrol_a_third(db):
    """The 2 x 3 case with gc not enrolled: FTE = 1/3, FTA = 0. Acquired non-mated:
    pa-gb 0.3 (match at 0.6), pb-ga 0.9: FMR = 1/2; FNMR = 0.
    GFAR = 1/2 * 1 * 2/3 = 1/3; GFRR = 1/3 + 2/3 * 0 + 2/3 * 1 * 0 = 1/3."""
    comparisons = [(p, g, None if g == "gc" else d) for (p, g), d in _TWO_BY_THREE.items()]
    row = _hand_case(db, comparisons, gallery_ok={"ga": True, "gb": True, "gc": False})
    _expect(row, fta=0.0, fte=1 / 3, fmr=0.5, fnmr=0.0, gfar=1 / 3, gfrr=1 / 3)


def test_runs_at_different_thresholds_share_a_database(db):
    """Each run is read at its own threshold, and a later run changes no earlier one.

    The 2 x 3 case at 0.6: FMR = 1/4 (0.3), FNMR = 0; at 0.35: FMR = 1/4, FNMR = 1/2
    (0.5 > 0.35); at 0.05: FMR = 0, FNMR = 1."""
    comparisons = [(p, g, d) for (p, g), d in _TWO_BY_THREE.items()]
    first = _hand_case(db, comparisons, threshold=0.6)
    second = _hand_case(db, comparisons, threshold=0.35)
    third = _hand_case(db, comparisons, threshold=0.05)
    rows = {r["case_id"]: r for r in db.case_metrics()}
    _expect(rows[first["case_id"]], threshold=0.6, fmr=0.25, fnmr=0.0)
    _expect(rows[second["case_id"]], threshold=0.35, fmr=0.25, fnmr=0.5)
    _expect(rows[third["case_id"]], threshold=0.05, fmr=0.0, fnmr=1.0)
    # the confusion view: each case at its own run's threshold and the extra thresholds
    got = db.con.execute("SELECT case_id, threshold, mated_as_mated FROM confusion "
                         "WHERE scope = 'acquired' AND list_contains(?, case_id) "
                         "ORDER BY case_id, threshold",
                         [[first["case_id"], second["case_id"]]]).fetchall()
    assert got == [(first["case_id"], 0.575, 2), (first["case_id"], 0.6, 2),
                   (second["case_id"], 0.35, 1), (second["case_id"], 0.575, 2),
                   (second["case_id"], 0.6, 2)]
    # changing one run's threshold re-reads that run only
    (run_of_second,) = db.con.execute("SELECT run_id FROM cases WHERE id = ?",
                                      [second["case_id"]]).fetchone()
    db.set_run_threshold(run_of_second, 0.6)
    rows = {r["case_id"]: r for r in db.case_metrics()}
    _expect(rows[second["case_id"]], threshold=0.6, fnmr=0.0)
    _expect(rows[third["case_id"]], threshold=0.05, fnmr=1.0)
