"""The benchmark as its users run it: the plugin, selection with -k, runs, interruption,
bounds, first runs without data, another project's method, and speed comparisons.

Each run is a separate pytest process started with ``python -P``, so that it imports the
installed faceanon, never this checkout.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import duckdb
import pytest
from archives import GOOD, make_archive

from faceanon.benchmark.bounds import BoundsError, check_bounds, check_patterns, load_bounds
from faceanon.benchmark.grids import cases, variants

ROOT = Path(__file__).resolve().parent.parent
BENCH_TESTS = ROOT / "bench" / "test_faceanon.py"


def pytest_run(cwd: Path, *args, env: dict | None = None, plugins: dict | None = None,
               tmp_path: Path):
    """Run pytest in a fresh process; ``plugins`` (name -> source) are loaded with -p."""
    command = [sys.executable, "-P", "-m", "pytest", "-q", "-p", "no:cacheprovider", *args]
    environment = {**os.environ, **(env or {})}
    for name, source in (plugins or {}).items():
        (tmp_path / f"{name}.py").write_text(source)
        command += ["-p", name]
    if plugins:
        environment["PYTHONPATH"] = os.pathsep.join(
            [str(tmp_path), environment.get("PYTHONPATH", "")])
    return subprocess.run(command, cwd=cwd, env=environment, capture_output=True, text=True,
                          timeout=600)


def run_bench(tmp_path, *args, **kwargs):
    return pytest_run(ROOT, "bench", "--bench-identities", "4",
                      "--bench-db", str(tmp_path / "r.duckdb"), *args, tmp_path=tmp_path,
                      **kwargs)


def test_case_labels_are_readable_and_selectable():
    labels = [c.label for c in cases("paper")]
    assert "pixelate-k16-naive" not in labels and "pixelate-k10-naive" in labels
    assert labels[0] == "clear" and "blackout-parrot" in labels and "blur-k90-reverse" in labels
    assert len(labels) == len(set(labels))
    assert all(c.mode == "reverse" for c in cases("smoke", modes=["reverse"]))
    selected = cases("paper", methods=["noise"], ks=[5, 90])
    assert {c.k for c in selected if c.method == "noise"} == {5, 90}
    assert [v.label for v in variants("smoke", methods=["blur", "mask"])] == [
        "blur-k15", "blur-k90", "mask"]


def test_cases_cross_the_grid_with_the_attacks_that_apply():
    attacked = cases("smoke", attacks="cheap")
    labels = [c.label for c in attacked]
    assert labels.count("clear") == 1 and len(labels) == len(set(labels))
    assert {"noise-k30-naive", "noise-k30-naive-median", "mask-naive-located",
            "blur-k15-reverse-deblur", "pixelate-k10-parrot-unpixelate"} <= set(labels)
    # an attack runs only on the methods it undoes
    assert not [c for c in attacked if c.attack == "deblur" and c.method != "blur"]
    assert not [c for c in attacked if c.attack == "unpixelate" and c.method != "pixelate"]
    # the cases of a variant are consecutive: the pipeline keeps one variant at a time
    order = [c.variant for c in attacked if c.variant is not None]
    assert order == sorted(order, key=order.index)
    assert [c.label for c in cases("smoke")] == [c.label for c in attacked
                                                 if c.attack == "detect"]
    everything = {c.attack for c in cases("smoke", attacks="all")}
    assert {"detect:retinaface", "detect:cnn"} <= everything


SELECTION_BOUNDS = """
# the clear baseline and blur are not selected by -k pixelate: no error, not checked
[[bound]]
case = "clear"
metric = "eer"
max = 0.0

[[bound]]
case = "blur-k90-*"
metric = "rank1"
max = -1.0

