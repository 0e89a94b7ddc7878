"""Entry point: the `obdlayout` command group."""

import click

from .about import completion, print_version
from .blob import blob
from .cache import cache
from .convert import convert_command
from .inspect import cat, extract, inspect, ls, verify


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.option(
    "--version",
    is_flag=True,
    expose_value=False,
    is_eager=True,
    callback=print_version,
    help="Show the version, the formats written and the libraries that decide output bytes.",
)
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
cli.add_command(cache)
cli.add_command(completion)


def main() -> None:
    cli(prog_name="obdlayout")
