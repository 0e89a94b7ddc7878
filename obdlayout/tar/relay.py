"""A layer tar parsed in one process and its entries read in another.

Parsing headers costs the process applying a layer about a third of its time, while the process that
decompresses and hashes the layer has time to spare; so that process parses the tar too, and sends on what
the applying side needs: each entry, followed by a regular file's stored bytes. The entries go in frames
through a pipe (a FRAME header, then a pickle of a list of TarEntry items and data lengths), many entries to
a frame, so that the cost of each hand-over is shared; the bytes go through shared memory (ring.py).

Both ends are this package's own code in processes it forked: the pickles are never read from anywhere else.
"""

import pickle
import struct
from collections import deque
from collections.abc import Callable, Iterator
from contextlib import suppress
from typing import BinaryIO, Final

from ..units import STREAM_CHUNK
from .reader import EntryCursor, TarEntry, TarReader
from .ring import Ring
from .ustar import TarFormatError

FRAME: Final = struct.Struct("<QQ")  # payload bytes; tar bytes parsed when the frame was sent
FRAME_DATA: Final = STREAM_CHUNK  # a frame is sent once it announces this much file data ...
FRAME_ENTRIES: Final = 1024  # ... or this many entries
Item = TarEntry | int  # an entry, or the length of the next piece of its stored bytes in the ring


def relay_entries(reader: TarReader, sink: BinaryIO, ring: Ring) -> None:
    """Parse the tar with `reader` and write its entries to `sink`, regular files' stored bytes to `ring`.

    Entries parsed before an error are written before it is raised, so that the reading side meets the
    error after the same entries as a reader in its own process would.
    """
    items: list[Item] = []
    data = 0

    def send() -> None:
        nonlocal data
        if items:
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
                    with memoryview(chunk) as view:
                        for at in range(0, len(view), ring.size):
                            piece = view[at : at + ring.size]
                            if not ring.room(len(piece)):
                                send()  # the reader releases room only as it takes what it was told of
                                ring.wait_for_room(len(piece))
                            ring.write(piece)
                            items.append(len(piece))
                            data += len(piece)
                    if data >= FRAME_DATA:
                        send()
            if len(items) >= FRAME_ENTRIES:
                send()
    except BaseException:
        with suppress(OSError):  # the reading side may be gone: it then needs nothing more
            send()
        raise
    send()


class RelayedEntries(EntryCursor):
    """The entries `relay_entries` wrote to `stream` and `ring`; `progress` is told the tar bytes parsed so far.

    An error of the stream itself (the parsing process's, raised by the stream at its end) passes through.
    """

    def __init__(self, stream: BinaryIO, ring: Ring, progress: Callable[[int], None] | None = None) -> None:
        super().__init__()
        self._stream = stream
        self._ring = ring
        self._progress = progress
        self._items: deque[Item] = deque()
        self._pos = 0  # bytes of the first item, when it is a piece of data, already taken
        self._ring_pos = 0  # where the next piece of data starts in the ring

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
        while True:
            self._skip_stored()
            if not self._items and not self._receive():
                return
            self._items.popleft()

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
        """The current entry's next `size` stored bytes, in pieces (none if not `keep`)."""
        parts: list[bytes] = []
        items = self._items
        while size:
            if not items:
                self._ring.release(self._ring_pos)  # what was taken is copied: the writer may need the room
                if not self._receive():
                    break
            head = items[0]
            if isinstance(head, TarEntry):
                break
            take = min(size, head - self._pos)
            if keep:
                parts.append(self._ring.read(self._ring_pos, take))
            size -= take
            self._advance(take)
        self._ring.release(self._ring_pos)
        if size:
            name = self._entry.name if self._entry else b""
            raise TarFormatError(f"entry {name!r} holds less data than its size")
        return parts

    def _take(self, size: int) -> bytes:
        parts = self._stored(size, keep=True)
        return parts[0] if len(parts) == 1 else b"".join(parts)

    def _take_view(self, size: int) -> bytes | memoryview:
        """The bytes in the ring itself when they lie in one piece there: released at the next read."""
        items = self._items
        if not size or not items or isinstance(items[0], TarEntry) or items[0] - self._pos < size:
            return self._take(size)
        view = self._ring.view(self._ring_pos, size)
        if view is None:
            return self._take(size)
        self._ring.release(self._ring_pos)  # what came before this piece
        self._advance(size)
        return view

    def _advance(self, size: int) -> None:
        """Past `size` bytes of the piece of data at the head of the items (at most what is left of it)."""
        self._pos += size
        self._ring_pos += size
        if self._pos == self._items[0]:
            self._items.popleft()
            self._pos = 0

    def _skip_data(self, size: int) -> None:
        self._stored(size, keep=False)

    def _skip_stored(self) -> None:
        """Pass over what is left of the current entry's stored bytes."""
        items = self._items
        while True:
            while items and not isinstance(items[0], TarEntry):
                piece = items.popleft()
                assert isinstance(piece, int)
                self._ring_pos += piece - self._pos
                self._pos = 0
            self._ring.release(self._ring_pos)
            if items or not self._receive():
                return
