"""`obdlayout inspect | ls | cat | extract | verify`: see inside converted images without mounting them."""

import json
import os
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from functools import wraps
from pathlib import Path
from typing import ParamSpec, TypeVar

import click

from ..atomic import atomic_output
from ..errors import ObdlayoutError
from ..inspect.errors import InspectError
from ..inspect.extract import ExtractReport, extract_tar
from ..inspect.extract_dir import extract_dir
from ..inspect.fsck import find_checker, find_e2fsck
from ..inspect.image import FoundImage, Target, find_images, open_filesystem, open_layout, parse_target, select_image
from ..inspect.listing import NotAFile
from ..inspect.listing import cat as cat_file
from ..inspect.listing import ls as list_files
from ..inspect.summary import ImageSummary, summarize
from ..inspect.verify import FAULT, Source
from ..inspect.verify import verify as verify_images
from ..layers.paths import ResolveError
from ..oci.descriptor import Platform
from ..oci.layout import Layout
from ..units import human_size

P = ParamSpec("P")
R = TypeVar("R")


def _errors_exit(func: Callable[P, R]) -> Callable[P, R]:
    """A fault in the input is the user's problem to fix: one line naming where and what, exit 1."""

    @wraps(func)
    def run(*args: P.args, **kwargs: P.kwargs) -> R:
        try:
            return func(*args, **kwargs)
        except ObdlayoutError as exc:
            raise click.ClickException(str(exc)) from None
        except BrokenPipeError:
            # The reader went away (`ls -lR | head`): stop quietly, and keep Python from complaining at exit.
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
            sys.exit(1)
        except OSError as exc:
            where = f"{exc.filename}: " if exc.filename else ""
            raise click.ClickException(f"{where}{exc.strerror}") from None

    return run


def _platform(_: click.Context, __: click.Parameter, value: str | None) -> Platform | None:
    if value is None:
        return None
    try:
        return Platform.parse(value)
    except ValueError as exc:
        raise click.BadParameter(str(exc)) from None


_PLATFORM = click.option(
    "--platform",
    callback=_platform,
    metavar="OS/ARCH[/VARIANT]",
    help="The image of this platform, when the tag names a multi-platform index.",
)


def _tag(layout: Layout, target: Target) -> str:
    """The tag given, or the layout's only one."""
    if target.tag is not None:
        return target.tag
    tags = layout.tags()
    if len(tags) == 1:
        return tags[0]
    known = ", ".join(repr(t) for t in tags) or "none"
    raise InspectError(str(target.layout), f"give LAYOUT:TAG to choose an image (tags: {known})")


def _image(text: str, platform: Platform | None) -> tuple[Layout, FoundImage]:
    target = parse_target(text)
    layout = open_layout(target)
    return layout, select_image(layout, _tag(layout, target), platform)


# -- inspect --------------------------------------------------------------------------------------


@click.command("inspect")
@click.argument("target", metavar="LAYOUT[:TAG]")
@_PLATFORM
@click.option("--json", "as_json", is_flag=True, help="Print a JSON list, one object per image.")
@_errors_exit
def inspect(target: str, platform: Platform | None, as_json: bool) -> None:
    """Show what each image of a layout is made of: per tag (every tag if none is given) and platform.

    For each image: the manifest and config (digest, media type), each layer blob (digest, size,
    tar wrapping, ZFile compression and block size, LSMT uuid and parent uuid), the virtual disk size,
    and the file system it holds (type, files in use as e2fsck counts them, bytes used).

    Blobs are opened, not read whole; `obdlayout verify` checks digests, CRCs and consistency.
    """
    parsed = parse_target(target)
    layout = open_layout(parsed)
    tags = [parsed.tag] if parsed.tag is not None else layout.tags()
    summaries = [
        summarize(layout, image)
        for tag in tags
        for image in find_images(layout, tag)
        if platform is None or (image.platform is not None and platform.matches(image.platform))
    ]
    if as_json:
        click.echo(json.dumps([s.as_dict() for s in summaries], indent=2))
    elif not summaries:
        raise InspectError(str(parsed), "names no image" + (f" for platform {platform}" if platform else ""))
    else:
        click.echo("\n\n".join(_describe(s) for s in summaries))


