"""Entry names and paths, resolved inside an image's own root as a process chrooted there would see them.

Symlinks are followed inside the image: an absolute target starts again at the image's root, and ".."
never climbs above it (the kernel's path walk under chroot; containerd and overlaybd-apply resolve the
parents of layer entries the same way). Nothing here touches the host's file system. The same walk serves
applying a layer (rules.py, creating missing parents), the in-memory source tree and the read side (ls,
cat), through `PathOps`.
"""

import stat
from collections.abc import Callable
from typing import Final, Protocol, TypeVar

from .errors import EntryError

MAX_SYMLINK_HOPS: Final = 40  # as the kernel's path walk

N = TypeVar("N")


class PathOps(Protocol[N]):
    """A file system seen by the path walk; nodes are whatever it uses as handles (inode numbers, objects)."""

    def lookup(self, directory: N, name: bytes) -> N | None:
        """The entry `name` of a directory, or None."""
        ...

    def kind(self, node: N) -> int:
        """The node's file type, as stat.S_IFMT bits (stat.S_IFDIR, stat.S_IFLNK, …)."""
        ...

    def symlink_target(self, node: N) -> bytes:
        """A symlink's target (only asked of symlinks)."""
        ...


class ResolveError(EntryError):
    """A path does not lead to anything in the image; the message says where it stopped and why."""


class NotADirectory(ResolveError):
    """Something that is not a directory stands where the path needs one."""


class SymlinkLoop(ResolveError):
    """More symlinks than the kernel follows in one walk."""


def clean_path(name: bytes) -> list[bytes]:
    """A tar entry name as its parts, Plan 9 style (as containerd and overlaybd-apply clean them): empty and
    "." parts dropped, ".." resolved without climbing above the root."""
    parts: list[bytes] = []
    for part in name.split(b"/"):
        if part in (b"", b"."):
            continue
        if part == b"..":
            if parts:
                parts.pop()
            continue
        parts.append(part)
    return parts


def components(path: bytes) -> list[bytes]:
    """The names of a path, "." and ".." kept (they are resolved by the walk), empty ones dropped."""
    return [part for part in path.split(b"/") if part]


def resolve(
    ops: PathOps[N],
    root: N,
    parts: list[bytes],
    *,
    follow_last: bool = True,
    mkdir: Callable[[N, bytes], N] | None = None,
) -> N:
    """The node at `parts` from `root`. A symlink as the last part is followed only if `follow_last`;
    a missing directory is made with `mkdir` when given (applying a layer), else it is a ResolveError."""
    trail = [root]
    todo = list(reversed(parts))
    walked: list[bytes] = []  # for messages: the names taken so far
    hops = 0
    while todo:
        name = todo.pop()
        if name == b".":
            continue
        if name == b"..":
            if len(trail) > 1:
                trail.pop()
            continue
        here = trail[-1]
        if ops.kind(here) != stat.S_IFDIR:
            raise NotADirectory(f"{_shown(walked)} is not a directory")
        walked.append(name)
        child = ops.lookup(here, name)
        if child is None:
            if mkdir is None:
                raise ResolveError(f"{_shown(walked)} does not exist")
            child = mkdir(here, name)
        if ops.kind(child) == stat.S_IFLNK and (todo or follow_last):
            hops += 1
            if hops > MAX_SYMLINK_HOPS:
                raise SymlinkLoop(f"{_shown(walked)}: too many levels of symbolic links")
            target = ops.symlink_target(child)
            if target.startswith(b"/"):
                trail = [root]
            todo.extend(reversed(components(target)))
            continue
        trail.append(child)
    return trail[-1]


def _shown(walked: list[bytes]) -> str:
    return "/" + b"/".join(walked).decode("utf-8", "backslashreplace")
