"""The gzip index (`gzip.meta`, magic `ddgzidx`) that lets overlaybd read a gzip layer at random offsets
(overlaybd-formats.md §7.3; overlaybd's src/overlaybd/gzindex/).

Layout: a packed 333-byte header, the 32 KiB windows of the checkpoints (each zlib-compressed), then the
table of 29-byte entries (zlib-compressed as one stream). A checkpoint is a deflate block boundary: reading
from it means a raw inflate starting `bits` bits before byte `en_pos` of the gzip file, with the window as
its dictionary, producing the uncompressed stream from `de_pos` on.

`GzipIndexBuilder` picks checkpoints as overlaybd does (one per span of uncompressed bytes, the boundary at
or last before each multiple of the span) from the boundaries `inflate.BlockInflater` reports, so it is built
in the same pass that decompresses the layer. `GzipIndex` reads and checks one; `IndexedGzip` reads a gzip
file at any offset through it.
"""

import struct
import zlib
from bisect import bisect_right
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO, Final

from ..inflate import WINDOW, Boundary, RawInflater
from .crc import raw_crc32c
from .errors import FormatError
from .source import ByteSource

MAGIC: Final = b"ddgzidx\x00"
MAJOR_VERSION: Final = 1
MINOR_VERSION: Final = 0
DICT_RAW: Final = 0
DICT_ZLIB: Final = 1  # the tools' default
DEFAULT_LEVEL: Final = 6  # GZ_COMPRESS_LEVEL
DEFAULT_SPAN: Final = 1 << 20  # GZ_CHUNK_SIZE: turboOCI-apply's checkpoint spacing
MIN_SPAN: Final = 65536  # DEFLATE_BLOCK_UNCOMPRESS_MAX_SIZE: create_gz_index refuses a smaller span
# Header fields (packed): magic, major, minor, dict_compress_algo, dict_compress_level (int8), flag, span,
# window, index_size (the entry size), index_num, gzip_file_size, index_file_size, uncompress_file_size,
# reserve[256], index_start, index_area_len, crc.
HEADER: Final = struct.Struct("<8sBBBbBiiiqqqq256sqqI")
assert HEADER.size == 333
CRC_COVERS: Final = HEADER.size - 4  # the CRC is over the header without itself
# Entry fields (packed): de_pos, en_pos, win_pos, bits, win_len.
ENTRY: Final = struct.Struct("<qqqBI")
assert ENTRY.size == 29
READ_CHUNK: Final = 65536  # compressed bytes fed to a reader's inflate at once, as gzfile.cpp reads them
_OUT_CHUNK: Final = 1 << 20  # uncompressed bytes asked of one inflate call


@dataclass(frozen=True)
class Entry:
    de_pos: int  # uncompressed offset of the checkpoint
    en_pos: int  # compressed bytes consumed up to it
    win_pos: int  # offset of its window in the index file
    bits: int  # bits of the byte before en_pos that belong to the block starting here
    win_len: int  # stored window length


@dataclass(frozen=True)
class Header:
    dict_algo: int
    dict_level: int
    span: int
    window: int
    entry_size: int
    entries: int
    gzip_size: int
    index_size: int
    uncompressed_size: int
    table_start: int
    table_length: int


def _compress(data: bytes, algo: int, level: int) -> bytes:
    return zlib.compress(data, level) if algo == DICT_ZLIB else data


