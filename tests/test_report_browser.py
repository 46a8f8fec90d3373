"""The report of a small REAL run, opened in headless Chromium.

A run on 8 LFW identities (clear, blur k=15 and k=90, pixelate k=10; naive mode) goes
through the real pipeline and database, the report is rendered from it, and Chromium
(Debian's ``chromium`` with its ``chromedriver``, driven by Selenium) opens it from disk:
no console errors, the expected leaderboard rows, sorting by a header click, every
thumbnail loaded. A full-page screenshot is saved (and copied to
``$FACEANON_SCREENSHOT_DIR`` when set). A synthetic run with several attacks per
(method, k) checks that sorting keeps each case under its worst case.

Without Chromium, chromedriver or Selenium the test is skipped with the reason, except
under ``FACEANON_REQUIRE_DATA=1`` or ``CI=true``, where it fails: CI never skips it.
"""

from __future__ import annotations

import base64
import os
import shutil
from pathlib import Path

import pytest

from faceanon.datasets import protocol_split
from faceanon.pipeline import Evaluation, Settings
from faceanon.protocol import DECISION_THRESHOLD, Case
from faceanon.report import render_report
from faceanon.store import ResultsDB

pytestmark = [pytest.mark.realdata, pytest.mark.slow]

IDENTITIES = 8
CASES = [(None, None, "clear"), ("blur", 15, "naive"), ("blur", 90, "naive"),
         ("pixelate", 10, "naive")]
# Everything that could reach the network or touch a profile is off: the page must stand
# alone, and the test must run on a machine with no internet.
CHROMIUM_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
                  "--no-first-run", "--disable-background-networking",
                  "--disable-component-update", "--disable-sync",
                  "--disable-dev-shm-usage", "--window-size=1440,1000",
                  "--hide-scrollbars", "--force-device-scale-factor=1"]


def _required() -> bool:
    return (os.environ.get("FACEANON_REQUIRE_DATA") == "1"
            or os.environ.get("CI", "").lower() == "true")


def _unavailable(reason: str):
    if _required():
        pytest.fail(f"the browser test must run here (CI / FACEANON_REQUIRE_DATA=1): {reason}")
    pytest.skip(reason)


def _browser() -> tuple[str, str]:
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    driver = shutil.which("chromedriver") or (
        "/usr/bin/chromedriver" if Path("/usr/bin/chromedriver").is_file() else None)
    if chromium is None:
        _unavailable("Chromium is not installed (apt-get install chromium chromium-driver)")
    if driver is None:
        _unavailable("chromedriver is not installed (apt-get install chromium-driver)")
    try:
        import selenium  # noqa: F401
    except ImportError:
        _unavailable("selenium is not installed (pip install -e '.[test]')")
    return chromium, driver


