"""The ``faceanon`` command line.

Sub-commands live beside the code they drive and are imported only when used, so that
``faceanon --help`` stays fast and never imports torch.
"""

from __future__ import annotations

import importlib

import click

COMMANDS = {
    "anonymize": "faceanon.anonymize:anonymize_command",
    "data": "faceanon.fetch:data_command",
    "report": "faceanon.report:report_command",
    "runs": "faceanon.store:runs_command",
    "train-gan": "faceanon.gan_training:train_gan_command",
}


class LazyGroup(click.Group):
    def list_commands(self, ctx):
        return sorted(COMMANDS)

    def get_command(self, ctx, name):
        if name not in COMMANDS:
            return None
        module, _, attribute = COMMANDS[name].partition(":")
        return getattr(importlib.import_module(module), attribute)


@click.group(cls=LazyGroup)
@click.version_option(package_name="faceanon")
def main():
    """Measure how much face anonymization hides from face recognition."""


if __name__ == "__main__":
    main()
