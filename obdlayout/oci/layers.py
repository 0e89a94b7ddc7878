"""A source layer as its uncompressed tar stream, checked end to end.

The compression is sniffed from the first bytes, not taken from the media type, as containerd's
DecompressStream does (ecosystem.md §1.6, §6.1): Docker's plain `…rootfs.diff.tar` type may in fact be
compressed. The blob's digest and, when given, the config's DiffID are both checked: when the block ends,
whatever the reader left unread is read, so a consumer that stops at the tar's end-of-archive still gets
every check.
"""

import hashlib
import io
import queue
import threading
import zlib
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any, BinaryIO, cast

import zstandard
from isal import igzip, isal_zlib

from ..units import STREAM_CHUNK
from .descriptor import Descriptor
from .digest import PREFIX
from .errors import LayoutError
from .layout import Layout
from .mediatypes import Compression

GZIP_MAGIC = b"\x1f\x8b"
ZSTD_MAGIC = b"\x28\xb5\x2f\xfd"
# RFC 8878 §3.1.2: a skippable frame's magic is 0x184D2A50-0x184D2A5F, little-endian; zstd:chunked and
# eStargz-zstd layers may start with one (ecosystem.md §1.7).
ZSTD_SKIPPABLE_TAIL = b"\x2a\x4d\x18"
SNIFF_BYTES = 4
# isal's stubs declare IsalError as an instance, not a class.
_DECOMPRESS_ERRORS = (OSError, EOFError, zlib.error, cast(type[Exception], isal_zlib.IsalError), zstandard.ZstdError)


def sniff(head: bytes) -> Compression:
    """The compression of a stream whose first bytes are `head`."""
    if head.startswith(GZIP_MAGIC):
        return Compression.GZIP
    if head.startswith(ZSTD_MAGIC) or (len(head) >= 4 and 0x50 <= head[0] <= 0x5F and head[1:4] == ZSTD_SKIPPABLE_TAIL):
        return Compression.ZSTD
    return Compression.NONE


class _DiffIdReader(io.RawIOBase):
    """The uncompressed bytes, hashed; at their end the DiffID must be `expected` (if given)."""

    def __init__(
        self,
        inner: Any,
        where: str,
        compression: Compression,
        expected: str | None,
        progress: Callable[[int], None] | None,
    ) -> None:
        super().__init__()
        self._inner = inner
        self._progress = progress
        self._total = 0
        self._where = where
        self._compression = compression
        self._expected = expected
        self._hasher = hashlib.sha256()

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        view = memoryview(buffer).cast("B")
        try:
            got: int = self._inner.readinto(view)
        except _DECOMPRESS_ERRORS as exc:
            raise LayoutError(self._where, f"cannot decompress the {self._compression.value} layer: {exc}") from None
        if got:
            self._hasher.update(view[:got])
            self._total += got
            if self._progress is not None:
                self._progress(self._total)
        elif len(view) and self._expected is not None and self.diff_id != self._expected:
            raise LayoutError(
                self._where, f"uncompressed layer has DiffID {self.diff_id}, its image config says {self._expected}"
            )
        return got

    @property
    def diff_id(self) -> str:
        return PREFIX + self._hasher.hexdigest()


class _ReadAhead(io.RawIOBase):
    """Reads `inner` in a background thread, up to DEPTH chunks ahead of the consumer.

    Decompression and hashing release the GIL, so the whole blob → verified tar chain runs beside
    the consumer (the ext4 writer) instead of taking turns with it. Errors reach the consumer's read.
    """

    DEPTH = 8

    def __init__(self, inner: Any) -> None:
        super().__init__()
        self._inner = inner
        self._queue: queue.Queue[bytes | BaseException] = queue.Queue(self.DEPTH)
        self._stop = threading.Event()
        self._chunk = b""
        self._pos = 0
        self._done = False
        self._thread = threading.Thread(target=self._pump, name="layer-read-ahead", daemon=True)
        self._thread.start()

    def _pump(self) -> None:
        try:
            while not self._stop.is_set():
                data = self._inner.read(STREAM_CHUNK)
                self._put(data)
                if not data:
                    return
        except BaseException as exc:  # handed to the consumer, which raises it
            self._put(exc)

    def _put(self, item: bytes | BaseException) -> None:
        while not self._stop.is_set():
            try:
                self._queue.put(item, timeout=0.1)
                return
            except queue.Full:
                continue

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        if self._pos >= len(self._chunk):
            if self._done:
                return 0
            item = self._queue.get()
            if isinstance(item, BaseException):
                self._done = True
                raise item
            if not item:
                self._done = True
                return 0
            self._chunk, self._pos = item, 0
        view = memoryview(buffer).cast("B")
        take = min(len(view), len(self._chunk) - self._pos)
        view[:take] = self._chunk[self._pos : self._pos + take]
        self._pos += take
        return take

    def close(self) -> None:
        self._stop.set()
        self._thread.join()
        super().close()


@contextmanager
def open_uncompressed(
    layout: Layout,
    layer: Descriptor,
    diff_id: str | None = None,
    progress: Callable[[int], None] | None = None,
) -> Iterator[BinaryIO]:
    """The layer's tar, uncompressed; LayoutError on a bad blob digest or size, bad compressed data, or (if
    `diff_id` is given) a DiffID that is not the config's. `progress` is told the uncompressed bytes so far."""
    with layout.open_blob(layer) as blob:
        raw = io.BufferedReader(blob, STREAM_CHUNK)
        compression = sniff(raw.peek(SNIFF_BYTES)[:SNIFF_BYTES])
        inner: Any = raw
        if compression is Compression.GZIP:
            # ISA-L inflates several times faster than zlib; its GzipFile is untyped.
            inner = igzip.GzipFile(fileobj=raw, mode="rb")  # type: ignore[no-untyped-call]
        elif compression is Compression.ZSTD:
            inner = zstandard.ZstdDecompressor().stream_reader(raw, read_across_frames=True)
        tar = _DiffIdReader(inner, str(blob.path), compression, diff_id, progress)
        ahead = _ReadAhead(tar)
        try:
            stream = io.BufferedReader(ahead, STREAM_CHUNK)
            yield stream
            while stream.read(STREAM_CHUNK):  # the DiffID covers the whole tar, the digest the whole blob
                pass
        finally:
            ahead.close()
        while raw.read(STREAM_CHUNK):
            pass
