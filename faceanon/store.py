"""The results database (DuckDB): runs, cases, scores, images, timings, embedding cache.

Tables are created from ``schema.sql`` and the metric views from ``metrics.sql`` (both
shipped in the package); the conventions of the views (polarity, ties, EER interpolation,
failures to acquire, the decision threshold of each run) are documented at the top of
``metrics.sql``.

Everything is written in bulk through Arrow, never row by row. Timestamps are UTC.

Never locked out
----------------
DuckDB lets one process write a database file, and holds the file's lock for as long as a
connection is open: a reader cannot open it while a writer is connected, nor a writer while
a reader is. So :class:`ResultsDB` never keeps the file open between calls. Each method
opens it, does one batch of work in one transaction and closes it; an open that finds the
file locked retries with exponential backoff (and jitter) for up to ``lock_timeout``
seconds. Two benchmark runs can therefore write one database at the same time, and
``faceanon report`` or ``faceanon runs list`` can read it while a run is in progress. A
process that keeps the file open (an older faceanon, the DuckDB shell, a notebook holding
:attr:`ResultsDB.con`) cannot be waited out: after ``lock_timeout`` a
:class:`DatabaseLockedError` says, in one line, which process holds the file and what to do.

:meth:`ResultsDB.write_case` writes one case's row, scores, images and timings in ONE
transaction, so a process killed at any moment leaves every case either complete or absent.

Runs record their host, process id and a heartbeat (refreshed every
``HEARTBEAT_INTERVAL`` seconds by a background thread while the run is open). A run whose
process is gone (same host) or whose heartbeat is older than ``STALE_AFTER`` (another
host) and that never finished is ``crashed``: a writer marks it so when it opens the
database; :meth:`ResultsDB.runs` shows it so to readers.

Schema versions
---------------
The database records its schema version (table ``schema_version``; a database without it
was written by faceanon before versions were recorded: version 1). Opening a database of an
older version upgrades it in place, in one transaction (see ``_MIGRATIONS``); a database
of a newer version is refused with a message that says what to do. A database is never
read with definitions it was not written for.

The report and the benchmark read through :class:`ResultsDB`'s methods, never with SQL
of their own, so the tables can change behind them. ``faceanon runs`` lives in
:mod:`faceanon.cli.runs`.
"""

from __future__ import annotations

import json
import math
import os
import random
import re
import socket
import threading
import time
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from datetime import UTC, datetime
from importlib import resources
from pathlib import Path
from typing import Any

import duckdb
import numpy as np
import pyarrow as pa

from faceanon.errors import FaceanonError
from faceanon.protocol import DECISION_THRESHOLD, MODES

DEFAULT_DB = "results.duckdb"
#: Decision threshold of a run when none is given (:data:`faceanon.protocol.DECISION_THRESHOLD`).
DEFAULT_THRESHOLD = DECISION_THRESHOLD
#: Extra thresholds a new database's ``confusion`` view reports besides each run's own:
#: the decision threshold and 0.575, the threshold of the seed study's DeepPrivacy table.
CONFUSION_THRESHOLDS = (DECISION_THRESHOLD, 0.575)
#: The schema version this faceanon writes and reads (``schema.sql``).
SCHEMA_VERSION = 5
FINAL_STATUSES = ("complete", "failed", "interrupted")
IMAGE_COLUMNS = ("key", "role", "method", "k", "sha256", "acquired", "faces_found", "backend",
                 "attack")
TIMING_COLUMNS = ("name", "min", "max", "median", "mean", "stddev", "rounds", "unit")
SCORE_COLUMNS = ("probe", "gallery", "mated", "distance", "probe_acquired", "gallery_enrolled")
#: ``image_utility`` columns a case's ``utility`` rows carry (``run_id`` is the case's).
UTILITY_COLUMNS = ("method", "k", "key", "faces", "retained_hog", "landmarks_placed", "nme",
                   "nme_faces", "ssim", "psnr", "ssim_face", "psnr_face", "changed_outside",
                   "seconds")

#: Held while this process opens or closes a connection to a database file. DuckDB (2.0.1)
#: loses its Python table functions when a connection is opened or closed in one thread
#: while another thread's query scans a Python object: "Table Function with name
#: python_arrow_scan does not exist" (185 of 3000 inserts beside a thread that opens and
#: closes connections, none with this lock). The heartbeat thread does exactly that.
_CONNECTING = threading.Lock()

#: Seconds a reader waits for a locked database before giving up (ResultsDB(read_only=True)).
READ_LOCK_TIMEOUT = 30.0
#: Seconds a writer waits: long enough to outlast a report being rendered.
WRITE_LOCK_TIMEOUT = 300.0
#: Seconds between two heartbeats of a running run.
HEARTBEAT_INTERVAL = 30.0
#: A run on another host whose heartbeat is older than this (seconds) is taken as crashed.
STALE_AFTER = 600.0

__all__ = [
    "DEFAULT_DB",
    "DEFAULT_THRESHOLD",
    "SCHEMA_VERSION",
    "DatabaseLockedError",
    "ResultsDB",
    "SchemaVersionError",
    "StoreError",
    "run_is_abandoned",
]


class StoreError(FaceanonError, RuntimeError):
    """The results database cannot be opened, read or written as asked."""


class DatabaseLockedError(StoreError):
    """Another process kept the database file locked for longer than ``lock_timeout``."""


class SchemaVersionError(StoreError):
    """The database was written by another faceanon and cannot be read by this one."""


def _sql(name: str) -> str:
    return resources.files("faceanon").joinpath(name).read_text(encoding="utf-8")


def _make_views(con) -> None:
    """The TEMP metric views of a connection: the image cases' and the video cases'."""
    con.execute(_sql("metrics.sql"))
    con.execute(_sql("video_metrics.sql"))


def _now() -> datetime:
    return datetime.now(UTC).replace(tzinfo=None)


def _json(value: Any) -> str | None:
    return None if value is None else json.dumps(value, sort_keys=True, default=str)


def _bool_array(values: Any, n: int, name: str) -> pa.Array:
    array = np.asarray(values)
    if array.shape != (n,):
        raise ValueError(f"{name} has shape {array.shape}, expected ({n},)")
    if array.dtype != bool:
        if array.dtype == object:
            return pa.array(list(array), type=pa.bool_())
        raise TypeError(f"{name} must be boolean, got {array.dtype}")
    return pa.array(array, type=pa.bool_())


def _string_array(values: Sequence[str], n: int, name: str) -> pa.Array:
    if isinstance(values, pa.Array | pa.ChunkedArray):
        array = values
    else:
        array = pa.array(values if isinstance(values, np.ndarray) else list(values),
                         type=pa.string())
    if len(array) != n:
        raise ValueError(f"{name} has {len(array)} entries, expected {n}")
    if array.null_count:
        raise ValueError(f"{name} must not contain None")
    return array


def _check_model(model: str) -> str:
    if not isinstance(model, str) or not model:
        raise ValueError(f"model must name what computed the embeddings (the backend's "
                         f"model_fingerprint()), got {model!r}")
    return model


def _check_threshold(threshold: float) -> float:
    threshold = float(threshold)
    if not math.isfinite(threshold):
        raise ValueError(f"threshold must be finite, got {threshold}")
    return threshold


# -- processes: who holds the file, is a run's writer alive --------------------------------


def _lock_holder(error: Exception) -> int | None:
    """The process id DuckDB names in a lock conflict, if it names one."""
    found = re.search(r"\(PID (\d+)\)", str(error))
    return int(found.group(1)) if found else None


def _process_command(pid: int) -> str | None:
    try:
        raw = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return None
    # one line whatever the arguments hold (python -c scripts hold newlines)
    command = " ".join(raw.replace(b"\0", b" ").decode(errors="replace").split())
    return command[:120] + ("..." if len(command) > 120 else "") if command else None


def _process_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:          # alive, owned by someone else
        return True
    except OSError:
        return False
    return True


