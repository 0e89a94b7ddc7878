"""Options shared by commands that write layer blobs."""

from collections.abc import Callable
from typing import TypeVar

import click

from ..formats.zfile_layout import BLOCK_SIZES, Algorithm
from ..formats.zfile_writer import default_jobs
from ..units import KiB

F = TypeVar("F", bound=Callable[..., object])


def compression_options(func: F) -> F:
    """--algorithm, --bs and -j/--jobs, passed as `algorithm`, `block_kib` and `jobs`."""
    func = click.option(
        "-j", "--jobs", type=click.IntRange(min=1), default=default_jobs, show_default="all cores",
        help="Compression worker processes.",
    )(func)  # fmt: skip
    func = click.option(
        "--bs", "block_kib", type=click.Choice([str(size // KiB) for size in BLOCK_SIZES]), default="4",
        show_default=True, help="ZFile block size in KiB.",
    )(func)  # fmt: skip
    return click.option(
        "--algorithm", type=click.Choice([a.name.lower() for a in Algorithm]), default="lz4", show_default=True,
        help="ZFile compression of the layer blobs.",
    )(func)  # fmt: skip