class GzipIndexBuilder:
    """Collects checkpoints while a gzip stream is decompressed; `write` produces the index file (and `finish`
    writes it at `path`).

    Call `observe_output` with every piece of uncompressed output, in order, and `boundary` at every block
    boundary (BlockInflater yields both). Windows are compressed as checkpoints are chosen, so memory holds
    only them, never the stream.
    """

    def __init__(self, path: Path | None = None, span: int = DEFAULT_SPAN, level: int = DEFAULT_LEVEL) -> None:
        self.path = path
        if span < MIN_SPAN:
            raise ValueError(f"a gzip index span must be at least {MIN_SPAN} bytes")
        self.span = span
        self.level = level
        self._tail = bytes(WINDOW)  # the last 32 KiB of output (zeros before the stream began)
        self._target = 0  # the next multiple of the span a checkpoint is wanted at
        self._candidate: tuple[Boundary, bytes] | None = None  # the last boundary before the target
        self._entries: list[tuple[Boundary, bytes]] = []  # (checkpoint, compressed window)
        self.uncompressed_size = 0

    def observe_output(self, data: bytes) -> None:
        self._tail = (self._tail + data)[-WINDOW:] if len(data) < WINDOW else data[-WINDOW:]
        self.uncompressed_size += len(data)

    def boundary(self, at: Boundary) -> None:
        """overlaybd's choice (gzip_index_create.cpp, IndexFilterRecorder::record): a boundary on a target is
        taken; otherwise the last one before the first boundary past the target is."""
        if at.de_pos < self._target:
            self._candidate = (at, self._tail)
            return
        if at.de_pos > self._target:
            if self._candidate is not None:
                self._add(*self._candidate)
                self._candidate = None
            self._candidate = (at, self._tail)
            while self._target < at.de_pos:
                self._target += self.span
        if at.de_pos == self._target:
            self._candidate = None
            self._add(at, self._tail)
            self._target += self.span

    def _add(self, at: Boundary, window: bytes) -> None:
        self._entries.append((at, _compress(window, DICT_ZLIB, self.level)))

    def finish(self, gzip_size: int) -> None:
        """Write the index file at `path`."""
        assert self.path is not None, "a builder without a path is written with `write`"
        with self.path.open("wb") as out:
            self.write(out, gzip_size)

    def write(self, out: BinaryIO, gzip_size: int) -> int:
        """Write the index file for the `gzip_size`-byte gzip file observed; returns the index file's size."""
        position = HEADER.size
        table = bytearray()
        windows: list[bytes] = []
        for at, window in self._entries:
            table += ENTRY.pack(at.de_pos, at.en_pos, position, at.bits, len(window))
            windows.append(window)
            position += len(window)
        packed_table = _compress(bytes(table), DICT_ZLIB, self.level)
        file_size = position + len(packed_table)
        fields = (
            MAGIC,
            MAJOR_VERSION,
            MINOR_VERSION,
            DICT_ZLIB,
            self.level,
            0,
            self.span,
            WINDOW,
            ENTRY.size,
            len(self._entries),
            gzip_size,
            file_size,
            self.uncompressed_size,
            bytes(256),
            position,
            len(packed_table),
        )
        head = HEADER.pack(*fields, 0)
        out.write(HEADER.pack(*fields, raw_crc32c(head[:CRC_COVERS])))
        for window in windows:
            out.write(window)
        out.write(packed_table)
        return file_size


class GzipIndex:
    """A gzip index file, checked as overlaybd's GzFile checks it (and more: every entry and window)."""

    def __init__(self, source: ByteSource) -> None:
        self.source = source
        name = source.name
        if source.size < HEADER.size:
            raise FormatError(name, f"a gzip index needs {HEADER.size} header bytes; the file has {source.size}")
        raw = source.pread(0, HEADER.size)
        (magic, major, _minor, algo, level, _flag, span, window, entry_size, count, gzip_size, index_size) = (
            HEADER.unpack(raw)[:12]
        )
        (uncompressed, _reserve, table_start, table_length, crc) = HEADER.unpack(raw)[12:]
        if magic != MAGIC:
            raise FormatError(name, f"no gzip index magic {MAGIC[:7].decode()!r}")
        if raw_crc32c(raw[:CRC_COVERS]) != crc:
            raise FormatError(name, "the gzip index header's CRC does not match")
        if major != MAJOR_VERSION:
            raise FormatError(name, f"gzip index version {major}; only {MAJOR_VERSION} is known")
        if entry_size != ENTRY.size:
            raise FormatError(name, f"gzip index entries of {entry_size} bytes; they are {ENTRY.size}")
        if algo not in (DICT_RAW, DICT_ZLIB):
            raise FormatError(name, f"unknown gzip index window compression {algo}")
        if window != WINDOW or span < MIN_SPAN:
            raise FormatError(name, f"gzip index window {window} / span {span} is not what readers use")
        if index_size != source.size or table_start + table_length != source.size or table_start < HEADER.size:
            raise FormatError(
                name,
                f"gzip index size fields (file {index_size}, table {table_start}+{table_length}) do not match "
                f"its {source.size} bytes",
            )
        if not 0 <= count <= source.size:
            raise FormatError(name, f"gzip index claims {count} entries")
        self.header = Header(
            algo, level, span, window, entry_size, count, gzip_size, index_size, uncompressed, table_start, table_length
        )
        self.entries = self._read_table(name)
        self._de_positions = [entry.de_pos for entry in self.entries]

    def _read_table(self, name: str) -> list[Entry]:
        header = self.header
        packed = self.source.pread(header.table_start, header.table_length)
        expected = header.entries * ENTRY.size
        if header.dict_algo == DICT_ZLIB:
            try:
                table = zlib.decompress(packed, bufsize=max(expected, 1))
            except zlib.error as exc:
                raise FormatError(name, f"the gzip index entry table does not decompress: {exc}") from None
        else:
            table = packed
        if len(table) != expected:
            raise FormatError(name, f"the gzip index entry table holds {len(table)} bytes for {header.entries} entries")
        entries = [Entry(*fields) for fields in ENTRY.iter_unpack(table)]
        previous: Entry | None = None
        for number, entry in enumerate(entries):
            where = f"gzip index entry {number}"
            if entry.bits > 7 or entry.en_pos < (1 if entry.bits else 0) or entry.de_pos < 0:
                raise FormatError(name, f"{where} has bits {entry.bits} at compressed byte {entry.en_pos}")
            if entry.en_pos > header.gzip_size or entry.de_pos > header.uncompressed_size:
                raise FormatError(name, f"{where} points past the gzip file ({entry.en_pos}, {entry.de_pos})")
            if not (HEADER.size <= entry.win_pos and entry.win_pos + entry.win_len <= header.table_start):
                raise FormatError(name, f"{where}'s window [{entry.win_pos}, +{entry.win_len}) is outside the windows")
            if previous is not None and (entry.de_pos <= previous.de_pos or entry.en_pos <= previous.en_pos):
                raise FormatError(name, f"{where} does not follow the entry before it")
            previous = entry
        return entries

    def window(self, entry: Entry) -> bytes:
        raw = self.source.pread(entry.win_pos, entry.win_len)
        if self.header.dict_algo == DICT_RAW:
            window = raw
        else:
            try:
                window = zlib.decompress(raw)
            except zlib.error as exc:
                raise FormatError(
                    self.source.name, f"the window at {entry.win_pos} does not decompress: {exc}"
                ) from None
        if len(window) != WINDOW:
            raise FormatError(self.source.name, f"the window at {entry.win_pos} is {len(window)} bytes, not {WINDOW}")
        return window

    def entry_for(self, offset: int) -> Entry:
        """The last checkpoint at or before uncompressed `offset` (gzfile.cpp seek_index)."""
        if not self.entries:
            raise FormatError(self.source.name, "the gzip index has no entries")
        return self.entries[max(0, bisect_right(self._de_positions, offset) - 1)]

    def verify(self) -> None:
        """Beyond the checks made on opening: every window decompresses to 32 KiB."""
        for entry in self.entries:
            self.window(entry)


