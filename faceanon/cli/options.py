"""Option definitions shared by the ``faceanon`` commands, so each is spelled one way.

Every command that writes files takes ``-o/--output``; the older spellings (``--out``,
``--dest``) still work as hidden, deprecated aliases that say so on stderr.
"""

from __future__ import annotations

import functools
from pathlib import Path

import click
from click.core import ParameterSource

__all__ = ["db_option", "json_option", "output_option"]

_OUTPUT = "output"


def output_option(*, help: str, default: str | Path | None = None,
                  deprecated: tuple[str, ...] = ()):
    """``-o/--output FOLDER``, plus hidden deprecated aliases such as ``--out``.

    Parameters
    ----------
    help : str
        The option's help text.
    default : str or Path, optional
        Without a default the option is required.
    deprecated : tuple of str
        Old spellings still accepted (``"--out"``); using one prints a warning, and
        giving it together with ``-o/--output`` is a usage error.

    Returns
    -------
    callable
        A decorator for a click command whose function takes ``output`` (a Path).
    """
    alias_names = {flag: f"_deprecated_{flag.lstrip('-').replace('-', '_')}"
                   for flag in deprecated}
    path_type = click.Path(file_okay=False, path_type=Path)

    def decorator(function):
        @functools.wraps(function)
        def merged(*args, **kwargs):
            output = kwargs.pop(_OUTPUT)
            context = click.get_current_context()
            given = context.get_parameter_source(_OUTPUT) not in (
                ParameterSource.DEFAULT, None)
            for flag, name in alias_names.items():
                value = kwargs.pop(name)
                if value is None:
                    continue
                if given:
                    raise click.UsageError(f"give -o/--output or {flag}, not both")
                click.echo(f"Warning: {flag} is deprecated; use -o/--output.", err=True)
                output, given = value, True
            if output is None:
                raise click.UsageError("Missing option '-o' / '--output'.")
            return function(*args, output=output, **kwargs)

        command = merged
        for flag, name in reversed(alias_names.items()):
            command = click.option(flag, name, type=path_type, default=None, hidden=True)(
                command)
        shown_default = default is not None
        return click.option(
            "-o", "--output", _OUTPUT, type=path_type, default=default,
            show_default=shown_default,
            help=help if shown_default else f"{help} [required]",
        )(command)

    return decorator


def db_option():
    """``--db PATH``: the results database (default ``results.duckdb``)."""
    from faceanon.store import DEFAULT_DB  # here, so commands without --db never load DuckDB

    return click.option(
        "--db", "db_path", default=DEFAULT_DB, show_default=True,
        type=click.Path(dir_okay=False, path_type=Path), help="Results database.",
    )

json_option = click.option(
    "--json", "as_json", is_flag=True, help="Print one JSON document on stdout.",
)
