"""What the read side (ls, cat, extract, verify, the API) needs of an image's file system, and opening the
one a virtual disk holds: ext4 (ext4/reader.py) or EROFS (erofs/reader.py, TurboOCI's --fstype erofs).
Nodes are numbers: ext4 inode numbers, EROFS nids."""

from collections.abc import Callable, Iterator
from typing import Any, Protocol, TypeVar

from ..erofs.reader import ErofsImage
from ..ext4.reader import fs_type_at, open_image

I = TypeVar("I")  # noqa: E741 - the file system's inode type


class InodeView(Protocol):
    @property
    def mode(self) -> int: ...
    @property
    def file_type(self) -> int: ...
    @property
    def size(self) -> int: ...
    @property
    def uid(self) -> int: ...
    @property
    def gid(self) -> int: ...
    @property
    def links(self) -> int: ...
    @property
    def mtime(self) -> tuple[int, int]: ...


class EntryView(Protocol):
    @property
    def path(self) -> tuple[bytes, ...]: ...  # names from the root; () is the root itself
    @property
    def ino(self) -> int: ...
    @property
    def inode(self) -> InodeView: ...


class ReadableFs(Protocol[I]):
    @property
    def root(self) -> int: ...

    def inode(self, ino: int) -> I: ...

    def entries(self, ino: int) -> dict[bytes, int]:
        """A directory's entries (without "." and ".."), name to node."""
        ...

    def iter_data(self, inode: I, where: str) -> Iterator[bytes]:
        """A regular file's bytes, in order, in bounded pieces."""
        ...

    def xattrs(self, inode: I, where: str) -> dict[str, bytes]:
        """Extended attributes as getxattr and tar carry them."""
        ...

    def symlink_target(self, ino: int) -> bytes: ...

    def device_numbers(self, inode: I) -> tuple[int, int]: ...

    def walk(self, start: int) -> Iterator[EntryView]:
        """Every entry under the directory `start` (itself first, path ()), depth first, names in byte order."""
        ...


ImageFs = ReadableFs[Any]


def open_image_fs(read: Callable[[int, int], bytes], virtual_size: int) -> ImageFs:
    """The file system on a virtual disk read by `read(offset, length)`: EROFS if it starts with one, else
    ext4 (an Ext4Error or ErofsError, both TreeErrors, when it is neither or is damaged)."""
    if fs_type_at(read) == "erofs":
        return ErofsImage(read, virtual_size)
    return open_image(read, virtual_size)
