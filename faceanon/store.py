"""The results database (DuckDB): runs, cases, scores, images, timings, embedding cache.

Tables are created from ``schema.sql`` and the metric views from ``metrics.sql`` (both
shipped in the package); the conventions of the views (polarity, ties, EER interpolation,
failures to acquire) are documented at the top of ``metrics.sql``.

Everything is written in bulk through Arrow, never row by row. Timestamps are UTC.

The ``faceanon runs`` command group (:data:`runs_command`) lists, shows and deletes runs.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from importlib import resources
from pathlib import Path
from typing import Any

import click
import duckdb
import numpy as np
import pyarrow as pa

DEFAULT_DB = "results.duckdb"
DEFAULT_THRESHOLD = 0.6
RUN_STATUSES = ("running", "complete", "failed", "interrupted")
FINAL_STATUSES = ("complete", "failed", "interrupted")
MODES = ("clear", "naive", "reverse", "parrot")
IMAGE_COLUMNS = ("key", "role", "method", "k", "sha256", "acquired", "faces_found", "backend")
TIMING_COLUMNS = ("name", "min", "max", "median", "mean", "stddev", "rounds", "unit")

__all__ = ["DEFAULT_DB", "ResultsDB", "runs_command"]


def _sql(name: str) -> str:
    return resources.files("faceanon").joinpath(name).read_text(encoding="utf-8")


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


class ResultsDB:
    """The results database.

    Parameters
    ----------
    path : str or Path, default ``"results.duckdb"``
        Database file; ``":memory:"`` for a throw-away database.
    read_only : bool, default False
        Open read-only. The tables and views are then not (re)created, so the file must
        exist and have been written by this library.

    Attributes
    ----------
    con : duckdb.DuckDBPyConnection
        The open connection, for ad-hoc SQL against the tables and views.

    Notes
    -----
    Opening for writing creates the tables (``schema.sql``) and (re)creates the views
    (``metrics.sql``); both are idempotent. Use as a context manager to close the
    connection.
    """

    def __init__(self, path: str | Path = DEFAULT_DB, *, read_only: bool = False):
        self.path = str(path)
        self.read_only = read_only
        if read_only and self.path != ":memory:" and not Path(self.path).exists():
            raise FileNotFoundError(f"no results database at {self.path}")
        self.con = duckdb.connect(self.path, read_only=read_only)
        if not read_only:
            self.con.execute(_sql("schema.sql"))
            self.con.execute(_sql("metrics.sql"))

    # -- lifecycle -------------------------------------------------------------------

    def close(self) -> None:
        """Close the connection (idempotent)."""
        self.con.close()

    def __enter__(self) -> ResultsDB:
        return self

    def __exit__(self, *exc_info) -> None:
        self.close()

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
    ) -> int:
        """Record a new run with status ``'running'`` and ``started`` = now (UTC).

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

        Returns
        -------
        int
            The run id.
        """
        row = self.con.execute(
            """INSERT INTO runs (name, started, status, git_commit, git_dirty, packages,
                                 machine, dataset_name, dataset_fingerprint, config)
               VALUES (?, ?, 'running', ?, ?, ?, ?, ?, ?, ?) RETURNING id""",
            [name, _now(), git_commit, git_dirty, _json(packages), _json(machine),
             dataset_name, dataset_fingerprint, _json(config)],
        ).fetchall()
        return int(row[0][0])

    def finish_run(self, run_id: int, status: str) -> None:
        """Set a run's final ``status`` and ``finished`` = now (UTC).

        Parameters
        ----------
        run_id : int
        status : {'complete', 'failed', 'interrupted'}
        """
        if status not in FINAL_STATUSES:
            raise ValueError(f"status must be one of {FINAL_STATUSES}, got {status!r}")
        row = self.con.execute(
            "UPDATE runs SET status = ?, finished = ? WHERE id = ? RETURNING id",
            [status, _now(), run_id],
        ).fetchall()
        if not row:
            raise KeyError(f"no run {run_id}")

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
    ) -> int:
        """Record one case (method, strength, attack mode, detector, backend) of a run.

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

        Returns
        -------
        int
            The case id.
        """
        if mode not in MODES:
            raise ValueError(f"mode must be one of {MODES}, got {mode!r}")
        row = self.con.execute(
            """INSERT INTO cases (run_id, method, k, mode, detector, backend, options)
               VALUES (?, ?, ?, ?, ?, ?, ?) RETURNING id""",
            [run_id, method, None if k is None else int(k), mode, detector, backend,
             _json(options)],
        ).fetchall()
        return int(row[0][0])

    # -- bulk data -------------------------------------------------------------------

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
        dist = np.asarray(distance, dtype=np.float64)
        if dist.ndim != 1:
            raise ValueError(f"distance must be 1-d, got shape {dist.shape}")
        n = dist.shape[0]
        if np.isneginf(dist).any():
            raise ValueError("distance must not be -inf")
        missing = ~np.isfinite(dist)
        columns = {
            "case_id": pa.array(np.full(n, case_id, dtype=np.int64)),
            "probe": _string_array(probe, n, "probe"),
            "gallery": _string_array(gallery, n, "gallery"),
            "mated": _bool_array(mated, n, "mated"),
            "distance": pa.array(dist, mask=missing if missing.any() else None),
        }
        if probe_acquired is not None:
            columns["probe_acquired"] = _bool_array(probe_acquired, n, "probe_acquired")
        if gallery_enrolled is not None:
            columns["gallery_enrolled"] = _bool_array(gallery_enrolled, n, "gallery_enrolled")
        table = pa.table(columns)
        self._insert("INSERT INTO scores BY NAME SELECT * FROM _rows", table)

    def add_images(self, run_id: int, rows: Mapping[str, Sequence]) -> None:
        """Insert per-image records of a run in bulk.

        Parameters
        ----------
        run_id : int
        rows : mapping of column name to sequence
            Columns ``key``, ``role`` ('original' | 'anonymized'), ``method``, ``k``,
            ``sha256``, ``acquired``, ``faces_found``, ``backend``; all of equal length.
            ``key`` and ``role`` are required; missing optional columns are NULL.
        """
        unknown = set(rows) - set(IMAGE_COLUMNS)
        if unknown:
            raise ValueError(f"unknown image columns: {sorted(unknown)}")
        for required in ("key", "role"):
            if required not in rows:
                raise ValueError(f"image rows need a {required!r} column")
        types = {"key": pa.string(), "role": pa.string(), "method": pa.string(),
                 "k": pa.int64(), "sha256": pa.string(), "acquired": pa.bool_(),
                 "faces_found": pa.int32(), "backend": pa.string()}
        lengths = {name: len(values) for name, values in rows.items()}
        if len(set(lengths.values())) > 1:
            raise ValueError(f"image columns differ in length: {lengths}")
        n = lengths["key"]
        columns = {"run_id": pa.array(np.full(n, run_id, dtype=np.int64))}
        for name, values in rows.items():
            data = values.tolist() if isinstance(values, np.ndarray) else list(values)
            columns[name] = pa.array(data, type=types[name])
        table = pa.table(columns)
        self._insert("INSERT INTO images BY NAME SELECT * FROM _rows", table)

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
        for row in rows:
            unknown = set(row) - set(TIMING_COLUMNS)
            if unknown:
                raise ValueError(f"unknown timing keys: {sorted(unknown)}")
            if "name" not in row:
                raise ValueError("each timing row needs a 'name'")
        table = pa.table({
            "case_id": pa.array([case_id] * len(rows), type=pa.int64()),
            "name": pa.array([r["name"] for r in rows], type=pa.string()),
            **{key: pa.array([r.get(key) for r in rows], type=pa.float64())
               for key in ("min", "max", "median", "mean", "stddev")},
            "rounds": pa.array([r.get("rounds") for r in rows], type=pa.int64()),
            "unit": pa.array([r.get("unit", "seconds per image") for r in rows],
                             type=pa.string()),
        })
        self._insert("INSERT INTO timings BY NAME SELECT * FROM _rows", table)

    # -- embedding cache -------------------------------------------------------------

    def cached_embeddings(
        self, backend: str, sha256s: Sequence[str]
    ) -> dict[str, tuple[np.ndarray | None, int]]:
        """Look up cached embeddings.

        Parameters
        ----------
        backend : str
        sha256s : sequence of str
            Image hashes to look up.

        Returns
        -------
        dict
            ``sha256 -> (embedding, faces_found)`` for the hashes in the cache; the
            embedding is a float64 vector, or None when no face was found. Hashes not
            in the cache are absent.
        """
        # `_wanted` is read by DuckDB's replacement scan. execute() (unlike sql() or
        # register()) still works when the caller left an unfinished result open.
        _wanted = pa.table({"sha256": pa.array(list(dict.fromkeys(sha256s)),  # noqa: F841
                                               type=pa.string())})
        result = self.con.execute(
            """SELECT e.sha256, e.embedding, e.faces_found
               FROM embeddings e SEMI JOIN _wanted w ON e.sha256 = w.sha256
               WHERE e.backend = ?""",
            [backend],
        ).fetchnumpy()
        vectors = result["embedding"]
        missing = np.ma.getmaskarray(vectors)
        out: dict[str, tuple[np.ndarray | None, int]] = {}
        for sha, vector, none, faces in zip(result["sha256"], np.ma.getdata(vectors), missing,
                                            result["faces_found"], strict=True):
            out[str(sha)] = (None if none or vector is None
                             else np.asarray(vector, dtype=np.float64), int(faces))
        return out

    def cached_embedding_keys(self, backend: str) -> set[str]:
        """The hashes of every image cached for ``backend``.

        Parameters
        ----------
        backend : str

        Returns
        -------
        set of str
        """
        rows = self.con.execute("SELECT sha256 FROM embeddings WHERE backend = ?",
                                [backend]).fetchnumpy()["sha256"]
        return {str(sha) for sha in rows}

    def store_embeddings(
        self,
        backend: str,
        sha256s: Sequence[str],
        embeddings: Sequence[np.ndarray | None],
        faces_found: Sequence[int],
    ) -> None:
        """Cache embeddings in bulk; hashes already cached for ``backend`` are kept.

        Parameters
        ----------
        backend : str
        sha256s : sequence of str
        embeddings : sequence of ndarray or None
            One vector per hash (any length, stored as DOUBLE[]), None for "no face".
        faces_found : sequence of int
        """
        n = len(sha256s)
        if len(embeddings) != n or len(faces_found) != n:
            raise ValueError("sha256s, embeddings and faces_found differ in length")
        if n == 0:
            return
        lengths = np.array([0 if e is None else np.asarray(e).size for e in embeddings])
        offsets = np.zeros(n + 1, dtype=np.int32)
        np.cumsum(lengths, out=offsets[1:])
        present = [np.asarray(e, dtype=np.float64).ravel() for e in embeddings if e is not None]
        flat = np.concatenate(present) if present else np.zeros(0, dtype=np.float64)
        mask = pa.array([e is None for e in embeddings], type=pa.bool_())
        vectors = pa.ListArray.from_arrays(pa.array(offsets), pa.array(flat), mask=mask)
        table = pa.table({
            "backend": pa.array([backend] * n, type=pa.string()),
            "sha256": pa.array(list(sha256s), type=pa.string()),
            "embedding": vectors,
            "faces_found": pa.array(np.asarray(faces_found, dtype=np.int32)),
        })
        self._insert(
            "INSERT OR IGNORE INTO embeddings BY NAME SELECT *, ? AS created FROM _rows",
            table, [_now()],
        )

    # -- settings and metrics --------------------------------------------------------

    def set_threshold(self, threshold: float) -> None:
        """Set the decision threshold the metric views use (a match is distance <= it).

        Parameters
        ----------
        threshold : float
            Finite; the default of a new database is 0.6.
        """
        threshold = float(threshold)
        if not math.isfinite(threshold):
            raise ValueError("threshold must be finite")
        self.con.execute("UPDATE settings SET threshold = ? WHERE id = 1", [threshold])

    @property
    def threshold(self) -> float:
        """The decision threshold of the metric views."""
        return float(self.con.execute("SELECT threshold FROM settings WHERE id = 1")
                     .fetchall()[0][0])

    def set_confusion_thresholds(self, thresholds: Sequence[float]) -> None:
        """Replace the extra thresholds of the ``confusion`` view (default 0.6, 0.575).

        Parameters
        ----------
        thresholds : sequence of float
        """
        values = sorted({float(t) for t in thresholds})
        if not all(math.isfinite(t) for t in values):
            raise ValueError("thresholds must be finite")
        self.con.execute("BEGIN TRANSACTION")
        try:
            self.con.execute("DELETE FROM confusion_thresholds")
            if values:
                self.con.executemany("INSERT INTO confusion_thresholds VALUES (?)",
                                     [[t] for t in values])
            self.con.execute("COMMIT")
        except BaseException:
            self.con.execute("ROLLBACK")
            raise

    def confusion_thresholds(self) -> list[float]:
        """The extra thresholds of the ``confusion`` view, ascending."""
        rows = self.con.execute(
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
            One dict per case, ordered by case id: ``run_id, method, k, mode, detector,
            backend`` and every column of ``case_metrics`` (see ``metrics.sql``).
        """
        where = "" if run_id is None else "WHERE c.run_id = $run_id"
        params = {} if run_id is None else {"run_id": run_id}
        return self._dicts(
            f"""SELECT c.run_id, c.method, c.k, c.mode, c.detector, c.backend, m.*
                FROM case_metrics m JOIN cases c ON c.id = m.case_id
                {where} ORDER BY m.case_id""",
            params,
        )

    def runs(self) -> list[dict]:
        """All runs, newest first, with their number of cases and scores.

        Returns
        -------
        list of dict
            Columns of ``runs`` (``packages``, ``machine`` and ``config`` decoded from
            JSON) plus ``n_cases`` and ``n_scores``.
        """
        rows = self._dicts(
            """SELECT r.*,
                      (SELECT count(*) FROM cases c WHERE c.run_id = r.id) AS n_cases,
                      (SELECT count(*) FROM scores s JOIN cases c ON s.case_id = c.id
                       WHERE c.run_id = r.id) AS n_scores
               FROM runs r ORDER BY r.id DESC"""
        )
        for row in rows:
            for key in ("packages", "machine", "config"):
                if isinstance(row.get(key), str):
                    row[key] = json.loads(row[key])
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
        """
        if not self.con.execute("SELECT 1 FROM runs WHERE id = ?", [run_id]).fetchall():
            raise KeyError(f"no run {run_id}")
        cases = "(SELECT id FROM cases WHERE run_id = $run)"
        self.con.execute("BEGIN TRANSACTION")
        try:
            for statement in (
                f"DELETE FROM scores WHERE case_id IN {cases}",
                f"DELETE FROM timings WHERE case_id IN {cases}",
                "DELETE FROM images WHERE run_id = $run",
                "DELETE FROM cases WHERE run_id = $run",
                "DELETE FROM runs WHERE id = $run",
            ):
                self.con.execute(statement, {"run": run_id})
            self.con.execute("COMMIT")
        except BaseException:
            self.con.execute("ROLLBACK")
            raise

    def _insert(self, statement: str, table: pa.Table, params: list | None = None) -> None:
        # `_rows` is read by DuckDB's replacement scan (see cached_embeddings)
        _rows = table  # noqa: F841
        self.con.execute(statement, params or []).fetchall()

    def _dicts(self, query: str, params: dict | None = None) -> list[dict]:
        cursor = self.con.execute(query, params or {})
        names = [d[0] for d in cursor.description]
        return [dict(zip(names, row, strict=True)) for row in cursor.fetchall()]


# -- command line ------------------------------------------------------------------------

_db_option = click.option(
    "--db", "db_path", default=DEFAULT_DB, show_default=True,
    type=click.Path(dir_okay=False), help="Results database.",
)


def _open(db_path: str, *, read_only: bool) -> ResultsDB:
    try:
        return ResultsDB(db_path, read_only=read_only)
    except FileNotFoundError as error:
        raise click.ClickException(str(error)) from error


def _iso(value: Any) -> Any:
    return value.isoformat(sep=" ", timespec="seconds") if isinstance(value, datetime) else value


@click.group("runs")
def runs_command():
    """List, show and delete benchmark runs in the results database."""


@runs_command.command("list")
@_db_option
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of a table.")
def list_runs(db_path: str, as_json: bool):
    """List the runs, newest first."""
    with _open(db_path, read_only=True) as db:
        rows = db.runs()
    if as_json:
        click.echo(json.dumps([{k: _iso(v) for k, v in r.items()} for r in rows], indent=2))
        return
    if not rows:
        click.echo("no runs")
        return
    header = ("id", "status", "started", "finished", "dataset", "cases", "scores",
              "commit", "name")
    table = [header] + [
        (str(r["id"]), r["status"], _iso(r["started"]) or "", _iso(r["finished"]) or "",
         r["dataset_name"], str(r["n_cases"]), str(r["n_scores"]),
         (r["git_commit"] or "")[:10] + ("+" if r["git_dirty"] else ""), r["name"] or "")
        for r in rows
    ]
    widths = [max(len(row[i]) for row in table) for i in range(len(header))]
    for row in table:
        click.echo("  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True))
                   .rstrip())


@runs_command.command("show")
@click.argument("run_id", type=int)
@_db_option
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
def show_run(run_id: int, db_path: str, as_json: bool):
    """Show one run: its metadata and the metrics of each case."""
    with _open(db_path, read_only=True) as db:
        try:
            run = db.run(run_id)
        except KeyError as error:
            raise click.ClickException(f"no run {run_id} in {db_path}") from error
        cases = db.case_metrics(run_id=run_id)
    if as_json:
        click.echo(json.dumps({"run": {k: _iso(v) for k, v in run.items()}, "cases": cases},
                              indent=2, default=str))
        return
    for key, value in run.items():
        if isinstance(value, dict):
            value = json.dumps(value, sort_keys=True)
        click.echo(f"{key}: {_iso(value)}")
    if not cases:
        return
    click.echo("")

    def fmt(value: Any) -> str:
        if value is None:
            return "-"
        return f"{value:.3f}" if isinstance(value, float) else str(value)

    cols = ("case_id", "method", "k", "mode", "detector", "backend", "n_acquired", "fta",
            "eer", "geer", "tar_at_fmr_1pct_all", "rank1")
    table = [cols] + [tuple(fmt(c[col]) for col in cols) for c in cases]
    widths = [max(len(row[i]) for row in table) for i in range(len(cols))]
    for row in table:
        click.echo("  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True))
                   .rstrip())


@runs_command.command("delete")
@click.argument("run_id", type=int)
@_db_option
@click.option("--yes", "-y", is_flag=True, help="Do not ask for confirmation.")
def delete_run(run_id: int, db_path: str, yes: bool):
    """Delete a run with its cases, scores, images and timings (the embedding cache stays)."""
    if not Path(db_path).exists():
        raise click.ClickException(f"no results database at {db_path}")
    with _open(db_path, read_only=False) as db:
        try:
            run = db.run(run_id)
        except KeyError as error:
            raise click.ClickException(f"no run {run_id} in {db_path}") from error
        if not yes:
            click.confirm(
                f"delete run {run_id} ({run['status']}, {run['n_cases']} cases, "
                f"{run['n_scores']} scores)?", abort=True)
        db.delete_run(run_id)
    click.echo(f"deleted run {run_id}")
