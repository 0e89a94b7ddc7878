"""The streaming tar reader against Python's tarfile and against archives GNU tar writes."""

import hashlib
import io
import math
import shutil
import subprocess
import tarfile
from fractions import Fraction
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from fixtures.make_layers import LayerWriter
from obdlayout.layers.tree import FileContent
from obdlayout.tar.reader import TarReader, _pax_time
from obdlayout.tar.ustar import BLOCK, TarFormatError, _parse_any_number, byte_sum, parse_number


def _entries_via_tarfile(data: bytes) -> list[tuple[object, ...]]:
    out: list[tuple[object, ...]] = []
    with tarfile.open(fileobj=io.BytesIO(data), mode="r|", encoding="utf-8", errors="surrogateescape") as tar:
        for m in tar:
            content = tar.extractfile(m).read() if m.isreg() else None  # type: ignore[union-attr]
            xattrs = {k[13:]: v.encode("utf-8", "surrogateescape") for k, v in m.pax_headers.items() if "xattr" in k}
            name = m.name.encode("utf-8", "surrogateescape")
            link = m.linkname.encode("utf-8", "surrogateescape")
            out.append((name, m.mode & 0o7777, m.uid, m.gid, m.size, int(m.mtime), link, m.devmajor, m.devminor,
                        xattrs, content, m.isdir()))  # fmt: skip
    return out


def _entries_via_reader(data: bytes) -> list[tuple[object, ...]]:
    out: list[tuple[object, ...]] = []
    reader = TarReader(io.BytesIO(data))
    for e in reader:
        content = reader.read_at(0, e.size) if e.is_regular else None
        out.append((e.name.rstrip(b"/") if e.is_directory else e.name, e.mode, e.uid, e.gid, e.size, e.mtime,
                    e.linkname, e.devmajor, e.devminor, e.xattrs, content, e.is_directory))  # fmt: skip
    return out


def _sample(fmt: int) -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w", format=fmt, encoding="utf-8", errors="surrogateescape") as tar:

        def add(name: str, kind: bytes = tarfile.REGTYPE, data: bytes = b"", **attrs: object) -> None:
            info = tarfile.TarInfo(name)
            info.type = kind
            info.size = len(data)
            for key, value in attrs.items():
                setattr(info, key, value)
            tar.addfile(info, io.BytesIO(data) if data else None)

        add("dir", tarfile.DIRTYPE, mode=0o2775, mtime=1700000000)
        add("dir/" + "n" * 150, data=b"long name", mode=0o4755)
        add("dir/caf\udce9", data=b"not utf-8", uid=1000, gid=1000)
        add("dir/link", tarfile.SYMTYPE, linkname="../" + "t" * 120)
        add("dir/hard", tarfile.LNKTYPE, linkname="dir/caf\udce9")
        add("dev", tarfile.CHRTYPE, devmajor=1, devminor=3)
        add("fifo", tarfile.FIFOTYPE)
        add("big-ids", data=b"x" * 5000, uid=4_000_000_000, gid=3_000_000_000, mtime=10_413_792_000)
        if fmt == tarfile.PAX_FORMAT:
            add("xattrs", data=b"", pax_headers={"SCHILY.xattr.user.a": "1", "mtime": "1700000000.123456789"})
    return buffer.getvalue()


@pytest.mark.parametrize("fmt", [tarfile.PAX_FORMAT, tarfile.GNU_FORMAT], ids=["pax", "gnu"])
def test_reads_what_tarfile_reads(fmt: int) -> None:
    data = _sample(fmt)
    assert _entries_via_reader(data) == _entries_via_tarfile(data)


def test_pax_mtime_keeps_nanoseconds_and_base256_numbers_parse() -> None:
    (entry,) = [e for e in TarReader(io.BytesIO(_sample(tarfile.PAX_FORMAT))) if e.name == b"xattrs"]
    assert (entry.mtime, entry.mtime_ns) == (1700000000, 123456789)
    assert parse_number(b"\x80" + (4_000_000_000).to_bytes(11, "big")) == 4_000_000_000
    assert parse_number(b"\xff" * 12) == -1
    assert parse_number(b"0000644\x00") == 0o644


_NUMBER_BYTES = st.sampled_from(b"01234567 \x00\x80\xff_+-89xo\t")


@settings(max_examples=2000)
@given(st.one_of(st.binary(max_size=12), st.lists(_NUMBER_BYTES, max_size=12).map(bytes)))
def test_the_quick_number_parse_agrees_with_the_general_one(raw: bytes) -> None:
    """parse_number's one-call path for the usual octal fields gives what the general parse gives, or its error."""
    try:
        expected: int | str = _parse_any_number(raw)
    except TarFormatError as exc:
        expected = str(exc)
    try:
        got: int | str = parse_number(raw)
    except TarFormatError as exc:
        got = str(exc)
    assert got == expected


