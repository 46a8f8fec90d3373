"""Where the pipeline's per-image work runs: a local process pool or a Dask cluster.

An executor takes the pipeline's batches of per-image tasks (image key, path, regions,
variant) to worker processes that keep their models loaded, and gives back each batch's
embeddings and per-image facts, in order; never images. The client, the process that
made the :class:`faceanon.pipeline.Evaluation`, stays the only writer to DuckDB.

Executors are registered like methods: the built-in ``local`` (the default, one process
per core on this machine) and ``dask``, and any other a package registers under the
entry-point group ``faceanon.executors``; :func:`get_executor` makes one by name.

``dask`` runs the same batches on a ``distributed`` cluster: a ``LocalCluster`` of
``workers`` processes with one thread each, or the existing cluster whose scheduler is
``scheduler`` (or ``$DASK_SCHEDULER_ADDRESS``). Each worker process loads the models
once, through a worker plugin that runs the pipeline's own initializer (the plugin is
installed again on a worker that replaces a dead one). Workers read the images from a
path they share with the client, or, with ``ship_images``, from the encoded bytes the
client sends with each batch. Either way the pixel sha256 of every original a worker
decodes is checked against the client's, so a node that sees other files under the
same path fails the run with a message naming the file, never gives other scores.

This module imports neither dask nor numpy: the default install and the local pool
never load dask (a test keeps it so).
"""

from __future__ import annotations

import importlib
import os
import uuid
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterator, Sequence
from importlib.metadata import entry_points

from faceanon.errors import FaceanonError

__all__ = [
    "BUILTIN_EXECUTORS",
    "ENTRY_POINT_GROUP",
    "SCHEDULER_ENV",
    "DaskExecutor",
    "Executor",
    "ExecutorError",
    "ImageMismatchError",
    "LocalPool",
    "WorkerTaskError",
    "available_executors",
    "get_executor",
]

ENTRY_POINT_GROUP = "faceanon.executors"
BUILTIN_EXECUTORS = {
    "local": "faceanon.executors:LocalPool",
    "dask": "faceanon.executors:DaskExecutor",
}
#: Where dask's own tools look for a scheduler; ``dask`` uses it when none is given.
SCHEDULER_ENV = "DASK_SCHEDULER_ADDRESS"


class ExecutorError(FaceanonError, RuntimeError):
    """The executor cannot run the work: unknown, not installed, or its cluster is lost."""


class ImageMismatchError(FaceanonError, ValueError):
    """A worker decoded other pixels than the client for the same original image file.

    Only a message is kept, so that the error travels back from a Dask worker intact.
    """


class WorkerTaskError(FaceanonError, RuntimeError):
    """A batch failed on a worker with an error that cannot travel back as it is.

    Its message is the original's, with its type and the worker's host.
    """


class Executor(ABC):
    """Runs batches of the pipeline's per-image work in worker processes.

    An executor is started once per evaluation with the pipeline's worker initializer
    and its arguments (settings, cache snapshot, methods), which every worker process
    runs once before its first batch, then maps batches to their results.
    """

    #: The name it is registered under (``--bench-executor``).
    name: str = ""

    @property
    @abstractmethod
    def parallel(self) -> bool:
        """False when the work is better done in this process (e.g. one local worker)."""

    @abstractmethod
    def start(self, initializer: Callable, initargs: tuple) -> None:
        """Start the workers; each runs ``initializer(*initargs)`` once."""

    @property
    @abstractmethod
    def started(self) -> bool:
        """Whether :meth:`start` was called (and :meth:`close` not since)."""

    @abstractmethod
    def map(self, function: Callable, batches: Sequence[Sequence], *,
            files: Sequence[Sequence[str]] | None = None) -> Iterator:
        """``function(batch)`` for each batch on the workers, the results in order.

        Every batch is handed to the workers before this returns (so that the next
        variant is prepared while this one is compared); the results are collected as
        the iterator is read.

        Parameters
        ----------
        function : callable
            Picklable; runs on a worker after its initializer.
        batches : sequence of sequences
            The tasks; one call of ``function`` each.
        files : sequence of sequences of str, optional
            For each batch, the original image files its tasks read (an executor whose
            workers may see other files checks them).
        """

    @abstractmethod
    def close(self) -> None:
        """Stop the workers (and a cluster this executor started); safe to call twice."""

    def describe(self) -> dict:
        """What the run's config records about where the work ran."""
        return {"name": self.name}

    def notes(self) -> list[str]:
        """Lines to tell the user about options that were ignored."""
        return []

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


