"""Streaming writer of committed LSMT layers (overlaybd-formats.md §2.6), and of TurboOCI warp layers (§7.2).

Reproduces what `overlaybd-commit` writes: data from byte 4096 in arrival order, each data extent
cut into 32 KiB pieces as `pcopy` copies them, neighbouring pieces merged as `compress_raw_index`
merges them, the index padded with invalid records to whole 4 KiB blocks, then the trailer.
A warp layer (`overlaybd-commit --turboOCI`) also holds records with tag 1, whose data lies in the
original layer tar, and its index is not padded.
Only the index is kept in memory (16 bytes a record), never the data.
"""

from dataclasses import dataclass
from typing import Final, Protocol

from .lsmt_layout import (
    COMMITTED_HEADER_FLAGS,
    COMMITTED_TRAILER_FLAGS,
    DATA_START_SECTOR,
    INDEX_PAD_RECORDS,
    INVALID_RECORD,
    MAX_RECORD_SECTORS,
    MAX_RO_INDEX_RECORDS,
    MOFFSET_MASK,
    OFFSET_BITS,
    OFFSET_MASK,
    RECORD_SIZE,
    RECORD_STRUCT,
    SECTOR,
    TAG_SHIFT,
    USER_TAG_SIZE,
    WARP_TARGET_TAG,
    ZEROED_SHIFT,
    HeaderTrailer,
    normalize_uuid,
    pack_record,
)

# §2.6 step 2: pcopy copies data records in 32 KiB chunks, each chunk becoming one record.
COPY_CHUNK_SECTORS: Final = 32 * 1024 // SECTOR


class Sink(Protocol):
    def write(self, data: bytes | bytearray | memoryview, /) -> int: ...


@dataclass(frozen=True)
class LsmtSummary:
    records: int  # real index records
    index_records: int  # records written, padding included
    data_bytes: int
    index_offset: int
    total_bytes: int


