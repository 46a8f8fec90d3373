"""The ``faceanon`` command line: one module per command, sharing option definitions.

Commands are imported only when run, and their one-line help is listed here, so that
``faceanon --help`` stays fast and never imports torch, dlib or DuckDB.

Library code raises :class:`faceanon.errors.FaceanonError`; this group turns any that
reaches it into click's one-line ``Error: ...`` with exit code 1. A command that wants a
usage error (exit code 2) for bad options raises ``click.UsageError`` itself.
"""

from __future__ import annotations

import importlib

import click

from faceanon.errors import FaceanonError

__all__ = ["COMMANDS", "FaceanonGroup", "main"]

#: Command name -> (module:attribute, the first line of its help; a test keeps them equal).
COMMANDS: dict[str, tuple[str, str]] = {
    "anonymize": ("faceanon.cli.anonymize:anonymize_command",
                  "Anonymize the faces in images, videos and folders (recursively) into OUTPUT."),
    "data": ("faceanon.cli.data:data_command", "Inspect and download face datasets."),
    "report": ("faceanon.cli.report:report_command",
               "Render the HTML leaderboard of a run as a static site (opens from disk)."),
    "runs": ("faceanon.cli.runs:runs_command",
             "List, show and delete benchmark runs in the results database."),
    "train-gan": ("faceanon.gan_training:train_gan_command",
                  "Train the DeepPrivacy-style GAN on faces in DATA; rerun to resume."),
}


class FaceanonGroup(click.Group):
    """A command group that turns a :class:`FaceanonError` into click's ``Error: ...``.

    Sub-groups use it too, so they say the same one line when invoked on their own.
    """

    def invoke(self, ctx):
        try:
            return super().invoke(ctx)
        except FaceanonError as error:
            raise click.ClickException(str(error)) from None


class LazyGroup(FaceanonGroup):
    """A group whose commands are imported on first use."""

    def list_commands(self, ctx):
        return sorted(COMMANDS)

    def get_command(self, ctx, name):
        if name not in COMMANDS:
            return None
        target, _ = COMMANDS[name]
        module, _, attribute = target.partition(":")
        return getattr(importlib.import_module(module), attribute)

    def format_commands(self, ctx, formatter):
        # The listing reads the table above instead of importing every command.
        rows = [(name, COMMANDS[name][1]) for name in self.list_commands(ctx)]
        with formatter.section("Commands"):
            formatter.write_dl(rows)


@click.group(cls=LazyGroup)
@click.version_option(package_name="faceanon")
def main():
    """Measure how much face anonymization hides from face recognition."""


if __name__ == "__main__":
    main()