def _process_start(pid: int) -> float | None:
    """When process ``pid`` started (seconds since the epoch), on Linux; None elsewhere."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
        boot = next(int(line.split()[1]) for line in Path("/proc/stat").read_text().splitlines()
                    if line.startswith("btime "))
    except (OSError, StopIteration, ValueError, IndexError):
        return None
    # the command name (field 2) may hold spaces; fields after it are space separated
    fields = stat[stat.rindex(")") + 2:].split()
    return boot + int(fields[19]) / os.sysconf("SC_CLK_TCK")


def _epoch(value: datetime) -> float:
    return value.replace(tzinfo=UTC).timestamp()


def run_is_abandoned(run: Mapping[str, Any], *, now: datetime | None = None,
                     stale_after: float = STALE_AFTER) -> bool:
    """Whether a run that says ``running`` lost its process (and will never finish).

    Parameters
    ----------
    run : mapping
        A row of ``runs``: ``status``, ``started``, ``host``, ``pid``, ``heartbeat``.
    now : datetime, optional
        UTC now.
    stale_after : float
        Seconds after which the heartbeat of a run on another host is stale.

    Returns
    -------
    bool
        On this host: the process is gone, or its id now belongs to a process that started
        after the run (never true for a live run's own process). On another host, or with
        no process recorded: the last heartbeat (or, without one, the start) is older
        than ``stale_after``. False for any status other than ``running``.
    """
    if run.get("status") != "running":
        return False
    pid = run.get("pid")
    if pid is not None and run.get("host") == socket.gethostname():
        if not _process_alive(int(pid)):
            return True
        started = _process_start(int(pid))
        return started is not None and run.get("started") is not None \
            and started > _epoch(run["started"]) + 1.0
    last = run.get("heartbeat") or run.get("started")
    now = now or _now()
    return last is None or (now - last).total_seconds() > stale_after


# -- migrations ---------------------------------------------------------------------------


def _migrate_1_to_2(con: duckdb.DuckDBPyConnection) -> None:
    """Version 1 (no ``schema_version``) to 2.

    - ``runs`` gains ``threshold``: the run's own decision threshold, taken from what the
      run recorded in its config (``config.threshold``, which the benchmark writes), else
      the database-wide setting the version 1 views used, else 0.6. ``settings`` goes.
    - ``runs`` gains ``methods``, ``host``, ``pid``, ``heartbeat`` (NULL for old runs) and
      the status ``crashed``: DuckDB cannot alter a CHECK constraint, so the table is
      copied into the version 2 definition, ids kept. Runs still ``running`` are
      ``crashed``: a version 1 writer held the file until it ended.
    - ``embeddings`` gains ``model``. A version 1 cache does not say which model files
      computed its embeddings, so it is emptied: they are computed again, never reused
      from an unknown model.
    - The metric views stored in the file are dropped: every connection now makes its own
      (``metrics.sql``).
    - ``cases`` gains ``attack``: ``'detect'``, the only attacker before the attack axis.
    """
    for view in ("case_metrics", "confusion", "det_curve", "score_points", "case_totals"):
        con.execute(f"DROP VIEW IF EXISTS {view}")
    con.execute("DROP MACRO IF EXISTS distance_bin")
    has_settings = bool(con.execute(
        "SELECT 1 FROM information_schema.tables WHERE table_schema = 'main' "
        "AND table_name = 'settings'").fetchall())
    setting = (con.execute("SELECT threshold FROM settings WHERE id = 1").fetchall()
               if has_settings else [])
    default = setting[0][0] if setting else DEFAULT_THRESHOLD
    con.execute("ALTER TABLE runs RENAME TO runs_v1")
    con.execute("ALTER TABLE embeddings RENAME TO embeddings_v1")
    version_2 = _sql("schema.sql")
    for table in ("runs", "embeddings"):
        found = re.search(rf"CREATE TABLE {table} \(.*?\n\);", version_2, re.S)
        con.execute(found.group(0))
    con.execute(
        """INSERT INTO runs (id, name, started, finished, status, git_commit, git_dirty,
                             packages, machine, dataset_name, dataset_fingerprint, config,
                             threshold)
           SELECT id, name, started, finished, status, git_commit, git_dirty, packages,
                  machine, dataset_name, dataset_fingerprint, config,
                  coalesce(TRY_CAST(json_extract(config, '$.threshold') AS DOUBLE), ?)
           FROM runs_v1""", [default])
    # A version 1 writer kept the file open for its whole run: a transaction that holds
    # the file now outlived it, so its runs still 'running' will never finish.
    con.execute("UPDATE runs SET status = 'crashed' WHERE status = 'running'")
    con.execute("DROP TABLE runs_v1")
    con.execute("DROP TABLE embeddings_v1")
    if has_settings:
        con.execute("DROP TABLE settings")
    # Every case before the attack axis measured the recognizer's own detector.
    con.execute("ALTER TABLE cases ADD COLUMN attack VARCHAR DEFAULT 'detect'")
    con.execute("CREATE TABLE schema_version (version INTEGER NOT NULL)")
    con.execute("INSERT INTO schema_version VALUES (2)")


def _migrate_2_to_3(con: duckdb.DuckDBPyConnection) -> None:
    """Version 2 to 3: the attack axis reaches the images. Idempotent.

    - ``images`` gains ``attack``: ``'detect'`` for every earlier row, the only attacker
      before the axis.
    - ``attack_trainings`` (empty): what a learning attack learned from, per case group.
    """
    con.execute("ALTER TABLE images ADD COLUMN IF NOT EXISTS attack VARCHAR DEFAULT 'detect'")
    found = re.search(r"CREATE TABLE attack_trainings \(.*?\n\);", _sql("schema.sql"), re.S)
    con.execute(found.group(0).replace("CREATE TABLE", "CREATE TABLE IF NOT EXISTS", 1))
    con.execute("UPDATE schema_version SET version = 3")


def _migrate_3_to_4(con: duckdb.DuckDBPyConnection) -> None:
    """Version 3 to 4: the table ``image_utility`` (what anonymization cost, per image).

    Idempotent: the table is created only where it is missing. Runs before it have no
    utility rows; their ``utility_metrics`` are simply absent.
    """
    found = re.search(r"CREATE TABLE IF NOT EXISTS image_utility \(.*?\n\);",
                      _sql("schema.sql"), re.S)
    con.execute(found.group(0))
    con.execute("UPDATE schema_version SET version = 4")


def _migrate_4_to_5(con: duckdb.DuckDBPyConnection) -> None:
    """Version 4 to 5: the video benchmark's tables ``video_cases`` and ``video_frames``.

    ``video_schema.sql`` creates them only where they are missing, so the step is
    idempotent; no existing table changes.
    """
    con.execute(_sql("video_schema.sql"))
    con.execute("UPDATE schema_version SET version = 5")


#: version -> the function that upgrades a database of that version to the next one.
_MIGRATIONS = {1: _migrate_1_to_2, 2: _migrate_2_to_3, 3: _migrate_3_to_4,
               4: _migrate_4_to_5}


def _create(con: duckdb.DuckDBPyConnection) -> None:
    """A new database: the tables of ``schema.sql`` and the default confusion thresholds."""
    con.execute(_sql("schema.sql"))
    con.execute(_sql("video_schema.sql"))
    con.executemany("INSERT INTO confusion_thresholds VALUES (?)",
                    [[t] for t in CONFUSION_THRESHOLDS])


def _schema_version(con: duckdb.DuckDBPyConnection, path: str) -> int:
    """2.. from ``schema_version``; 1 for a faceanon database without it; 0 when empty."""
    tables = {r[0] for r in con.execute(
        "SELECT table_name FROM information_schema.tables WHERE table_schema = 'main' "
        "AND table_catalog = current_database()").fetchall()}
    if "schema_version" in tables:
        rows = con.execute("SELECT version FROM schema_version").fetchall()
        if len(rows) != 1:
            raise SchemaVersionError(
                f"{path}: schema_version holds {len(rows)} rows, expected 1")
        return int(rows[0][0])
    if not tables:
        return 0
    if {"runs", "cases", "scores"} <= tables:
        return 1
    raise SchemaVersionError(
        f"{path}: not a faceanon results database (it holds tables {sorted(tables)})")


class ResultsDB:
    """The results database.

    Parameters
    ----------
    path : str or Path, default ``"results.duckdb"``
        Database file; ``":memory:"`` for a throw-away database.
    read_only : bool, default False
        Only read. The file must exist and hold a faceanon database. One written by an
        older faceanon is still upgraded in place first (when the file is writable).
    lock_timeout : float, optional
        Seconds to wait for a file another process has locked, retrying with backoff;
        default 30 for readers, 300 for writers.

    Attributes
    ----------
    path : str
    read_only : bool

    Raises
    ------
    FileNotFoundError
        ``read_only`` and no file at ``path``.
    SchemaVersionError
        The file is not a faceanon database, or one this faceanon cannot upgrade or read.
    DatabaseLockedError
        Another process held the file for longer than ``lock_timeout``.
    StoreError
        The file cannot be opened (not a DuckDB database, no permission).

    Notes
    -----
    The file is opened per call and closed after it (see the module docstring), except
    through :attr:`con`, which keeps a connection, and its lock, until :meth:`close`.
    Use as a context manager to close it.
    """

    def __init__(self, path: str | Path = DEFAULT_DB, *, read_only: bool = False,
                 lock_timeout: float | None = None):
        self.path = str(path)
        self.read_only = read_only
        if lock_timeout is None:
            lock_timeout = READ_LOCK_TIMEOUT if read_only else WRITE_LOCK_TIMEOUT
        self.lock_timeout = float(lock_timeout)
        self.heartbeat_interval = HEARTBEAT_INTERVAL
        self._memory = self.path == ":memory:"
        self._con: duckdb.DuckDBPyConnection | None = None
        self._beating: set[int] = set()
        self._beat_stop = threading.Event()
        self._beat_thread: threading.Thread | None = None
        # One writer at a time in this process: the heartbeat's UPDATE of a run row and a
        # case's transaction (which refreshes the same row) otherwise conflict in DuckDB
        # ("Conflict on update!"), failing the case.
        self._writing = threading.RLock()
        if self._memory:
            if read_only:
                raise ValueError("an in-memory database cannot be opened read-only")
            self._con = duckdb.connect(":memory:")
            _create(self._con)
            _make_views(self._con)
            return
        if read_only and not Path(self.path).exists():
            raise FileNotFoundError(f"no results database at {self.path}")
        self._prepare()

    # -- lifecycle -------------------------------------------------------------------

    def close(self) -> None:
        """Stop the heartbeat and close :attr:`con` if it was opened (idempotent)."""
        self._beat_stop.set()
        if self._beat_thread is not None:
            self._beat_thread.join(timeout=5)
            self._beat_thread = None
        if self._con is not None:
            self._con.close()
            self._con = None

    def __enter__(self) -> ResultsDB:
        return self

    def __exit__(self, *exc_info) -> None:
        self.close()

    @property
    def con(self) -> duckdb.DuckDBPyConnection:
        """A connection kept open until :meth:`close`, for ad-hoc SQL and the metric views.

        It holds the file's lock while open (shared for readers, exclusive for writers),
        so other processes wait for it: close the database as soon as you are done.
        """
        if self._con is None:
            if self._memory:
                raise StoreError("the in-memory database was closed")
            self._con = self._open_file(read_only=self.read_only)
            _make_views(self._con)
        return self._con

    def _open_file(self, *, read_only: bool,
                   timeout: float | None = None) -> duckdb.DuckDBPyConnection:
        """Connect to the file, retrying with backoff while another process holds it."""
        timeout = self.lock_timeout if timeout is None else timeout
        start = time.monotonic()
        delay = 0.01
        while True:
            try:
                with _CONNECTING:
                    return duckdb.connect(self.path, read_only=read_only)
            except duckdb.IOException as error:
                if "Could not set lock" not in str(error):
                    raise StoreError(f"{self.path}: cannot open the results database "
                                     f"({error})") from None
                waited = time.monotonic() - start
                if waited >= timeout:
                    raise DatabaseLockedError(self._locked_message(error, waited)) from None
            except duckdb.ConnectionException as error:
                # this process has the file open read-write elsewhere (another ResultsDB's
                # call or heartbeat): wait for it like for another process
                waited = time.monotonic() - start
                if waited >= timeout:
                    raise StoreError(
                        f"{self.path}: this process kept the database open another way for "
                        f"{waited:.1f} s ({error}); use that ResultsDB, or close it "
                        "first") from None
            # jitter, so that two waiting writers do not retry in lock step
            time.sleep(min(delay * (0.5 + random.random()), max(0.0, timeout - waited)))
            delay = min(delay * 2, 1.0)

    def _locked_message(self, error: Exception, waited: float) -> str:
        pid = _lock_holder(error)
        if pid is None:
            holder = "another process"
        else:
            command = _process_command(pid)
            holder = f"process {pid}" + (f" ({command})" if command else "")
        return (f"{self.path} is locked by {holder}, which held it for all of the "
                f"{waited:.1f} s waited; faceanon only holds it while writing, so this is a "
                "process that keeps it open (an older faceanon, a DuckDB shell, a notebook):"
                " close or stop it, or use another database file")

    @contextmanager
    def _connect(self, *, write: bool = False, views: bool = False,
                 timeout: float | None = None) -> Iterator[duckdb.DuckDBPyConnection]:
        """One batch of work: a connection opened for it and closed after it (a writer's
        batches one at a time: see ``_writing``)."""
        if write and self.read_only:
            raise StoreError(f"{self.path} was opened read-only")
        if write:
            with self._writing:
                yield from self._connection(views=views, timeout=timeout)
        else:
            yield from self._connection(views=views, timeout=timeout)

    def _connection(self, *, views: bool,
                    timeout: float | None) -> Iterator[duckdb.DuckDBPyConnection]:
        if self._con is not None:
            if threading.current_thread() is threading.main_thread():
                yield self._con
            else:  # a connection object must not be shared between threads
                cursor = self._con.cursor()
                try:
                    if views:
                        _make_views(cursor)
                    yield cursor
                finally:
                    cursor.close()
            return
        # a writer reads through read-write connections too: DuckDB refuses a read-only
        # connection in a process that has a read-write one open (the heartbeat's)
        con = self._open_file(read_only=self.read_only, timeout=timeout)
        try:
            if views:
                _make_views(con)
            yield con
        finally:
            with _CONNECTING:
                con.close()

    @contextmanager
    def _transaction(self, **options) -> Iterator[duckdb.DuckDBPyConnection]:
        with self._connect(write=True, **options) as con:
            con.execute("BEGIN TRANSACTION")
            try:
                yield con
                con.execute("COMMIT")
            except BaseException:
                con.execute("ROLLBACK")
                raise

    def _prepare(self) -> None:
        """Create, check, upgrade; mark abandoned runs crashed (writers)."""
        if self.read_only:
            with self._connect() as con:
                version = _schema_version(con, self.path)
            if version == SCHEMA_VERSION:
                return
            if version == 0:
                raise SchemaVersionError(f"{self.path}: holds no faceanon results (no tables)")
            self._check_known(version)
            if not os.access(self.path, os.W_OK):
                raise SchemaVersionError(
                    f"{self.path} was written by an older faceanon (schema version {version}, "
                    f"this one reads {SCHEMA_VERSION}) and is not writable, so it cannot be "
                    "upgraded in place: copy it somewhere writable and open the copy")
        # a reader may upgrade an older file too: the upgrade is one transaction
        con = self._open_file(read_only=False)
        try:
            con.execute("BEGIN TRANSACTION")
            try:
                version = _schema_version(con, self.path)
                self._check_known(version)
                if version == 0:
                    _create(con)
                    version = SCHEMA_VERSION
                while version < SCHEMA_VERSION:
                    _MIGRATIONS[version](con)
                    version += 1
                if not self.read_only:
                    self._mark_crashed(con)
                con.execute("COMMIT")
            except BaseException:
                con.execute("ROLLBACK")
                raise
        finally:
            with _CONNECTING:
                con.close()

    def _check_known(self, version: int) -> None:
        if version > SCHEMA_VERSION:
            raise SchemaVersionError(
                f"{self.path} was written by a newer faceanon (schema version {version}; this "
                f"one knows up to {SCHEMA_VERSION}): upgrade faceanon "
                "(pip install -U faceanon), or use another database file")

    def _mark_crashed(self, con: duckdb.DuckDBPyConnection) -> None:
        cursor = con.execute("SELECT id, status, started, host, pid, heartbeat FROM runs "
                             "WHERE status = 'running'")
        names = [d[0] for d in cursor.description]
        now = _now()
        gone = [row["id"] for row in (dict(zip(names, r, strict=True))
                                      for r in cursor.fetchall())
                if run_is_abandoned(row, now=now)]
        if gone:
            con.execute("UPDATE runs SET status = 'crashed' WHERE list_contains(?, id)",
                        [gone])

    # -- heartbeat -------------------------------------------------------------------

    def _start_heartbeat(self, run_id: int) -> None:
        self._beating.add(run_id)
        if self._memory or (self._beat_thread is not None and self._beat_thread.is_alive()):
            return
        self._beat_stop.clear()
        self._beat_thread = threading.Thread(target=self._beat_loop, daemon=True,
                                             name=f"faceanon-heartbeat {self.path}")
        self._beat_thread.start()

    def _beat_loop(self) -> None:
        while not self._beat_stop.wait(self.heartbeat_interval):
            runs = sorted(self._beating)
            if not runs:
                continue
            try:
                with self._connect(write=True, timeout=self.heartbeat_interval) as con:
                    # a beat taken just before finish_run must not touch the finished run
                    con.execute("UPDATE runs SET heartbeat = ? WHERE list_contains(?, id) "
                                "AND status = 'running'", [_now(), runs])
            except (StoreError, duckdb.Error):
                # A missed beat only ages the heartbeat; the next one tries again, and a
                # run on this host is judged by its process, not its heartbeat.
                continue

    # -- runs and cases --------------------------------------------------------------

    def start_run(
        self,
        *,
        name: str | None,
        dataset_name: str,
        dataset_fingerprint: str,
        config: dict,
        git_commit: str | None,
        git_dirty: bool | None,
        packages: dict[str, str],
        machine: dict,
        threshold: float | None = None,
        methods: Mapping[str, Mapping] | None = None,
    ) -> int:
        """Record a new run with status ``'running'`` and ``started`` = now (UTC).

        The run also records this host and process id, and a heartbeat that this object
        refreshes until :meth:`finish_run` or :meth:`close`.

        Parameters
        ----------
        name : str or None
            Free label.
        dataset_name, dataset_fingerprint : str
            Which data the run measured.
        config : dict
            The run's configuration, stored as JSON.
        git_commit : str or None
            Commit of the code; ``git_dirty`` whether the tree had local changes.
        git_dirty : bool or None
        packages : dict of str to str
            Package versions.
        machine : dict
            Hardware description.
        threshold : float, optional
            The run's decision threshold (a match is distance <= it); the metric views read
            this run's cases at it. Default 0.6 (:data:`DEFAULT_THRESHOLD`).
        methods : mapping of str to mapping, optional
            What each method measured is: ``Method.describe()`` by name, with the weights'
            ``weights_sha256`` for generative methods. More can be added with
            :meth:`record_methods`.

        Returns
        -------
        int
            The run id.
        """
        threshold = _check_threshold(DEFAULT_THRESHOLD if threshold is None else threshold)
        methods_json = _json(self._checked_methods(methods)) if methods else None
        now = _now()
        with self._connect(write=True) as con:
            row = con.execute(
                """INSERT INTO runs (name, started, status, git_commit, git_dirty, packages,
                                     machine, dataset_name, dataset_fingerprint, config,
                                     threshold, methods, host, pid, heartbeat)
                   VALUES (?, ?, 'running', ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?) RETURNING id""",
                [name, now, git_commit, git_dirty, _json(packages), _json(machine),
                 dataset_name, dataset_fingerprint, _json(config), threshold, methods_json,
                 socket.gethostname(), os.getpid(), now],
            ).fetchall()
        run_id = int(row[0][0])
        self._start_heartbeat(run_id)
        return run_id

    @staticmethod
    def _checked_methods(methods: Mapping[str, Mapping]) -> dict:
        checked = {}
        for name, description in methods.items():
            if not isinstance(name, str) or not isinstance(description, Mapping):
                raise ValueError("methods maps each method name to its description (a dict),"
                                 f" got {name!r}: {description!r}")
            sha = description.get("weights_sha256")
            if "weights" in description and not (
                    isinstance(sha, str) and re.fullmatch(r"[0-9a-f]{64}", sha)):
                raise ValueError(f"method {name!r} names weights but no weights_sha256: a "
                                 "run must say exactly which weights produced its images")
            checked[name] = dict(description)
        return checked

    def record_methods(self, run_id: int, methods: Mapping[str, Mapping]) -> None:
        """Add method descriptions to a run (see ``methods`` of :meth:`start_run`).

        Parameters
        ----------
        run_id : int
        methods : mapping of str to mapping
            Replaces the description of a method already recorded under that name.
        """
        checked = self._checked_methods(methods)
        with self._transaction() as con:
            rows = con.execute("SELECT methods FROM runs WHERE id = ?", [run_id]).fetchall()
            if not rows:
                raise KeyError(f"no run {run_id}")
            merged = {**(json.loads(rows[0][0]) if rows[0][0] else {}), **checked}
            con.execute("UPDATE runs SET methods = ? WHERE id = ?", [_json(merged), run_id])

    def finish_run(self, run_id: int, status: str) -> None:
        """Set a run's final ``status`` and ``finished`` = now (UTC); stop its heartbeat.

        Parameters
        ----------
        run_id : int
        status : {'complete', 'failed', 'interrupted'}
        """
        if status not in FINAL_STATUSES:
            raise ValueError(f"status must be one of {FINAL_STATUSES}, got {status!r}")
        now = _now()
        with self._connect(write=True) as con:
            row = con.execute(
                "UPDATE runs SET status = ?, finished = ?, heartbeat = ? WHERE id = ? "
                "RETURNING id", [status, now, now, run_id],
            ).fetchall()
        self._beating.discard(run_id)
        if not row:
            raise KeyError(f"no run {run_id}")

    def set_run_threshold(self, run_id: int, threshold: float) -> None:
        """Change the decision threshold a run's cases are read at.

        Parameters
        ----------
        run_id : int
        threshold : float
            Finite.
        """
        threshold = _check_threshold(threshold)
        with self._connect(write=True) as con:
            row = con.execute("UPDATE runs SET threshold = ? WHERE id = ? RETURNING id",
                              [threshold, run_id]).fetchall()
        if not row:
            raise KeyError(f"no run {run_id}")

    @staticmethod
    def _case_row(run_id: int, method: str, k: int | None, mode: str, detector: str,
                  backend: str, options: dict | None, attack: str = "detect") -> list:
        if mode not in MODES:
            raise ValueError(f"mode must be one of {MODES}, got {mode!r}")
        return [run_id, method, None if k is None else int(k), mode, detector, backend,
                _json(options), attack]

    @staticmethod
    def _insert_case(con: duckdb.DuckDBPyConnection, row: list) -> int:
        found = con.execute(
            """INSERT INTO cases (run_id, method, k, mode, detector, backend, options,
                                   attack)
               VALUES (?, ?, ?, ?, ?, ?, ?, ?) RETURNING id""", row).fetchall()
        return int(found[0][0])

    def add_case(
        self,
        run_id: int,
        *,
        method: str,
        k: int | None,
        mode: str,
        detector: str,
        backend: str,
        options: dict | None = None,
        attack: str = "detect",
    ) -> int:
        """Record one case (method, strength, mode, attack, detector, backend) of a run.

        Prefer :meth:`write_case`, which records the case with its results in one
        transaction.

        Parameters
        ----------
        run_id : int
        method : str
        k : int or None
            Method strength; None for methods without one (e.g. the clear baseline).
        mode : {'clear', 'naive', 'reverse', 'parrot'}
        detector, backend : str
        options : dict, optional
            Extra method options, stored as JSON.
        attack : str
            What the attacker runs on the anonymized images (a :mod:`faceanon.attacks`
            name); ``'detect'``, the seed study's attacker, by default.

        Returns
        -------
        int
            The case id.
        """
        row = self._case_row(run_id, method, k, mode, detector, backend, options, attack)
        with self._connect(write=True) as con:
            return self._insert_case(con, row)

    def write_case(
        self,
        run_id: int,
        *,
        method: str,
        k: int | None,
        mode: str,
        detector: str,
        backend: str,
        options: dict | None = None,
        attack: str = "detect",
        scores: Mapping[str, Any],
        images: Mapping[str, Sequence] | None = None,
        timings: Sequence[Mapping] | None = None,
        attack_trainings: Sequence[Mapping] | None = None,
        utility: Sequence[Mapping] | None = None,
    ) -> int:
        """Record one case with its scores, images and timings in ONE transaction.

        A process killed at any moment leaves the case either complete or absent, never a
        case with part of its scores. Everything is checked before the database is opened.

        Parameters
        ----------
        run_id : int
        method, k, mode, detector, backend, options, attack
            As in :meth:`add_case`.
        scores : mapping
            The keyword arguments of :meth:`add_scores`: ``probe``, ``gallery``, ``mated``,
            ``distance`` and optionally ``probe_acquired``, ``gallery_enrolled``.
        images : mapping, optional
            Image rows of the run, as in :meth:`add_images`.
        timings : sequence of mapping, optional
            As in :meth:`add_timings`.
        attack_trainings : sequence of mapping, optional
            Rows of ``attack_trainings`` of the run, each with ``method``, ``k``,
            ``attack`` and ``record`` (a JSON-serializable mapping): what a learning
            attack learned from (:meth:`faceanon.attacks.Attack.training_record`).
        utility : sequence of mapping, optional
            ``image_utility`` rows of the run's anonymized images (keys
            :data:`UTILITY_COLUMNS`: ``method``, ``k``, ``key`` and the columns of
            :func:`faceanon.utility.image_record`), stored with the case that first used
            their variant, as the images are.

        Returns
        -------
        int
            The case id.
        """
        trainings = [self._training_row(run_id, row) for row in attack_trainings or ()]
        case_row = self._case_row(run_id, method, k, mode, detector, backend, options,
                                  attack)
        unknown = set(scores) - set(SCORE_COLUMNS)
        if unknown:
            raise ValueError(f"unknown score columns: {sorted(unknown)}")
        score_table = self._scores_table(**scores)
        image_table = self._images_table(run_id, images) if images else None
        timing_table = self._timings_table(timings) if timings else None
        utility_table = self._utility_table(run_id, utility) if utility else None
        with self._transaction() as con:
            case_id = self._insert_case(con, case_row)
            self._insert(con, "INSERT INTO scores BY NAME SELECT ? AS case_id, * FROM _rows",
                         score_table, [case_id])
            if image_table is not None:
                self._insert(con, "INSERT INTO images BY NAME SELECT * FROM _rows",
                             image_table)
            if timing_table is not None:
                self._insert(con, "INSERT INTO timings BY NAME SELECT ? AS case_id, * "
                                  "FROM _rows", timing_table, [case_id])
            if trainings:
                con.executemany("INSERT INTO attack_trainings (run_id, method, k, attack, "
                                "record) VALUES (?, ?, ?, ?, ?)", trainings)
            if utility_table is not None:
                self._insert(con, "INSERT INTO image_utility BY NAME SELECT * FROM _rows",
                             utility_table)
            con.execute("UPDATE runs SET heartbeat = ? WHERE id = ?", [_now(), run_id])
        return case_id

    @staticmethod
    def _training_row(run_id: int, row: Mapping) -> list:
        if set(row) != {"method", "k", "attack", "record"}:
            raise ValueError(f"an attack_trainings row has method, k, attack and record, "
                             f"got {sorted(row)}")
        if not isinstance(row["record"], Mapping):
            raise ValueError(f"attack {row['attack']!r}: its training record must be a "
                             f"mapping, got {type(row['record']).__name__}")
        k = None if row["k"] is None else int(row["k"])
        return [run_id, str(row["method"]), k, str(row["attack"]), _json(dict(row["record"]))]

    def attack_trainings(self, run_id: int) -> list[dict]:
        """The training records of a run's learning attacks (``method``, ``k``, ``attack``,
        ``record`` as a dict), ordered by method, k and attack."""
        with self._connect() as con:
            rows = con.execute(
                "SELECT method, k, attack, record FROM attack_trainings WHERE run_id = ? "
                "ORDER BY method, k NULLS FIRST, attack", [run_id]).fetchall()
        return [{"method": m, "k": k, "attack": a, "record": json.loads(r)}
                for m, k, a, r in rows]

    # -- bulk data -------------------------------------------------------------------

    @staticmethod
    def _scores_table(
        *,
        probe: Sequence[str],
        gallery: Sequence[str],
        mated: np.ndarray,
        distance: np.ndarray,
        probe_acquired: np.ndarray | None = None,
        gallery_enrolled: np.ndarray | None = None,
    ) -> pa.Table:
        dist = np.asarray(distance, dtype=np.float64)
        if dist.ndim != 1:
            raise ValueError(f"distance must be 1-d, got shape {dist.shape}")
        n = dist.shape[0]
        if np.isneginf(dist).any():
            raise ValueError("distance must not be -inf")
        missing = ~np.isfinite(dist)
        columns = {
            "probe": _string_array(probe, n, "probe"),
            "gallery": _string_array(gallery, n, "gallery"),
            "mated": _bool_array(mated, n, "mated"),
            "distance": pa.array(dist, mask=missing if missing.any() else None),
        }
        if probe_acquired is not None:
            columns["probe_acquired"] = _bool_array(probe_acquired, n, "probe_acquired")
        if gallery_enrolled is not None:
            columns["gallery_enrolled"] = _bool_array(gallery_enrolled, n, "gallery_enrolled")
        return pa.table(columns)

    def add_scores(
        self,
        case_id: int,
        *,
        probe: Sequence[str],
        gallery: Sequence[str],
        mated: np.ndarray,
        distance: np.ndarray,
        probe_acquired: np.ndarray | None = None,
        gallery_enrolled: np.ndarray | None = None,
    ) -> None:
        """Insert the comparisons of a case in one bulk (Arrow) insert.

        Parameters
        ----------
        case_id : int
        probe, gallery : sequence of str, length n
            Image keys of each comparison.
        mated : ndarray of bool, shape (n,)
            Whether probe and gallery show the same identity.
        distance : ndarray of float, shape (n,)
            Lower = more similar. NaN or +inf (a side without embedding) is stored as
            NULL; -inf is rejected.
        probe_acquired, gallery_enrolled : ndarray of bool, shape (n,), optional
            Whether the probe / gallery image of each comparison has an embedding. They
            tell failures to acquire from failures to enrol; when omitted the views infer
            them from the distances.
        """
        table = self._scores_table(probe=probe, gallery=gallery, mated=mated,
                                   distance=distance, probe_acquired=probe_acquired,
                                   gallery_enrolled=gallery_enrolled)
        with self._connect(write=True) as con:
            self._insert(con, "INSERT INTO scores BY NAME SELECT ? AS case_id, * FROM _rows",
                         table, [case_id])

    @staticmethod
    def _images_table(run_id: int, rows: Mapping[str, Sequence]) -> pa.Table:
        unknown = set(rows) - set(IMAGE_COLUMNS)
        if unknown:
            raise ValueError(f"unknown image columns: {sorted(unknown)}")
        for required in ("key", "role"):
            if required not in rows:
                raise ValueError(f"image rows need a {required!r} column")
        n = len(rows["key"])
        lengths = {name: len(values) for name, values in rows.items()}
        if set(lengths.values()) != {n}:
            raise ValueError(f"image columns differ in length: {lengths}")
        types = {"key": pa.string(), "role": pa.string(), "method": pa.string(),
                 "k": pa.int64(), "sha256": pa.string(), "acquired": pa.bool_(),
                 "faces_found": pa.int32(), "backend": pa.string(), "attack": pa.string()}
        columns = {"run_id": pa.array(np.full(n, run_id, dtype=np.int64))}
        for name, values in rows.items():
            values = list(values) if not isinstance(values, np.ndarray) else values.tolist()
            columns[name] = pa.array(values, type=types[name])
        return pa.table(columns)

    @staticmethod
    def _utility_table(run_id: int, rows: Sequence[Mapping]) -> pa.Table:
        integers = ("faces", "retained_hog", "landmarks_placed", "nme_faces",
                    "changed_outside")
        for row in rows:
            if set(row) != set(UTILITY_COLUMNS):
                raise ValueError(
                    f"utility rows need exactly the columns {', '.join(UTILITY_COLUMNS)}; "
                    f"got {', '.join(sorted(row))}")
            if row["retained_hog"] > row["faces"] or row["landmarks_placed"] > row["faces"]:
                raise ValueError(f"utility row of {row['key']!r} counts more faces retained "
                                 f"than the original's {row['faces']}")
        columns = {"run_id": pa.array(np.full(len(rows), run_id, dtype=np.int64))}
        for name in UTILITY_COLUMNS:
            kind = (pa.string() if name in ("method", "key") else pa.int64()
                    if name in (*integers, "k") else pa.float64())
            columns[name] = pa.array([row[name] for row in rows], type=kind)
        return pa.table(columns)

    def add_images(self, run_id: int, rows: Mapping[str, Sequence]) -> None:
        """Insert per-image records of a run in bulk.

        Parameters
        ----------
        run_id : int
        rows : mapping of column name to sequence
            Columns ``key``, ``role`` ('original' | 'anonymized'), ``method``, ``k``,
            ``sha256``, ``acquired``, ``faces_found``, ``backend``, ``attack``; all of
            equal length. ``key`` and ``role`` are required; missing optional columns are
            NULL, except ``attack``, which is ``'detect'`` (an anonymized image has one row
            per attack that processed it, with what that attack found).
        """
        table = self._images_table(run_id, rows)
        with self._connect(write=True) as con:
            self._insert(con, "INSERT INTO images BY NAME SELECT * FROM _rows", table)

    @staticmethod
    def _timings_table(rows: Sequence[Mapping]) -> pa.Table:
        for row in rows:
            unknown = set(row) - set(TIMING_COLUMNS)
            if unknown:
                raise ValueError(f"unknown timing keys: {sorted(unknown)}")
            if "name" not in row:
                raise ValueError("each timing row needs a 'name'")
        return pa.table({
            "name": pa.array([r["name"] for r in rows], type=pa.string()),
            **{key: pa.array([r.get(key) for r in rows], type=pa.float64())
               for key in ("min", "max", "median", "mean", "stddev")},
            "rounds": pa.array([r.get("rounds") for r in rows], type=pa.int64()),
            "unit": pa.array([r.get("unit", "seconds per image") for r in rows],
                             type=pa.string()),
        })

    def add_timings(self, case_id: int, rows: list[dict]) -> None:
        """Insert benchmark timings of a case.

        Parameters
        ----------
        case_id : int
        rows : list of dict
            Keys ``name`` (e.g. 'anonymize', 'recognize'), ``min``, ``max``, ``median``, ``mean``,
            ``stddev``, ``rounds`` and optionally ``unit`` (default 'seconds per image').
        """
        if not rows:
            return
        table = self._timings_table(rows)
        with self._connect(write=True) as con:
            self._insert(con, "INSERT INTO timings BY NAME SELECT ? AS case_id, * FROM _rows",
                         table, [case_id])

    # -- embedding cache -------------------------------------------------------------

    def cached_embeddings(
        self, backend: str, sha256s: Sequence[str], *, model: str
    ) -> dict[str, tuple[np.ndarray | None, int]]:
        """Look up cached embeddings.

        Parameters
        ----------
        backend : str
        sha256s : sequence of str
            Image hashes to look up.
        model : str
            What computed the embeddings: the backend's ``model_fingerprint()`` (see
            :func:`faceanon.recognition.model_fingerprint`), which changes with any model
            file or library version. Only embeddings of exactly this model are returned.

        Returns
        -------
        dict
            ``sha256 -> (embedding, faces_found)`` for the hashes in the cache; the
            embedding is a float64 vector, or None when no face was found. Hashes not
            in the cache are absent.
        """
        model = _check_model(model)
        # `_wanted` is read by DuckDB's replacement scan. execute() (unlike sql() or
        # register()) still works when the caller left an unfinished result open.
        _wanted = pa.table({"sha256": pa.array(list(dict.fromkeys(sha256s)),  # noqa: F841
                                               type=pa.string())})
        with self._connect() as con:
            result = con.execute(
                """SELECT e.sha256, e.embedding, e.faces_found
                   FROM embeddings e SEMI JOIN _wanted w ON e.sha256 = w.sha256
                   WHERE e.backend = ? AND e.model = ?""",
                [backend, model],
            ).fetchnumpy()
        vectors = result["embedding"]
        missing = np.ma.getmaskarray(vectors)
        out: dict[str, tuple[np.ndarray | None, int]] = {}
        for sha, vector, none, faces in zip(result["sha256"], np.ma.getdata(vectors), missing,
                                            result["faces_found"], strict=True):
            out[str(sha)] = (None if none or vector is None
                             else np.asarray(vector, dtype=np.float64), int(faces))
        return out

    def cached_embedding_keys(self, backend: str, *, model: str) -> set[str]:
        """The hashes of every image cached for ``backend`` and ``model``.

        Parameters
        ----------
        backend : str
        model : str
            As in :meth:`cached_embeddings`.

        Returns
        -------
        set of str
        """
        model = _check_model(model)
        with self._connect() as con:
            rows = con.execute("SELECT sha256 FROM embeddings WHERE backend = ? AND model = ?",
                               [backend, model]).fetchnumpy()["sha256"]
        return {str(sha) for sha in rows}

    def store_embeddings(
        self,
        backend: str,
        sha256s: Sequence[str],
        embeddings: Sequence[np.ndarray | None],
        faces_found: Sequence[int],
        *,
        model: str,
    ) -> None:
        """Cache embeddings in bulk; hashes already cached for ``backend`` are kept.

        Parameters
        ----------
        backend : str
        sha256s : sequence of str
        embeddings : sequence of ndarray or None
            One vector per hash (any length, stored as DOUBLE[]), None for "no face".
        faces_found : sequence of int
        model : str
            As in :meth:`cached_embeddings`.
        """
        n = len(sha256s)
        if len(embeddings) != n or len(faces_found) != n:
            raise ValueError("sha256s, embeddings and faces_found differ in length")
        if n == 0:
            return
        model = _check_model(model)
        lengths = np.array([0 if e is None else np.asarray(e).size for e in embeddings])
        offsets = np.zeros(n + 1, dtype=np.int32)
        np.cumsum(lengths, out=offsets[1:])
        present = [np.asarray(e, dtype=np.float64).ravel() for e in embeddings if e is not None]
        flat = np.concatenate(present) if present else np.zeros(0, dtype=np.float64)
        mask = pa.array([e is None for e in embeddings], type=pa.bool_())
        vectors = pa.ListArray.from_arrays(pa.array(offsets), pa.array(flat), mask=mask)
        table = pa.table({
            "backend": pa.array([backend] * n, type=pa.string()),
            "model": pa.array([model] * n, type=pa.string()),
            "sha256": pa.array(list(sha256s), type=pa.string()),
            "embedding": vectors,
            "faces_found": pa.array(np.asarray(faces_found, dtype=np.int32)),
        })
        with self._connect(write=True) as con:
            self._insert(
                con,
                "INSERT OR IGNORE INTO embeddings BY NAME SELECT *, ? AS created FROM _rows",
                table, [_now()],
            )

    # -- thresholds and metrics ------------------------------------------------------

    def set_confusion_thresholds(self, thresholds: Sequence[float]) -> None:
        """Replace the extra thresholds of the ``confusion`` view (:data:`CONFUSION_THRESHOLDS`).

        Parameters
        ----------
        thresholds : sequence of float
        """
        values = sorted({float(t) for t in thresholds})
        if not all(math.isfinite(t) for t in values):
            raise ValueError("thresholds must be finite")
        with self._transaction() as con:
            con.execute("DELETE FROM confusion_thresholds")
            if values:
                con.executemany("INSERT INTO confusion_thresholds VALUES (?)",
                                [[t] for t in values])

    def confusion_thresholds(self) -> list[float]:
        """The extra thresholds of the ``confusion`` view, ascending."""
        with self._connect() as con:
            rows = con.execute(
                "SELECT threshold FROM confusion_thresholds ORDER BY threshold").fetchall()
        return [r[0] for r in rows]

    def case_metrics(self, *, run_id: int | None = None) -> list[dict]:
        """Rows of the ``case_metrics`` view joined with their case.

        Parameters
        ----------
        run_id : int, optional
            Only the cases of this run.

        Returns
        -------
        list of dict
            One dict per case, ordered by case id: ``run_id, method, k, mode, attack,
            detector, backend`` and every column of ``case_metrics`` (see ``metrics.sql``).
        """
        where = "" if run_id is None else "WHERE c.run_id = $run_id"
        params = {} if run_id is None else {"run_id": run_id}
        return self._dicts(
            f"""SELECT c.run_id, c.method, c.k, c.mode, c.attack, c.detector, c.backend, m.*
                FROM case_metrics m JOIN cases c ON c.id = m.case_id
                {where} ORDER BY m.case_id""",
            params, views=True,
        )

    def runs(self) -> list[dict]:
        """All runs, newest first, with their number of cases and scores.

        Returns
        -------
        list of dict
            Columns of ``runs`` (``packages``, ``machine``, ``config`` and ``methods``
            decoded from JSON) plus ``n_cases`` and ``n_scores``. A ``running`` run whose
            process is gone is shown ``crashed`` (see :func:`run_is_abandoned`).
        """
        rows = self._dicts(
            """SELECT r.*,
                      (SELECT count(*) FROM cases c WHERE c.run_id = r.id) AS n_cases,
                      (SELECT count(*) FROM scores s JOIN cases c ON s.case_id = c.id
                       WHERE c.run_id = r.id) AS n_scores
               FROM runs r ORDER BY r.id DESC"""
        )
        now = _now()
        for row in rows:
            for key in ("packages", "machine", "config", "methods"):
                if isinstance(row.get(key), str):
                    row[key] = json.loads(row[key])
            if row["id"] not in self._beating and run_is_abandoned(row, now=now):
                row["status"] = "crashed"
        return rows

    def run(self, run_id: int) -> dict:
        """One run as in :meth:`runs`; KeyError if absent."""
        for row in self.runs():
            if row["id"] == run_id:
                return row
        raise KeyError(f"no run {run_id}")

    def delete_run(self, run_id: int) -> None:
        """Delete a run with its cases, scores, images and timings (never the cache).

        Parameters
        ----------
        run_id : int

        Raises
        ------
        KeyError
            No such run.
        StoreError
            The run is still running in a live process (stop it first).
        """
        run = self.run(run_id)
        if run["status"] == "running":
            raise StoreError(
                f"run {run_id} is still running (process {run['pid']} on {run['host']}); "
                "stop it first, or wait until it finishes")
        cases = "(SELECT id FROM cases WHERE run_id = $run)"
        with self._transaction() as con:
            for statement in (
                f"DELETE FROM scores WHERE case_id IN {cases}",
                f"DELETE FROM timings WHERE case_id IN {cases}",
                "DELETE FROM video_frames WHERE case_id IN "
                "(SELECT id FROM video_cases WHERE run_id = $run)",
                "DELETE FROM video_cases WHERE run_id = $run",
                "DELETE FROM images WHERE run_id = $run",
                "DELETE FROM attack_trainings WHERE run_id = $run",
                "DELETE FROM image_utility WHERE run_id = $run",
                "DELETE FROM cases WHERE run_id = $run",
                "DELETE FROM runs WHERE id = $run",
            ):
                con.execute(statement, {"run": run_id})

    @staticmethod
    def _insert(con: duckdb.DuckDBPyConnection, statement: str, table: pa.Table,
                params: list | None = None) -> None:
        # `_rows` is read by DuckDB's replacement scan (see cached_embeddings)
        _rows = table  # noqa: F841
        con.execute(statement, params or []).fetchall()

    def _dicts(self, query: str, params: dict | None = None, *,
               views: bool = False) -> list[dict]:
        with self._connect(views=views) as con:
            cursor = con.execute(query, params or {})
            names = [d[0] for d in cursor.description]
            return [dict(zip(names, row, strict=True)) for row in cursor.fetchall()]

    # -- queries of the report and the benchmark ---------------------------------------
    #
    # Everything the report and the benchmark read goes through these methods, so that
    # no SQL lives outside this module and the schema and view files.

    def one_case_metrics(self, case_id: int) -> dict:
        """The row of :meth:`case_metrics` of one case, computed for that case alone.

        Parameters
        ----------
        case_id : int
            A case of any run.

        Returns
        -------
        dict

        Raises
        ------
        KeyError
            When there is no such case.
        """
        rows = self._dicts(
            """SELECT c.run_id, c.method, c.k, c.mode, c.attack, c.detector, c.backend, m.*
               FROM case_metrics m JOIN cases c ON c.id = m.case_id
               WHERE m.case_id = $case_id""",
            {"case_id": case_id}, views=True,
        )
        if not rows:
            raise KeyError(f"no case {case_id}")
        return rows[0]

    def utility_metrics(self, *, run_id: int | None = None) -> list[dict]:
        """The ``utility_metrics`` rows (one per method and k) of one run or of all.

        Parameters
        ----------
        run_id : int, optional
            Only this run's rows.

        Returns
        -------
        list of dict
            Ordered by run, method and k (NULL k first).
        """
        where = "" if run_id is None else "WHERE run_id = $run_id"
        return self._dicts(
            f"SELECT * FROM utility_metrics {where} ORDER BY run_id, method, k NULLS FIRST",
            {} if run_id is None else {"run_id": run_id}, views=True)

    def detector_retention(self, *, run_id: int | None = None) -> list[dict]:
        """The ``detector_retention`` rows (one per method, k and detector attack).

        The share of anonymized images in which RetinaFace or dlib's CNN (the
        ``detect:retinaface`` and ``detect:cnn`` attacks, where the run measured them)
        still finds a face, among those whose original has one; see ``metrics.sql``.
        Ordered by run, method, k (NULL k first) and attack.
        """
        where = "" if run_id is None else "WHERE run_id = $run_id"
        return self._dicts(
            f"SELECT * FROM detector_retention {where} "
            "ORDER BY run_id, method, k NULLS FIRST, attack",
            {} if run_id is None else {"run_id": run_id}, views=True)

    def per_image_timings(self, run_id: int) -> dict[tuple[int, str], float]:
        """Mean seconds per image of every timed step of a run's cases.

        Parameters
        ----------
        run_id : int
            The run whose cases' timings are read.

        Returns
        -------
        dict
            ``(case_id, name) -> mean`` for the timings whose unit is
            ``'seconds per image'`` (``name``: ``'anonymize'``, ``'recognize'``).
        """
        with self._connect() as con:
            rows = con.execute(
                """SELECT t.case_id, t.name, t.mean FROM timings t
                   JOIN cases c ON c.id = t.case_id
                   WHERE c.run_id = ? AND t.unit = 'seconds per image'""", [run_id]).fetchall()
        return {(int(case), name): mean for case, name, mean in rows}

    def det_points(self, run_id: int) -> dict[int, dict[str, np.ndarray]]:
        """The classic DET curve (the ``det_curve`` view) of every case of a run.

        Parameters
        ----------
        run_id : int
            The run whose curves are read.

        Returns
        -------
        dict
            ``case_id -> {'fmr': ndarray, 'fnmr': ndarray}``, ordered by threshold; an
            undefined rate is NaN.
        """
        with self._connect(views=True) as con:
            data = con.execute(
                """SELECT d.case_id, d.fmr, d.fnmr FROM det_curve d
                   JOIN cases c ON c.id = d.case_id
                   WHERE c.run_id = ? ORDER BY d.case_id, d.threshold""",
                [run_id]).fetchnumpy()
        cases = np.asarray(data["case_id"])
        fmr = np.ma.filled(np.ma.asarray(data["fmr"], dtype=np.float64), np.nan)
        fnmr = np.ma.filled(np.ma.asarray(data["fnmr"], dtype=np.float64), np.nan)
        out: dict[int, dict[str, np.ndarray]] = {}
        if cases.size == 0:
            return out
        starts = np.flatnonzero(np.r_[True, cases[1:] != cases[:-1]])
        ends = np.r_[starts[1:], cases.size]
        for start, end in zip(starts, ends, strict=True):
            out[int(cases[start])] = {"fmr": fmr[start:end], "fnmr": fnmr[start:end]}
        return out

    def confusion(self, run_id: int, *, threshold: float) -> list[dict]:
        """The ``confusion`` view's rows of a run's cases at one threshold.

        Parameters
        ----------
        run_id : int
            The run whose matrices are read.
        threshold : float
            The decision threshold or one of :meth:`confusion_thresholds` (matched to
            within 1e-12).

        Returns
        -------
        list of dict
            Every column of the ``confusion`` view, for both scopes.
        """
        return self._dicts(
            """SELECT f.* FROM confusion f JOIN cases c ON c.id = f.case_id
               WHERE c.run_id = $run AND abs(f.threshold - $threshold) < 1e-12""",
            {"run": run_id, "threshold": threshold}, views=True,
        )

    def probe_keys(self, run_id: int) -> list[tuple[str, bool]]:
        """The probes a run searched, with whether the recognizer found their face.

        Every case of a run searches the same probes, so its first case lists them.

        Parameters
        ----------
        run_id : int
            The run whose probes are listed.

        Returns
        -------
        list of (str, bool)
            ``(key, acquired)``, the probes whose original was acquired first, then by key.
        """
        with self._connect() as con:
            rows = con.execute(
                """WITH first AS (SELECT min(id) AS id FROM cases WHERE run_id = $run)
                   SELECT s.probe, bool_or(coalesce(i.acquired, false)) AS acquired
                   FROM scores s JOIN first f ON s.case_id = f.id
                   LEFT JOIN images i ON i.run_id = $run AND i.key = s.probe
                                     AND i.role = 'original'
                   GROUP BY s.probe ORDER BY acquired DESC, s.probe""",
                {"run": run_id}).fetchall()
        return [(str(key), bool(acquired)) for key, acquired in rows]

    def embedding_counts(self) -> tuple[int, int]:
        """How many images the embedding cache holds, and in how many no face was found.

        Returns
        -------
        (int, int)
        """
        with self._connect() as con:
            total, faceless = con.execute(
                "SELECT count(*), count(*) FILTER (WHERE embedding IS NULL) FROM embeddings"
            ).fetchall()[0]
        return int(total), int(faceless)

    # -- the video benchmark -----------------------------------------------------------

    #: The columns of a video case :meth:`write_video_case` takes (``id`` is made here).
    VIDEO_CASE_COLUMNS = ("label", "method", "k", "attack", "clip", "clip_sha256", "frames",
                          "frame_rate", "people", "threshold", "reference_detector",
                          "tracking", "anonymize_seconds", "anonymize_fps", "strip_frame",
                          "strip_png", "settings")
    #: The columns of a frame row (``case_id`` is added here).
    VIDEO_FRAME_COLUMNS = ("frame", "time", "faces_found", "identified", "distances",
                           "anonymized_boxes", "reference_faces", "uncovered_faces",
                           "coverage")

    def write_video_case(self, run_id: int, case: Mapping[str, Any],
                         frames: Sequence[Mapping[str, Any]]) -> int:
        """Store one video case and its frame rows in one transaction; return its id.

        A killed run leaves the case complete or absent, never a case with part of its
        frames.

        Parameters
        ----------
        run_id : int
        case : mapping
            Every key of :data:`VIDEO_CASE_COLUMNS` (``settings`` as a dict).
        frames : sequence of mapping
            One per measured frame, with every key of :data:`VIDEO_FRAME_COLUMNS`;
            ``distances`` in the order of ``case["people"]`` (``None``: no face found).

        Raises
        ------
        ValueError
            A missing key, no frames, or a frame whose distances do not match the people.
        """
        missing = [c for c in self.VIDEO_CASE_COLUMNS if c not in case]
        if missing:
            raise ValueError(f"video case misses {', '.join(missing)}")
        if not frames:
            raise ValueError(f"video case {case['label']}: no frames measured")
        people = list(case["people"])
        for row in frames:
            absent = [c for c in self.VIDEO_FRAME_COLUMNS if c not in row]
            if absent:
                raise ValueError(f"video frame row misses {', '.join(absent)}")
            if len(row["distances"]) != len(people):
                raise ValueError(f"frame {row['frame']}: {len(row['distances'])} distances "
                                 f"for {len(people)} people")
        values = [case[c] for c in self.VIDEO_CASE_COLUMNS]
        values[-1] = _json(values[-1])
        table = pa.table({
            "frame": pa.array([int(r["frame"]) for r in frames], pa.int64()),
            "time": pa.array([r["time"] for r in frames], pa.float64()),
            "faces_found": pa.array([int(r["faces_found"]) for r in frames], pa.int64()),
            "identified": pa.array([list(r["identified"]) for r in frames],
                                   pa.list_(pa.string())),
            "distances": pa.array([[None if d is None or d != d else float(d)
                                    for d in r["distances"]] for r in frames],
                                  pa.list_(pa.float64())),
            "anonymized_boxes": pa.array([int(r["anonymized_boxes"]) for r in frames],
                                         pa.int64()),
            "reference_faces": pa.array([int(r["reference_faces"]) for r in frames],
                                        pa.int64()),
            "uncovered_faces": pa.array([int(r["uncovered_faces"]) for r in frames],
                                        pa.int64()),
            "coverage": pa.array([[float(c) for c in r["coverage"]] for r in frames],
                                 pa.list_(pa.float64())),
        })
        columns = ", ".join(self.VIDEO_CASE_COLUMNS)
        marks = ", ".join("?" for _ in self.VIDEO_CASE_COLUMNS)
        with self._transaction() as con:
            case_id = int(con.execute(
                f"INSERT INTO video_cases (run_id, {columns}) VALUES (?, {marks}) RETURNING id",
                [run_id, *values]).fetchall()[0][0])
            self._insert(con, f"""INSERT INTO video_frames SELECT {case_id}, frame, time,
                                   faces_found, identified, distances, anonymized_boxes,
                                   reference_faces, uncovered_faces, coverage FROM _rows""",
                         table)
        return case_id

    def video_runs(self) -> list[int]:
        """The runs that hold video cases, newest first."""
        with self._connect() as con:
            rows = con.execute("SELECT DISTINCT run_id FROM video_cases "
                               "ORDER BY run_id DESC").fetchall()
        return [int(r[0]) for r in rows]

    def video_case_metrics(self, run_id: int) -> list[dict]:
        """The ``video_case_metrics`` rows of a run, in the order the cases were stored."""
        return self._dicts("SELECT * FROM video_case_metrics WHERE run_id = $run "
                           "ORDER BY case_id", {"run": run_id}, views=True)

    def video_person_metrics(self, run_id: int) -> list[dict]:
        """The ``video_person_metrics`` rows of a run (one per case and person)."""
        return self._dicts("SELECT * FROM video_person_metrics WHERE run_id = $run "
                           "ORDER BY case_id, person", {"run": run_id}, views=True)

    def video_strips(self, run_id: int) -> list[dict]:
        """Per video case of a run: ``case_id``, ``label``, ``method``, ``k``, ``attack``,
        ``strip_frame`` and the PNG bytes ``strip_png`` (``None`` when none was kept)."""
        return self._dicts("SELECT id AS case_id, label, method, k, attack, strip_frame, "
                           "strip_png FROM video_cases WHERE run_id = $run ORDER BY id",
                           {"run": run_id})
