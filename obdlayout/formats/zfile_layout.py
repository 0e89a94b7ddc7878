"""ZFile byte layout: header/trailer, checksums and block codecs (overlaybd-formats.md §3.2-§3.5)."""

import struct
from dataclasses import dataclass, replace
from enum import IntEnum
from typing import Final

import lz4.block
import zstandard

from .crc import raw_crc32c

HT_SIZE: Final = 512
MAGIC0: Final = b"ZFile\x00\x01\x00"
MAGIC1: Final = b"tuji.yyf@Alibaba"

# §3.2 flag bits (u64 at offset 32).
FLAG_HEADER: Final = 0x01
FLAG_DATA: Final = 0x02
FLAG_SEALED: Final = 0x04
FLAG_HEADER_OVERWRITE: Final = 0x08
FLAG_DIGEST: Final = 0x10
INITIAL_HEADER_FLAGS: Final = FLAG_HEADER | FLAG_DATA | FLAG_DIGEST  # 0x13
TRAILER_FLAGS: Final = FLAG_DATA | FLAG_SEALED | FLAG_DIGEST  # 0x16
OVERWRITTEN_HEADER_FLAGS: Final = FLAG_HEADER | FLAG_DATA | FLAG_HEADER_OVERWRITE | FLAG_DIGEST  # 0x1B

# §3.2: magic0, magic1, size, digest, flags, index_offset, index_size, original_file_size, index_crc,
# reserved_0, then CompressOptions: block_size, algo, level, use_dict, (pad), reserved, dict_size,
# verify, (pad). Natural alignment, 96 bytes.
HT_STRUCT: Final = struct.Struct("<8s16sIIQQQQII IBBBxIIB7x")
assert HT_STRUCT.size == 96
STRUCT_SIZE: Final = HT_STRUCT.size
DIGEST_OFFSET: Final = 28
DIGEST_STRUCT: Final = struct.Struct("<I")

CRC_STRUCT: Final = struct.Struct("<I")  # per-block CRC trailing each block when verify=1
CRC_SIZE: Final = CRC_STRUCT.size
JUMP_ENTRY: Final = "I"  # §3.5: u32 compressed lengths
MAX_BLOCKS: Final = 1_000_000_000
# §3.4: the compressor's buffer is block_size + 512; a block may not come out longer.
BLOCK_SLACK: Final = 512
# §3.5: the reader's jump table keeps u16 deltas within a 64 KiB group of uncompressed data.
JUMP_GROUP_BYTES: Final = 65536

BLOCK_SIZES: Final = (4096, 8192, 16384, 32768, 65536)
DEFAULT_BLOCK_SIZE: Final = 4096
ZSTD_LEVEL: Final = 3  # §3.4: overlaybd always compresses zstd frames at level 3


class Algorithm(IntEnum):
    LZ4 = 1
    ZSTD = 2

    @classmethod
    def named(cls, name: str) -> "Algorithm":
        try:
            return cls[name.upper()]
        except KeyError:
            raise ValueError(f"unknown ZFile algorithm {name!r}: use lz4 or zstd") from None


@dataclass(frozen=True)
class HeaderTrailer:
    flags: int
    index_offset: int
    index_size: int
    original_file_size: int
    index_crc: int
    block_size: int
    algo: int
    verify: bool
    digest: int = 0
    level: int = 0
    use_dict: int = 0
    dict_size: int = 0

    def pack(self) -> bytes:
        block = bytearray(HT_SIZE)
        HT_STRUCT.pack_into(
            block,
            0,
            MAGIC0,
            MAGIC1,
            STRUCT_SIZE,
            0,
            self.flags,
            self.index_offset,
            self.index_size,
            self.original_file_size,
            self.index_crc,
            0,
            self.block_size,
            self.algo,
            self.level,
            self.use_dict,
            0,
            self.dict_size,
            int(self.verify),
        )
        DIGEST_STRUCT.pack_into(block, DIGEST_OFFSET, raw_crc32c(block))
        return bytes(block)

    @classmethod
    def unpack(cls, block: bytes) -> "HeaderTrailer | None":
        """None when the block lacks the ZFile magic."""
        if len(block) < HT_SIZE:
            return None
        (
            m0,
            m1,
            _size,
            digest,
            flags,
            index_offset,
            index_size,
            original,
            index_crc,
            _r0,
            block_size,
            algo,
            level,
            use_dict,
            _r1,
            dict_size,
            verify,
        ) = HT_STRUCT.unpack_from(block, 0)
        if m0 != MAGIC0 or m1 != MAGIC1:
            return None
        return cls(
            flags,
            index_offset,
            index_size,
            original,
            index_crc,
            block_size,
            algo,
            bool(verify),
            digest,
            level,
            use_dict,
            dict_size,
        )

    def with_flags(self, flags: int) -> "HeaderTrailer":
        return replace(self, flags=flags)


def block_digest_ok(block: bytes) -> bool:
    """§3.3: the digest is the raw CRC32C of the 512-byte block with the digest field zeroed."""
    zeroed = bytearray(block[:HT_SIZE])
    (stored,) = DIGEST_STRUCT.unpack_from(zeroed, DIGEST_OFFSET)
    DIGEST_STRUCT.pack_into(zeroed, DIGEST_OFFSET, 0)
    return raw_crc32c(zeroed) == int(stored)


class BlockCodec:
    """Compresses and decompresses single blocks (§3.4). Not thread-safe: one per worker."""

    def __init__(self, algo: Algorithm) -> None:
        self.algo = algo
        # ZSTD_compress() writes the content size and no checksum; so does this.
        self._zc = zstandard.ZstdCompressor(level=ZSTD_LEVEL, write_content_size=True, write_checksum=False)
        self._zd = zstandard.ZstdDecompressor()

    def compress(self, data: bytes | memoryview) -> bytes:
        if self.algo is Algorithm.LZ4:
            out: bytes = lz4.block.compress(data, mode="default", store_size=False)
        else:
            out = self._zc.compress(data)
        return out

    def decompress(self, data: bytes | memoryview, size: int) -> bytes:
        """The block's bytes; raises ValueError unless they come out exactly `size` long."""
        try:
            if self.algo is Algorithm.LZ4:
                out: bytes = lz4.block.decompress(data, uncompressed_size=size)
            else:
                # A frame states its own content size; refuse one that would overrun the block.
                if zstandard.frame_content_size(data) > size:
                    raise ValueError(f"zstd frame claims more than the block size {size}")
                out = self._zd.decompress(data, max_output_size=size)
        except (lz4.block.LZ4BlockError, zstandard.ZstdError) as exc:
            raise ValueError(f"{self.algo.name} block does not decompress: {exc}") from None
        if len(out) != size:
            raise ValueError(f"{self.algo.name} block decompresses to {len(out)} bytes, expected {size}")
        return out
