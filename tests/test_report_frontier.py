"""The privacy-utility frontier: Pareto rules by hand, the page from a synthetic run, and
the page in Chromium (sorting the utility table)."""

from __future__ import annotations

import re

import pytest
import test_report_browser
from test_report import add_run

from faceanon.report import render_report
from faceanon.report.frontier import frontier_points, make_frontier, pareto_optimal
from faceanon.report.tables import leaderboard
from faceanon.report.worst_case import worst_case
from faceanon.store import UTILITY_COLUMNS, ResultsDB

#: The Chromium fixture of the report's browser test (skips, or fails in CI, without it).
browser = test_report_browser.browser


def point(method, k, rank1, **utility):
    return {"method": method, "k": k, "rank1": rank1,
            **{m: utility.get(m) for m in ("retention", "nme", "ssim")}}


def test_pareto_optimal_by_hand():
    points = [
        point("blur", 5, 0.9, retention=1.0, nme=0.02, ssim=0.95),     # useful, not private
        point("blur", 90, 0.3, retention=0.5, nme=0.10, ssim=0.80),
        point("pixelate", 10, 0.3, retention=0.4, nme=0.08, ssim=0.70),  # blur-90 beats it
        point("blackout", None, 0.05, retention=0.0, nme=None, ssim=0.60),
        point("mask", None, 0.5, retention=0.5, nme=0.10, ssim=0.80),   # blur-90, less private
        point("twin", None, 0.3, retention=0.5, nme=0.10, ssim=0.80),   # ties blur-90
        point("nothing", None, None, retention=1.0, nme=0.0, ssim=1.0),  # no rank-1: left out
    ]
    assert pareto_optimal(points, "retention") == [0, 1, 3, 5]
    # NME: lower is more utility; blackout has none and takes no part; pixelate's lower
    # error at blur-90's privacy now puts it on the frontier instead
    assert pareto_optimal(points, "nme") == [0, 2]
    assert pareto_optimal(points, "ssim") == [0, 1, 3, 5]


def test_points_join_worst_case_and_utility_per_method_and_k():
    worst = [{"method": "blur", "k": 90, "rank1": 0.2, "rank1_by": []},
             {"method": "blackout", "k": None, "rank1": 0.0, "rank1_by": []},
             {"method": "blur", "k": 15, "rank1": 0.8, "rank1_by": []}]
    utility = [{"method": "blur", "k": 15, "retention": 1.0, "nme": 0.03, "ssim": 0.9},
               {"method": "blur", "k": 90, "retention": 0.6, "nme": 0.1, "ssim": 0.7}]
    points = frontier_points(worst, utility)
    assert [(p["method"], p["k"], p["rank1"]) for p in points] == [("blur", 90, 0.2),
                                                                  ("blur", 15, 0.8)]
    assert all(p["pareto"] == {"retention", "nme", "ssim"} for p in points)
    assert make_frontier(worst, [], chance=0.1) is None


def _add_utility(db: ResultsDB, run: int) -> dict:
    """Utility rows for the synthetic run's variants: a blur that keeps more than a
    pixelate at equal faces, a blackout that keeps no face."""
    made = {("blur", 15): (12, 0.04, 0.93), ("blur", 90): (7, 0.09, 0.81),
            ("pixelate", 10): (4, 0.12, 0.74), ("blackout", None): (0, None, 0.52)}
    rows = []
    for (method, k), (retained, nme, ssim) in made.items():
        for i in range(12):
            rows.append({"method": method, "k": k, "key": f"{i}.jpg", "faces": 1,
                         "retained_hog": int(i < retained),
                         "landmarks_placed": int(i < retained),
                         "nme": nme if i < retained else None,
                         "nme_faces": int(i < retained and nme is not None),
                         "ssim": ssim, "psnr": 30.0, "ssim_face": ssim - 0.2,
                         "psnr_face": 20.0, "changed_outside": 0, "seconds": 0.02})
    assert set(rows[0]) == set(UTILITY_COLUMNS)
    db.write_case(run, method="blur", k=15, mode="parrot", detector="hog", backend="dlib",
                  scores={"probe": ["p"], "gallery": ["g"], "mated": [True],
                          "distance": [0.1]}, utility=rows)
    return made


