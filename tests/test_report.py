"""The HTML report on a small synthetic database (no faces needed).

The database is written through ``ResultsDB``'s public API with synthetic distances, so
these tests check the report (rows, escaping, unfinished runs, the comparison, atomic
output), not the metrics, which ``tests/test_metrics.py`` checks.
"""

from __future__ import annotations

import html
import re
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from faceanon.report import MARKER, ReportError, compare_runs, render_report, site
from faceanon.store import ResultsDB

N = 12  # identities: one gallery and one probe image each
EVIL = "<script>alert(1)</script>"

#: (method, k, mode, attack, separation of mated scores, share of probes without a face)
CASES = [
    (None, None, "clear", "detect", 0.40, 0.0),
    ("blur", 15, "naive", "detect", 0.30, 0.0),
    ("blur", 15, "naive", "deblur", 0.35, 0.0),
    ("blur", 90, "naive", "detect", 0.05, 0.5),
    ("blur", 90, "naive", "deblur", 0.15, 0.0),
    ("blur", 90, "reverse", "detect", 0.02, 0.0),
    ("pixelate", 10, "naive", "detect", 0.10, 0.25),
    ("pixelate", 10, "naive", "located", 0.06, 0.0),
    ("blackout", None, "naive", "detect", 0.0, 1.0),
    ("blackout", None, "naive", "located", 0.0, 0.0),
    ("mask", None, "naive", "detect", 0.0, 1.0),
]


def add_run(db: ResultsDB, *, name: str | None = "synthetic", status: str | None = "complete",
            shift: float = 0.0, seed: int = 0, cases=CASES, threshold: float = 0.6,
            identities: int = N, distances: dict | None = None) -> int:
    """A run of synthetic cases; ``shift`` moves every mated distance (a regression test).

    ``identities`` is what the run's config says (the protocol); the scores always have N.
    ``distances``, when given, receives ``case_id -> (N, N) probe x gallery distances``
    (NaN: no face), for tests that recompute a metric on their own.
    """
    rng = np.random.default_rng(seed)
    run = db.start_run(name=name, dataset_name="synthetic", dataset_fingerprint="f" * 64,
                       config={"identities": identities, "seed": 0},
                       git_commit="0123456789abcdef", git_dirty=False, packages={},
                       machine={}, threshold=threshold)
    probes = np.repeat([f"p{i:02d}/probe.jpg" for i in range(N)], N)
    gallery = np.tile([f"p{i:02d}/gallery.jpg" for i in range(N)], N)
    mated = np.repeat(np.arange(N), N) == np.tile(np.arange(N), N)
    for method, k, mode, attack, separation, failing in cases:
        case = db.add_case(run, method=method or "none", k=k, mode=mode, detector="hog",
                           backend="dlib-resnet", attack=attack)
        distance = rng.normal(0.75, 0.06, N * N) - (separation - shift) * mated
        failed = np.arange(N) < round(failing * N)
        distance[failed[np.repeat(np.arange(N), N)]] = np.nan
        db.add_scores(case, probe=probes, gallery=gallery, mated=mated, distance=distance)
        if distances is not None:
            distances[case] = distance.reshape(N, N)
        db.add_timings(case, [{"name": "anonymize", "mean": 0.002, "min": 0.001,
                               "median": 0.002, "stddev": 0.0, "rounds": N},
                              {"name": "recognize", "mean": 0.07, "min": 0.06,
                               "median": 0.07, "stddev": 0.0, "rounds": N}])
    if status is not None:
        db.finish_run(run, status)
    return run


@pytest.fixture()
def db_path(tmp_path) -> Path:
    path = tmp_path / "results.duckdb"
    with ResultsDB(path) as db:
        add_run(db, name="older", seed=1)
        add_run(db, name=EVIL, seed=2)
    return path


def leaderboard_rows(page: str) -> list[str]:
    table = page[page.index('id="leaderboard-table"'):]
    table = table[:table.index("</table>")]
    return re.findall(r'<tr[^>]* data-case="\d+">', table)


