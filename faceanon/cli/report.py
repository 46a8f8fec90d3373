"""``faceanon report``: render a run's leaderboard (:func:`faceanon.report.render_report`)."""

from __future__ import annotations

import time
from pathlib import Path

import click

from faceanon.cli.options import db_option, output_option


@click.command("report")
@db_option()
@output_option(default="report", deprecated=("--out",),
               help="Report folder (replaced as a whole when it is an earlier report).")
@click.option("--run", "run_ids", type=int, multiple=True,
              help="Run to show (default: the newest complete run); twice to compare "
                   "the second run against the first.")
@click.option("--templates", default=None,
              type=click.Path(exists=True, file_okay=False, path_type=Path),
              help="Template folder to use instead of the installed package's.")
@click.option("--identities", default=3, show_default=True, type=click.IntRange(0, 20),
              help="Identities in the picture strip; 0 leaves it out.")
def report_command(db_path: Path, output: Path, run_ids: tuple[int, ...],
                   templates: Path | None, identities: int):
    """Render the HTML leaderboard of a run as a static site (opens from disk)."""
    from faceanon.report import render_report

    started = time.perf_counter()
    index = render_report(db_path, output, run_ids=run_ids, templates=templates,
                          identities=identities)
    click.echo(f"report: {index} ({time.perf_counter() - started:.1f} s)")