class LocalPool(Executor):
    """Worker processes on this machine (``forkserver``), one per core by default.

    Parameters
    ----------
    workers : int, optional
        Worker processes; default one per core. ``1``: the pipeline works in its own
        process (the serial path) instead.
    """

    name = "local"

    def __init__(self, *, workers: int | None = None):
        self.workers = workers or os.cpu_count() or 1
        self._pool = None

    @property
    def parallel(self) -> bool:
        return self.workers > 1

    @property
    def started(self) -> bool:
        return self._pool is not None

    def start(self, initializer: Callable, initargs: tuple) -> None:
        import multiprocessing
        from concurrent.futures import ProcessPoolExecutor

        context = multiprocessing.get_context("forkserver")
        self._pool = ProcessPoolExecutor(self.workers, mp_context=context,
                                         initializer=initializer, initargs=initargs)

    def map(self, function, batches, *, files=None) -> Iterator:
        # Files are read where they were listed: nothing to check.
        return self._pool.map(function, batches)

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(cancel_futures=True)
            self._pool = None

    def describe(self) -> dict:
        return {"name": self.name, "workers": self.workers}


# --- Dask ----------------------------------------------------------------------------------

#: Seconds the client waits to reach a scheduler before the run fails.
CONNECT_TIMEOUT = 30
#: Dask settings of the worker processes a LocalCluster starts. Dask's nannies set
#: ``MALLOC_TRIM_THRESHOLD_=65536`` in every worker, which also freezes glibc's mmap
#: threshold: each image-sized array is then mapped and faulted in afresh, ten times the
#: page faults and about a fifth more time per image here. Unset, as in the local pool.
WORKER_CONFIG = {"distributed.nanny.pre-spawn-environ.MALLOC_TRIM_THRESHOLD_": None}


