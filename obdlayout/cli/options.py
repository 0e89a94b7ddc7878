"""Options shared by commands that write layer blobs."""

from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

import click

from ..cache.cache import DB_TYPES
from ..formats.zfile_layout import BLOCK_SIZES, Algorithm
from ..formats.zfile_writer import default_jobs
from ..units import KiB, parse_age, parse_size

F = TypeVar("F", bound=Callable[..., object])
V = TypeVar("V")


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


def parsed_by(parse: Callable[[str], V]) -> Callable[[click.Context, click.Parameter, str | None], V | None]:
    """A click callback: the option's text through `parse`, whose ValueError becomes click's BadParameter."""

    def callback(ctx: click.Context, param: click.Parameter, value: str | None) -> V | None:
        if value is None:
            return None
        try:
            return parse(value)
        except ValueError as exc:
            raise click.BadParameter(str(exc)) from None

    return callback


size_value = parsed_by(parse_size)
age_value = parsed_by(parse_age)


def cache_location_options(func: F) -> F:
    """--cache-dir, --db-type and --db-str, passed as `cache_dir`, `db_type` and `db_str`."""
    func = click.option(
        "--db-str", metavar="DSN",
        help="The MySQL/MariaDB database of the cache index, as the Go convertor takes it "
        "(user:password@tcp(host:3306)/dbname) or as mysql://user:password@host:3306/dbname.",
    )(func)  # fmt: skip
    func = click.option(
        "--db-type", type=click.Choice(DB_TYPES), default="sqlite", show_default=True,
        help="Where the cache index is: SQLite in --cache-dir, or the MySQL/MariaDB database --db-str (fleets).",
    )(func)  # fmt: skip
    return click.option(
        "--cache-dir", type=click.Path(file_okay=False, path_type=Path),
        help="The cache's content store (shared storage, for a fleet)  [default: $XDG_CACHE_HOME/obdlayout]",
    )(func)  # fmt: skip
