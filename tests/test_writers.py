"""Writer rules stated by overlaybd-formats.md, checked on the bytes with an independent decoder."""

import hashlib
import io
import itertools
import struct
from contextlib import ExitStack
from pathlib import Path

import lz4.block
import pytest

from obdlayout.formats.blob import open_stack
from obdlayout.formats.lsmt_writer import LsmtWriter
from obdlayout.formats.zfile_layout import Algorithm
from obdlayout.formats.zfile_writer import ZFileWriter

from .blobs import PLAIN, SECTOR, Extent, apply_to_model, plain_lsmt_bytes, write_layer

MiB = 1 << 20


def decode_index(lsmt: bytes) -> tuple[dict[str, int], list[tuple[int, int, int, int]]]:
    """Trailer fields and every index record (offset, length, moffset, zeroed), decoded by hand per §2.1/§2.2."""
    trailer = lsmt[-4096:]
    assert trailer[:8] == b"LSMT\x00\x01\x02\x00"
    flags, index_offset, index_size, vsize = struct.unpack_from("<IQQQ", trailer, 28)
    records = []
    for i in range(index_size):
        lo, hi = struct.unpack_from("<QQ", lsmt, index_offset + 16 * i)
        records.append((lo & (2**50 - 1), lo >> 50, hi & (2**55 - 1), (hi >> 55) & 1))
    fields = {"flags": flags, "index_offset": index_offset, "index_size": index_size, "vsize": vsize}
    return fields, records


def test_committed_layout_and_padding() -> None:
    lsmt = plain_lsmt_bytes([Extent(0, 8), Extent(100, 16, zeroed=True)], 64 * MiB)
    assert struct.unpack_from("<I", lsmt, 28)[0] == 0x07  # header flags
    fields, records = decode_index(lsmt)
    assert fields["flags"] == 0x06
    assert fields["index_offset"] == 4096 + 8 * SECTOR
    assert fields["index_size"] == 256  # padded to one 4 KiB block, padding counted
    assert records[:2] == [(0, 8, 8, 0), (100, 16, 16, 1)]
    assert all(r == (2**50 - 1, 0, 0, 0) for r in records[2:])
    assert len(lsmt) == fields["index_offset"] + 256 * 16 + 4096


def test_long_extent_is_cut_as_pcopy_and_compress_raw_index_do() -> None:
    # 20 MiB of contiguous data: 32 KiB pieces merge while the sum stays below 16383 sectors.
    lsmt = plain_lsmt_bytes([Extent(0, 40960)], 64 * MiB)
    _, records = decode_index(lsmt)
    real = [r for r in records if r[1]]
    assert [r[1] for r in real] == [16320, 16320, 8320]
    assert [r[2] for r in real] == [8, 8 + 16320, 8 + 32640]


def test_zeroed_ranges_split_at_the_record_limit() -> None:
    lsmt = plain_lsmt_bytes([Extent(0, 40000, zeroed=True)], 64 * MiB)
    _, records = decode_index(lsmt)
    real = [r for r in records if r[1]]
    # Discard splits into 16383-sector pieces; merging stops short of the limit, so they stay apart.
    assert [r[1] for r in real] == [16383, 16383, 7234]
    assert all(r[3] == 1 and r[2] == 8 for r in real)


def test_splitting_a_write_into_32k_multiples_changes_nothing() -> None:
    data = Extent(0, 4096, seed=3).data()
    whole, split = io.BytesIO(), io.BytesIO()
    for out, pieces in ((whole, [data]), (split, [data[: 64 * SECTOR], data[64 * SECTOR :]])):
        writer = LsmtWriter(out, virtual_size=MiB * 4)
        pos = 0
        for piece in pieces:
            writer.write_data(pos, piece)
            pos += len(piece)
        writer.close()
    assert whole.getvalue() == split.getvalue()


@pytest.mark.parametrize(
    ("offset", "length", "message"),
    [(100, 512, "multiple of 512"), (0, 100, "multiple of 512"), (0, 0, "empty"), (MiB, 1024, "past the virtual")],
)
def test_lsmt_writer_rejects_bad_extents(offset: int, length: int, message: str) -> None:
    writer = LsmtWriter(io.BytesIO(), virtual_size=MiB)
    with pytest.raises(ValueError, match=message):
        writer.write_data(offset, bytes(length))