class DaskExecutor(Executor):
    """The pipeline's batches on a ``distributed`` cluster.

    Parameters
    ----------
    workers : int, optional
        Worker processes of the ``LocalCluster`` started when no scheduler is given
        (one thread each); default one per core. Ignored, with a note
        (:meth:`notes`), when a scheduler is given: that cluster has its own workers.
    scheduler : str, optional
        Address of a running scheduler (``tcp://host:8786``); default
        ``$DASK_SCHEDULER_ADDRESS``, and without it a ``LocalCluster``.
    ship_images : bool
        Send each batch's original files with it (their encoded bytes) instead of
        having workers read them from the shared path.

    Notes
    -----
    Tasks a dead worker held are run again on another worker by Dask itself (up to
    ``distributed.scheduler.allowed-failures`` times per task); the results are the
    same, as every task is deterministic. A lost scheduler fails the run with
    :class:`ExecutorError`.
    """

    name = "dask"

    def __init__(self, *, workers: int | None = None, scheduler: str | None = None,
                 ship_images: bool = False):
        self.scheduler = scheduler or os.environ.get(SCHEDULER_ENV) or None
        self.requested_workers = workers
        self.workers = None if self.scheduler else (workers or os.cpu_count() or 1)
        self.ship_images = ship_images
        self._client = None
        self._cluster = None
        self._reference: dict[str, str] = {}

    @property
    def parallel(self) -> bool:
        return True

    @property
    def started(self) -> bool:
        return self._client is not None

    @property
    def client(self):
        """The ``distributed.Client`` (after :meth:`start`)."""
        return self._client

    def notes(self) -> list[str]:
        if self.scheduler and self.requested_workers:
            return [f"faceanon: --bench-workers {self.requested_workers} ignored: the Dask "
                    f"cluster at {self.scheduler} has its own workers"]
        return []

    def describe(self) -> dict:
        described = {"name": self.name, "scheduler": self.scheduler or "LocalCluster",
                     "ship_images": self.ship_images}
        if self._client is not None:
            described["workers"] = len(self._client.scheduler_info(n_workers=-1)["workers"])
        elif self.workers:
            described["workers"] = self.workers
        return described

    def start(self, initializer: Callable, initargs: tuple) -> None:
        try:
            import distributed
        except ImportError:
            raise ExecutorError("the dask executor needs dask.distributed: "
                                "pip install 'faceanon[dask]'") from None
        try:
            if self.scheduler is None:
                import logging
                import warnings

                import dask

                with warnings.catch_warnings(), dask.config.set(WORKER_CONFIG):
                    # The scheduler's HTTP server (health checks) moves to a free port
                    # when another cluster holds 8787; nothing to warn about.
                    warnings.filterwarnings("ignore", "Port .* is already in use")
                    self._cluster = distributed.LocalCluster(
                        n_workers=self.workers, threads_per_worker=1, processes=True,
                        dashboard_address=None,
                        # Closing logs connection errors of heartbeats racing the
                        # shutdown; what goes wrong in a task reaches the client as its
                        # exception.
                        silence_logs=logging.CRITICAL)
                self._client = distributed.Client(self._cluster, set_as_default=False)
            else:
                self._client = distributed.Client(self.scheduler, timeout=CONNECT_TIMEOUT,
                                                  set_as_default=False)
        except (OSError, TimeoutError) as error:
            self.close()
            where = self.scheduler or "a LocalCluster"
            raise ExecutorError(f"cannot reach the Dask scheduler at {where}: {error}") from None
        # Installed on every worker now and on any that joins later (a replacement).
        self._client.register_plugin(_worker_plugin(initializer, initargs),
                                     name=f"faceanon-{uuid.uuid4().hex}")

    def _reference_hashes(self, paths: Sequence[str]) -> None:
        """The client's pixel sha256 of each original not hashed yet (threads: decoding
        and hashing release the GIL)."""
        todo = list(dict.fromkeys(p for p in paths if p not in self._reference))
        if not todo:
            return
        from concurrent.futures import ThreadPoolExecutor

        with ThreadPoolExecutor(max_workers=4) as pool:
            self._reference.update(zip(todo, pool.map(_pixel_sha256, todo), strict=True))

    def map(self, function, batches, *, files=None) -> Iterator:
        files = [list(f) for f in files] if files is not None else [[] for _ in batches]
        self._reference_hashes([path for batch in files for path in batch])
        run = uuid.uuid4().hex[:12]
        futures = []
        for index, (batch, paths) in enumerate(zip(batches, files, strict=True)):
            checks = {path: self._reference[path] for path in paths}
            shipped = ({path: _read_bytes(path) for path in checks}
                       if self.ship_images else None)
            futures.append(self._client.submit(
                _dask_task, function, batch, checks, shipped, pure=False,
                key=f"faceanon-batch-{run}-{index}"))
        return self._results(futures)

    def _results(self, futures: list) -> Iterator:
        from distributed import KilledWorker

        try:
            for index in range(len(futures)):
                future = futures[index]
                try:
                    yield future.result()
                except KilledWorker as error:
                    raise ExecutorError(
                        f"Dask workers kept dying on one batch of images ({error}); the run "
                        "cannot finish") from None
                except Exception as error:
                    if self._lost_scheduler(error):
                        raise ExecutorError(
                            f"lost the Dask scheduler at {self.scheduler or 'the LocalCluster'}"
                            f" ({type(error).__name__}: {error}); the run cannot finish"
                        ) from None
                    raise
                futures[index] = None  # its result is ours now: the cluster may drop it
        finally:
            for future in futures:
                if future is not None:
                    future.release()

    def _lost_scheduler(self, error: BaseException) -> bool:
        """Whether ``error`` came from losing the scheduler, not from the task itself."""
        from concurrent.futures import CancelledError

        from distributed.comm.core import CommClosedError

        if isinstance(error, CancelledError | CommClosedError):
            return True
        # A task's own error arrives while the client is connected.
        return self._client is not None and self._client.status != "running"

    def close(self) -> None:
        client, cluster = self._client, self._cluster
        self._client = self._cluster = None
        # A lost scheduler must not make closing hang: each step is bounded.
        if client is not None:
            try:
                client.close(timeout=10)
            except Exception:  # closing after a failure: the failure is what matters
                pass
        if cluster is not None:
            try:
                cluster.close(timeout=10)
            except Exception:
                pass


def _pixel_sha256(path: str) -> str:
    from faceanon.imageio import read_image
    from faceanon.recognition import image_sha256

    return image_sha256(read_image(path))


def _read_bytes(path: str) -> bytes:
    from pathlib import Path

    return Path(path).read_bytes()