class IndexedGzip:
    """The uncompressed bytes of a gzip file, read at any offset through its index; a ByteSource.

    A read inflates from the checkpoint before it; a read that starts where the last one ended goes on with
    the same inflate, so reading a file front to back costs one decompression of it.
    """

    def __init__(self, gzip: ByteSource, index: GzipIndex) -> None:
        if index.header.gzip_size != gzip.size:
            raise FormatError(
                index.source.name, f"indexes a {index.header.gzip_size}-byte gzip file; {gzip.name} has {gzip.size}"
            )
        self.name = gzip.name
        self._gzip = gzip
        self._index = index
        self._size = index.header.uncompressed_size
        # The inflate of the last read, where it stopped (uncompressed) and where its input stands (compressed).
        self._resume: tuple[RawInflater, int, int, bytes] | None = None

    @property
    def size(self) -> int:
        return self._size

    def pread(self, offset: int, length: int) -> bytes:
        length = max(0, min(length, self._size - offset))
        if length == 0:
            return b""
        inflater, position, compressed_at, pending = self._start(offset)
        parts: list[bytes] = []
        skip = offset - position
        while skip > 0 or length > 0:
            if not pending:
                pending = self._gzip.pread(compressed_at, READ_CHUNK)
                compressed_at += len(pending)
                if not pending:
                    raise FormatError(self.name, f"the gzip file ends before uncompressed byte {position}")
            fed = len(pending)
            out, left = inflater.inflate(pending, min(skip or length, _OUT_CHUNK))
            pending = pending[fed - left :]
            if not out:
                if inflater.ended or left == fed:
                    raise FormatError(self.name, f"the deflate stream ends before uncompressed byte {position}")
                continue
            position += len(out)
            if skip:
                skip -= len(out)
            else:
                parts.append(out)
                length -= len(out)
        self._resume = (inflater, position, compressed_at, pending)
        return b"".join(parts)

    def _start(self, offset: int) -> tuple[RawInflater, int, int, bytes]:
        if self._resume is not None and self._resume[1] == offset:
            return self._resume
        entry = self._index.entry_for(offset)
        first = entry.en_pos - 1 if entry.bits else entry.en_pos
        byte = self._gzip.pread(first, 1)[0] if entry.bits else None
        inflater = RawInflater(self.name, byte, entry.bits, self._index.window(entry))
        return inflater, entry.de_pos, entry.en_pos, b""