@pytest.fixture(scope="module")
def frontier_report(tmp_path_factory):
    folder = tmp_path_factory.mktemp("frontier")
    with ResultsDB(folder / "results.duckdb") as db:
        run = add_run(db, seed=3)
        made = _add_utility(db, run)
        # what a detect:retinaface attack saw of blur 15: a face in 3 of the 4 images
        # whose original has one (e.jpg has none and is not counted)
        keys = ["a.jpg", "b.jpg", "c.jpg", "d.jpg", "e.jpg"]
        db.add_images(run, {"key": keys, "role": ["original"] * 5,
                            "acquired": [True] * 4 + [False]})
        db.add_images(run, {"key": keys, "role": ["anonymized"] * 5, "method": ["blur"] * 5,
                            "k": [15] * 5, "attack": ["detect:retinaface"] * 5,
                            "faces_found": [1, 1, 2, 0, 1]})
        worst = worst_case(leaderboard(db, run))
    page = render_report(folder / "results.duckdb", folder / "report", identities=0)
    return page, made, worst


def test_the_page_has_a_frontier_per_measure_and_a_row_per_variant(frontier_report):
    page, made, worst = frontier_report
    text = page.read_text()
    for measure in ("retention", "nme", "ssim"):
        assert re.search(rf'<figure[^>]*id="frontier-{measure}"[^>]*>\s*<svg', text), measure
    assert "Pareto-optimal" in text and "chance (" in text
    table = text[text.index('id="utility-table"'):]
    table = table[:table.index("</table>")]
    rows = re.findall(r'<tr data-method="([^"]+)" data-k="([^"]*)">', table)
    assert sorted(rows) == sorted((m, "" if k is None else str(k)) for m, k in made)
    # in the order of the worst case, most private first
    order = [(w["method"], "" if w["k"] is None else str(w["k"])) for w in worst
             if (w["method"], w["k"]) in made]
    assert rows == order
    cells = [re.findall(r'data-sort="([^"]*)"', row)
             for row in re.findall(r"<tr data-method=.*?</tr>", table, re.S)]
    retention = {row: float(values[3]) for row, values in zip(rows, cells, strict=True)}
    assert retention[("blur", "15")] == 1.0
    assert float(retention[("pixelate", "10")]) == pytest.approx(4 / 12)
    # the stronger detector's column, from the attack's own detections
    assert "retinaface finds" in table
    found = {row: values[13] for row, values in zip(rows, cells, strict=True)}
    assert float(found[("blur", "15")]) == pytest.approx(0.75)
    assert found[("pixelate", "10")] == ""  # no detector attack ran on it


def test_a_run_without_utility_says_so(tmp_path):
    with ResultsDB(tmp_path / "results.duckdb") as db:
        add_run(db, seed=3)
    text = render_report(tmp_path / "results.duckdb", tmp_path / "report",
                         identities=0).read_text()
    assert 'id="no-utility"' in text and 'id="utility-table"' not in text


@pytest.mark.slow
def test_the_utility_table_sorts_in_chromium(frontier_report, browser):
    page, made, _ = frontier_report
    browser.get(page.as_uri())
    assert len(browser.find_elements("css selector", "#frontier svg")) == 3
    for column in (3, 5):  # retention, NME
        header = browser.find_element("css selector",
                                      f'#utility-table th[data-col="{column}"] button')
        for reverse in (False, True):
            header.click()
            values = [float(v) for v in (
                row.find_elements("css selector", "td")[column].get_attribute("data-sort")
                for row in browser.find_elements("css selector", "#utility-table tbody tr"))
                if v]
            assert values == sorted(values, reverse=reverse) and len(values) >= 3
    severe = [e for e in browser.get_log("browser") if e["level"] == "SEVERE"]
    assert not severe, severe
