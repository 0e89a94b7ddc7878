"""LSMT byte layout: header/trailer and the 16-byte index record (overlaybd-formats.md §2.1, §2.2)."""

import re
import struct
from dataclasses import dataclass
from typing import Final

SECTOR: Final = 512
# §2.1: header and trailer are 4096-byte blocks; data starts right after the header.
HT_SPACE: Final = 4096
DATA_START_SECTOR: Final = HT_SPACE // SECTOR

MAGIC0: Final = b"LSMT\x00\x01\x02\x00"
MAGIC1: Final = bytes.fromhex("657E63D29444084CA2D2C8EC4FCFAE8A")

# §2.1 flag bits.
FLAG_HEADER: Final = 0x01
FLAG_DATA: Final = 0x02
FLAG_SEALED: Final = 0x04
FLAG_SPARSE_RW: Final = 0x10
COMMITTED_HEADER_FLAGS: Final = FLAG_HEADER | FLAG_DATA | FLAG_SEALED
COMMITTED_TRAILER_FLAGS: Final = FLAG_DATA | FLAG_SEALED

VERSION: Final = 1
SUB_VERSION: Final = 1
USER_TAG_SIZE: Final = 256
UUID_FIELD_SIZE: Final = 37

# §2.1: magic0, magic1, size, flags, index_offset, index_size, virtual_size, uuid, parent_uuid,
# reserved, version, sub_version, user_tag. Packed, 390 bytes.
HEADER_STRUCT: Final = struct.Struct("<8s16sIIQQQ37s37s2sBB256s")
assert HEADER_STRUCT.size == 390

# §2.2: two little-endian u64 words.
RECORD_STRUCT: Final = struct.Struct("<QQ")
RECORD_SIZE: Final = RECORD_STRUCT.size
OFFSET_BITS: Final = 50
LENGTH_BITS: Final = 14
MOFFSET_BITS: Final = 55
OFFSET_MASK: Final = (1 << OFFSET_BITS) - 1
MOFFSET_MASK: Final = (1 << MOFFSET_BITS) - 1
MAX_RECORD_SECTORS: Final = (1 << LENGTH_BITS) - 1  # 16383
INVALID_OFFSET: Final = OFFSET_MASK
INVALID_RECORD: Final = RECORD_STRUCT.pack(INVALID_OFFSET, 0)
ZEROED_SHIFT: Final = 55
ZEROED_BIT: Final = 1 << ZEROED_SHIFT
TAG_SHIFT: Final = 56
# §7.2: in TurboOCI warp layers, tag 1 marks data that lives in the original layer tar.
WARP_TARGET_TAG: Final = 1

# §2.6: the committed index is padded to whole 4096-byte blocks of records.
INDEX_PAD_RECORDS: Final = HT_SPACE // RECORD_SIZE
# §2.7: an RO layer holds at most this many records, padding included.
MAX_RO_INDEX_RECORDS: Final = 1_000_000
# §2.8
MAX_STACK_LAYERS: Final = 255

NULL_UUID: Final = "00000000-0000-0000-0000-000000000000"
_UUID_RE: Final = re.compile(r"^[0-9A-Fa-f]{8}-[0-9A-Fa-f]{4}-[0-9A-Fa-f]{4}-[0-9A-Fa-f]{4}-[0-9A-Fa-f]{12}$")


def normalize_uuid(text: str | None) -> str:
    """§2.9: the on-disk form is uppercase; anything that is not a UUID counts as the null UUID."""
    if text is None or not _UUID_RE.match(text):
        return NULL_UUID
    return text.upper()


def is_valid_uuid(text: str) -> bool:
    return bool(_UUID_RE.match(text))


@dataclass(frozen=True)
class HeaderTrailer:
    flags: int
    index_offset: int  # bytes
    index_size: int  # records, padding included
    virtual_size: int  # bytes
    uuid: str
    parent_uuid: str
    user_tag: bytes

    def pack(self) -> bytes:
        block = bytearray(HT_SPACE)
        HEADER_STRUCT.pack_into(
            block,
            0,
            MAGIC0,
            MAGIC1,
            HEADER_STRUCT.size,
            self.flags,
            self.index_offset,
            self.index_size,
            self.virtual_size,
            self.uuid.encode("ascii"),
            self.parent_uuid.encode("ascii"),
            b"",
            VERSION,
            SUB_VERSION,
            self.user_tag,
        )
        return bytes(block)

    @classmethod
    def unpack(cls, block: bytes) -> "HeaderTrailer | None":
        """None when the block does not carry the LSMT magic."""
        if len(block) < HEADER_STRUCT.size:
            return None
        (magic0, magic1, _size, flags, index_offset, index_size, vsize, uuid, parent, _res, _v, _sv, tag) = (
            HEADER_STRUCT.unpack_from(block, 0)
        )
        if magic0 != MAGIC0 or magic1 != MAGIC1:
            return None
        return cls(
            flags=flags,
            index_offset=index_offset,
            index_size=index_size,
            virtual_size=vsize,
            uuid=_cstr(uuid),
            parent_uuid=_cstr(parent),
            user_tag=tag.rstrip(b"\x00"),
        )


def _cstr(field: bytes) -> str:
    return field.split(b"\x00", 1)[0].decode("ascii", "replace")


def pack_record(offset: int, length: int, moffset: int, zeroed: bool, tag: int = 0) -> bytes:
    """All quantities in sectors."""
    return RECORD_STRUCT.pack(
        offset | (length << OFFSET_BITS),
        moffset | (ZEROED_BIT if zeroed else 0) | (tag << TAG_SHIFT),
    )
