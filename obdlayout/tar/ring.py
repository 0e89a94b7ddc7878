"""Shared memory through which a forked child hands file data to its parent, without pipes or pickles.

A pipe costs each byte of a layer's file data two kernel copies, a pickle and an unpickle, fresh buffers
(page faults) and a GIL hand-over to the parent's pipe-reading thread: 2.8 s of the bench convert's 17 s.
Here the writer copies the bytes once into a ring of RING_BYTES, the reader copies them once out of it.

Positions are absolute byte counts (the ring offset is the position modulo the size). The writer (the
child) writes in order and says, by other means (tar/relay.py's frames), how many bytes each piece holds;
the reader takes them in the same order and releases what it has taken. The writer waits for room when
the ring is full: it puts in the shared header the position the reader must release, and sleeps on a pipe,
which the reader writes a byte to when its release reaches that position (the short timeout covers a
wake-up lost between the two). A full ring is refilled a quarter at a time, not a piece at a time: waking
the writer for each small file the reader takes would cost both processes a context switch per file.
"""

import mmap
import os
import select
import struct
from contextlib import suppress
from typing import Final

from ..lifetime import keep_from_later_children
from ..units import MiB

RING_BYTES: Final = 64 * MiB
_HEADER: Final = struct.Struct("<QQ")  # released position (the reader's); the one the writer waits for, or 0
_RELEASED: Final = 0
_WANTED: Final = 8
REFILL_SHARE: Final = 4  # a writer that finds the ring full waits until this share of it is free
_POSITION: Final = struct.Struct("<Q")
_WAIT_SECONDS: Final = 0.01


class Ring:
    """Create before forking: both processes use the same object (the mapping is shared, not copied)."""

    def __init__(self, size: int = RING_BYTES) -> None:
        self.size = size
        self._map = mmap.mmap(-1, _HEADER.size + size)
        self._data = memoryview(self._map)[_HEADER.size :]
        self._wake_read, self._wake_write = os.pipe()
        os.set_blocking(self._wake_read, False)
        os.set_blocking(self._wake_write, False)
        self._written = 0  # the writer's position (meaningful in the writer's process only)

    def forked(self) -> None:
        """The writer's process is forked: no process forked after it needs the ring."""
        keep_from_later_children(self._map)

    def close(self) -> None:
        self._data.release()
        with suppress(BufferError):  # a view lent out is still held (by a traceback): unmapped with it
            self._map.close()
        for fd in (self._wake_read, self._wake_write):
            with suppress(OSError):
                os.close(fd)

    # -- the writer ---------------------------------------------------------------------------------------

    def room(self, size: int) -> bool:
        """Whether `size` more bytes fit now."""
        return self._written + size - self._released() <= self.size

    def wait_for_room(self, size: int) -> None:
        """Sleep until `size` more bytes fit (the reader must be taking what was announced to it)."""
        if size > self.size:
            raise ValueError(f"{size} bytes do not fit a ring of {self.size}")
        if self.room(size):
            return
        wanted = self._written + max(size, self.size // REFILL_SHARE) - self.size
        _POSITION.pack_into(self._map, _WANTED, wanted)
        poller = select.poll()  # not select(): it fails on descriptors numbered 1024 and up
        poller.register(self._wake_read, select.POLLIN)
        while self._released() < wanted:
            poller.poll(_WAIT_SECONDS * 1000)
            with suppress(BlockingIOError):
                os.read(self._wake_read, 4096)
        _POSITION.pack_into(self._map, _WANTED, 0)

    def write(self, data: bytes | memoryview) -> None:
        """Append `data`; there must be room for it (`room`)."""
        size = len(data)
        start = self._written % self.size
        first = min(size, self.size - start)
        self._data[start : start + first] = data[:first]
        if first < size:
            self._data[: size - first] = data[first:]
        self._written += size

    # -- the reader ---------------------------------------------------------------------------------------

    def view(self, position: int, size: int) -> memoryview | None:
        """The `size` bytes from `position` in place (None where they wrap around the end); valid until they
        are released."""
        start = position % self.size
        return self._data[start : start + size] if start + size <= self.size else None

    def read(self, position: int, size: int) -> bytes:
        """A copy of `size` bytes from `position` (which must not have been released)."""
        start = position % self.size
        first = min(size, self.size - start)
        data = bytes(self._data[start : start + first])
        return data + bytes(self._data[: size - first]) if first < size else data

    def release(self, position: int) -> None:
        """Everything before `position` is taken: the writer may reuse it."""
        _POSITION.pack_into(self._map, _RELEASED, position)
        wanted = _POSITION.unpack_from(self._map, _WANTED)[0]
        if wanted and position >= wanted:
            with suppress(BlockingIOError):
                os.write(self._wake_write, b"\0")

    def _released(self) -> int:
        position: int = _POSITION.unpack_from(self._map, _RELEASED)[0]
        return position
