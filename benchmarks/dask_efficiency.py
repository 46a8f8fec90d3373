"""The Dask executor against the local process pool, and what limits scale-out.

Prints, measured in one run on this machine:

1. the wall time of the smoke grid (every case) and of a paper-grid subset (blur,
   pixelate and noise at the paper's eight strengths, all four modes), each run in turn
   on the local pool and on a Dask ``LocalCluster`` (``--repeat`` times; the median
   ratio) with the same number of worker processes (one thread each), in fresh
   databases; the Dask wall time includes starting
   the cluster, which is printed apart. The ratio pool wall / Dask wall is Dask's share
   of the pool's throughput (goal: 0.9 or better on the paper grid), and every score of
   the two runs is compared (identical: at most 1e-12 apart). On a shared machine the
   wall times move with the load, so the CPU seconds each run used are printed too
   (this process, which holds a LocalCluster's scheduler and nannies, plus the worker
   processes over their whole life); their ratio is the overhead of the executor itself;
2. the client's single DuckDB writer: score rows per second written by
   ``ResultsDB.write_case`` (one case of ``--writer-identities`` squared comparisons)
   and embedding rows per second (``ResultsDB.store_embeddings``);
3. the encodings per second one worker makes (images anonymized, detected and encoded
   per second of worker time, from the Dask run's own per-image seconds), and from
   these the cluster size beyond which the writer, not the workers, sets the pace, at
   250 and 1,680 identities (all LFW people with two or more photos). Per variant the
   workers make 2 x identities encodings, and the client writes 3 cases (naive, reverse,
   parrot) of identities squared scores while they make the next variant's. The
   client's other own work, decoding each original once for the hash the workers check,
   is printed as originals per second.

The machine may be shared: compare the ratios, measured in the same run; the load
average is printed before and after each timed part.

Usage (with faceanon and dask installed; ``FACEANON_DATA`` names the datasets)::

    python benchmarks/dask_efficiency.py                    # 40 / 100 identities, 2 workers
    python benchmarks/dask_efficiency.py --smoke-identities 10 --paper-identities 20
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np

from faceanon.benchmark.grids import cases as grid_cases
from faceanon.datasets import protocol_split, resolve_dataset
from faceanon.executors import DaskExecutor, LocalPool
from faceanon.pipeline import Evaluation, Settings, _init_worker
from faceanon.store import ResultsDB

PAPER_SUBSET = ("blur", "pixelate", "noise")
IDENTICAL = 1e-12


def load_average() -> str:
    return " ".join(f"{v:.2f}" for v in os.getloadavg())


def process_cpu_seconds(pid: int) -> float:
    """User + system CPU seconds of a live process, all its threads (``/proc``)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def worker_cpu_seconds(executor) -> float:
    """CPU seconds of the executor's worker processes so far (Dask: and their nannies,
    where they run apart)."""
    if isinstance(executor, LocalPool):
        pids = list(executor._pool._processes) if executor._pool else []
    else:
        client = executor.client
        # A LocalCluster's nannies live in this process, counted as the client's.
        pids = {*client.run(os.getpid).values(), *client.run(os.getpid, nanny=True).values()}
        pids.discard(os.getpid())
    return sum(process_cpu_seconds(pid) for pid in pids)


