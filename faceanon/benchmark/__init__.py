"""The faceanon benchmark as a pytest plugin: run it on any method, from any project.

Installing faceanon registers the plugin (:mod:`faceanon.benchmark.plugin`, entry point
``pytest11``); it adds the ``--bench-*`` options, parametrizes the arguments
``bench_case`` and ``bench_variant``, and provides the ``bench_run`` fixture. A project
that adds a method (entry point ``faceanon.methods``) benchmarks it with one test file of
three one-line tests, the file faceanon's own ``bench/test_faceanon.py`` is::

    def test_privacy(bench_case, bench_run):
        bench_run.measure(bench_case)

with ``test_anonymize_speed(bench_variant, bench_run, benchmark)`` calling
``bench_run.time_anonymize(bench_variant, benchmark)`` and
``test_encode_speed(bench_run, benchmark)`` calling ``bench_run.time_encode(benchmark)``,
and runs ``pytest bench --bench-methods mymethod``. ``test_privacy[blur-k15-naive]``
measures one case and stores it in DuckDB; ``test_anonymize_speed[blur-k15]`` and
``test_encode_speed`` are timed by pytest-benchmark, so ``--benchmark-autosave`` and
``--benchmark-compare`` compare the speed of methods across commits.

Modules: :mod:`~faceanon.benchmark.plugin` (options, hooks, fixture),
:mod:`~faceanon.benchmark.run` (the session: data, database run, measuring),
:mod:`~faceanon.benchmark.grids` (which cases), :mod:`~faceanon.benchmark.bounds`
(regression bounds).
"""