class LsmtWriter:
    """Write data extents and zeroed ranges as one committed layer.

    Offsets and lengths are bytes, multiples of 512. Each `write_data` call counts as one
    source record of the RW layer: splitting an extent into calls whose sizes are multiples of
    32 KiB gives the same bytes as one call.

    With `ordered` (as overlaybd-commit writes) extents must arrive sorted by logical offset.
    Without it they may arrive in any order, disjoint: data is stored in arrival order and the
    index is sorted at `close` (the format only requires the index to be sorted, §2.7).

    With `warp`, `write_target` maps ranges to the original layer tar and the index is left unpadded.
    """

    def __init__(
        self,
        sink: Sink,
        *,
        virtual_size: int,
        uuid: str | None = None,
        parent_uuid: str | None = None,
        user_tag: bytes = b"",
        ordered: bool = True,
        warp: bool = False,
    ) -> None:
        if len(user_tag) > USER_TAG_SIZE:
            raise ValueError(f"LSMT user tag is {len(user_tag)} bytes, at most {USER_TAG_SIZE} fit")
        _check_aligned("virtual size", virtual_size)
        self._sink = sink
        self._ordered = ordered
        self._warp = warp
        self._ht = HeaderTrailer(
            flags=COMMITTED_HEADER_FLAGS,
            index_offset=0,
            index_size=0,
            virtual_size=virtual_size,
            uuid=normalize_uuid(uuid),
            parent_uuid=normalize_uuid(parent_uuid),
            user_tag=user_tag,
        )
        sink.write(self._ht.pack())
        self._cursor = DATA_START_SECTOR  # physical sector where the next data lands
        self._next_sector = 0  # extents must start at or after this logical sector
        self._index = bytearray()
        # The record being merged: [offset, length, moffset, zeroed, tag]; None before the first.
        self._run: list[int] | None = None
        self._summary: LsmtSummary | None = None

    def write_data(self, offset: int, data: bytes | bytearray | memoryview, padding: int = 0) -> None:
        """`data` at `offset`, followed by `padding` zero bytes (written as they are, not as a zeroed range)."""
        sector, count = self._claim(offset, len(data) + padding)
        self._sink.write(data)
        if padding:
            self._sink.write(bytes(padding))
        done = 0
        while done < count:
            piece = min(COPY_CHUNK_SECTORS, count - done)
            self._append(sector + done, piece, self._cursor, zeroed=False)
            self._cursor += piece
            done += piece

    @property
    def warp(self) -> bool:
        return self._warp

    def write_target(self, offset: int, length: int, target_offset: int) -> None:
        """A warp layer's range whose bytes are those of the original layer tar at `target_offset` (§7.2)."""
        if not self._warp:
            raise ValueError("only a warp layer maps ranges to its target")
        _check_aligned("target offset", target_offset)
        sector, count = self._claim(offset, length)
        target = target_offset // SECTOR
        done = 0
        while done < count:
            piece = min(MAX_RECORD_SECTORS, count - done)
            self._append(sector + done, piece, target + done, zeroed=False, tag=WARP_TARGET_TAG)
            done += piece

    def write_zeroed(self, offset: int, length: int) -> None:
        """A range that reads as zeros whatever lower layers hold (a discard)."""
        sector, count = self._claim(offset, length)
        done = 0
        while done < count:
            piece = min(MAX_RECORD_SECTORS, count - done)
            self._append(sector + done, piece, self._cursor, zeroed=True)
            done += piece

    def close(self) -> LsmtSummary:
        if self._summary is not None:
            return self._summary
        self._flush_run()
        if not self._ordered:
            self._sort_index()
        records = len(self._index) // RECORD_SIZE
        padding = 0 if self._warp else -records % INDEX_PAD_RECORDS
        total_records = records + padding
        if total_records > MAX_RO_INDEX_RECORDS:
            raise ValueError(
                f"layer needs {total_records} LSMT index records; overlaybd reads at most {MAX_RO_INDEX_RECORDS}"
            )
        self._index += INVALID_RECORD * padding
        index_offset = self._cursor * SECTOR
        self._sink.write(self._index)
        trailer = HeaderTrailer(
            flags=COMMITTED_TRAILER_FLAGS,
            index_offset=index_offset,
            index_size=total_records,
            virtual_size=self._ht.virtual_size,
            uuid=self._ht.uuid,
            parent_uuid=self._ht.parent_uuid,
            user_tag=self._ht.user_tag,
        )
        self._sink.write(trailer.pack())
        self._summary = LsmtSummary(
            records=records,
            index_records=total_records,
            data_bytes=index_offset - DATA_START_SECTOR * SECTOR,
            index_offset=index_offset,
            total_bytes=index_offset + len(self._index) + len(trailer.pack()),
        )
        self._index = bytearray()
        return self._summary

    def _claim(self, offset: int, length: int) -> tuple[int, int]:
        if self._summary is not None:
            raise ValueError("LSMT layer is already closed")
        _check_aligned("offset", offset)
        _check_aligned("length", length)
        if length <= 0:
            raise ValueError("LSMT extents must not be empty")
        sector, count = offset // SECTOR, length // SECTOR
        if self._ordered and sector < self._next_sector:
            raise ValueError(
                f"LSMT extents must arrive sorted and disjoint: {offset} is below {self._next_sector * SECTOR}"
            )
        if sector + count > OFFSET_MASK or (self._ht.virtual_size and offset + length > self._ht.virtual_size):
            raise ValueError(f"extent [{offset}, {offset + length}) lies past the virtual size")
        self._next_sector = sector + count
        return sector, count

    def _sort_index(self) -> None:
        """Sort the records of an unordered layer and merge them again (compress_raw_index, §2.6 step 3)."""
        records = sorted(
            (lo & OFFSET_MASK, lo >> OFFSET_BITS, hi & MOFFSET_MASK, (hi >> ZEROED_SHIFT) & 1, hi >> TAG_SHIFT)
            for lo, hi in RECORD_STRUCT.iter_unpack(self._index)
        )
        self._index = bytearray()
        previous_end = 0
        for offset, length, moffset, zeroed, tag in records:
            if offset < previous_end:
                raise ValueError(f"LSMT extents overlap at byte {offset * SECTOR}")
            previous_end = offset + length
            self._append(offset, length, moffset, bool(zeroed), tag)
        self._flush_run()

    def _append(self, offset: int, length: int, moffset: int, zeroed: bool, tag: int = 0) -> None:
        run = self._run
        if (
            run is not None
            and run[3] == zeroed
            and run[4] == tag
            and run[0] + run[1] == offset
            and run[2] + (0 if zeroed else run[1]) == moffset
            and run[1] + length < MAX_RECORD_SECTORS
        ):
            run[1] += length
            return
        self._flush_run()
        self._run = [offset, length, moffset, zeroed, tag]

    def _flush_run(self) -> None:
        if self._run is not None:
            offset, length, moffset, zeroed, tag = self._run
            self._index += pack_record(offset, length, moffset, bool(zeroed), tag)
            self._run = None


def _check_aligned(what: str, value: int) -> None:
    if value < 0 or value % SECTOR:
        raise ValueError(f"LSMT {what} {value} is not a non-negative multiple of {SECTOR}")