def run_grid(dataset, split, cases, executor, db_path: Path, settings: Settings) -> dict:
    """Every case on ``executor`` in a fresh database: wall time, CPU seconds (this
    process, with a LocalCluster's scheduler, and the workers), scores, per-image costs."""
    with ResultsDB(db_path) as db:
        run_id = db.start_run(name=executor.name, dataset_name=dataset.name,
                              dataset_fingerprint=dataset.fingerprint, config={},
                              git_commit=None, git_dirty=None, packages={}, machine={})
        started = time.perf_counter()
        client_before = sum(os.times()[:2])
        with Evaluation(dataset, split, db=db, run_id=run_id, settings=settings,
                        executor=executor) as evaluation:
            evaluation.plan(cases)
            results = [evaluation.run_case(case) for case in cases]
            wall = time.perf_counter() - started
            # Read before the workers stop: their whole life, start and models included.
            cpu = {"client": sum(os.times()[:2]) - client_before,
                   "workers": worker_cpu_seconds(executor)}
        scores = [db.con.execute("SELECT probe, gallery, distance FROM scores WHERE case_id = ?"
                                 " ORDER BY probe, gallery", [r.case_id]).fetchall()
                  for r in results]
        db.finish_run(run_id, "complete")
    anonymize = [s for r in results for s in r.per_image.get("anonymize", [])]
    recognize = [s for r in results for s in r.per_image.get("recognize", [])]
    # An image's worker seconds: anonymizing it, then detecting and encoding it.
    per_image = statistics.fmean(anonymize or [0.0]) + statistics.fmean(recognize)
    return {"wall": wall, "cpu": cpu, "scores": scores, "per_image": per_image,
            "n_images": len(recognize)}


def largest_difference(one: list, two: list) -> float:
    worst = 0.0
    for rows_one, rows_two in zip(one, two, strict=True):
        for a, b in zip(rows_one, rows_two, strict=True):
            if a[:2] != b[:2] or (a[2] is None) != (b[2] is None):
                return float("inf")
            if a[2] is not None:
                worst = max(worst, abs(a[2] - b[2]))
    return worst


def compare(title: str, dataset, split, cases, workers: int, settings: Settings, *,
            repeat: int) -> tuple[float, dict]:
    """Both executors on the same cases, in turn ``repeat`` times (pool, dask, pool, ...,
    so that a change of the machine's load weighs on both): the median throughput ratio
    and Dask's last run."""
    print(f"\n== {title}: {len(cases)} cases, {len(split.gallery) + len(split.probes)} "
          f"images, {workers} workers (load {load_average()})")
    ratios, cpu_ratios = [], []
    with tempfile.TemporaryDirectory(prefix="faceanon-dask-") as folder:
        for turn in range(repeat):
            pool = run_grid(dataset, split, cases, LocalPool(workers=workers),
                            Path(folder) / f"pool{turn}.duckdb", settings)
            print(f"local pool: {pool['wall']:8.1f} s   (load {load_average()})")
            # A cluster started and closed alone: what of Dask's wall time is its start.
            started = time.perf_counter()
            with DaskExecutor(workers=workers) as executor:
                executor.start(_init_worker, (settings, frozenset(), {}))
                executor.client.wait_for_workers(workers)
                cluster_start = time.perf_counter() - started
            dask = run_grid(dataset, split, cases, DaskExecutor(workers=workers),
                            Path(folder) / f"dask{turn}.duckdb", settings)
            print(f"dask:       {dask['wall']:8.1f} s   (load {load_average()}), of which "
                  f"starting a LocalCluster alone takes {cluster_start:.1f} s")
            for name, run in (("local pool", pool), ("dask", dask)):
                print(f"{name + ' CPU:':<16}{sum(run['cpu'].values()):8.1f} s   (client "
                      f"{run['cpu']['client']:.1f} s, workers {run['cpu']['workers']:.1f} s)")
            difference = largest_difference(pool["scores"], dask["scores"])
            print(f"largest score difference {difference:.1e} "
                  f"({'identical' if difference <= IDENTICAL else 'DIFFER'})")
            ratios.append(pool["wall"] / dask["wall"])
            cpu_ratios.append(sum(pool["cpu"].values()) / sum(dask["cpu"].values()))
    ratio = statistics.median(ratios)
    print(f"throughput ratio dask / pool = {ratio:.2f} (median of "
          f"{', '.join(f'{r:.2f}' for r in ratios)}; goal >= 0.9)")
    print(f"CPU ratio pool / dask = {statistics.median(cpu_ratios):.2f} (the work itself, "
          "whatever else the machine runs)")
    return ratio, dask


