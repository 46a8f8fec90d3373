"""One benchmark session: its data, its database run, its evaluation, and what it measures.

:class:`BenchRun` is what the benchmark's tests talk to (the ``bench_run`` fixture). It
is made for every pytest session of an environment that has faceanon installed, so
making it costs nothing: the dataset is listed when the collected tests need it, the
database run starts with the first privacy case, and the heavy libraries are imported
then.
"""

from __future__ import annotations

import itertools
import statistics
import time
from dataclasses import dataclass
from pathlib import Path

import pytest

from faceanon.protocol import Case, Variant, image_rng, set_rng

__all__ = ["BenchRun", "SpeedFace"]

#: Real faces the speed tests cycle through (originals in which the detector finds one).
SPEED_FACES = 8
#: Faces a set method (k-Same) gets per timed round, at least; at least 2k when k is larger.
SPEED_SET_FACES = 8


@dataclass(frozen=True)
class SpeedFace:
    """A real face the speed tests anonymize: its key, pixels and regions."""

    key: str
    image: object
    boxes: tuple


def _stats(name: str, seconds: list[float], unit: str) -> dict:
    return {
        "name": name,
        "min": min(seconds),
        "max": max(seconds),
        "median": statistics.median(seconds),
        "mean": statistics.fmean(seconds),
        "stddev": statistics.stdev(seconds) if len(seconds) > 1 else 0.0,
        "rounds": len(seconds),
        "unit": unit,
    }


def _option_value(text: str):
    """A ``--bench-attack-option`` value: an int, a float, true/false, else the text."""
    lowered = text.strip().lower()
    if lowered in ("true", "false"):
        return lowered == "true"
    for kind in (int, float):
        try:
            return kind(text)
        except ValueError:
            pass
    return text


def _split_list(value: str | None, cast=str) -> list | None:
    return [cast(v) for v in value.split(",")] if value else None