def leaderboard_groups(page: str) -> list[tuple[str, str, list[str]]]:
    """The leaderboard's (method, k) groups in page order: (name, head row, case rows)."""
    table = page[page.index('id="leaderboard-table"'):]
    table = table[:table.index("</table>")]
    out = []
    for name, body in re.findall(r'<tbody class="rows" data-group="([^"]+)">(.*?)</tbody>',
                                 table, re.S):
        rows = re.findall(r"<tr[^>]*>.*?</tr>", body, re.S)
        assert 'class="group-head"' in rows[0]
        out.append((html.unescape(name), rows[0], rows[1:]))
    return out


def test_report_shows_one_row_per_case_and_the_reference(db_path, tmp_path):
    index = render_report(db_path, tmp_path / "report", identities=0)
    page = index.read_text(encoding="utf-8")
    assert len(leaderboard_rows(page)) == len(CASES)
    reference = page[page.index('<tbody class="reference">'):]
    assert "clear" in reference[:reference.index("</tbody>")]
    # Every figure is inline SVG: nothing is fetched from anywhere.
    assert page.count("<svg") >= 1 + 2  # DET per method, EER vs k, FTA vs k
    assert not re.search(r'(src|href)="(https?:)?//', page)
    for section in ("leaderboard", "det", "eer-k", "confusion", "pictures", "reproduction",
                    "runs"):
        assert f'<section id="{section}">' in page
    # The seed study's figures sit beside ours, its dataset named.
    assert "FERET" in page and "72.3" in page


def test_malicious_run_name_is_escaped(db_path, tmp_path):
    page = render_report(db_path, tmp_path / "report", identities=0).read_text()
    assert EVIL not in page
    assert html.escape(EVIL) in page
    assert "<script>" in page and page.count("<script>") == 1  # only the sort script


def test_default_run_is_the_newest_complete_one(tmp_path):
    path = tmp_path / "results.duckdb"
    with ResultsDB(path) as db:
        done = add_run(db, name="done")
        add_run(db, name="still going", status=None)
    page = render_report(path, tmp_path / "report", identities=0).read_text()
    assert f'<b id="run-id">{done}</b>' in page
    assert 'id="run-banner"' not in page
    # The running run is listed, and marked as such.
    assert 'data-status="running"' in page


@pytest.mark.parametrize("status", ["running", "interrupted", "failed", "crashed"])
def test_unfinished_run_is_marked(tmp_path, status):
    path = tmp_path / "results.duckdb"
    with ResultsDB(path) as db:
        add_run(db, name="done")
        unfinished = add_run(db, name="partial",
                             status=status if status in ("interrupted", "failed") else None)
        if status == "crashed":  # its process is gone: readers show it crashed
            db.con.execute("UPDATE runs SET pid = 2147483000 WHERE id = ?", [unfinished])
    page = render_report(path, tmp_path / "report", run_ids=[unfinished],
                         identities=0).read_text()
    banner = page[page.index('id="run-banner"'):]
    assert f"is <b>{status}</b>" in banner[:400]
    assert "partial" in banner[:400]
    assert f'<span class="badge {status}">{status}</span>' in page


def test_a_generalized_eer_that_is_not_reached_says_so(db_path, tmp_path):
    page = render_report(db_path, tmp_path / "report", identities=0).read_text()
    table = page[page.index('id="leaderboard-table"'):]
    table = table[:table.index("</table>")]
    # blackout and mask, detect: no probe has a face, the generalized curves never cross;
    # mask's worst case too (no other attack), blackout's not (located found the faces)
    cells = re.findall(r'<td[^>]*data-geer-crossed="false"[^>]*>([^<]*)</td>', table)
    assert cells == ["not reached"] * 3
    assert "50.0" not in table.split('data-geer-crossed="false"')[1][:40]
    heads = {name: head for name, head, _ in leaderboard_groups(page)}
    assert re.search(r'data-worst="geer">[\d.]+<', heads["blackout"])
    assert 'data-geer-crossed="false"' in heads["mask"]
    assert 'class="geer-not-reached"' in page and "blackout detect" in page