[[bound]]
case = "pixelate-*"
metric = "n_unchanged"
max = 0
"""


def test_k_selection_writes_only_those_cases(lfw, tmp_path):
    bounds = tmp_path / "bounds.toml"
    bounds.write_text(SELECTION_BOUNDS)
    result = run_bench(tmp_path, "-k", "pixelate and not video", "--bench-data", str(lfw.root),
                       "--bench-thresholds", str(bounds), "--bench-attacks", "detect")
    assert result.returncode == 0, result.stdout + result.stderr
    with duckdb.connect(str(tmp_path / "r.duckdb"), read_only=True) as con:
        methods = {m for (m,) in con.execute("SELECT DISTINCT method FROM cases").fetchall()}
        status = con.execute("SELECT status FROM runs").fetchall()
        names = dict(con.execute("SELECT name, any_value(unit) FROM timings GROUP BY name")
                     .fetchall())
        walls = con.execute("SELECT count(*), min(mean) FROM timings "
                            "WHERE name = 'case_wall_time'").fetchall()[0]
    assert methods == {"pixelate"}
    assert status == [("complete",)]
    assert names == {"anonymize": "seconds per image", "recognize": "seconds per image",
                     "case_wall_time": "seconds per case"}
    assert walls[0] == 6 and walls[1] > 0, "every case stores its own wall time"
    assert "pixelate" in result.stdout and "rank1%" in result.stdout
    # pytest-benchmark timed the anonymization of the selected variants, not the cases.
    assert "test_anonymize_speed[pixelate-k10]" in result.stdout
    assert "test_encode_speed" not in result.stdout  # not selected by -k pixelate


# Ctrl-C (a real SIGINT) during the second case ...
INTERRUPT = '''
import os, signal
calls = 0
def pytest_runtest_call(item):
    global calls
    calls += 1
    if calls == 2:
        os.kill(os.getpid(), signal.SIGINT)
'''
# ... and again while pytest handles the first, as `timeout -s INT` or an impatient user
# does: pytest then finishes the session with its exit status still "OK".
AGAIN = '''
def pytest_keyboard_interrupt(excinfo):
    os.kill(os.getpid(), signal.SIGINT)
'''


@pytest.mark.parametrize("plugin", [INTERRUPT, INTERRUPT + AGAIN], ids=["once", "twice"])
def test_an_interrupted_run_is_never_marked_complete(lfw, tmp_path, plugin):
    result = run_bench(tmp_path, "-k", "test_privacy and blur", "--bench-data", str(lfw.root),
                       plugins={"interrupter": plugin})
    assert result.returncode != 0, result.stdout + result.stderr
    if plugin == INTERRUPT:
        assert result.returncode == pytest.ExitCode.INTERRUPTED
    with duckdb.connect(str(tmp_path / "r.duckdb"), read_only=True) as con:
        assert con.execute("SELECT status, finished IS NOT NULL FROM runs").fetchall() == [
            ("interrupted", True)]
        assert con.execute("SELECT count(*) FROM cases").fetchall() == [(1,)]


# A blur that forgot to blur: it passes rank-1 bounds on a few people, but publishes
# every face as it was.
IDENTITY_BLUR = '''
import numpy as np
import faceanon.methods

def unchanged(self, image, boxes, *, k=None, rng):
    return np.array(image, copy=True)

faceanon.methods.Blur.anonymize = unchanged
'''


def test_a_method_that_changes_nothing_fails_every_case(lfw, tmp_path):
    result = run_bench(tmp_path, "-k", "test_privacy", "--bench-methods", "blur",
                       "--bench-k", "15", "--bench-modes", "naive,reverse",
                       "--bench-attacks", "detect,median",
                       "--bench-workers", "1", "--bench-data", str(lfw.root),
                       plugins={"identity": IDENTITY_BLUR})
    assert result.returncode == pytest.ExitCode.TESTS_FAILED, result.stdout + result.stderr
    out = result.stdout
    # every attack's case fails too: each counts the images its attack processed
    for label in ("blur-k15-naive", "blur-k15-reverse", "blur-k15-naive-median",
                  "blur-k15-reverse-median"):
        assert (f"{label}: 8 of 8 anonymized images are identical to their originals"
                in out), out
    assert "4 failed" in out
    with duckdb.connect(str(tmp_path / "r.duckdb"), read_only=True) as con:
        # the cases were measured and stored: they failed a check, not the run
        assert con.execute("SELECT status FROM runs").fetchall() == [("complete",)]


def test_bounds_name_metric_bound_and_value(tmp_path):
    bounds = [{"case": "clear", "metric": "eer", "max": 0.05},
              {"case": "blackout-*", "metric": "fta", "min": 0.9}]
    assert check_bounds("clear", {"eer": 0.01}, bounds) == []
    (problem,) = check_bounds("clear", {"eer": 0.2}, bounds)
    assert "eer" in problem and "0.05" in problem and "0.2000" in problem
    (problem,) = check_bounds("blackout-naive", {"fta": 0.3}, bounds)
    assert "below its bound 0.9" in problem
    assert check_bounds("blur-k5-naive", {"eer": 0.9}, bounds) == []
    (problem,) = check_bounds("clear", {"fta": 0.0}, bounds)
    assert "no metric 'eer'" in problem
    (problem,) = check_bounds("clear", {"eer": None}, bounds)
    assert "eer is undefined" in problem
    geer = [{"case": "noise-*", "metric": "geer", "min": 0.3}]
    (problem,) = check_bounds("noise-k30-naive", {"geer": None, "geer_crossed": False}, geer)
    assert "geer is not reached" in problem
    assert load_bounds(ROOT / "bench" / "thresholds.toml"), "CI's bounds file parses"


def test_every_ci_bound_matches_a_smoke_case_and_can_fail():
    bounds = load_bounds(ROOT / "bench" / "thresholds.toml")
    check_patterns(bounds, cases("smoke", attacks="all"), source="thresholds.toml",
                   grid="smoke")
    for bound in bounds:
        # rates lie in [0, 1]: a min of 0 or a max of 1 could never fail
        assert bound.get("min", 1) > 0 and bound.get("max", 0) < 1, bound
        if "eer" in bound["metric"]:
            assert bound.get("min_acquired", 0) >= 20, bound
    assert not [b for b in bounds if b["metric"] == "geer"], "blackout's geer cannot fail"


def test_min_acquired_fails_an_eer_that_rests_on_too_few_faces():
    bounds = [{"case": "blur-*", "metric": "eer", "max": 0.3, "min_acquired": 20}]
    assert check_bounds("blur-k15-naive", {"eer": 0.1, "n_mated_acquired": 20}, bounds) == []
    (problem,) = check_bounds("blur-k15-naive", {"eer": 0.1, "n_mated_acquired": 7}, bounds)
    assert "rests on 7 acquired mated comparisons" in problem
    assert "min_acquired = 20" in problem
    (problem,) = check_bounds("blur-k15-naive", {"eer": 0.5, "n_mated_acquired": 40}, bounds)
    assert "above its bound 0.3" in problem


@pytest.mark.parametrize("text, message", [
    ('case = "clear"\nmetric = "eer"\n', "bound 1 needs case, metric and min or max"),
    ('case = "clear"\nmetric = "eer"\nmx = 0.1\n', "unknown key(s) mx"),
    ('case = "clear"\nmetric = "eer"\nmax = "0.1"\n', "max must be a number"),
    ('case = "clear"\nmetric = "eer"\nmin = 0.5\nmax = 0.1\n', "every value fails"),
    ('case = "clear"\nmetric = "eer"\nmax = 0.1\nmin_acquired = 0\n',
     "min_acquired must be a whole number >= 1"),
    ('case = "clear"\nmetric = "eer"\nmax = 0.1\nattack = "guess"\n',
     "attack 'guess' is not a registered attack (detect, located, median"),
])
def test_a_bound_that_cannot_be_checked_is_an_error(tmp_path, text, message):
    broken = tmp_path / "broken.toml"
    broken.write_text("[[bound]]\n" + text)
    with pytest.raises(BoundsError, match=re.escape(f"{broken}: ") + ".*" + re.escape(message)):
        load_bounds(broken)
    attack = tmp_path / "attack.toml"
    attack.write_text('[[bound]]\ncase = "clear"\nmetric = "eer"\nmax = 0.1\n'
                      'attack = "median"\n')
    assert load_bounds(attack)[0]["attack"] == "median"


def test_a_bound_checks_only_the_cases_of_its_attack():
    bounds = [{"case": "mask-*", "metric": "rank1", "max": 0.2},
              {"case": "mask-naive-located", "metric": "rank1", "min": 0.25,
               "attack": "located"}]
    # today's mask-* bound (detect) does not swallow the located attack's case
    assert check_bounds("mask-naive-located", {"rank1": 0.4}, bounds, attack="located") == []
    (problem,) = check_bounds("mask-naive-located", {"rank1": 0.1}, bounds, attack="located")
    assert "below its bound 0.25" in problem
    (problem,) = check_bounds("mask-naive", {"rank1": 0.4}, bounds)
    assert "above its bound 0.2" in problem
    # a pattern must match a case of its own attack
    smoke = cases("smoke", attacks="all")
    check_patterns(bounds, smoke, source="b.toml", grid="smoke")
    wrong = [{"case": "mask-naive-located", "metric": "rank1", "min": 0.25}]
    with pytest.raises(BoundsError, match=r"bound\(s\) 1 \('mask-naive-located'\) match no"):
        check_patterns(wrong, smoke, source="b.toml", grid="smoke")
    deblur = [{"case": "mask-*", "metric": "rank1", "max": 0.2, "attack": "deblur"}]
    with pytest.raises(BoundsError, match="attack 'deblur'"):
        check_patterns(deblur, smoke, source="b.toml", grid="smoke")


ATTACK_BOUNDS = """
[[bound]]
case = "noise-k30-*"
metric = "rank1"
max = -1.0

