"""Entry point: the `obdlayout` command group."""

import importlib

import click

from .about import print_version

# Each command's module is imported when the command runs (or help lists it): a convert need not load the
# inspect, blob and cache commands' code, nor they the convert pipeline.
COMMANDS = {
    "blob": "blob:blob",
    "cache": "cache:cache",
    "cat": "inspect:cat",
    "completion": "about:completion",
    "convert": "convert:convert_command",
    "extract": "inspect:extract",
    "inspect": "inspect:inspect",
    "ls": "inspect:ls",
    "verify": "inspect:verify",
}


class _LazyGroup(click.Group):
    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted(COMMANDS)

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        if cmd_name not in COMMANDS:
            return None
        module, _, name = COMMANDS[cmd_name].partition(":")
        command = getattr(importlib.import_module(f"{__package__}.{module}"), name)
        assert isinstance(command, click.Command)
        return command


@click.group(cls=_LazyGroup, context_settings={"help_option_names": ["-h", "--help"]})
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


def main() -> None:
    cli(prog_name="obdlayout")
