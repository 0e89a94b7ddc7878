"""Random-access ZFile reader (overlaybd-formats.md §3.6): jump table, per-block CRCs, legacy headers."""

from array import array
from collections import OrderedDict
from collections.abc import Iterator
from itertools import accumulate
from typing import Final

from ..units import MiB
from .crc import BLOCK_CRC_SEED, raw_crc32c
from .errors import FormatError
from .source import ByteSource
from .zfile_layout import (
    CRC_STRUCT,
    FLAG_DATA,
    FLAG_DIGEST,
    FLAG_HEADER,
    FLAG_HEADER_OVERWRITE,
    FLAG_SEALED,
    HT_SIZE,
    JUMP_ENTRY,
    MAX_BLOCKS,
    Algorithm,
    BlockCodec,
    HeaderTrailer,
    block_digest_ok,
)

_MAX_READER_BLOCK: Final = 65536  # §3.5: reads fail past 64 KiB blocks
_CACHE_BLOCKS: Final = 64  # decompressed blocks kept for neighbouring small reads
_SEQUENTIAL_READ: Final = MiB  # compressed bytes fetched at once when streaming


def is_zfile(head: bytes) -> bool:
    return HeaderTrailer.unpack(head) is not None


class ZFileReader:
    """A ZFile opened over a byte source; itself a byte source of the uncompressed contents."""

    def __init__(self, source: ByteSource) -> None:
        self._source = source
        self.name = source.name
        name = source.name
        header_block = source.pread(0, HT_SIZE)
        header = HeaderTrailer.unpack(header_block)
        if header is None:
            raise FormatError(name, "no ZFile magic at offset 0")
        if not header.flags & FLAG_HEADER:
            raise FormatError(name, f"ZFile header flags {header.flags:#x} lack the header bit")
        if header.flags & FLAG_DIGEST and not block_digest_ok(header_block):
            raise FormatError(name, "ZFile header digest does not match its contents")
        if source.size < 2 * HT_SIZE:
            raise FormatError(name, f"too short for a ZFile ({source.size} bytes)")
        trailer_offset = source.size - HT_SIZE
        if header.flags & FLAG_HEADER_OVERWRITE:
            info = header
        else:
            trailer = HeaderTrailer.unpack(source.pread(trailer_offset, HT_SIZE))
            if trailer is None:
                raise FormatError(name, f"no ZFile trailer magic at offset {trailer_offset} (truncated?)")
            wanted = FLAG_DATA | FLAG_SEALED
            if trailer.flags & FLAG_HEADER or trailer.flags & wanted != wanted:
                raise FormatError(name, f"ZFile trailer flags {trailer.flags:#x} do not mark a sealed trailer")
            info = trailer
        self.header = header
        self.info = info
        self.header_overwritten = bool(header.flags & FLAG_HEADER_OVERWRITE)
        self.digests_checked = bool(header.flags & FLAG_DIGEST)
        block_size = info.block_size
        if block_size < 512 or block_size > _MAX_READER_BLOCK or block_size & (block_size - 1):
            raise FormatError(name, f"ZFile block size {block_size} is not a power of two from 512 to 65536")
        try:
            self.algorithm = Algorithm(info.algo)
        except ValueError:
            raise FormatError(name, f"ZFile compression algorithm {info.algo} is not LZ4 (1) or ZSTD (2)") from None
        self.block_size = block_size
        self.verify = info.verify
        count = info.index_size
        expected = -(-info.original_file_size // block_size)
        if count > MAX_BLOCKS or count != expected:
            raise FormatError(
                name, f"ZFile jump table has {count} entries; {info.original_file_size} bytes need {expected}"
            )
        table_end = info.index_offset + 4 * count
        if info.index_offset < HT_SIZE or table_end > trailer_offset:
            raise FormatError(
                name,
                f"ZFile jump table [{info.index_offset}, {table_end}) lies past the trailer at {trailer_offset}",
            )
        raw_table = source.pread(info.index_offset, 4 * count)
        if info.flags & FLAG_DIGEST and raw_crc32c(raw_table) != info.index_crc:
            raise FormatError(name, "ZFile jump table CRC does not match")
        lengths = array(JUMP_ENTRY)
        lengths.frombytes(raw_table)
        minimum = CRC_STRUCT.size + 1 if self.verify else 1
        if count and min(lengths) < minimum:
            raise FormatError(name, f"ZFile jump table holds a block shorter than {minimum} bytes")
        self._offsets = array("Q", accumulate(lengths, initial=HT_SIZE + info.dict_size))
        if self._offsets[-1] > info.index_offset:
            raise FormatError(
                name,
                f"ZFile blocks run to offset {self._offsets[-1]}, past the jump table at {info.index_offset}",
            )
        self._codec = BlockCodec(self.algorithm)
        self._cache: OrderedDict[int, bytes] = OrderedDict()

    @property
    def size(self) -> int:
        return self.info.original_file_size

    @property
    def blocks(self) -> int:
        return len(self._offsets) - 1

    @property
    def blocks_end(self) -> int:
        """Offset just past the last compressed block."""
        return self._offsets[-1]

    def pread(self, offset: int, length: int) -> bytes:
        end = min(offset + length, self.size)
        if end <= offset:
            return b""
        bs = self.block_size
        first, last = offset // bs, (end - 1) // bs
        if first == last:
            start = first * bs
            return self._cached_block(first)[offset - start : end - start]
        parts = [self._cached_block(i) for i in range(first, last + 1)]
        joined = b"".join(parts)
        return joined[offset - first * bs : end - first * bs]

    def iter_blocks(self) -> Iterator[bytes]:
        """Every block in order, decompressed and checked, reading the compressed data in large pieces."""
        i = 0
        count = self.blocks
        while i < count:
            j = i + 1
            while j < count and self._offsets[j + 1] - self._offsets[i] <= _SEQUENTIAL_READ:
                j += 1
            chunk = self._source.pread(self._offsets[i], self._offsets[j] - self._offsets[i])
            base = self._offsets[i]
            for k in range(i, j):
                yield self._decode(k, chunk[self._offsets[k] - base : self._offsets[k + 1] - base])
            i = j

    def _cached_block(self, index: int) -> bytes:
        block = self._cache.get(index)
        if block is not None:
            self._cache.move_to_end(index)
            return block
        raw = self._source.pread(self._offsets[index], self._offsets[index + 1] - self._offsets[index])
        block = self._decode(index, raw)
        self._cache[index] = block
        if len(self._cache) > _CACHE_BLOCKS:
            self._cache.popitem(last=False)
        return block

    def _decode(self, index: int, raw: bytes) -> bytes:
        where = f"ZFile block {index} at offset {self._offsets[index]}"
        if len(raw) != self._offsets[index + 1] - self._offsets[index]:
            raise FormatError(self.name, f"{where} runs past the end of the file")
        if self.verify:
            (stored,) = CRC_STRUCT.unpack_from(raw, len(raw) - CRC_STRUCT.size)
            raw = raw[: -CRC_STRUCT.size]
            if raw_crc32c(raw, BLOCK_CRC_SEED) != stored:
                raise FormatError(self.name, f"{where}: CRC mismatch (corrupt data)")
        size = min(self.block_size, self.size - index * self.block_size)
        try:
            return self._codec.decompress(raw, size)
        except ValueError as exc:
            raise FormatError(self.name, f"{where}: {exc}") from None
