"""Paths resolved inside an image's own root, as a process chrooted there would see them.

Symlinks are followed inside the image: an absolute target starts again at the image's root, and ".."
never climbs above it (the kernel's path walk under chroot, and what applying a layer does, ext4/apply.py).
Nothing here touches the host's file system. The same walk serves the ext4 image (ls, cat) and the
in-memory source model (source.py), through `PathOps`.
"""

from collections.abc import Callable
from typing import Protocol, TypeVar

MAX_SYMLINK_HOPS = 40  # as the kernel's path walk

N = TypeVar("N")


class PathOps(Protocol[N]):
    def lookup(self, directory: N, name: bytes) -> N | None:
        """The entry `name` of a directory, or None."""
        ...

    def is_directory(self, node: N) -> bool: ...

    def symlink_target(self, node: N) -> bytes | None:
        """The target if `node` is a symlink, else None."""
        ...


class ResolveError(Exception):
    """A path does not lead to anything in the image; the message says where it stopped and why."""


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
        last = not todo
        if name == b".":
            continue
        if name == b"..":
            if len(trail) > 1:
                trail.pop()
            continue
        here = trail[-1]
        if not ops.is_directory(here):
            raise ResolveError(f"{_shown(walked)} is not a directory")
        walked.append(name)
        child = ops.lookup(here, name)
        if child is None:
            if mkdir is None:
                raise ResolveError(f"{_shown(walked)} does not exist")
            child = mkdir(here, name)
        target = ops.symlink_target(child)
        if target is not None and not (last and not follow_last):
            hops += 1
            if hops > MAX_SYMLINK_HOPS:
                raise ResolveError(f"{_shown(walked)}: too many levels of symbolic links")
            if target.startswith(b"/"):
                trail = [root]
            todo.extend(reversed(components(target)))
            continue
        trail.append(child)
    return trail[-1]


def _shown(walked: list[bytes]) -> str:
    return "/" + b"/".join(walked).decode("utf-8", "backslashreplace")