[[bound]]
case = "noise-k30-naive-median"
metric = "rank1"
attack = "median"
max = -1.0
"""


def test_k_selects_cases_by_attack_and_bounds_follow_the_attack(lfw, tmp_path):
    bounds = tmp_path / "bounds.toml"
    bounds.write_text(ATTACK_BOUNDS)
    result = run_bench(tmp_path, "-k", "test_privacy and median", "--bench-methods", "noise",
                       "--bench-k", "30", "--bench-modes", "naive,reverse",
                       "--bench-data", str(lfw.root), "--bench-thresholds", str(bounds))
    out = result.stdout
    assert result.returncode == pytest.ExitCode.TESTS_FAILED, out + result.stderr
    assert "test_privacy[noise-k30-naive-median]" in out and "1 failed, 1 passed" in out
    assert "noise-k30-naive-median: rank1 = " in out and "above its bound -1.0" in out
    with duckdb.connect(str(tmp_path / "r.duckdb"), read_only=True) as con:
        stored = con.execute("SELECT mode, attack FROM cases ORDER BY id").fetchall()
        (config,) = con.execute("SELECT config FROM runs").fetchone()
        images = con.execute("SELECT attack, count(*) FROM images WHERE role = 'anonymized' "
                             "GROUP BY ALL").fetchall()
    assert stored == [("naive", "median"), ("reverse", "median")]
    attacks = json.loads(config)["attacks"]
    assert set(attacks) == {"detect", "located", "median", "deblur", "unpixelate", "sharpen"}
    assert attacks["median"]["options"] == {"size": 5}
    assert images == [("median", 8)], "only the attack -k selected ran, on both sides"


def test_a_pattern_that_matches_no_case_of_the_grid_is_an_error(lfw, tmp_path):
    labels = [c.label for c in cases("smoke")]
    bounds = [{"case": "clear", "metric": "eer", "max": 0.1},
              {"case": "pixelate-k31-*", "metric": "rank1", "max": 0.1}]
    with pytest.raises(BoundsError, match=r"b.toml: bound\(s\) 2 \('pixelate-k31-\*'\) "
                                          r"match no case of the smoke grid"):
        check_patterns(bounds, labels, source="b.toml", grid="smoke")
    check_patterns(bounds[:1], labels, source="b.toml", grid="smoke")
    # the benchmark refuses it at collection, in one line, before measuring anything
    typo = tmp_path / "typo.toml"
    typo.write_text('[[bound]]\ncase = "pixelat-k30-naive"\nmetric = "rank1"\nmin = 0.7\n')
    result = run_bench(tmp_path, "-k", "pixelate", "--bench-data", str(lfw.root),
                       "--bench-thresholds", str(typo))
    assert result.returncode == pytest.ExitCode.USAGE_ERROR, result.stdout + result.stderr
    assert "typo.toml: bound(s) 1 ('pixelat-k30-naive') match no case" in result.stderr
    assert not (tmp_path / "r.duckdb").exists()


def test_without_data_collection_fails_once_with_how_to_get_it(tmp_path):
    result = pytest_run(ROOT, "bench", tmp_path=tmp_path,
                        env={"FACEANON_DATA": "", "XDG_CACHE_HOME": str(tmp_path / "cache")})
    assert result.returncode == pytest.ExitCode.USAGE_ERROR, result.stdout + result.stderr
    errors = [line for line in result.stderr.splitlines() if line.startswith("ERROR")]
    assert len(errors) == 1, result.stderr
    assert "faceanon data fetch lfw" in errors[0] and "--bench-fetch" in errors[0]
    assert "Traceback" not in result.stdout + result.stderr


MIRROR = '''
import os
from faceanon import fetch
fetch.SOURCES["lfw"] = fetch.DataSource(url=os.environ["MIRROR_URL"],
                                        checksum=os.environ["MIRROR_CHECKSUM"],
                                        archive_root="lfw-deepfunneled")
'''

WHERE_IS_THE_DATA = '''
import json, os

def test_data(bench_run):
    with open(os.environ["REPORT_TO"], "w") as handle:
        json.dump({"root": str(bench_run.dataset.root),
                   "identities": list(bench_run.split.identities)}, handle)
'''


def test_bench_fetch_downloads_into_the_user_cache(server, tmp_path):
    root, base = server
    checksum = make_archive(root / "lfw.tgz", GOOD)
    project = tmp_path / "project"
    project.mkdir()
    (project / "test_data.py").write_text(WHERE_IS_THE_DATA)
    env = {"FACEANON_DATA": "", "XDG_CACHE_HOME": str(tmp_path / "cache"),
           "MIRROR_URL": f"{base}/lfw.tgz", "MIRROR_CHECKSUM": checksum,
           "REPORT_TO": str(tmp_path / "seen.json")}
    result = pytest_run(project, "--bench-fetch", env=env, plugins={"mirror": MIRROR},
                        tmp_path=tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr
    cache = tmp_path / "cache" / "faceanon"
    seen = json.loads((tmp_path / "seen.json").read_text())
    assert seen == {"root": str(cache / "lfw"), "identities": ["Ann_A"]}
    assert (cache / "lfw-singletons" / "Bob_B").is_dir()
    assert f"downloaded {cache / 'lfw'}" in result.stdout
    # Verified as it was downloaded: a wrong checksum leaves nothing behind.
    env["MIRROR_CHECKSUM"] = "sha256:" + "0" * 64
    env["XDG_CACHE_HOME"] = str(tmp_path / "other")
    result = pytest_run(project, "--bench-fetch", env=env, plugins={"mirror": MIRROR},
                        tmp_path=tmp_path)
    assert result.returncode == pytest.ExitCode.USAGE_ERROR
    assert "checksum mismatch" in result.stderr
    assert not (tmp_path / "other" / "faceanon" / "lfw").exists()


def _plugin_installed() -> bool:
    from faceanon.methods import available_methods

    if "posterize" in available_methods():
        return True
    if os.environ.get("FACEANON_REQUIRE_INSTALLED") == "1":
        pytest.fail("the example method plugin (tests/example-plugin) must be installed")
    pytest.skip("install the example plugin: pip install --no-deps tests/example-plugin")


def test_another_project_benchmarks_its_own_method(lfw, tmp_path):
    _plugin_installed()
    project = tmp_path / "elsewhere"
    project.mkdir()
    shutil.copy(BENCH_TESTS, project / "test_bench.py")  # the few lines a project writes
    db = tmp_path / "theirs.duckdb"
    result = pytest_run(project, "--bench-methods", "posterize", "--bench-identities", "4",
                        "--bench-data", str(lfw.root), "--bench-db", str(db),
                        "--benchmark-disable", tmp_path=tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr
    with duckdb.connect(str(db), read_only=True) as con:
        cases_stored = con.execute("SELECT method, k, mode, attack FROM cases ORDER BY id"
                                   ).fetchall()
        status = con.execute("SELECT status FROM runs").fetchall()
    assert cases_stored[0] == ("none", None, "clear", "detect")
    assert {(m, k) for m, k, _, _ in cases_stored[1:]} == {("posterize", 2), ("posterize", 4)}
    # the cheap attacks that apply to any method (deblur and unpixelate undo one each)
    assert {a for *_, a in cases_stored} == {"detect", "located", "median", "sharpen"}
    assert len(cases_stored) == 1 + 2 * 3 * 4 and status == [("complete",)]
    assert "28 passed" in result.stdout  # 25 cases, 2 variants' speed, the recognizer's
    assert not list(project.glob("conftest.py")), "no conftest: the plugin did everything"


SLOWDOWN = '''
import time
import faceanon.methods

_anonymize = faceanon.methods.Blur.anonymize

def slower(self, *args, **kwargs):
    time.sleep(0.004)
    return _anonymize(self, *args, **kwargs)

faceanon.methods.Blur.anonymize = slower
'''


def test_benchmark_compare_shows_a_method_made_slower(lfw, tmp_path):
    storage = f"file://{tmp_path / 'benchmarks'}"
    speed = ("-k", "anonymize_speed", "--bench-methods", "blur", "--bench-k", "15",
             "--bench-data", str(lfw.root), "--benchmark-storage", storage,
             "--benchmark-max-time", "0.2")
    saved = run_bench(tmp_path, *speed, "--benchmark-autosave")
    assert saved.returncode == 0, saved.stdout + saved.stderr
    (stored,) = (tmp_path / "benchmarks").rglob("*.json")
    names = [b["name"] for b in json.loads(stored.read_text())["benchmarks"]]
    assert names == ["test_anonymize_speed[blur-k15]"]
    same = run_bench(tmp_path, *speed, "--benchmark-compare", "--benchmark-compare-fail",
                     "median:200%")
    assert same.returncode == 0, same.stdout + same.stderr
    slower = run_bench(tmp_path, *speed, "--benchmark-compare", "--benchmark-compare-fail",
                       "median:200%", plugins={"slowdown": SLOWDOWN})
    assert slower.returncode != 0, slower.stdout + slower.stderr
    assert "Performance has regressed" in slower.stdout + slower.stderr
    assert "test_anonymize_speed[blur-k15]" in slower.stdout + slower.stderr


@pytest.mark.parametrize("option, message", [
    ("learned.images", "write ATTACK.KEY=VALUE"),
    ("images=300", "write ATTACK.KEY=VALUE"),
    ("median.size=3", "this run does not run the attack 'median'"),
])
def test_a_bad_attack_option_is_refused_at_collection(tmp_path, option, message):
    result = run_bench(tmp_path, "--bench-data", str(tmp_path), "--bench-attacks", "learned",
                       "--bench-attack-option", option)
    assert result.returncode == pytest.ExitCode.USAGE_ERROR
    assert message in result.stderr, result.stderr


def test_attack_option_values_are_numbers_booleans_or_text():
    from faceanon.benchmark.run import _option_value

    assert _option_value("300") == 300 and isinstance(_option_value("300"), int)
    assert _option_value("4e-5") == pytest.approx(4e-5)
    assert _option_value("False") is False and _option_value("true") is True
    assert _option_value("deblur") == "deblur"


def test_an_unknown_option_of_a_run_attack_names_the_known_ones(tmp_path):
    result = run_bench(tmp_path, "-k", "test_privacy and learned", "--bench-data",
                       str(tmp_path), "--bench-attacks", "learned", "--bench-methods",
                       "pixelate", "--bench-k", "10", "--bench-modes", "naive",
                       "--bench-attack-option", "learned.epochz=3")
    assert result.returncode == pytest.ExitCode.USAGE_ERROR
    assert "epochz" in result.stderr and "epochs" in result.stderr, result.stderr