@pytest.fixture(scope="module")
def real_report(lfw, tmp_path_factory) -> Path:
    """Render the report of a small real run; returns its index.html."""
    folder = tmp_path_factory.mktemp("browser-report")
    split = protocol_split(lfw, identities=IDENTITIES, seed=0)
    settings = Settings()
    with ResultsDB(folder / "results.duckdb") as db:
        run = db.start_run(
            name="browser test <b>run</b>", dataset_name=lfw.name,
            dataset_fingerprint=lfw.fingerprint,
            config={"identities": IDENTITIES, **split.summary(), **settings.as_dict(),
                    "dataset_root": str(lfw.root)},
            git_commit=None, git_dirty=None, packages={}, machine={},
            threshold=DECISION_THRESHOLD)
        with Evaluation(lfw, split, db=db, run_id=run, settings=settings,
                        workers=1) as evaluation:
            for case in CASES:
                compared = evaluation.compare(Case(*case))
                evaluation.store(compared, timings=[
                    {"name": name, "mean": sum(values) / len(values), "min": min(values),
                     "median": sorted(values)[len(values) // 2], "stddev": 0.0,
                     "rounds": len(values)}
                    for name, values in compared.per_image.items() if values])
        db.finish_run(run, "complete")
    return render_report(folder / "results.duckdb", folder / "report", identities=3)


@pytest.fixture(scope="module")
def browser(tmp_path_factory):
    chromium, chromedriver = _browser()
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    # Both paths given, so Selenium Manager never looks for (or downloads) a driver.
    options.binary_location = chromium
    for flag in CHROMIUM_FLAGS:
        options.add_argument(flag)
    options.add_argument(f"--user-data-dir={tmp_path_factory.mktemp('chromium-profile')}")
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver = webdriver.Chrome(service=Service(executable_path=chromedriver), options=options)
    driver.set_page_load_timeout(60)
    try:
        yield driver
    finally:
        driver.quit()


def _cells(driver, column: int, rows: str = "tr.case") -> list[str]:
    return [row.find_elements("css selector", "td")[column].get_attribute("data-sort")
            for row in driver.find_elements("css selector",
                                            f"#leaderboard-table tbody.rows {rows}")]


def _groups(driver, column: int) -> list[tuple[str, list[str]]]:
    """Per (method, k) group in page order: its head's value and its cases' values."""
    out = []
    for body in driver.find_elements("css selector", "#leaderboard-table tbody.rows"):
        head = body.find_element("css selector", "tr.group-head")
        cases = body.find_elements("css selector", "tr.case")
        out.append((head.find_elements("css selector", "td")[column].get_attribute("data-sort"),
                    [c.find_elements("css selector", "td")[column].get_attribute("data-sort")
                     for c in cases]))
    return out


def _assert_sorted_groups(driver, column: int, *, reverse: bool) -> None:
    groups = _groups(driver, column)
    heads = _numbers([head for head, _ in groups])
    assert heads == sorted(heads, reverse=reverse)
    for _, cases in groups:
        values = _numbers(cases)
        assert values == sorted(values, reverse=reverse)


def _numbers(values: list[str]) -> list[float]:
    return [float(v) for v in values if v]


def _save_screenshot(driver, path: Path) -> None:
    # Full page, not only the window: the leaderboard, the DET curves and the picture
    # strip must all be in the picture.
    height = driver.execute_script("return document.documentElement.scrollHeight")
    width = driver.execute_script("return document.documentElement.scrollWidth")
    shot = driver.execute_cdp_cmd("Page.captureScreenshot", {
        "format": "png", "captureBeyondViewport": True,
        "clip": {"x": 0, "y": 0, "width": width, "height": height, "scale": 1}})
    path.write_bytes(base64.b64decode(shot["data"]))


def test_report_in_chromium(real_report, browser, tmp_path):
    driver = browser
    driver.get(real_report.as_uri())
    assert driver.execute_script("return document.readyState") == "complete"
    assert "faceanon leaderboard" in driver.title

    # No console errors (a broken script, a missing image, a blocked resource).
    severe = [entry for entry in driver.get_log("browser") if entry["level"] == "SEVERE"]
    assert not severe, severe

    # The leaderboard: the clear reference row, then one row per anonymized case.
    reference = driver.find_elements("css selector", "#leaderboard-table tbody.reference tr")
    assert len(reference) == 1 and "clear" in reference[0].text
    seen = {(m, k, mode) for m, k, mode in zip(_cells(driver, 0), _cells(driver, 1),
                                               _cells(driver, 2), strict=True)}
    assert seen == {("blur", "15.0", "naive"), ("blur", "90.0", "naive"),
                    ("pixelate", "10.0", "naive")}

    # One attack (detect), so each (method, k) group is one case under its worst case,
    # and the groups come ranked by it, most private first.
    groups = _groups(driver, 4)
    assert [len(cases) for _, cases in groups] == [1, 1, 1]
    assert [head for head, _ in groups] == [cases[0] for _, cases in groups]
    heads = _numbers([head for head, _ in groups])
    assert heads == sorted(heads)
    assert all("detect · naive" in e.text for e in driver.find_elements(
        "css selector", '#leaderboard-table tr.group-head td[data-worst="rank1"]'))
    assert driver.find_element("css selector", "#chance-level").text.count("12.5 %") == 1

    # Sorting: rank-1 ascending, then descending; the reference row stays on top.
    header = driver.find_element("css selector", '#leaderboard-table th[data-col="4"]')
    header.find_element("css selector", "button").click()
    ascending = _numbers(_cells(driver, 4))
    assert header.get_attribute("aria-sort") == "ascending"
    assert ascending == sorted(ascending)
    header.find_element("css selector", "button").click()
    descending = _numbers(_cells(driver, 4))
    assert header.get_attribute("aria-sort") == "descending"
    assert descending == sorted(descending, reverse=True)
    by_k = driver.find_element("css selector", '#leaderboard-table th[data-col="1"] button')
    by_k.click()
    assert _numbers(_cells(driver, 1)) == [10.0, 15.0, 90.0]
    assert "clear" in driver.find_element(
        "css selector", "#leaderboard-table tbody.reference tr").text

    # Figures and pictures: inline SVG, and every thumbnail actually decoded.
    assert len(driver.find_elements("css selector", "#det svg")) >= 2  # blur, pixelate
    images = driver.find_elements("css selector", "#picture-strip img")
    assert len(images) == 3 * (1 + 3)  # 3 identities x (original + 3 variants)
    broken = [i.get_attribute("src") for i in images
              if not driver.execute_script("return arguments[0].naturalWidth", i)]
    assert not broken, broken
    # The run name from the database is shown as text, never as markup.
    assert "browser test <b>run</b>" in driver.find_element("css selector", ".run-name").text

    # Sorting put the leaderboard in a different order; show it as rendered.
    driver.refresh()
    screenshot = tmp_path / "report.png"
    _save_screenshot(driver, screenshot)
    assert screenshot.stat().st_size > 10_000
    target = os.environ.get("FACEANON_SCREENSHOT_DIR")
    if target:
        Path(target).mkdir(parents=True, exist_ok=True)
        shutil.copy2(screenshot, Path(target) / "report.png")
    severe = [entry for entry in driver.get_log("browser") if entry["level"] == "SEVERE"]
    assert not severe, severe


@pytest.fixture(scope="module")
def attack_report(tmp_path_factory) -> Path:
    """The report of a synthetic run with several attacks per (method, k)."""
    from test_report import add_run

    folder = tmp_path_factory.mktemp("attack-report")
    with ResultsDB(folder / "results.duckdb") as db:
        add_run(db, seed=7)
    return render_report(folder / "results.duckdb", folder / "report", identities=0)


def test_sorting_keeps_each_case_under_its_worst_case(attack_report, browser):
    driver = browser
    driver.get(attack_report.as_uri())
    groups = driver.find_elements("css selector", "#leaderboard-table tbody.rows")
    members = {g.get_attribute("data-group"): {
        c.get_attribute("data-case") for c in g.find_elements("css selector", "tr.case")}
        for g in groups}
    assert max(len(cases) for cases in members.values()) > 1
    for column in (4, 6, 7):   # rank-1, TAR (both with a worst case), EER (without one)
        header = driver.find_element("css selector",
                                     f'#leaderboard-table th[data-col="{column}"] button')
        header.click()
        if column != 7:
            _assert_sorted_groups(driver, column, reverse=False)
        header.click()
        if column != 7:
            _assert_sorted_groups(driver, column, reverse=True)
        else:  # no value in the heads: the groups stay, their cases sort
            for _, cases in _groups(driver, column):
                values = _numbers(cases)
                assert values == sorted(values, reverse=True)
        # every case is still in its own group
        for group in driver.find_elements("css selector", "#leaderboard-table tbody.rows"):
            assert {c.get_attribute("data-case") for c in group.find_elements(
                "css selector", "tr.case")} == members[group.get_attribute("data-group")]
    severe = [entry for entry in driver.get_log("browser") if entry["level"] == "SEVERE"]
    assert not severe, severe
