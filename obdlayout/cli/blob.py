"""`obdlayout blob …`: look into, check and unpack overlaybd layer blobs a user holds."""

import json
import os
from collections.abc import Callable
from contextlib import ExitStack
from dataclasses import asdict
from functools import wraps
from typing import Any, ParamSpec, TypeVar

import click

from ..api import blob_options
from ..atomic import atomic_output
from ..formats.blob import Blob, BlobInfo, open_stack, open_target, write_raw
from ..formats.commit import LayerBlobWriter, pack_raw_image
from ..formats.errors import FormatError
from ..formats.gzindex import MAGIC as GZIP_INDEX_MAGIC
from ..formats.gzindex import GzipIndex
from ..formats.lsmt_layout import SECTOR, is_valid_uuid
from ..formats.source import BytesSource
from ..formats.turbo_archive import GZIP_META_NAME, TurboArchive
from ..oci.layers import GZIP_MAGIC
from ..units import human_size
from .options import compression_options

P = ParamSpec("P")
R = TypeVar("R")

_BLOBS = click.argument("files", nargs=-1, required=True, type=click.Path(dir_okay=False))


def _format_errors_exit(func: Callable[P, R]) -> Callable[P, R]:
    """A fault in a blob is the user's input problem: one line naming file and fault, exit 1."""

    @wraps(func)
    def run(*args: P.args, **kwargs: P.kwargs) -> R:
        try:
            return func(*args, **kwargs)
        except FormatError as exc:
            raise click.ClickException(str(exc)) from None
        except OSError as exc:
            raise click.ClickException(f"{exc.filename or ''}: {exc.strerror}") from None

    return run


@click.group()
def blob() -> None:
    """Overlaybd layer blobs: tar wrapper, ZFile and LSMT, in any combination."""


def _describe(info: BlobInfo) -> str:
    compression = info.compression if info.block_size is None else f"{info.compression}, {info.block_size}-byte blocks"
    lines = [
        info.path,
        f"  kind:          {info.kind}",
        f"  wrapping:      {info.wrapping}",
        f"  compression:   {compression}",
        f"  file size:     {human_size(info.file_size)} ({info.file_size} bytes); LSMT {info.lsmt_size} bytes",
        f"  uuid:          {info.uuid}",
        f"  parent uuid:   {info.parent_uuid}",
        f"  virtual size:  {human_size(info.virtual_size)} ({info.virtual_size} bytes)",
        f"  records:       {info.records} ({info.zeroed_records} zeroed)",
        f"  data:          {human_size(info.data_bytes)} ({info.data_bytes} bytes)",
    ]
    if info.target_records:
        lines.append(f"  in target tar: {info.target_records} records, {info.target_bytes} bytes")
    if info.user_tag:
        lines.append(f"  user tag:      {info.user_tag}")
    return "\n".join(lines)


def _describe_index(path: str, index: GzipIndex) -> str:
    header = index.header
    return "\n".join(
        [
            path,
            "  kind:          gzip index (ddgzidx)",
            f"  gzip file:     {human_size(header.gzip_size)} ({header.gzip_size} bytes)",
            f"  uncompressed:  {human_size(header.uncompressed_size)} ({header.uncompressed_size} bytes)",
            f"  checkpoints:   {header.entries}, span {header.span} bytes, windows zlib level {header.dict_level}",
        ]
    )


def _index_dict(path: str, index: GzipIndex) -> dict[str, Any]:
    return {"path": path, "kind": "gzip-index", **asdict(index.header)}


def _open_index(path: str, stack: ExitStack) -> GzipIndex:
    return GzipIndex(open_target(path, None, stack))


def _kind(path: str) -> str:
    """What a file holds, by its first bytes: a gzip index, a TurboOCI layer archive, or a layer blob."""
    try:
        with open(path, "rb") as head:
            start = head.read(len(GZIP_INDEX_MAGIC))
    except OSError as exc:
        raise FormatError(path, f"cannot open: {exc.strerror}") from None
    if start == GZIP_INDEX_MAGIC:
        return "gzip-index"
    return "archive" if start.startswith(GZIP_MAGIC) else "blob"


def _check(path: str) -> str:
    """Every check of the file; the line `verify` prints for a sound one."""
    kind = _kind(path)
    with ExitStack() as stack:
        if kind == "gzip-index":
            index = _open_index(path, stack)
            index.verify()
            return f"gzip index, {index.header.entries} checkpoints over {index.header.uncompressed_size} bytes"
        if kind == "archive":
            archive = TurboArchive.read(path)
            meta = stack.enter_context(Blob(f"{path}:{archive.fs_meta_name}", warp=True, contents=archive.fs_meta))
            meta.verify()
            if archive.gzip_meta is not None:
                GzipIndex(BytesSource(archive.gzip_meta, f"{path}:{GZIP_META_NAME}")).verify()
            return f"TurboOCI archive of {', '.join(archive.members)}; {meta.info().records} LSMT records"
        opened = stack.enter_context(Blob(path))
        opened.verify()
        summary = opened.info()
        return f"{summary.kind} LSMT, {summary.records} records, {summary.compression}"


