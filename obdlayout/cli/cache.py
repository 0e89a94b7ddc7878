"""`obdlayout cache ls|stats|verify|gc|migrate`: looking after the layer and manifest cache."""

import json
import time
from pathlib import Path
from typing import Any

import click

from ..cache import maintenance
from ..cache.cache import CacheSettings, default_directory
from ..cache.db import SEED_MIGRATION, CacheDatabaseError
from ..cache.dsn import DsnError
from ..errors import ObdlayoutError
from ..units import human_size
from .options import age_value, cache_location_options, size_value


def _settings(cache_dir: Path | None, db_type: str, db_str: str | None) -> CacheSettings:
    settings = CacheSettings(cache_dir or default_directory(), db_type, db_str)
    try:
        settings.dsn()
    except DsnError as exc:
        raise click.UsageError(str(exc)) from None
    return settings


def _emit(as_json: bool, value: Any, lines: list[str]) -> None:
    if as_json:
        click.echo(json.dumps(value, indent=2))
    else:
        for line in lines:
            click.echo(line)


def _guarded(action: Any) -> Any:
    try:
        return action()
    except (CacheDatabaseError, ObdlayoutError, OSError, ValueError) as exc:
        raise click.ClickException(str(exc)) from None


_JSON = click.option("--json", "as_json", is_flag=True, help="Print JSON.")


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
def cache() -> None:
    """The cache of converted layers and images that `convert` keeps and reuses.

    Blobs are in a content store (--cache-dir, default $XDG_CACHE_HOME/obdlayout); the index is SQLite there,
    or a MySQL/MariaDB database (--db-type mysql --db-str DSN) that a fleet of converters shares.
    """


@cache.command("ls")
@cache_location_options
@_JSON
def ls_command(cache_dir: Path | None, db_type: str, db_str: str | None, as_json: bool) -> None:
    """List the cached layers and images, least recently used first."""
    found = _guarded(lambda: maintenance.entries(_settings(cache_dir, db_type, db_str)))
    lines = [
        f"{e.kind:8} {e.key[:16]}  {e.source[:19]} -> {e.output[:19]}  {human_size(sum(r.size for r in e.blobs)):>10}  "
        + time.strftime("%Y-%m-%d %H:%M", time.localtime(e.last_used))
        + (f"  {e.host}/{e.repo}" if e.host else "")
        for e in found
    ]
    _emit(as_json, [entry.as_dict() for entry in found], lines)


@cache.command("stats")
@cache_location_options
@_JSON
def stats_command(cache_dir: Path | None, db_type: str, db_str: str | None, as_json: bool) -> None:
    """How much the cache holds."""
    found = _guarded(lambda: maintenance.stats(_settings(cache_dir, db_type, db_str)))
    lines = [
        f"cache: {found['location']} ({found['backend']})",
        f"{found['layers']} layers, {found['manifests']} images, {found['blobs']} blobs, {human_size(found['bytes'])}",
    ]
    if found["unreferenced_blobs"]:
        lines.append(f"{found['unreferenced_blobs']} blobs no entry needs (gc removes them)")
    _emit(as_json, found, lines)


@cache.command("verify")
@cache_location_options
@_JSON
def verify_command(cache_dir: Path | None, db_type: str, db_str: str | None, as_json: bool) -> None:
    """Hash every stored blob; damaged ones are removed with the entries that need them (exit 1 if any)."""
    found = _guarded(lambda: maintenance.verify(_settings(cache_dir, db_type, db_str)))
    lines = [f"{found['checked']} blobs checked"] + [f"damaged and removed: {digest}" for digest in found["damaged"]]
    if found["entries_dropped"]:
        lines.append(f"{found['entries_dropped']} entries dropped")
    _emit(as_json, found, lines)
    if found["damaged"]:
        raise SystemExit(1)


@cache.command("gc")
@cache_location_options
@click.option(
    "--max-size", callback=size_value, metavar="SIZE", help="Remove least recently used entries down to this."
)
@click.option("--older-than", callback=age_value, metavar="AGE", help="Remove entries unused for this long (12h, 7d).")
@_JSON
def gc_command(
    cache_dir: Path | None, db_type: str, db_str: str | None, max_size: int | None, older_than: float | None,
    as_json: bool,
) -> None:  # fmt: skip
    """Remove entries (by age, then by size) and every blob no entry needs. Blobs a running conversion uses are
    never removed."""
    settings = _settings(cache_dir, db_type, db_str)
    found = _guarded(lambda: maintenance.collect(settings, max_size, older_than))
    line = f"{found['entries_dropped']} entries and {found['blobs_removed']} blobs removed"
    _emit(as_json, found, [f"{line}, {human_size(found['bytes_freed'])} freed"])


@cache.command("migrate")
@click.option("--db-str", metavar="DSN", help="The MySQL/MariaDB database made from the Go convertor's schema.")
@click.option("--print-sql", is_flag=True, help="Print the statements instead of running them.")
def migrate_command(db_str: str | None, print_sql: bool) -> None:
    """Make a Go convertor dedup database (its overlaybd_layers and overlaybd_manifests tables) one that
    obdlayout uses too: adds the columns a correct key needs, and the claims and pins tables. The Go convertor
    keeps working with it."""
    if print_sql:
        click.echo(";\n".join(SEED_MIGRATION) + ";")
        return
    if not db_str:
        raise click.UsageError("--db-str is needed (or --print-sql)")
    ran = _guarded(lambda: maintenance.migrate(_settings(None, "mysql", db_str)))
    click.echo(f"migrated: {len(ran)} statements run" if ran else "already migrated: nothing to do")
