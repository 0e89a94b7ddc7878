"""A source layer as its uncompressed tar stream, checked end to end.

The compression is sniffed from the first bytes, not taken from the media type, as containerd's
DecompressStream does (ecosystem.md §1.6, §6.1): Docker's plain `…rootfs.diff.tar` type may in fact be
compressed. The blob's digest and, when given, the config's DiffID are both checked: when the block ends,
whatever the reader left unread is read, so a consumer that stops at the tar's end-of-archive still gets
every check.
"""

import gzip
import hashlib
import io
import zlib
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any, BinaryIO

import zstandard

from .descriptor import Descriptor
from .digest import CHUNK, PREFIX
from .errors import LayoutError
from .layout import Layout
from .mediatypes import Compression

GZIP_MAGIC = b"\x1f\x8b"
ZSTD_MAGIC = b"\x28\xb5\x2f\xfd"
# RFC 8878 §3.1.2: a skippable frame's magic is 0x184D2A50-0x184D2A5F, little-endian; zstd:chunked and
# eStargz-zstd layers may start with one (ecosystem.md §1.7).
ZSTD_SKIPPABLE_TAIL = b"\x2a\x4d\x18"
SNIFF_BYTES = 4


def sniff(head: bytes) -> Compression:
    """The compression of a stream whose first bytes are `head`."""
    if head.startswith(GZIP_MAGIC):
        return Compression.GZIP
    if head.startswith(ZSTD_MAGIC) or (len(head) >= 4 and 0x50 <= head[0] <= 0x5F and head[1:4] == ZSTD_SKIPPABLE_TAIL):
        return Compression.ZSTD
    return Compression.NONE


class _DiffIdReader(io.RawIOBase):
    """The uncompressed bytes, hashed; at their end the DiffID must be `expected` (if given)."""

    def __init__(self, inner: Any, where: str, compression: Compression, expected: str | None) -> None:
        super().__init__()
        self._inner = inner
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
        except (OSError, EOFError, zlib.error, zstandard.ZstdError) as exc:
            raise LayoutError(self._where, f"cannot decompress the {self._compression.value} layer: {exc}") from None
        if got:
            self._hasher.update(view[:got])
        elif len(view) and self._expected is not None and self.diff_id != self._expected:
            raise LayoutError(
                self._where, f"uncompressed layer has DiffID {self.diff_id}, its image config says {self._expected}"
            )
        return got

    @property
    def diff_id(self) -> str:
        return PREFIX + self._hasher.hexdigest()


@contextmanager
def open_uncompressed(layout: Layout, layer: Descriptor, diff_id: str | None = None) -> Iterator[BinaryIO]:
    """The layer's tar, uncompressed; LayoutError on a bad blob digest or size, bad compressed data, or (if
    `diff_id` is given) a DiffID that is not the config's."""
    with layout.open_blob(layer) as blob:
        raw = io.BufferedReader(blob, CHUNK)
        compression = sniff(raw.peek(SNIFF_BYTES)[:SNIFF_BYTES])
        inner: Any = raw
        if compression is Compression.GZIP:
            inner = gzip.GzipFile(fileobj=raw, mode="rb")
        elif compression is Compression.ZSTD:
            inner = zstandard.ZstdDecompressor().stream_reader(raw, read_across_frames=True)
        tar = _DiffIdReader(inner, str(blob.path), compression, diff_id)
        stream = io.BufferedReader(tar, CHUNK)
        yield stream
        while stream.read(CHUNK):  # the DiffID covers the whole tar, the digest the whole blob
            pass
        while raw.read(CHUNK):
            pass