def test_each_run_is_read_at_its_own_threshold(tmp_path):
    path = tmp_path / "results.duckdb"
    with ResultsDB(path) as db:
        loose = add_run(db, name="loose", seed=4, threshold=0.7)
        strict = add_run(db, name="strict", seed=4, threshold=0.5)
        fmr = {run: db.case_metrics(run_id=run)[0]["fmr"] for run in (loose, strict)}
    assert fmr[loose] > 0.1 > fmr[strict]   # same distances, each run at its own threshold
    for run, shown in ((loose, "0.700"), (strict, "0.500")):
        page = render_report(path, tmp_path / f"r{run}", run_ids=[run], identities=0).read_text()
        assert f"threshold {shown}" in page


def test_a_ksame_run_says_what_its_bound_guarantees(tmp_path):
    path = tmp_path / "results.duckdb"
    with ResultsDB(path) as db:
        add_run(db, cases=[*CASES, ("ksame", 3, "parrot", "detect", 0.1, 0.0)])
    page = render_report(path, tmp_path / "report", identities=0).read_text()
    note = page[page.index('id="ksame-note"'):]
    assert "does not apply" in note[:800] and "not a proof" in note[:800]

def test_comparison_highlights_a_regression(tmp_path):
    path = tmp_path / "results.duckdb"
    with ResultsDB(path) as db:
        before = add_run(db, name="before", seed=3)
        # Mated distances 0.2 lower: every anonymized case is recognized far better.
        after = add_run(db, name="after", seed=3, shift=-0.2)
    page = render_report(path, tmp_path / "report", run_ids=[before, after],
                         identities=0).read_text()
    assert '<section id="comparison">' in page
    table = page[page.index('id="comparison-table"'):]
    rows = re.findall(r'data-regression="(yes|no)"', table[:table.index("</table>")])
    assert len(rows) == len(CASES)
    assert "yes" in rows
    assert 'class="bad"' in table


def test_runs_of_different_protocols_are_compared_without_regressions(tmp_path):
    path = tmp_path / "results.duckdb"
    with ResultsDB(path) as db:
        smoke = add_run(db, name="smoke", seed=3, identities=20)
        paper = add_run(db, name="paper", seed=3, shift=-0.2, identities=60, threshold=0.5)
    page = render_report(path, tmp_path / "report", run_ids=[smoke, paper],
                         identities=0).read_text()
    top = page[page.index("<main>"):page.index('<section id="leaderboard">')]
    assert 'id="protocol-differences"' in top
    differences = re.findall(r"<tr><td class=\"text\">([^<]+)</td><td class=\"text\">([^<]+)"
                             r"</td><td class=\"text\">([^<]+)</td></tr>", top)
    assert differences == [("identities", "20", "60"), ("threshold", "0.6", "0.5")]
    table = page[page.index('id="comparison-table"'):]
    table = table[:table.index("</table>")]
    assert "yes" not in re.findall(r'data-regression="(yes|no)"', table)
    assert "Regressions are not flagged" in page


def test_protocol_differences_name_each_field():
    from faceanon.report import protocol_differences

    run = {"dataset_fingerprint": "f" * 64, "threshold": 0.6, "git_commit": "0123456789ab",
           "git_dirty": False, "packages": {"faceanon": "0.1.0"},
           "config": {"identities": 40, "seed": 0, "detector": "hog", "region": "face",
                      "backend": "dlib-resnet", "backend_options": {}}}
    assert protocol_differences(run, dict(run)) == []
    other = {**run, "dataset_fingerprint": "e" * 64, "git_dirty": True,
             "config": {**run["config"], "seed": 1, "detector": "cnn",
                        "backend": "dlib-resnet-torch"}}
    names = [d["name"] for d in protocol_differences(run, other)]
    assert names == ["dataset fingerprint", "seed", "detector", "backend", "code version"]
    (code,) = [d for d in protocol_differences(run, other) if d["name"] == "code version"]
    assert code["new"] == "faceanon 0.1.0 commit 0123456789+dirty"


