"""The faceanon benchmark: every selected case, and the speed of each variant and of the
recognizer. The plugin (faceanon.benchmark) does the work; another project that adds a
method copies these lines into its own bench folder.

``pytest bench -k pixelate`` runs only the pixelate cases and speeds; ``-k clear`` the
baseline; ``-k "blur and reverse"`` one mode of one method; ``-k median`` one attack
(``--bench-attacks`` says which attacks run at all).
"""


def test_privacy(bench_case, bench_run):
    bench_run.measure(bench_case)


def test_anonymize_speed(bench_variant, bench_run, benchmark):
    bench_run.time_anonymize(bench_variant, benchmark)


def test_encode_speed(bench_run, benchmark):
    bench_run.time_encode(benchmark)