def _describe(summary: ImageSummary) -> str:
    lines = [f"tag {summary.tag!r}" + (f" ({summary.platform})" if summary.platform else "")]
    for index in summary.indexes:
        lines.append(f"  index:         {index}")
    manifest, config = summary.manifest, summary.config
    lines.append(f"  manifest:      {manifest['digest']} ({manifest['mediaType']}, {manifest['size']} bytes)")
    lines.append(f"  config:        {config['digest']} ({config['mediaType']}, {config['size']} bytes)")
    for number, layer in enumerate(summary.layers):
        lines.append(f"  layer {number}:{' ' * (8 - len(str(number)))}{layer.digest}")
        lines.append(f"    size:        {human_size(layer.size)} ({layer.size} bytes), {layer.media_type}")
        blob = layer.blob
        if blob is None:
            lines.append(f"    {layer.problem}")
            continue
        blocks = f", {blob.block_size}-byte blocks" if blob.block_size else ""
        lines.append(f"    format:      {blob.kind} LSMT, wrapped {blob.wrapping}, {blob.compression}{blocks}")
        lines.append(f"    uuid:        {blob.uuid} (parent {blob.parent_uuid})")
        if layer.target is not None:
            index = f", gzip index of {layer.gzip_index_entries} checkpoints" if layer.gzip_index_entries else ""
            lines.append(f"    data:        in target layer {layer.target}{index}")
    fs = summary.filesystem
    if fs is None:
        lines.append("  file system:   none (not every layer is an overlaybd blob)")
        return "\n".join(lines)
    lines.append(f"  virtual size:  {human_size(fs.virtual_size)} ({fs.virtual_size} bytes)")
    if fs.problem:
        lines.append(f"  file system:   {fs.type}: {fs.problem}")
    elif fs.files is None or fs.bytes_used is None or fs.bytes_total is None:
        lines.append(f"  file system:   {fs.type}")
    else:
        lines.append(
            f"  file system:   {fs.type}, {fs.files} files, {human_size(fs.bytes_used)} used "
            f"({fs.bytes_used} bytes) of {human_size(fs.bytes_total)}"
        )
    return "\n".join(lines)


# -- ls, cat --------------------------------------------------------------------------------------


@contextmanager
def _in_image(target: str) -> Iterator[None]:
    """A path that leads nowhere in the image is named with the image."""
    try:
        yield
    except (ResolveError, NotAFile) as exc:
        raise InspectError(target, str(exc)) from None


@click.command("ls")
@click.argument("target", metavar="LAYOUT:TAG")
@click.argument("path", default="/")
@click.option("-l", "long", is_flag=True, help="Long format: mode, links, uid, gid, size (or major, minor), mtime.")
@click.option("-R", "recursive", is_flag=True, help="List directories below PATH too.")
@_PLATFORM
@_errors_exit
def ls(target: str, path: str, long: bool, recursive: bool, platform: Platform | None) -> None:
    """List PATH (default /) in the merged file system of the image.

    Paths resolve inside the image's own root: symlinks, absolute ones included, are followed within
    the image, and ".." never leaves it. As ls does, a symlink PATH is listed as itself under -l and
    followed otherwise. Owners are numeric; times are UTC, with nanoseconds. Names are shown with
    control characters and bytes that are not UTF-8 as \\xNN. TAG may be left out when the layout
    has only one.
    """
    layout, image = _image(target, platform)
    with open_filesystem(layout, image) as fs, _in_image(target):
        for line in list_files(fs, os.fsencode(path), long, recursive):
            click.echo(line)


@click.command("cat")
@click.argument("target", metavar="LAYOUT:TAG")
@click.argument("path")
@_PLATFORM
@_errors_exit
def cat(target: str, path: str, platform: Platform | None) -> None:
    """Write the contents of the regular file PATH in the image to standard output.

    PATH resolves inside the image's own root (symlinks followed within the image, never on the host).
    The file is streamed, whatever its size. TAG may be left out when the layout has only one.
    """
    layout, image = _image(target, platform)
    out = sys.stdout.buffer
    with open_filesystem(layout, image) as fs, _in_image(target):
        for chunk in cat_file(fs, os.fsencode(path)):
            out.write(chunk)
    out.flush()