@blob.command()
@_BLOBS
@click.option("--json", "as_json", is_flag=True, help="Print a JSON list, one object per file.")
@_format_errors_exit
def info(files: tuple[str, ...], as_json: bool) -> None:
    """Show how each FILE is wrapped and compressed, and its LSMT facts.

    Sizes are bytes; uuids are as stored in the LSMT trailer. A TurboOCI layer archive (turboOCIv1.tar.gz)
    is shown by its members and its fs meta; a gzip index (gzip.meta) by its header.
    """
    texts: list[str] = []
    dicts: list[dict[str, Any]] = []
    for path in files:
        kind = _kind(path)
        with ExitStack() as stack:
            if kind == "gzip-index":
                index = _open_index(path, stack)
                texts.append(_describe_index(path, index))
                dicts.append(_index_dict(path, index))
                continue
            if kind == "archive":
                archive = TurboArchive.read(path)
                meta = stack.enter_context(Blob(f"{path}:{archive.fs_meta_name}", warp=True, contents=archive.fs_meta))
                found = meta.info()
                texts.append(f"{path}\n  kind:          TurboOCI layer archive: {', '.join(archive.members)}\n"
                             f"  diff_id:       {archive.diff_id}\n" + _describe(found))  # fmt: skip
                dicts.append({"path": path, "kind": "turbo-oci-archive", "members": archive.members,
                              "diff_id": archive.diff_id, "fs_meta": found.as_dict()})  # fmt: skip
                continue
            opened = stack.enter_context(Blob(path))
            found = opened.info()
            texts.append(_describe(found))
            dicts.append(found.as_dict())
    if as_json:
        click.echo(json.dumps(dicts, indent=2))
    else:
        click.echo("\n\n".join(texts))


@blob.command()
@_BLOBS
def verify(files: tuple[str, ...]) -> None:
    """Check every structural rule and every CRC of each FILE (layer blobs, TurboOCI archives, gzip indexes).

    Prints one line per file; exits 1 if any file has a fault, naming the first fault found in it.
    """
    failed = False
    for path in files:
        try:
            line = _check(path)
        except FormatError as exc:
            click.echo(f"FAULT {exc}", err=True)
            failed = True
            continue
        except OSError as exc:
            click.echo(f"FAULT {path}: {exc.strerror}", err=True)
            failed = True
            continue
        click.echo(f"ok    {path}: {line}")
    if failed:
        raise SystemExit(1)


@blob.command()
@click.argument("file", type=click.Path(dir_okay=False))
@click.argument("out", type=click.Path(dir_okay=False, writable=True))
@_format_errors_exit
def unpack(file: str, out: str) -> None:
    """Write the plain LSMT layer inside FILE to OUT (decompressed, unwrapped; CRCs checked)."""
    with Blob(file) as opened, atomic_output(out) as sink:
        for chunk in opened.iter_lsmt():
            sink.write(chunk)


@blob.command()
@click.argument("out", type=click.Path(dir_okay=False, writable=True))
@_BLOBS
@_format_errors_exit
def raw(out: str, files: tuple[str, ...]) -> None:
    """Merge the stack FILES (bottom layer first) into the sparse raw disk image OUT.

    OUT is as large as the virtual size, but only mapped data takes space on disk.
    """
    with ExitStack() as stack:
        disk = open_stack(files, stack)
        with atomic_output(out) as sink:
            written = write_raw(disk, sink)
    click.echo(f"{out}: {disk.virtual_size} bytes virtual, {written} bytes of data", err=True)


@blob.command()
@click.argument("image", type=click.Path(exists=True, dir_okay=False))
@click.argument("out", type=click.Path(dir_okay=False, writable=True))
@click.option("--uuid", help="LSMT uuid (36-char form; the null uuid when absent).")
@click.option("--parent-uuid", help="LSMT parent uuid (the null uuid when absent).")
@compression_options
@click.option("--no-zfile", is_flag=True, help="Write a plain LSMT layer, uncompressed.")
@click.option("--no-tar", is_flag=True, help="Leave out the tar wrapper.")
@_format_errors_exit
def pack(
    image: str,
    out: str,
    uuid: str | None,
    parent_uuid: str | None,
    algorithm: str,
    block_kib: str,
    no_zfile: bool,
    no_tar: bool,
    jobs: int,
) -> None:
    """Pack the raw disk image IMAGE (e.g. an ext4 file system) into the layer blob OUT.

    Every non-zero 4 KiB block becomes LSMT data; the virtual size is IMAGE's size. The result is
    what `overlaybd-commit -z -t` would make of a layer holding that image.
    """
    for name, value in (("--uuid", uuid), ("--parent-uuid", parent_uuid)):
        if value is not None and not is_valid_uuid(value):
            raise click.BadParameter(f"{value!r} is not a 36-character UUID", param_hint=name)
    options = blob_options(algorithm, int(block_kib), jobs, zfile=not no_zfile, tar=not no_tar)
    with open(image, "rb") as source:
        size = os.fstat(source.fileno()).st_size
        if size % SECTOR:
            raise click.ClickException(f"{image}: size {size} is not a multiple of {SECTOR} bytes")
        with atomic_output(out) as sink:
            writer = LayerBlobWriter(sink, virtual_size=size, uuid=uuid, parent_uuid=parent_uuid, options=options)
            try:
                pack_raw_image(source, writer)
            except BaseException:
                writer.abort()
                raise
            summary = writer.close()
    click.echo(
        f"{out}: {summary.size} bytes, {summary.lsmt.records} records, {summary.lsmt.data_bytes} bytes of data",
        err=True,
    )
