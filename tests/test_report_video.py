"""The video benchmark's storage, views and leaderboard section, on synthetic frame rows.

The rows are written through ``ResultsDB.write_video_case`` as the benchmark writes them
(:mod:`faceanon.benchmark.video`), so these tests check the views' arithmetic, the
migration, the section's content and (in Chromium, as tests/test_report_browser.py) that it
renders with its strip; the benchmark on the real clip runs in ``bench/test_video.py``.
"""

from __future__ import annotations

import io

import duckdb
import numpy as np
import pytest
from test_report import add_run

from faceanon.report import render_report
from faceanon.store import SCHEMA_VERSION, ResultsDB

PEOPLE = ["lin-manuel-miranda", "alex-lacamoire"]


def png(shade: int) -> bytes:
    from PIL import Image

    buffer = io.BytesIO()
    Image.fromarray(np.full((18, 32, 3), shade, np.uint8)).save(buffer, "PNG")
    return buffer.getvalue()


def frame(index, identified, *, coverage=(1.0,), distances=(0.4, None), boxes=1):
    return {"frame": index, "time": index / 30, "faces_found": len(identified) or 1,
            "identified": list(identified), "distances": list(distances),
            "anonymized_boxes": boxes, "reference_faces": len(coverage),
            "uncovered_faces": sum(c < 0.9 for c in coverage), "coverage": list(coverage)}


def video_case(db, run, method, k, attack, frames, *, fps=None, shade=0):
    return db.write_video_case(run, {
        "label": f"video-{method}-{attack}", "method": method, "k": k, "attack": attack,
        "clip": "clip.mp4", "clip_sha256": "c" * 64, "frames": len(frames),
        "frame_rate": 29.97, "people": PEOPLE, "threshold": 0.6,
        "reference_detector": "retinaface", "tracking": True,
        "anonymize_seconds": None if fps is None else len(frames) / fps,
        "anonymize_fps": fps, "strip_frame": 1, "strip_png": png(shade),
        "settings": {"detector": "hog"}}, frames)


def add_video_run(db, *, status="complete") -> tuple[int, dict]:
    """A video run: clear identifies Lin in frames 0-2 of 4; blur leaks him in frame 1 and
    frame 3 (where the clear clip did not), leaves a face bare in frame 3; blackout hides all."""
    run = db.start_run(name="video", dataset_name="video/clip.mp4",
                       dataset_fingerprint="c" * 64,
                       config={"kind": "video", "people": PEOPLE}, git_commit=None,
                       git_dirty=None, packages={}, machine={}, threshold=0.6)
    ids = {
        "clear": video_case(db, run, "clear", None, "detect", [
            frame(0, ["lin-manuel-miranda"], coverage=(0.0,), boxes=0),
            frame(1, ["lin-manuel-miranda"], coverage=(0.0,), boxes=0),
            frame(2, ["lin-manuel-miranda"], coverage=(0.0,), boxes=0),
            frame(3, [], coverage=(0.0,), boxes=0)], shade=200),
        "blur": video_case(db, run, "blur", 15, "detect", [
            frame(0, []), frame(1, ["lin-manuel-miranda"], distances=(0.55, 0.8)),
            frame(2, []), frame(3, ["lin-manuel-miranda"], coverage=(1.0, 0.3))],
            fps=12.5, shade=120),
        "blackout": video_case(db, run, "blackout", None, "located", [
            frame(i, [], distances=(0.9, 0.95)) for i in range(4)], fps=14.0, shade=10),
    }
    if status is not None:
        db.finish_run(run, status)
    return run, ids


def test_video_views_compute_leak_rates_and_uncovered_shares(tmp_path):
    with ResultsDB(tmp_path / "r.duckdb") as db:
        run, ids = add_video_run(db)
        cases = {r["case_id"]: r for r in db.video_case_metrics(run)}
        people = {(r["case_id"], r["person"]): r for r in db.video_person_metrics(run)}
    lin = people[(ids["blur"], "lin-manuel-miranda")]
    assert lin["leak_rate"] == 0.5 and lin["identified_anywhere"]
    # visible: frames 0-2 (the clear clip, same attack); blur leaks frame 1 of them
    assert lin["visible_frames"] == 3 and lin["leak_rate_visible"] == pytest.approx(1 / 3)
    assert lin["best_distance"] == 0.4
    alex = people[(ids["blur"], "alex-lacamoire")]
    assert alex["leak_rate"] == 0 and not alex["identified_anywhere"]
    assert alex["leak_rate_visible"] is None  # never identified on the clear clip
    # the located blackout has no clear case of its own attack: compared with clear detect
    blackout = people[(ids["blackout"], "lin-manuel-miranda")]
    assert blackout["visible_baseline"] == "detect" and blackout["visible_frames"] == 3
    assert blackout["leak_rate_visible"] == 0.0 and lin["visible_baseline"] == "detect"
    blur = cases[ids["blur"]]
    assert blur["uncovered_frame_share"] == 0.25 and blur["uncovered_face_share"] == 0.2
    assert blur["people_identified"] == ["lin-manuel-miranda"] and blur["anonymize_fps"] == 12.5
    assert cases[ids["clear"]]["uncovered_frame_share"] == 1.0
    assert cases[ids["blackout"]]["max_leak_rate"] == 0.0


