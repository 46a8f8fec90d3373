"""``faceanon runs``: list, show and delete the runs of a results database."""

from __future__ import annotations

import json
from collections.abc import Sequence
from datetime import datetime
from pathlib import Path
from typing import Any

import click

from faceanon.cli import FaceanonGroup
from faceanon.cli.options import db_option, json_option


def _open(db_path: Path, *, read_only: bool):
    from faceanon.store import ResultsDB

    try:
        return ResultsDB(db_path, read_only=read_only)
    except FileNotFoundError as error:
        raise click.ClickException(str(error)) from error


def _iso(value: Any) -> Any:
    return value.isoformat(sep=" ", timespec="seconds") if isinstance(value, datetime) else value


def _echo_table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> None:
    """Print rows under a header as left-aligned columns."""
    table = [tuple(header), *(tuple(row) for row in rows)]
    widths = [max(len(row[i]) for row in table) for i in range(len(header))]
    for row in table:
        click.echo("  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True))
                   .rstrip())


def _find_run(db, run_id: int, db_path: Path) -> dict:
    try:
        return db.run(run_id)
    except KeyError as error:
        raise click.ClickException(f"no run {run_id} in {db_path}") from error


@click.group("runs", cls=FaceanonGroup)
def runs_command():
    """List, show and delete benchmark runs in the results database."""


@runs_command.command("list")
@db_option()
@json_option
def list_runs(db_path: Path, as_json: bool):
    """List the runs, newest first."""
    with _open(db_path, read_only=True) as db:
        rows = db.runs()
    if as_json:
        click.echo(json.dumps([{k: _iso(v) for k, v in r.items()} for r in rows], indent=2))
        return
    if not rows:
        click.echo("no runs")
        return
    _echo_table(
        ("id", "status", "started", "finished", "dataset", "cases", "scores", "commit", "name"),
        [(str(r["id"]), r["status"], _iso(r["started"]) or "", _iso(r["finished"]) or "",
          r["dataset_name"], str(r["n_cases"]), str(r["n_scores"]),
          (r["git_commit"] or "")[:10] + ("+" if r["git_dirty"] else ""), r["name"] or "")
         for r in rows],
    )


@runs_command.command("show")
@click.argument("run_id", type=int)
@db_option()
@json_option
def show_run(run_id: int, db_path: Path, as_json: bool):
    """Show one run: its metadata and the metrics of each case."""
    with _open(db_path, read_only=True) as db:
        run = _find_run(db, run_id, db_path)
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

    def cell(case: dict, column: str) -> str:
        # a generalized EER the curves never reach is not a number to read as 0.5
        if column == "geer" and case["geer_crossed"] is False:
            return "not reached"
        return fmt(case[column])

    columns = ("case_id", "method", "k", "mode", "detector", "backend", "n_acquired", "fta",
               "eer", "geer", "tar_at_fmr_1pct_all", "rank1")
    _echo_table(columns, [tuple(cell(c, col) for col in columns) for c in cases])


@runs_command.command("delete")
@click.argument("run_id", type=int)
@db_option()
@click.option("--yes", "-y", is_flag=True, help="Do not ask for confirmation.")
def delete_run(run_id: int, db_path: Path, yes: bool):
    """Delete a run with its cases, scores, images and timings (the embedding cache stays)."""
    if not Path(db_path).exists():
        raise click.ClickException(f"no results database at {db_path}")
    with _open(db_path, read_only=False) as db:
        run = _find_run(db, run_id, db_path)
        if not yes:
            click.confirm(
                f"delete run {run_id} ({run['status']}, {run['n_cases']} cases, "
                f"{run['n_scores']} scores)?", abort=True)
        db.delete_run(run_id)
    click.echo(f"deleted run {run_id}")
