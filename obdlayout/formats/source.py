"""Random-access byte sources: a window of a file, read with pread.

Every reader in this package reads through this interface, so that a tar-wrapped ZFile and a
plain LSMT file look the same to the layer above.
"""

import os
from typing import Protocol


class ByteSource(Protocol):
    """A finite run of bytes that can be read at any offset."""

    name: str

    @property
    def size(self) -> int: ...

    def pread(self, offset: int, length: int) -> bytes:
        """Bytes [offset, offset+length) clipped to the source's size."""
        ...


class BytesSource:
    """Bytes held in memory, named for messages."""

    def __init__(self, data: bytes, name: str) -> None:
        self._data = data
        self.name = name

    @property
    def size(self) -> int:
        return len(self._data)

    def pread(self, offset: int, length: int) -> bytes:
        return self._data[offset : offset + max(0, length)]

    def window(self, base: int, size: int, name: str | None = None) -> "BytesSource":
        return BytesSource(self._data[base : base + size], name or self.name)


class FileSource:
    """Bytes [base, base+size) of an open file descriptor."""

    def __init__(self, fd: int, name: str, base: int = 0, size: int | None = None) -> None:
        self._fd = fd
        self.name = name
        self._base = base
        self._size = os.fstat(fd).st_size - base if size is None else size

    @property
    def size(self) -> int:
        return self._size

    def pread(self, offset: int, length: int) -> bytes:
        length = max(0, min(length, self._size - offset))
        if length == 0:
            return b""
        data = os.pread(self._fd, length, self._base + offset)
        while len(data) < length:  # pread may return short reads on some file systems
            more = os.pread(self._fd, length - len(data), self._base + offset + len(data))
            if not more:
                break
            data += more
        return data

    def window(self, base: int, size: int, name: str | None = None) -> "FileSource":
        return FileSource(self._fd, name or self.name, self._base + base, size)