def writer_rates(identities: int, repeat: int) -> tuple[float, float]:
    """Rows per second of the client's DuckDB writer: scores of one case, embeddings."""
    rng = np.random.default_rng(0)
    n = identities * identities
    names = np.array([f"person_{i:05d}/img_0001.jpg" for i in range(identities)], dtype=object)
    scores = {
        "probe": np.repeat(names, identities),
        "gallery": np.tile(names, identities),
        "mated": (np.arange(n) // identities) == (np.arange(n) % identities),
        "distance": rng.normal(0.7, 0.1, n),
        "probe_acquired": np.ones(n, bool),
        "gallery_enrolled": np.ones(n, bool),
    }
    score_rates, embedding_rates = [], []
    with tempfile.TemporaryDirectory(prefix="faceanon-writer-") as folder:
        with ResultsDB(Path(folder) / "w.duckdb") as db:
            run_id = db.start_run(name="writer", dataset_name="x", dataset_fingerprint="x",
                                  config={}, git_commit=None, git_dirty=None, packages={},
                                  machine={})
            for index in range(repeat):
                started = time.perf_counter()
                db.write_case(run_id, method="blur", k=index + 1, mode="naive",
                              detector="hog", backend="b", scores=scores)
                score_rates.append(n / (time.perf_counter() - started))
                keys = [f"{index}-{i:064d}" for i in range(2 * identities)]
                vectors = list(rng.normal(size=(len(keys), 128)))
                started = time.perf_counter()
                db.store_embeddings("b", keys, vectors, [1] * len(keys), model="m")
                embedding_rates.append(len(keys) / (time.perf_counter() - started))
    return statistics.median(score_rates), statistics.median(embedding_rates)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default="lfw")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--smoke-identities", type=int, default=40)
    parser.add_argument("--paper-identities", type=int, default=100)
    parser.add_argument("--writer-identities", type=int, default=250)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--repeat", type=int, default=2,
                        help="runs of each executor per grid, in turn (default 2)")
    args = parser.parse_args()

    dataset = resolve_dataset(args.data)
    settings = Settings(seed=args.seed).resolved()
    print(f"faceanon dask efficiency: {args.workers} workers, backend {settings.backend}, "
          f"{os.cpu_count()} cores")
    smoke = protocol_split(dataset, identities=args.smoke_identities, seed=args.seed)
    compare("smoke grid", dataset, smoke, grid_cases("smoke"), args.workers, settings,
            repeat=args.repeat)
    paper = protocol_split(dataset, identities=args.paper_identities, seed=args.seed)
    _, dask_run = compare(f"paper grid ({', '.join(PAPER_SUBSET)})", dataset, paper,
                           grid_cases("paper", methods=list(PAPER_SUBSET)), args.workers,
                           settings, repeat=args.repeat)

    scores_per_s, embeddings_per_s = writer_rates(args.writer_identities, repeat=3)
    # The client also decodes each original once, for the hash the workers check.
    paths = [str(dataset.path(s)) for s in (*paper.gallery, *paper.probes)]
    started = time.perf_counter()
    DaskExecutor(workers=1)._reference_hashes(paths)
    hashes_per_s = len(paths) / (time.perf_counter() - started)
    encodings_per_s = 1 / dask_run["per_image"]
    print(f"\n== scale-out: the single writer against the workers (load {load_average()})")
    print(f"writer: {scores_per_s:,.0f} score rows/s (a case of {args.writer_identities}^2), "
          f"{embeddings_per_s:,.0f} embedding rows/s")
    print(f"one worker: {encodings_per_s:.2f} encodings/s (the paper grid's Dask run: mean "
          "seconds to anonymize an image + to detect and encode one)")
    print(f"client: {hashes_per_s:.0f} originals/s decoded and hashed (the reference the "
          "workers check; once per original and run)")
    for identities in (250, 1680):
        # Per variant: workers make 2I encodings; the writer stores 3 cases of I^2 scores
        # and 2I embeddings. Beyond N workers the writer is the slower of the two.
        writer_seconds = 3 * identities**2 / scores_per_s + 2 * identities / embeddings_per_s
        limit = 2 * identities / (encodings_per_s * writer_seconds)
        print(f"{identities:5d} identities: the writer needs {writer_seconds:.2f} s per "
              f"variant; it sets the pace beyond {limit:,.0f} workers")


if __name__ == "__main__":
    main()