def test_lsmt_writer_rejects_unsorted_extents() -> None:
    writer = LsmtWriter(io.BytesIO(), virtual_size=MiB)
    writer.write_data(4096, bytes(4096))
    with pytest.raises(ValueError, match="sorted"):
        writer.write_zeroed(0, 512)


def test_uuids_are_stored_uppercase_and_invalid_ones_as_null() -> None:
    out = io.BytesIO()
    LsmtWriter(out, virtual_size=MiB, uuid="d0c2a979-a603-cd1b-4c54-cde764294ccd", parent_uuid="nonsense").close()
    trailer = out.getvalue()[-4096:]
    assert trailer[56:93] == b"D0C2A979-A603-CD1B-4C54-CDE764294CCD\x00"
    assert trailer[93:130] == b"00000000-0000-0000-0000-000000000000\x00"


def test_zfile_header_and_trailer_fields() -> None:
    out = io.BytesIO()
    writer = ZFileWriter(out, algorithm=Algorithm.ZSTD, block_size=8192)
    writer.write(bytes(20000))
    writer.close()
    blob = out.getvalue()
    # §3.2: magic, size 96, flags 0x1B in the overwritten header, 0x16 in the trailer.
    for block, flags in ((blob[:512], 0x1B), (blob[-512:], 0x16)):
        assert block[:24] == b"ZFile\x00\x01\x00tuji.yyf@Alibaba"
        size, _digest, got_flags, index_offset, index_size, original = struct.unpack_from("<IIQQQQ", block, 24)
        assert (size, got_flags, index_size, original) == (96, flags, 3, 20000)
        assert struct.unpack_from("<IBBBxIIB", block, 72) == (8192, 2, 0, 0, 0, 0, 1)
        assert index_offset + 12 + 512 == len(blob)


def test_unordered_layer_reads_back_and_sorts_its_index(tmp_path: Path) -> None:
    extents = [Extent(900, 64, seed=1), Extent(0, 8, seed=2), Extent(300, 16, zeroed=True), Extent(8, 8, seed=3)]
    path = tmp_path / "layer"
    with path.open("w+b") as out:
        write_layer(out, extents, MiB, PLAIN, ordered=False)
    _, records = decode_index(path.read_bytes())
    # Sorted by offset; 0-7 and 8-15 merge: the zeroed range between their arrivals took no data space.
    assert [r[:3] for r in records if r[1]] == [(0, 16, 72), (300, 16, 80), (900, 64, 8)]
    model = bytearray(MiB)
    apply_to_model(model, extents)
    with ExitStack() as stack:
        assert open_stack([path], stack).read(0, MiB) == bytes(model)


def test_unordered_layer_rejects_overlaps() -> None:
    writer = LsmtWriter(io.BytesIO(), virtual_size=MiB, ordered=False)
    writer.write_data(8192, bytes(8192))
    writer.write_data(4096, bytes(8192))
    with pytest.raises(ValueError, match="overlap"):
        writer.close()


@pytest.mark.parametrize("jobs", [1, 2])
def test_zfile_written_in_uneven_pieces_holds_the_data_whatever_the_workers(jobs: int) -> None:
    """Pieces smaller and larger than a batch, across more batches than the pool has slots: the same bytes
    as one write in this process, and every block decodes (by lz4 itself) to the data in order."""
    data = b"".join(hashlib.sha256(i.to_bytes(4, "little")).digest() * (i % 97 + 1) for i in range(8000))
    assert len(data) > 11 * MiB
    out = io.BytesIO()
    writer = ZFileWriter(out, algorithm=Algorithm.LZ4, jobs=jobs)
    sizes = itertools.cycle([1, 4095, MiB + 17, 3, 3 * MiB, 2 * MiB - 1, 512])
    pos = 0
    while pos < len(data):
        size = next(sizes)
        assert writer.write(memoryview(data)[pos : pos + size]) == len(data[pos : pos + size])
        pos += size
    writer.close()
    single = io.BytesIO()
    one = ZFileWriter(single, algorithm=Algorithm.LZ4, jobs=1)
    one.write(data)
    one.close()
    blob = out.getvalue()
    assert blob == single.getvalue()
    index_offset, count = struct.unpack_from("<QQ", blob, 40)
    lengths = struct.unpack_from(f"<{count}I", blob, index_offset)
    decoded, at = [], 512
    for number, length in enumerate(lengths):
        size = min(4096, len(data) - number * 4096)
        decoded.append(lz4.block.decompress(blob[at : at + length - 4], uncompressed_size=size))
        at += length
    assert b"".join(decoded) == data
