"""``faceanon data``: inspect datasets, and download LFW safely."""

from __future__ import annotations

import json

import click

from faceanon.cli.options import json_option, output_option
from faceanon.datasets import DEFAULT_CACHE, resolve_dataset
from faceanon.fetch import SOURCES, fetch_dataset


@click.group("data")
def data_command():
    """Inspect and download face datasets."""


@data_command.command("info")
@click.argument("dataset")
@json_option
def info_command(dataset, as_json):
    """Count identities and images of DATASET (a path, or a name under $FACEANON_DATA)."""
    summary = resolve_dataset(dataset).summary()
    if as_json:
        click.echo(json.dumps(summary, indent=2))
        return
    click.echo(f"dataset      {summary['name']}  ({summary['root']})")
    click.echo(f"identities   {summary['identities']}")
    click.echo(f"images       {summary['images']}")
    click.echo(f"with >= 2    {summary['identities_with_2_or_more']} identities")
    click.echo(f"fingerprint  {summary['fingerprint']}")


@data_command.command("fetch")
@click.argument("name", type=click.Choice(sorted(SOURCES)))
@output_option(default=DEFAULT_CACHE, deprecated=("--dest",),
               help="Folder that receives the dataset folders (the user cache, where "
                    "datasets are found by name).")
@click.option("--url", help="Download from this mirror instead.")
@click.option("--checksum", help="Expected ALGORITHM:HEX of the archive (e.g. sha256:...).")
@click.option("--force", is_flag=True, help="Replace dataset folders that already exist.")
def fetch_command(name, output, url, checksum, force):
    """Download NAME, verify its checksum and unpack it safely."""
    created = fetch_dataset(name, destination=output, url=url, checksum=checksum, force=force)
    for folder in created:
        summary = resolve_dataset(folder).summary()
        click.echo(f"{folder}: {summary['identities']} identities, {summary['images']} images")