class BenchRun:
    """One benchmark session, driven by the ``--bench-*`` options of ``config``.

    Parameters
    ----------
    config : pytest.Config

    Attributes
    ----------
    run_id : int or None
        The database run, once the first privacy case has started it.
    case_ids : list of int
        The cases measured and stored so far, in order.
    errors : int
        Cases that raised (the run is then stored as ``failed``).
    status : str or None
        The run's final status, once the session has finished: ``complete`` only when
        every selected case was measured and stored (see :meth:`finish`).
    """

    def __init__(self, config: pytest.Config):
        self.config = config
        self.dataset = None
        self.split = None
        self.bounds: list[dict] = []
        self.planned: list[Case] = []
        self.db = None
        self.run_id: int | None = None
        self.evaluation = None
        self.case_ids: list[int] = []
        self.errors = 0
        self.status: str | None = None
        self._methods: dict = {}
        self._backend = None
        self._speed_faces: list[SpeedFace] | None = None
        self._executor = None

    # -- options -------------------------------------------------------------------------

    def option(self, name: str):
        return self.config.getoption(f"--bench-{name}")

    def selection(self) -> dict:
        """The grid and the methods, strengths and modes the options select."""
        return {
            "grid_name": self.option("grid"),
            "methods": _split_list(self.option("methods")),
            "ks": _split_list(self.option("k"), int),
        }

    def planned_cases(self) -> list[Case]:
        from faceanon.benchmark.grids import cases

        return cases(**self.selection(), modes=_split_list(self.option("modes")),
                     attacks=self.option("attacks"))

    def attack_names(self) -> list[str]:
        """The attacks ``--bench-attacks`` names (:func:`faceanon.attacks.parse_attacks`)."""
        from faceanon.attacks import parse_attacks

        return parse_attacks(self.option("attacks"))

    def attack_options(self) -> dict[str, dict]:
        """attack name -> keyword options, from ``--bench-attack-option ATTACK.KEY=VALUE``.

        Raises
        ------
        faceanon.attacks.AttackError
            For a malformed option, or one naming an attack the run does not run.
        """
        from faceanon.attacks import AttackError

        running = self.attack_names()
        options: dict[str, dict] = {}
        for text in self.option("attack-option") or ():
            target, equals, value = text.partition("=")
            name, dot, key = target.rpartition(".")
            if not equals or not dot or not name or not key:
                raise AttackError(f"--bench-attack-option {text!r}: write ATTACK.KEY=VALUE, "
                                  "e.g. learned.images=600")
            if name not in running:
                raise AttackError(f"--bench-attack-option {text!r}: this run does not run "
                                  f"the attack {name!r} (--bench-attacks: {', '.join(running)})")
            options.setdefault(name, {})[key] = _option_value(value)
        return options

    def planned_variants(self) -> list[Variant]:
        from faceanon.benchmark.grids import variants

        return variants(**self.selection())

    @property
    def db_path(self) -> str:
        from faceanon.store import DEFAULT_DB

        return self.option("db") or DEFAULT_DB

    @property
    def settings(self):
        from faceanon.pipeline import Settings

        # resolved(): "auto" becomes the backend it picks, checked once per process
        return Settings(backend=self.option("backend"), detector=self.option("detector"),
                        region=self.option("region"), seed=self.option("seed"),
                        utility=self.option("utility")).resolved()

    def backend_choice(self) -> dict:
        """What the run config records of ``--bench-backend``: what was asked for and,
        for ``auto``, the measured equality of the torch descriptor that decided it."""
        requested = self.option("backend")
        choice = {"backend_requested": requested}
        if requested == "auto":
            from dataclasses import asdict

            from faceanon.recognition import torch_backend_status

            choice["torch_backend_status"] = asdict(torch_backend_status())
        return choice

    # -- collection: data and bounds, once -----------------------------------------------

    def prepare(self, cases: list[Case]) -> None:
        """Find the data, draw the split and read the bounds, before any test runs.

        Raises
        ------
        faceanon.errors.FaceanonError
            No data (the message says how to get it), a bad bounds file, a bad option.
        """
        from faceanon.benchmark.bounds import check_patterns, load_bounds
        from faceanon.benchmark.grids import DEFAULT_IDENTITIES
        from faceanon.benchmark.grids import cases as grid_cases
        from faceanon.datasets import protocol_split
        from faceanon.detect import REGIONS, DetectorError, get_detector

        self.planned = cases
        # A bad --bench-attack-option (malformed, for an attack not run, a key the attack
        # does not take) fails here too: making the attack checks its options.
        from faceanon.attacks import get_attack

        for name, options in self.attack_options().items():
            get_attack(name, **options)
        # An unknown executor fails here, once, before the data is listed; its notes (an
        # option it ignores) are said here, where pytest does not capture them.
        for note in self.executor().notes():
            self._say(note)
        self.dataset = self._find_dataset()
        identities = self.option("identities") or DEFAULT_IDENTITIES[self.option("grid")]
        self.split = protocol_split(self.dataset,
                                    identities=min(identities, len(self.dataset.identities)),
                                    seed=self.option("seed"))
        path = self.option("thresholds")
        self.bounds = load_bounds(path) if path else []
        if self.bounds:
            # Patterns are checked against the whole grid with every registered attack
            # (plus any method named outside it), not the cases -k and the other options
            # leave: `pytest bench -k pixelate --bench-attacks detect --bench-thresholds
            # ...` must still work.
            grid = self.option("grid")
            labels = {*grid_cases(grid, attacks="all"), *self.planned_cases()}
            check_patterns(self.bounds, labels, source=path, grid=grid)
        get_detector(self.option("detector"))  # an unknown name fails here, once
        if self.option("region") not in REGIONS:
            raise DetectorError(f"unknown region {self.option('region')!r}; choose one of "
                                f"{', '.join(REGIONS)}")

    def executor(self):
        """The executor of ``--bench-executor``, made once (started by the evaluation).

        Raises
        ------
        faceanon.executors.ExecutorError
            An unknown executor, or a Dask option given to another executor.
        """
        if self._executor is None:
            from faceanon.executors import ExecutorError, get_executor

            name = self.option("executor")
            options = {"workers": self.option("workers")}
            dask_options = {"scheduler": self.option("scheduler"),
                            "ship_images": self.option("ship-images")}
            if name == "dask":
                options.update(dask_options)
            elif any(dask_options.values()):
                raise ExecutorError("--bench-scheduler and --bench-ship-images need "
                                    f"--bench-executor dask, not {name!r}")
            self._executor = get_executor(name, **options)
        return self._executor

    def _find_dataset(self):
        from faceanon.datasets import DatasetError, resolve_dataset
        from faceanon.fetch import SOURCES, fetch_dataset

        name = self.option("data")
        try:
            return resolve_dataset(name)
        except DatasetError as error:
            if name not in SOURCES:
                raise
            if not self.option("fetch"):
                raise DatasetError(f"{error}, or add --bench-fetch to download it") from None
        for folder in fetch_dataset(name, progress=False):
            self._say(f"faceanon: downloaded {folder}")
        return resolve_dataset(name)

    def _say(self, line: str) -> None:
        reporter = self.config.pluginmanager.get_plugin("terminalreporter")
        if reporter is not None:
            reporter.write_line(line)

    # -- the run -------------------------------------------------------------------------

    def method(self, name: str):
        """The method called ``name``, made once for the session (privacy and speed tests)."""
        from faceanon.methods import get_method

        if name not in self._methods:
            self._methods[name] = get_method(name)
        return self._methods[name]

    def start(self):
        """Start the database run and the evaluation (once); return the evaluation."""
        if self.evaluation is not None:
            return self.evaluation
        from faceanon import provenance
        from faceanon.attacks import get_attack
        from faceanon.pipeline import Evaluation
        from faceanon.store import ResultsDB

        settings = self.settings
        executor = self.executor()
        for case in self.planned:
            if case.method is not None:
                self.method(case.method)
        options = self.attack_options()
        attacks = {name: get_attack(name, **options.get(name, {}))
                   for name in self.attack_names()}
        self.db = ResultsDB(self.db_path)
        commit, dirty = provenance.git_state(Path(self.config.rootpath))
        self.run_id = self.db.start_run(
            name=self.option("run-name"),
            dataset_name=self.dataset.name,
            dataset_fingerprint=self.dataset.fingerprint,
            config={"grid": self.option("grid"), "identities": len(self.split.identities),
                    **self.split.summary(), **settings.as_dict(), **self.backend_choice(),
                    "dataset_root": str(self.dataset.root), "executor": executor.describe(),
                    # what each attack is: its summary, locator, methods and settings
                    "attacks": {name: attack.describe() for name, attack in attacks.items()}},
            git_commit=commit,
            git_dirty=dirty,
            packages=provenance.package_versions(),
            machine=provenance.machine(),
            threshold=self.option("threshold"),
            # what each method is, and for a generative one the sha256 of its weights
            methods={name: method.describe() for name, method in self._methods.items()},
        )
        self.evaluation = Evaluation(self.dataset, self.split, db=self.db, run_id=self.run_id,
                                     settings=settings, workers=self.option("workers"),
                                     methods=self._methods, attacks=attacks,
                                     data_root=self.dataset.root.parent, executor=executor)
        self.evaluation.plan(self.planned)
        return self.evaluation

    def measure(self, case: Case) -> dict:
        """Measure one case, store it with its timings, and fail it if it crosses a bound.

        The case's scores, images and timings are stored in one transaction. The timings
        are seconds per image to anonymize and to encode (as the pipeline measured them)
        and ``case_wall_time``, the seconds the case took here to measure, including
        making and encoding its variant's images when this case was the first to need
        them.

        Besides the bounds, every case of an anonymization method fails when one of its
        anonymized images is identical to its original (``n_unchanged``): the method
        published a face as it was, whatever the recognizer makes of it.

        Returns
        -------
        dict
            The case's ``case_metrics`` row.
        """
        evaluation = self.start()
        started = time.perf_counter()
        try:
            compared = evaluation.compare(case)
            wall = time.perf_counter() - started
            rows = [_stats(name, values, "seconds per image")
                    for name, values in compared.per_image.items() if values]
            rows.append(_stats("case_wall_time", [wall], "seconds per case"))
            result = evaluation.store(compared, timings=rows)
        except Exception:
            self.errors += 1
            raise
        self.case_ids.append(result.case_id)
        metrics = self.db.one_case_metrics(result.case_id)
        from faceanon.benchmark.bounds import check_bounds

        problems = check_bounds(result.case.label, metrics, self.bounds,
                                attack=result.case.attack)
        if metrics.get("n_unchanged"):
            problems.insert(0, f"{result.case.label}: {metrics['n_unchanged']} of "
                               f"{metrics['n_anonymized']} anonymized images are identical "
                               "to their originals: the method published them unchanged")
        if problems:
            pytest.fail("; ".join(problems), pytrace=False)
        return metrics

    # -- speed ---------------------------------------------------------------------------

    def speed_faces(self) -> list[SpeedFace]:
        """Up to :data:`SPEED_FACES` probes with a face, read and detected once."""
        if self._speed_faces is None:
            from faceanon.detect import anonymization_regions
            from faceanon.imageio import read_image

            settings = self.settings
            faces = []
            for sample in self.split.probes:
                image = read_image(self.dataset.path(sample))
                regions = anonymization_regions(image, detector=settings.detector,
                                                region=settings.region, margin=settings.margin,
                                                on_miss=settings.on_miss)
                if regions.found:
                    faces.append(SpeedFace(sample.key, image, regions.boxes))
                if len(faces) == SPEED_FACES:
                    break
            if not faces:
                raise pytest.UsageError("no probe has a face the detector finds; the speed "
                                        "tests need real faces")
            self._speed_faces = faces
        return self._speed_faces

    def time_anonymize(self, variant: Variant, benchmark) -> None:
        """Time anonymizing one real face with ``variant`` (pytest-benchmark's rounds).

        The faces of :meth:`speed_faces` are used in turn, each with its benchmark
        generator. A set method (k-Same) is timed per set of at least
        :data:`SPEED_SET_FACES` faces (and at least 2k), recorded in the benchmark's
        ``extra_info`` as ``faces_per_round``.
        """
        from faceanon.methods import needs_whole_set

        method = self.method(variant.method)
        k = method.check_k(variant.k)
        seed = self.option("seed")
        faces = self.speed_faces()
        if needs_whole_set(method):
            size = max(SPEED_SET_FACES, 2 * (k or 1))
            group = (faces * -(-size // len(faces)))[:size]
            keys = [face.key for face in group]

            def anonymize():
                return method.anonymize_set([f.image for f in group],
                                            [list(f.boxes) for f in group], k=k,
                                            rng=set_rng(seed, variant.method, k, keys))

            benchmark.extra_info["faces_per_round"] = size
        else:
            turn = itertools.cycle(faces)

            def anonymize():
                face = next(turn)
                return method.anonymize(face.image, list(face.boxes), k=k,
                                        rng=image_rng(seed, variant.method, k, face.key))

            benchmark.extra_info["faces_per_round"] = 1
        anonymize()  # untimed: loads what the method loads lazily (e.g. the GAN's weights)
        benchmark(anonymize)

    def time_encode(self, benchmark) -> None:
        """Time the recognizer's detect-and-encode of one real face (pytest-benchmark)."""
        if self._backend is None:
            from faceanon.pipeline import worker_backend

            self._backend = worker_backend(self.settings)  # as the pipeline's workers run it
        backend = self._backend
        turn = itertools.cycle(self.speed_faces())

        def encode():
            return backend.encode(next(turn).image)

        encode()  # untimed: loads dlib's models
        benchmark(encode)

    # -- the end -------------------------------------------------------------------------

    def finish(self, exitstatus) -> None:
        """Record the run's final status, then close the evaluation.

        ``complete`` only when every selected case was measured and stored and the
        session was not interrupted; ``failed`` when a case raised; otherwise
        ``interrupted``. A second Ctrl-C while pytest handles the first reaches this hook
        with pytest's exit status still OK; counting the cases stored keeps such a run
        ``interrupted``. The status is written before the worker pool is shut down, so
        that a Ctrl-C during the shutdown cannot leave the run ``running``.
        """
        if self.run_id is None:
            return
        if self.errors:
            status = "failed"
        elif exitstatus == pytest.ExitCode.INTERRUPTED or len(self.case_ids) < len(self.planned):
            status = "interrupted"
        else:
            # Cases that crossed a regression bound still measured what they should.
            status = "complete"
        try:
            self.db.finish_run(self.run_id, status)
        except KeyboardInterrupt:
            # Ctrl-C while recording the status: record that, then stop.
            status = "interrupted"
            self.db.finish_run(self.run_id, status)
            raise
        finally:
            self.status = status
            self.db.close()  # stops the heartbeat; later reads open the file again
            if self.evaluation is not None:
                self.evaluation.close()

    def summary_lines(self) -> list[str]:
        """The end-of-session table: one line per measured case."""
        rows = {r["case_id"]: r for r in self.db.case_metrics(run_id=self.run_id)}
        per_image = self.db.per_image_timings(self.run_id)

        def pct(v):
            return "   -" if v is None else f"{100 * v:5.1f}"

        lines = [f"{'method':<12} {'k':>4} {'mode':<8} {'attack':<10} {'EER%':>6} {'FMR%':>6} "
                 f"{'FNMR%':>6} {'FTA%':>6} {'rank1%':>6} {'anon ms':>8} {'recog ms':>8}"]
        for cid in self.case_ids:
            r = rows.get(cid)
            if r is None:
                continue
            anon = per_image.get((cid, "anonymize"))
            recog = per_image.get((cid, "recognize"))
            lines.append(
                f"{r['method']:<12} {'' if r['k'] is None else r['k']:>4} {r['mode']:<8} "
                f"{r.get('attack') or 'detect':<10} "
                f"{pct(r['eer']):>6} {pct(r['fmr']):>6} {pct(r['fnmr']):>6} {pct(r['fta']):>6} "
                f"{pct(r['rank1']):>6} "
                f"{'' if anon is None else f'{1000 * anon:8.2f}':>8} "
                f"{'' if recog is None else f'{1000 * recog:8.1f}':>8}")
        return lines
