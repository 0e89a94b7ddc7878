"""A layer tar parsed in one process and its entries read in another.

Parsing headers costs the process applying a layer about a third of its time, while the process that
decompresses and hashes the layer has time to spare; so that process parses the tar too, and sends on what
the applying side needs: each entry, followed by a regular file's stored bytes. It sends them in frames
(a FRAME header, then a pickle of a list of TarEntry and bytes items), many entries to a frame, so that the
cost of each hand-over is shared.

Both ends are this package's own code in processes it forked: the pickles are never read from anywhere else.
"""

import pickle
import struct
from collections import deque
from collections.abc import Callable, Iterator
from contextlib import suppress
from typing import BinaryIO

from ..units import STREAM_CHUNK
from .reader import EntryCursor, TarEntry, TarReader
from .ustar import TarFormatError

FRAME = struct.Struct("<QQ")  # payload bytes; tar bytes parsed when the frame was sent
FRAME_DATA = STREAM_CHUNK  # a frame is sent once it holds this much file data ...
FRAME_ENTRIES = 1024  # ... or this many entries
Item = TarEntry | bytes


def relay_entries(reader: TarReader, sink: BinaryIO) -> None:
    """Parse the tar with `reader` and write its entries (regular files with their stored bytes) to `sink`.

    Entries parsed before an error are written before it is raised, so that the reading side meets the
    error after the same entries as a reader in its own process would.
    """
    items: list[Item] = []
    data = 0

    def send() -> None:
        nonlocal data
        payload = pickle.dumps(items, pickle.HIGHEST_PROTOCOL)
        sink.write(FRAME.pack(len(payload), reader.offset))
        sink.write(payload)
        items.clear()
        data = 0

    try:
        for entry in reader:
            items.append(entry)
            if entry.is_regular:
                for chunk in reader.stored_chunks():
                    items.append(chunk)
                    data += len(chunk)
                    if data >= FRAME_DATA:
                        send()
            if len(items) >= FRAME_ENTRIES:
                send()
    except BaseException:
        if items:
            with suppress(OSError):  # the reading side may be gone: it then needs nothing more
                send()
        raise
    if items:
        send()


class RelayedEntries(EntryCursor):
    """The entries `relay_entries` wrote to `stream`; `progress` is told the tar bytes parsed so far.

    An error of the stream itself (the parsing process's, raised by the stream at its end) passes through.
    """

    def __init__(self, stream: BinaryIO, progress: Callable[[int], None] | None = None) -> None:
        super().__init__()
        self._stream = stream
        self._progress = progress
        self._items: deque[Item] = deque()
        self._pos = 0  # bytes of the first item, when it is bytes, already read

    def __iter__(self) -> Iterator[TarEntry]:
        while True:
            self._skip_stored()
            if not self._items and not self._receive():
                return
            entry = self._items.popleft()
            if not isinstance(entry, TarEntry):
                raise TarFormatError("the relayed entries are out of order")  # unreachable with relay_entries
            self._begin(entry)
            yield entry

    def drain(self) -> None:
        while self._receive():
            self._items.clear()
        self._pos = 0

    def _receive(self) -> bool:
        """Read the next frame's items; False at the end of the stream."""
        head = self._stream.read(FRAME.size)
        if not head:
            return False
        if len(head) < FRAME.size:
            raise TarFormatError("the relayed entries end inside a frame header")
        size, parsed = FRAME.unpack(head)
        payload = self._stream.read(size)
        if len(payload) < size:
            raise TarFormatError("the relayed entries end inside a frame")
        self._items.extend(pickle.loads(payload))
        if self._progress is not None:
            self._progress(parsed)
        return True

    def _stored(self, size: int, keep: bool) -> list[bytes]:
        """The current entry's next `size` stored bytes, in pieces (empty pieces if not `keep`)."""
        parts: list[bytes] = []
        items = self._items
        while size:
            if not items and not self._receive():
                break
            head = items[0]
            if not isinstance(head, bytes):
                break
            take = min(size, len(head) - self._pos)
            if keep:
                parts.append(head if take == len(head) else head[self._pos : self._pos + take])
            size -= take
            self._pos += take
            if self._pos == len(head):
                items.popleft()
                self._pos = 0
        if size:
            name = self._entry.name if self._entry else b""
            raise TarFormatError(f"entry {name!r} holds less data than its size")
        return parts

    def _take(self, size: int) -> bytes:
        parts = self._stored(size, keep=True)
        return parts[0] if len(parts) == 1 else b"".join(parts)

    def _skip_data(self, size: int) -> None:
        self._stored(size, keep=False)

    def _skip_stored(self) -> None:
        """Pass over what is left of the current entry's stored bytes."""
        items = self._items
        while True:
            while items and isinstance(items[0], bytes):
                items.popleft()
            self._pos = 0
            if items or not self._receive():
                return
