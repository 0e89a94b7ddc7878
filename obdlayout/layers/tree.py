"""The protocol the layer rules drive, and what they hand to it.

A file system implements `FileTree` with whatever handles suit it (ext4: inode numbers; the in-memory
source tree: objects). Handles must be hashable and equal only for the same file: the rules keep a set
of (directory, name) pairs a layer made, and recognise a hard link to itself by comparing handles.
"""

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Final, Protocol, TypeVar

from .paths import PathOps

N = TypeVar("N")


@dataclass(frozen=True, slots=True)
class Stamp:
    """Owner, permission bits and modification time that an entry gets."""

    mode: int  # permission bits incl. setuid/setgid/sticky
    uid: int
    gid: int
    mtime: int  # seconds since the epoch
    mtime_ns: int = 0


# Linux gives every symlink all permissions (lchmod cannot change them): a tar's mode for one is not kept.
SYMLINK_PERMISSIONS: Final = 0o777

# (offset, length) -> the bytes, which may be a view valid only until the next read; offsets never decrease
Reader = Callable[[int, int], bytes | memoryview]


@dataclass(frozen=True, slots=True)
class FileContent:
    """A regular file's contents as the layer stream holds them.

    `read` gives the logical bytes (holes of sparse files read as zeros), forward only. Where the stored
    bytes lie in the uncompressed tar is there too, for a file system that maps file data to the tar
    instead of copying it (TurboOCI): the data regions (all of the file when `regions` is None) are
    stored back to back from `stream_offset`.
    """

    size: int
    regions: list[tuple[int, int]] | None  # (offset, length) of each data region of a sparse file
    read: Reader
    stream_offset: int

    def stored_ranges(self) -> list[tuple[int, int, int]]:
        """(logical offset, length, offset in the stream) of every stored piece of data, in order."""
        if self.regions is None:
            return [(0, self.size, self.stream_offset)] if self.size else []
        ranges = []
        at = self.stream_offset
        for offset, length in self.regions:
            if length > 0:
                ranges.append((offset, length, at))
                at += length
        return ranges


class FileTree(PathOps[N], Protocol[N]):
    """What applying a layer needs of a file system. Names are single path components (bytes); a method
    that cannot do what is asked raises an EntryError subclass (errors.TreeError) saying why. What it does
    but changes (an xattr it cannot hold, a time out of its range) it says in `warnings`, which the rules
    empty after each entry, naming it."""

    warnings: list[str]

    @property
    def root(self) -> N: ...

    def children(self, directory: N) -> list[bytes]:
        """The names in a directory ("." and ".." not included)."""
        ...

    def mkdir(self, parent: N, name: bytes, stamp: Stamp) -> N: ...

    def create_file(self, parent: N, name: bytes, stamp: Stamp, content: FileContent) -> N: ...

    def symlink(self, parent: N, name: bytes, target: bytes, stamp: Stamp) -> N: ...

    def link(self, parent: N, name: bytes, target: N) -> None:
        """Another name for the non-directory `target`."""
        ...

    def mknod(self, parent: N, name: bytes, kind: int, stamp: Stamp, major: int, minor: int) -> N:
        """A character or block device (stat.S_IFCHR, stat.S_IFBLK) or a FIFO (stat.S_IFIFO, numbers 0)."""
        ...

    def remove(self, parent: N, name: bytes) -> None:
        """Unlink `name`; a directory goes with everything below it."""
        ...

    def set_metadata(self, node: N, stamp: Stamp) -> None:
        """New owner, permissions and time for an existing node (a directory re-stated by a layer)."""
        ...

    def set_xattrs(self, node: N, xattrs: Mapping[str, bytes]) -> None:
        """Replace the node's extended attributes."""
        ...