@pytest.mark.parametrize(
    "options",
    [["--format=gnu"], ["--format=posix", "--sparse-version=0.1"], ["--format=posix", "--sparse-version=1.0"]],
    ids=["gnu-S", "pax-0.1", "pax-1.0"],
)
def test_gnu_tar_sparse_files_keep_their_data_and_holes(tmp_path: Path, options: list[str]) -> None:
    gnu_tar = shutil.which("tar")
    if (
        gnu_tar is None
        or "GNU tar" not in subprocess.run([gnu_tar, "--version"], capture_output=True, text=True).stdout
    ):
        pytest.skip("GNU tar is not installed")
    sparse = tmp_path / "sparse.bin"
    with sparse.open("wb") as f:
        for offset, chunk in [(0, b"head"), (1 << 20, b"middle" * 1000), (5 << 20, b"tail")]:
            f.seek(offset)
            f.write(chunk)
        f.truncate(6 << 20)
    archive = tmp_path / "a.tar"
    subprocess.run([gnu_tar, "-c", "--sparse", *options, "-f", str(archive), "-C", str(tmp_path), "sparse.bin"],
                   check=True)  # fmt: skip
    reader = TarReader(archive.open("rb"))
    (entry,) = list(_with_data(reader))
    name, size, regions, digest = entry
    assert (name, size) == (b"sparse.bin", 6 << 20)
    assert regions is not None and sum(length for _, length in regions) < 1 << 20
    assert digest == hashlib.sha256(sparse.read_bytes()).hexdigest()


def _with_data(reader: TarReader) -> list[tuple[bytes, int, list[tuple[int, int]] | None, str]]:
    out = []
    for e in reader:
        digest = hashlib.sha256()
        for offset in range(0, e.size, 1 << 20):
            digest.update(reader.read_at(offset, min(1 << 20, e.size - offset)))
        out.append((e.name, e.size, e.sparse, digest.hexdigest()))
    return out


def test_damaged_archives_raise_format_errors() -> None:
    data = bytearray(_sample(tarfile.PAX_FORMAT))
    with pytest.raises(TarFormatError, match="ends inside"):
        _entries_via_reader(bytes(data[: len(data) // 2 + 100]))
    data[600] ^= 0xFF  # inside the second header block
    with pytest.raises(TarFormatError, match="checksum"):
        _entries_via_reader(bytes(data))


# -- where each file's bytes lie in the stream (TurboOCI maps file data there) ----------------------------


def _check_data_offsets(data: bytes) -> int:
    """Every stored piece of every regular file, cut from the raw stream at the offset the reader gives,
    equals the file's logical bytes there; returns how many files were checked."""
    reader = TarReader(io.BytesIO(data))
    checked = 0
    for entry in reader:
        if not entry.is_regular:
            continue
        content = FileContent(entry.size, entry.sparse, reader.read_at, entry.data_offset)
        logical = reader.read_at(0, entry.size)
        ranges = content.stored_ranges()
        assert sum(length for _, length, _ in ranges) == (
            entry.size if entry.sparse is None else sum(length for _, length in entry.sparse)
        )
        for offset, length, at in ranges:
            assert at % 512 == 0 or entry.sparse is not None, "plain file data starts on a tar block"
            assert data[at : at + length] == logical[offset : offset + length], (entry.name, offset)
        checked += 1
    return checked


@pytest.mark.parametrize("fmt", [tarfile.GNU_FORMAT, tarfile.PAX_FORMAT])
def test_data_offsets_point_at_each_files_bytes(fmt: int) -> None:
    assert _check_data_offsets(_sample(fmt)) >= 3  # the long name, the non-UTF-8 name, the big ids


@pytest.mark.parametrize("kind", ["old-gnu", "pax-1.0"])
def test_data_offsets_of_sparse_files_cover_each_region(kind: str, tmp_path: Path) -> None:
    writer = LayerWriter(tmp_path / "sparse.tar")
    regions = [(i * 20_000, 1000 + 512 * (i % 3)) for i in range(30)]  # 30 regions: extension blocks too
    writer.add("before", data=b"b" * 700)
    if kind == "old-gnu":
        writer.old_gnu_sparse(b"holes", 700_000, regions, seed=3)
    else:
        writer.pax_sparse_1_0(b"holes", 700_000, regions, seed=3)
    writer.add("after", data=b"a" * 1300)
    assert _check_data_offsets(writer.close().read_bytes()) == 3


# -- PAX times and header checksums, against plain arithmetic --------------------------------------


@settings(max_examples=500)
@given(st.booleans(), st.text("0123456789", min_size=1, max_size=30), st.none() | st.text("0123456789", max_size=30))
def test_pax_times_round_down_to_the_nanosecond(negative: bool, whole: str, fraction: str | None) -> None:
    text = ("-" if negative else "") + whole + ("" if fraction is None else "." + fraction)
    exact = Fraction(text)
    seconds = math.floor(exact)
    assert _pax_time(text.encode()) == (seconds, math.floor((exact - seconds) * 1_000_000_000))


@given(st.binary(min_size=BLOCK, max_size=BLOCK))
def test_the_header_byte_sum_is_the_sum_of_the_bytes(block: bytes) -> None:
    assert byte_sum(block) == sum(block)
    assert byte_sum(bytes([255]) * BLOCK) == 255 * BLOCK