def _worker_plugin(initializer: Callable, initargs: tuple):
    """A ``distributed.WorkerPlugin`` running ``initializer(*initargs)`` on each worker.

    Defined here, not at import, so that this module never imports dask; Dask pickles
    the class with its instance.
    """
    from distributed import WorkerPlugin

    class PipelineWorker(WorkerPlugin):
        def __init__(self, initializer, initargs):
            self.initializer = initializer
            self.initargs = initargs

        def setup(self, worker):
            self.initializer(*self.initargs)
            _install_checked_images()

    return PipelineWorker(initializer, initargs)


def _install_checked_images() -> None:
    """Replace the worker's decoded-image cache by one that checks each original."""
    from faceanon.pipeline import _WORKER, IMAGE_CACHE_BYTES

    _WORKER["images"] = _checked_images_class()(budget_bytes=IMAGE_CACHE_BYTES)


def _checked_images_class():
    from faceanon.pipeline import DecodedImages

    class CheckedImages(DecodedImages):
        """Decoded originals whose pixel sha256 must equal the client's.

        The bytes of shipped files are decoded from a private temporary file with the
        same reader (and the same suffix) as the shared path would be.
        """

        def __init__(self, *, budget_bytes: int):
            super().__init__(budget_bytes=budget_bytes)
            self.expected: dict[str, str] = {}
            self.shipped: dict[str, bytes] = {}

        def read(self, path: str):
            if path in self.images:
                return super().read(path)
            if path in self.shipped:
                image = _decode_shipped(path, self.shipped[path])
            else:
                from faceanon.imageio import read_image

                image = read_image(path)
            expected = self.expected.get(path)
            if expected is not None:
                from faceanon.recognition import image_sha256

                found = image_sha256(image)
                if found != expected:
                    import socket

                    raise ImageMismatchError(
                        f"{path}: the worker on {socket.gethostname()} decoded pixels with "
                        f"sha256 {found[:16]}, the client {expected[:16]}: this node sees "
                        "other files under the dataset path (give every worker the same "
                        "data, or ship the images with --bench-ship-images)")
            image.setflags(write=False)
            self.images[path] = image
            self.used += image.nbytes
            while self.used > self.budget and len(self.images) > 1:
                _, dropped = self.images.popitem(last=False)
                self.used -= dropped.nbytes
            return image

    return CheckedImages


def _decode_shipped(path: str, data: bytes):
    import tempfile
    from pathlib import Path

    from faceanon.imageio import read_image

    with tempfile.TemporaryDirectory(prefix="faceanon-shipped-") as folder:
        local = Path(folder) / f"image{Path(path).suffix}"
        local.write_bytes(data)
        return read_image(local)


def _dask_task(function: Callable, batch: Sequence, checks: dict[str, str],
               shipped: dict[str, bytes] | None):
    """One batch on a Dask worker: say what its originals must hash to, then run it."""
    from faceanon.pipeline import _WORKER

    images = _WORKER["images"]
    images.expected.update(checks)
    images.shipped = dict(shipped or {})
    try:
        return function(batch)
    except FaceanonError as error:
        # The client must see what went wrong (which file, which problem), and an
        # exception that cannot be unpickled there would hide it.
        import pickle

        try:
            pickle.loads(pickle.dumps(error))
        except Exception:
            import socket

            raise WorkerTaskError(f"on the worker on {socket.gethostname()}: "
                                  f"{type(error).__name__}: {error}") from None
        raise
    finally:
        images.shipped = {}  # shipped bytes only live for their batch


# --- registry ------------------------------------------------------------------------------


def _plugin_entry_points() -> dict:
    return {ep.name: ep for ep in entry_points(group=ENTRY_POINT_GROUP)}


def available_executors() -> list[str]:
    """Names of every executor: the built-in ones, then those added by plugins."""
    plugins = [name for name in _plugin_entry_points() if name not in BUILTIN_EXECUTORS]
    return list(BUILTIN_EXECUTORS) + sorted(plugins)


def get_executor(name: str, **options) -> Executor:
    """Create the executor registered under ``name`` with keyword ``options``.

    Raises
    ------
    ExecutorError
        When no executor has that name.
    """
    if name in BUILTIN_EXECUTORS:
        module, _, attribute = BUILTIN_EXECUTORS[name].partition(":")
        cls = getattr(importlib.import_module(module), attribute)
    else:
        plugins = _plugin_entry_points()
        if name not in plugins:
            raise ExecutorError(f"unknown executor {name!r}; known executors: "
                                f"{', '.join(available_executors())}")
        cls = plugins[name].load()
    return cls(**options)