def test_a_video_case_is_stored_whole_or_not_at_all(tmp_path):
    with ResultsDB(tmp_path / "r.duckdb") as db:
        run, _ = add_video_run(db, status=None)
        with pytest.raises(ValueError, match="frame 1: 1 distances for 2 people"):
            video_case(db, run, "noise", 50, "detect",
                       [frame(0, []), frame(1, [], distances=(0.5,))])
        with pytest.raises(ValueError, match="no frames"):
            video_case(db, run, "noise", 50, "detect", [])
        assert [r["method"] for r in db.video_case_metrics(run)] == [
            "clear", "blur", "blackout"]
        db.finish_run(run, "complete")
        db.delete_run(run)
        assert db.con.execute("SELECT count(*) FROM video_frames").fetchone()[0] == 0


def test_a_database_without_the_video_tables_is_upgraded(tmp_path):
    path = tmp_path / "old.duckdb"
    ResultsDB(path).close()
    con = duckdb.connect(str(path))
    con.execute("DROP TABLE video_frames")
    con.execute("DROP TABLE video_cases")
    con.execute(f"UPDATE schema_version SET version = {SCHEMA_VERSION - 1}")
    con.close()
    with ResultsDB(path) as db:
        run, ids = add_video_run(db)
        assert len(db.video_case_metrics(run)) == 3
        assert db.con.execute("SELECT version FROM schema_version").fetchone()[0] == (
            SCHEMA_VERSION)
    # the step is idempotent: run again over tables that exist, it changes nothing
    from faceanon import store

    con = duckdb.connect(str(path))
    store._MIGRATIONS[SCHEMA_VERSION - 1](con)
    assert con.execute("SELECT count(*) FROM video_cases").fetchone()[0] == 3
    con.close()


def test_report_has_a_video_section_beside_the_image_leaderboard(tmp_path):
    path = tmp_path / "r.duckdb"
    with ResultsDB(path) as db:
        image_run = add_run(db, name="images")
        video_run, ids = add_video_run(db)  # newer, but the leaderboard shows image runs
    page = render_report(path, tmp_path / "report", identities=0).read_text()
    assert f'<b id="run-id">{image_run}</b>' in page
    assert f'<b id="video-run-id">{video_run}</b>' in page
    section = page[page.index('<section id="video">'):]
    section = section[:section.index("</section>")]
    assert '<tr data-case="video-blur-detect">' in section
    blur = section[section.index('<tr data-case="video-blur-detect">'):]
    blur = blur[:blur.index("</tr>")]
    # Lin: leak 50.0 %, 33.3 % where visible, identified; Alex: 0, none visible, no
    assert ">50.0<" in blur and ">33.3<" in blur and ">12.5<" in blur
    assert [c.split(">")[1] for c in blur.split('class="text identified"')[1:]] == [
        "yes</td", "no</td"]
    for case_id in ids.values():
        assert (tmp_path / "report" / "img" / f"video-{case_id}.png").is_file()
    assert section.count("<img ") == 3


def test_report_of_video_runs_only_says_what_is_missing(tmp_path):
    from faceanon.report import ReportError

    path = tmp_path / "r.duckdb"
    with ResultsDB(path) as db:
        add_video_run(db)
    with pytest.raises(ReportError, match="holds only video runs.*pytest bench"):
        render_report(path, tmp_path / "report", identities=0)
    assert not (tmp_path / "report").exists()


def test_report_without_video_runs_has_no_video_section(tmp_path):
    path = tmp_path / "r.duckdb"
    with ResultsDB(path) as db:
        add_run(db)
    page = render_report(path, tmp_path / "report", identities=0).read_text()
    assert 'id="video"' not in page and 'href="#video"' not in page


@pytest.mark.slow
def test_video_section_in_chromium(tmp_path):
    from test_report_browser import _browser

    chromium, chromedriver = _browser()
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service
    from test_report_browser import CHROMIUM_FLAGS

    path = tmp_path / "r.duckdb"
    with ResultsDB(path) as db:
        add_run(db)
        add_video_run(db)
    index = render_report(path, tmp_path / "report", identities=0)
    options = webdriver.ChromeOptions()
    options.binary_location = chromium
    for flag in CHROMIUM_FLAGS:
        options.add_argument(flag)
    options.add_argument(f"--user-data-dir={tmp_path / 'profile'}")
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver = webdriver.Chrome(service=Service(executable_path=chromedriver), options=options)
    try:
        driver.get(index.as_uri())
        rows = driver.find_elements("css selector", "#video-table tbody tr")
        assert [r.get_attribute("data-case") for r in rows] == [
            "video-clear-detect", "video-blur-detect", "video-blackout-located"]
        images = driver.find_elements("css selector", "#video-strip img")
        assert len(images) == 3
        assert all(driver.execute_script("return arguments[0].naturalWidth", i) == 32
                   for i in images)
        assert driver.find_element("css selector", 'nav a[href="#video"]').is_displayed()
        severe = [e for e in driver.get_log("browser") if e["level"] == "SEVERE"]
        assert not severe, severe
    finally:
        driver.quit()