def test_compare_runs_directions():
    def row(mode, **metrics):
        base = {"method": "blur", "k": 5, "mode": mode, "detector": "hog", "backend": "b",
                "eer": 0.2, "geer": 0.3, "rank1": 0.5, "anonymize_ms": 2.0,
                "recognize_ms": 70.0}
        return {**base, **metrics}

    # Anonymized: rank-1 up is a regression, rank-1 down is not.
    worse = compare_runs([row("naive")], [row("naive", rank1=0.6)])[0]
    better = compare_runs([row("naive")], [row("naive", rank1=0.4)])[0]
    assert worse["flags"] == {"rank1"} and not better["regression"]
    # Clear: the attacker getting weaker (rank-1 down, EER up) is the regression.
    weaker = compare_runs([row("clear")], [row("clear", rank1=0.4, eer=0.3)])[0]
    assert weaker["flags"] == {"rank1", "eer"}
    slower = compare_runs([row("naive")], [row("naive", anonymize_ms=4.0)])[0]
    assert slower["flags"] == {"anonymize_ms"}
    only = compare_runs([row("naive")], [row("parrot")])
    assert {r["status"] for r in only} == {"only base", "only new"}
    # A generalized EER that was not reached has no change, so it flags nothing.
    unreached = compare_runs([row("naive")], [row("naive", geer=None)])[0]
    assert unreached["d_geer"] is None and not unreached["regression"]
    assert compare_runs([row("naive")], [row("naive", geer=0.1)])[0]["flags"] == {"geer"}
    # Runs of different protocols: the changes are given, nothing is flagged.
    other = compare_runs([row("naive")], [row("naive", rank1=0.9)], protocols_match=False)[0]
    assert other["d_rank1"] == pytest.approx(0.4) and not other["regression"]


def test_output_is_replaced_whole_and_failures_leave_the_old_report(db_path, tmp_path,
                                                                    monkeypatch):
    out = tmp_path / "report"
    render_report(db_path, out, identities=0)
    assert (out / MARKER).is_file()
    (out / "stale.txt").write_text("from an older report")
    render_report(db_path, out, identities=0)
    assert not (out / "stale.txt").exists()  # replaced as a whole, not merged

    def broken(*args, **kwargs):
        raise RuntimeError("figure failed")

    monkeypatch.setattr(site, "make_figures", broken)
    before = (out / "index.html").read_bytes()
    with pytest.raises(RuntimeError):
        render_report(db_path, out, identities=0)
    assert (out / "index.html").read_bytes() == before
    # No temporary or backup folder is left beside it.
    assert sorted(p.name for p in tmp_path.iterdir()) == ["report", "results.duckdb"]


def test_refuses_to_replace_a_folder_that_is_not_a_report(db_path, tmp_path):
    out = tmp_path / "mine"
    out.mkdir()
    (out / "thesis.tex").write_text("precious")
    with pytest.raises(ReportError, match="not a faceanon report"):
        render_report(db_path, out, identities=0)
    assert (out / "thesis.tex").read_text() == "precious"


def test_command_line(db_path, tmp_path):
    from faceanon.cli import main

    out = tmp_path / "site"
    result = CliRunner().invoke(main, ["report", "--db", str(db_path), "-o", str(out),
                                       "--run", "1", "--identities", "0"])
    assert result.exit_code == 0, result.output
    assert (out / "index.html").is_file()
    result = CliRunner().invoke(main, ["report", "--db", str(db_path), "--output", str(out),
                                       "--run", "99"])
    assert result.exit_code == 1 and "Error: no run 99" in result.output
    assert "Traceback" not in result.output
    result = CliRunner().invoke(main, ["report", "--db", str(tmp_path / "none.duckdb"),
                                       "-o", str(out)])
    assert result.exit_code != 0 and "no results database" in result.output


def test_out_is_a_deprecated_alias_of_output(db_path, tmp_path):
    from faceanon.cli import main

    out = tmp_path / "old-spelling"
    result = CliRunner().invoke(main, ["report", "--db", str(db_path), "--out", str(out),
                                       "--identities", "0"])
    assert result.exit_code == 0, result.output
    assert "--out is deprecated; use -o/--output" in result.stderr
    assert (out / "index.html").is_file()


def test_pictures_without_the_dataset_say_so(db_path, tmp_path):
    page = render_report(db_path, tmp_path / "report", identities=3).read_text()
    notes = page[page.index('<section id="pictures">'):]
    assert "not on this machine" in notes[:3000]
