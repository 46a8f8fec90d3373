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
    curves never cross: midpoint where |FMR - FNMR| is smallest.
    """
    crossing = np.flatnonzero(fa >= fr)
    if crossing.size == 0:
        i = int(np.argmin(np.abs(fa - fr)))
        t = thresholds[i]
        return (fa[i] + fr[i]) / 2, (None if math.isinf(t) else t), False
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
    out = {"n_mated": n_mated, "n_nonmated": n_nonmated, "n_acquired": int(ok.sum())}

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
    fta = out["fta"]
    out["gfar"] = None if out["fmr"] is None else out["fmr"] * (1 - fta)
    out["gfrr"] = None if out["fnmr"] is None else fta + out["fnmr"] * (1 - fta)
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


def _run(db: ResultsDB) -> int:
    return db.start_run(name="t", dataset_name="synthetic", dataset_fingerprint="-",
                        config={}, git_commit=None, git_dirty=None, packages={}, machine={})


def measure(db, probe, gallery, mated, distance, *, threshold=0.6, probe_acquired=None,
            gallery_enrolled=None):
    """Store a score set as a new case; return its case_metrics row and det_curve rows."""
    db.set_threshold(threshold)
    case = db.add_case(_run(db), method="test", k=None, mode="naive", detector="-",
                       backend="-")
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
    assert row["geer"] == 0.5 and row["geer_crossed"] is False
    assert row["geer_threshold"] is None
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
    assert row["geer"] > 0.45
    assert row["geer_threshold"] == pytest.approx(np.nanmax(distance))
    assert row["n_acquired"] == 400


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
    db.set_threshold(0.6)
    assert db.threshold == 0.6


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
