"""Entry point: the `obdlayout` command group."""

import click

from .. import __version__
from .blob import blob
from .convert import convert_command
from .inspect import cat, extract, inspect, ls, verify


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="obdlayout")
def cli() -> None:
    """Convert OCI image layouts into overlaybd images, and inspect overlaybd blobs.

    No overlaybd tools, containerd or root are needed.
    """


cli.add_command(blob)
cli.add_command(inspect)
cli.add_command(ls)
cli.add_command(cat)
cli.add_command(extract)
cli.add_command(verify)
cli.add_command(convert_command, name="convert")


def main() -> None:
    cli(prog_name="obdlayout")
