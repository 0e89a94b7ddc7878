"""`ls` and `cat` inside an image: paths resolved in the image's own root (layers/paths.py), never on the host."""

import stat
from collections.abc import Iterator
from datetime import UTC, datetime

from ..layers.paths import components, resolve
from .readfs import ImageFs, InodeView
from .tree import kind_name


class ImageOps:
    """An image's file system seen through layers.paths.PathOps: nodes are inode numbers (or nids)."""

    def __init__(self, fs: ImageFs) -> None:
        self.fs = fs

    def lookup(self, directory: int, name: bytes) -> int | None:
        return self.fs.entries(directory).get(name)

    def kind(self, node: int) -> int:
        inode: InodeView = self.fs.inode(node)
        return inode.file_type

    def symlink_target(self, node: int) -> bytes:
        return self.fs.symlink_target(node)


class NotAFile(Exception):
    """`cat` of something that has no contents to show."""


def lookup(fs: ImageFs, path: bytes, follow_last: bool = True) -> int:
    """The inode at `path` (absolute or relative to the root alike); layers.paths.ResolveError if there is none."""
    return resolve(ImageOps(fs), fs.root, components(path), follow_last=follow_last)


def cat(fs: ImageFs, path: bytes) -> Iterator[bytes]:
    """A regular file's contents in pieces; symlinks are followed inside the image."""
    ino = lookup(fs, path)
    inode = fs.inode(ino)
    if inode.file_type != stat.S_IFREG:
        raise NotAFile(f"{shown(path)} is a {kind_name(inode.file_type)}, not a regular file")
    return fs.iter_data(inode, shown(path))


def ls(fs: ImageFs, path: bytes, long: bool, recursive: bool) -> Iterator[str]:
    """The lines `ls -1 [-l] [-R]` would print for `path` in the image (times in UTC).

    As ls does with a path it is given, a symlink is followed unless -l is given (or the path ends in "/").
    """
    ino = lookup(fs, path, follow_last=not long or path.endswith(b"/"))
    inode = fs.inode(ino)
    if inode.file_type != stat.S_IFDIR:
        yield _line(fs, path.rstrip(b"/") or path, ino, inode, long)
        return
    if not recursive:
        yield from _listing(fs, ino, long)
        return
    given = components(path)
    first = True
    for entry in fs.walk(ino):
        if entry.inode.file_type != stat.S_IFDIR:
            continue
        if not first:
            yield ""
        first = False
        yield shown(b"/" + b"/".join([*given, *entry.path])) + ":"
        yield from _listing(fs, entry.ino, long)


def _listing(fs: ImageFs, ino: int, long: bool) -> Iterator[str]:
    for name, child in sorted(fs.entries(ino).items()):
        yield _line(fs, name, child, fs.inode(child), long)


def _line(fs: ImageFs, name: bytes, ino: int, inode: InodeView, long: bool) -> str:
    if not long:
        return shown(name)
    kind = inode.file_type
    if kind in (stat.S_IFCHR, stat.S_IFBLK):
        major, minor = fs.device_numbers(inode)
        size = f"{major}, {minor}"
    else:
        size = str(inode.size)
    line = f"{stat.filemode(inode.mode)} {inode.links:>3} {inode.uid:>5} {inode.gid:>5} {size:>10} "
    line += f"{_time(*inode.mtime)} {shown(name)}"
    if kind == stat.S_IFLNK:
        line += f" -> {shown(fs.symlink_target(ino))}"
    return line


def _time(seconds: int, nanoseconds: int) -> str:
    try:
        moment = datetime.fromtimestamp(seconds, UTC).strftime("%Y-%m-%d %H:%M:%S")
    except (OverflowError, OSError, ValueError):
        moment = f"@{seconds}"
    return f"{moment}.{nanoseconds:09d}"


def shown(name: bytes) -> str:
    """A name as text for a terminal, one line whatever it holds: control characters and bytes that are
    not UTF-8 become \\xNN, a backslash becomes \\\\ (as `ls -b`)."""
    out: list[str] = []
    for char in name.decode("utf-8", "surrogateescape"):
        code = ord(char)
        if 0xDC80 <= code <= 0xDCFF:
            out.append(f"\\x{code - 0xDC00:02x}")
        elif code < 0x20 or code == 0x7F:
            out.append(f"\\x{code:02x}")
        elif char == "\\":
            out.append("\\\\")
        else:
            out.append(char)
    return "".join(out)
