"""`obdlayout --version` and `obdlayout completion`: what made an image, and shell completion."""

import platform
import sys
from importlib import metadata

import click
from click.shell_completion import get_completion_class

from .. import __version__
from ..inflate import zlib_version
from ..oci.mediatypes import OVERLAYBD_VERSION_VALUE, TURBO_VERSION_VALUE

# The libraries whose versions can change the bytes of what is written (compressed blobs, gzip indexes).
BYTE_DECIDING = ("lz4", "zstandard", "isal", "crc32c")


def version_text() -> str:
    """The tool, the format versions it writes, and what decides output bytes: for bug reports."""
    libraries = ", ".join(f"{name} {_installed(name)}" for name in BYTE_DECIDING)
    return "\n".join(
        [
            f"obdlayout {__version__}",
            f"writes: overlaybd layers {OVERLAYBD_VERSION_VALUE}, TurboOCI layers {TURBO_VERSION_VALUE}",
            f"libraries: {libraries}, zlib {zlib_version()}",
            f"python: {platform.python_implementation()} {platform.python_version()} on {sys.platform}",
        ]
    )


def _installed(name: str) -> str:
    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return "not installed"


def print_version(ctx: click.Context, param: click.Parameter, value: bool) -> None:
    if value and not ctx.resilient_parsing:
        click.echo(version_text())
        ctx.exit()


SHELLS = ("bash", "zsh", "fish")


@click.command()
@click.argument("shell", type=click.Choice(SHELLS))
@click.pass_context
def completion(ctx: click.Context, shell: str) -> None:
    """Print the shell code that completes obdlayout's commands, options and tags.

    \b
    bash:  eval "$(obdlayout completion bash)"        (or put it in ~/.bashrc)
    zsh:   eval "$(obdlayout completion zsh)"         (in ~/.zshrc)
    fish:  obdlayout completion fish | source         (in ~/.config/fish/config.fish)
    """
    root = ctx.find_root().command
    shell_class = get_completion_class(shell)
    assert shell_class is not None  # the three shells are click's own
    click.echo(shell_class(root, {}, "obdlayout", "_OBDLAYOUT_COMPLETE").source())
