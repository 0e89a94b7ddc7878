"""Entry point: the `obdlayout` command group."""

import click

from .. import __version__
from .blob import blob


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="obdlayout")
def cli() -> None:
    """Convert OCI image layouts into overlaybd images, and inspect overlaybd blobs.

    No overlaybd tools, containerd or root are needed.
    """


cli.add_command(blob)


def main() -> None:
    cli(prog_name="obdlayout")
