"""Reader of sealed and committed LSMT layers, with the checks of `open_file_ro` (overlaybd-formats.md §2.7)."""

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Final

from .errors import FormatError
from .lsmt_layout import (
    DATA_START_SECTOR,
    FLAG_DATA,
    FLAG_HEADER,
    FLAG_SEALED,
    HT_SPACE,
    INDEX_PAD_RECORDS,
    INVALID_OFFSET,
    LENGTH_BITS,
    MAX_RO_INDEX_RECORDS,
    MOFFSET_MASK,
    OFFSET_BITS,
    OFFSET_MASK,
    RECORD_SIZE,
    RECORD_STRUCT,
    SECTOR,
    TAG_SHIFT,
    WARP_TARGET_TAG,
    ZEROED_BIT,
    HeaderTrailer,
)
from .source import ByteSource

_LENGTH_MASK: Final = (1 << LENGTH_BITS) - 1


@dataclass(frozen=True)
class Record:
    """One index record, in sectors."""

    offset: int
    length: int
    moffset: int
    zeroed: bool
    # TurboOCI warp layers only (§7.2): the data lives in the original layer tar, at byte moffset*512.
    in_target: bool = False


class LsmtLayer:
    """An opened read-only layer: header facts from the trailer, the sorted record list, and its data."""

    def __init__(self, source: ByteSource, warp: bool | None = None) -> None:
        """`warp`: whether it is a TurboOCI warp layer (tag-1 records read the original layer tar); None
        guesses from the index (an unpadded index holding tags 0 and 1, as only warp commits write)."""
        self.source = source
        name = source.name
        size = source.size
        if size < 2 * HT_SPACE:
            raise FormatError(
                name, f"too short for an LSMT layer ({size} bytes; header and trailer need {2 * HT_SPACE})"
            )
        header = HeaderTrailer.unpack(source.pread(0, HT_SPACE))
        if header is None:
            raise FormatError(name, "no LSMT magic at offset 0")
        if not header.flags & FLAG_HEADER or not header.flags & FLAG_DATA:
            raise FormatError(name, f"LSMT header flags {header.flags:#x} do not mark a data-file header")
        trailer_offset = size - HT_SPACE
        trailer = HeaderTrailer.unpack(source.pread(trailer_offset, HT_SPACE))
        if trailer is None:
            raise FormatError(name, f"no LSMT trailer magic at offset {trailer_offset} (truncated, or not sealed)")
        if trailer.flags & FLAG_HEADER or not trailer.flags & FLAG_DATA or not trailer.flags & FLAG_SEALED:
            raise FormatError(name, f"LSMT trailer flags {trailer.flags:#x} do not mark a sealed data-file trailer")
        if trailer.index_size > MAX_RO_INDEX_RECORDS:
            raise FormatError(
                name, f"LSMT index has {trailer.index_size} records; at most {MAX_RO_INDEX_RECORDS} allowed"
            )
        index_end = trailer.index_offset + trailer.index_size * RECORD_SIZE
        if trailer.index_offset < HT_SPACE or trailer.index_offset % SECTOR or index_end > trailer_offset:
            raise FormatError(
                name,
                f"LSMT index [{trailer.index_offset}, {index_end}) lies outside the data area [4096, {trailer_offset})",
            )
        self.header = header
        self.trailer = trailer
        raw_index = source.pread(trailer.index_offset, index_end - trailer.index_offset)
        # §7.2: only warp commits leave the index unpadded, and only they give tags a meaning.
        if warp is None:
            warp = trailer.index_size % INDEX_PAD_RECORDS != 0 and _has_tagged_records(raw_index)
        self.is_warp = warp
        self.records = _parse_index(name, raw_index, trailer.index_offset // SECTOR, self.is_warp)

    @property
    def name(self) -> str:
        return self.source.name

    @property
    def uuid(self) -> str:
        return self.trailer.uuid

    @property
    def parent_uuid(self) -> str:
        return self.trailer.parent_uuid

    @property
    def virtual_size(self) -> int:
        return self.trailer.virtual_size

    @property
    def data_bytes(self) -> int:
        """Bytes of data stored in this blob."""
        return sum(r.length for r in self.records if not r.zeroed and not r.in_target) * SECTOR

    @property
    def target_bytes(self) -> int:
        """Bytes a warp layer reads from its original layer tar."""
        return sum(r.length for r in self.records if r.in_target) * SECTOR

    def read_data(self, offset: int, length: int) -> bytes:
        """Bytes of the data area at physical byte `offset`; a shortfall past EOF reads as zeros (§2.7.6)."""
        data = self.source.pread(offset, length)
        if len(data) < length:
            data += bytes(length - len(data))
        return data


def _valid_words(raw: bytes) -> Iterator[tuple[int, int]]:
    return ((lo, hi) for lo, hi in RECORD_STRUCT.iter_unpack(raw) if lo & OFFSET_MASK != INVALID_OFFSET)


def _has_tagged_records(raw: bytes) -> bool:
    tags = {hi >> TAG_SHIFT for _, hi in _valid_words(raw)}
    return len(tags) > 1


def _parse_index(name: str, raw: bytes, data_end_sector: int, warp: bool) -> list[Record]:
    records: list[Record] = []
    previous_end = 0
    words = list(_valid_words(raw))
    # §7.2: warp tags are normalised by subtracting the smallest; elsewhere tags are runtime-only (§2.2).
    base_tag = min((hi >> TAG_SHIFT for _, hi in words), default=0)
    for lo, hi in words:
        offset = lo & OFFSET_MASK
        length = (lo >> OFFSET_BITS) & _LENGTH_MASK
        moffset = hi & MOFFSET_MASK
        zeroed = bool(hi & ZEROED_BIT)
        in_target = warp and (hi >> TAG_SHIFT) - base_tag == WARP_TARGET_TAG
        where = f"LSMT record {len(records)} (sectors {offset}+{length})"
        if length == 0:
            raise FormatError(name, f"{where} is empty")
        if offset < previous_end:
            raise FormatError(name, f"{where} is out of order or overlaps the record before it")
        if warp and (hi >> TAG_SHIFT) - base_tag > WARP_TARGET_TAG:
            raise FormatError(name, f"{where} has tag {hi >> TAG_SHIFT}; warp layers use two")
        if not in_target and (moffset < DATA_START_SECTOR or moffset + (0 if zeroed else length) > data_end_sector):
            raise FormatError(name, f"{where} points at sectors {moffset}+{length}, outside the data area")
        records.append(Record(offset, length, moffset, zeroed, in_target))
        previous_end = offset + length
    return records
