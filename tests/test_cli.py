"""The command group: library errors become one-line errors, options are spelled one way."""

from __future__ import annotations

import pytest
from click.testing import CliRunner

from faceanon.cli import COMMANDS, main


def test_a_library_error_is_one_line_without_a_traceback(tmp_path):
    # resolve_dataset raises DatasetError, a FaceanonError; the group turns it into a line.
    result = CliRunner().invoke(main, ["data", "info", str(tmp_path / "missing")])
    assert result.exit_code == 1
    (line,) = result.output.splitlines()
    assert line.startswith("Error: dataset") and "faceanon data fetch" in line


def test_output_is_required_where_there_is_no_default(tmp_path):
    (tmp_path / "in").mkdir()
    result = CliRunner().invoke(main, ["anonymize", str(tmp_path / "in")])
    assert result.exit_code == 2
    assert "Missing option '-o' / '--output'" in result.output


@pytest.mark.parametrize("command", ["anonymize", "report", "data fetch"])
def test_every_writing_command_takes_dash_o(command):
    result = CliRunner().invoke(main, [*command.split(), "--help"])
    assert result.exit_code == 0
    assert "-o, --output" in result.output
    assert "--out " not in result.output and "--dest" not in result.output


def test_the_listing_is_each_commands_own_first_line():
    listing = CliRunner().invoke(main, ["--help"]).output
    for name, (_, summary) in COMMANDS.items():
        command = main.get_command(None, name)
        assert command.help.strip().splitlines()[0] == summary, name
        assert f"  {name} " in listing