# -- extract --------------------------------------------------------------------------------------


@click.command("extract")
@click.argument("target", metavar="LAYOUT:TAG")
@click.option(
    "--dir",
    "directory",
    type=click.Path(file_okay=False),
    help="Make this directory (absent or empty) hold the root file system.",
)
@click.option(
    "--tar",
    "tar_file",
    type=click.Path(dir_okay=False, allow_dash=True),
    help="Write the root file system as a pax tar to this file ('-' for standard output).",
)
@_PLATFORM
@_errors_exit
def extract(target: str, directory: str | None, tar_file: str | None, platform: Platform | None) -> None:
    """Extract the merged root file system of the image, as a directory or as a tar stream.

    --tar writes a pax tar keeping owners, modes, xattrs (as SCHILY.xattr.*), device numbers, hard
    links and mtimes with nanoseconds; re-imported as a layer it gives the same tree. The root itself
    is not an entry (applying a layer skips it), nor are sockets (tar cannot hold them).

    --dir never writes outside DIR, whatever the image holds: names that could climb out are skipped,
    symlinks are recreated but never followed, and nothing is made through a path the image could
    redirect. DIR appears only when complete. Owners, device nodes and privileged xattrs need root;
    without it they are reported, not faked.

    What could not be kept is reported on standard error; the exit status is 0 if the rest was written.
    TAG may be left out when the layout has only one.
    """
    if (directory is None) == (tar_file is None):
        raise click.UsageError("give exactly one of --dir and --tar")
    layout, image = _image(target, platform)
    with open_filesystem(layout, image) as fs:
        if directory is not None:
            report = extract_dir(fs, Path(directory))
            where = directory
        elif tar_file == "-":
            stdout = sys.stdout.buffer
            if stdout.isatty():
                raise click.UsageError("refusing to write a tar to a terminal; redirect it, or give a file")
            report = extract_tar(fs, stdout)
            stdout.flush()
            where = "standard output"
        else:
            assert tar_file is not None
            with atomic_output(tar_file) as out:
                report = extract_tar(fs, out)
            where = tar_file
    _summary(report, where)


def _summary(report: ExtractReport, where: str) -> None:
    click.echo(f"{where}: {report.entries} entries, {report.file_bytes} bytes of file data", err=True)
    for line in report.lines():
        click.echo(f"warning: {line}", err=True)


# -- verify ---------------------------------------------------------------------------------------


@click.command("verify")
@click.argument("target", metavar="LAYOUT[:TAG]")
@click.option(
    "--against",
    metavar="SRC_LAYOUT[:TAG]",
    help="Also compare each image's tree with the one the OCI layer rules give for this source image "
    "(the same tag when none is given), and its layer uuids with the source's chain IDs.",
)
@_errors_exit
def verify(target: str, against: str | None) -> None:
    """Check converted images end to end, reporting every fault found, not only the first.

    For each image of TAG (without TAG: of every tag, skipping, with a note, images that have no overlaybd
    layer, as a layout converted in place holds its sources too): every blob present with its digest and size;
    the overlaybd annotations and the config's rootfs.diff_ids consistent with the layer blobs; each
    blob's structure and every ZFile CRC; the uuid chain (each layer's parent is the layer below); the
    merged file system's whole tree read, and the file system checked with the real `e2fsck -fn` when
    it is installed.

    With --against, also: the tree of the image (type, mode, owner, size, contents, link target, device
    numbers, xattrs, hard links, mtimes) equals the source's, differing paths listed. The root's own
    metadata and mkfs's lost+found are left out of the comparison.

    Exit status 0 only when every check holds.
    """
    parsed = parse_target(target)
    layout = open_layout(parsed)
    source = None
    if against is not None:
        source_target = parse_target(against)
        source = Source(open_layout(source_target), source_target.tag)
    report = verify_images(layout, parsed.tag, source, {"ext4": find_e2fsck(), "erofs": find_checker("erofs")})
    for kind, text in report.lines:
        click.echo(f"{kind:<5} {text}", err=kind == FAULT)
    if report.faults:
        click.echo(f"{report.faults} fault(s) found", err=True)
        sys.exit(1)
    click.echo("all checks passed")
