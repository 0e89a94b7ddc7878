"""A streaming reader of layer tars: ustar, PAX (local and global), GNU long names and sparse files.

Written for speed and for exactness where Python's tarfile gets in the way: names, link targets
and xattr values stay bytes, PAX mtimes keep their nanoseconds, numbers may be base-256, and the
stream is only ever read forward (it is usually a decompressor's output).
Formats: POSIX.1-2001 pax and ustar; GNU tar's "Formats" appendix (L/K long names, old GNU
sparse 'S' headers, PAX sparse versions 0.0, 0.1 and 1.0).
"""

import re
import zlib
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import BinaryIO, Final, TypeVar

from ..units import STREAM_CHUNK, MiB
from .ustar import (
    BLOCK,
    DEVMAJOR,
    DEVMINOR,
    GID,
    HEADER,
    HEADER_FIELDS,
    LINKNAME,
    MAGIC,
    MODE,
    MTIME,
    NAME,
    PREFIX,
    SIZE,
    TYPEFLAG,
    UID,
    USTAR_MAGIC,
    USTAR_VERSION,
    VERSION,
    TarFormatError,
    checksum_ok,
    cstring,
    parse_number,
    pax_records,
)
from .ustar import field as header_field

# Old GNU sparse header: 4 (offset, numbytes) pairs, the "extended" flag and the real size.
GNU_SPARSE_MAP: Final = 386
GNU_SPARSE_ENTRIES: Final = 4
GNU_IS_EXTENDED: Final = 482
GNU_REALSIZE: Final = (483, 12)
GNU_EXT_ENTRIES: Final = 21  # per continuation block
GNU_EXT_IS_EXTENDED: Final = 504
NUMBER: Final = 12
# Positions in ustar.HEADER's fields.
_NAME: Final = HEADER_FIELDS.index(NAME)
_MODE: Final = HEADER_FIELDS.index(MODE)
_UID: Final = HEADER_FIELDS.index(UID)
_GID: Final = HEADER_FIELDS.index(GID)
_SIZE: Final = HEADER_FIELDS.index(SIZE)
_MTIME: Final = HEADER_FIELDS.index(MTIME)
_TYPEFLAG: Final = HEADER_FIELDS.index(TYPEFLAG)
_LINKNAME: Final = HEADER_FIELDS.index(LINKNAME)
_MAGIC: Final = HEADER_FIELDS.index(MAGIC)
_VERSION: Final = HEADER_FIELDS.index(VERSION)
_DEVMAJOR: Final = HEADER_FIELDS.index(DEVMAJOR)
_DEVMINOR: Final = HEADER_FIELDS.index(DEVMINOR)
_PREFIX: Final = HEADER_FIELDS.index(PREFIX)


REGULAR: Final = b"0"
AREGULAR: Final = b"\x00"
HARDLINK: Final = b"1"
SYMLINK: Final = b"2"
CHAR: Final = b"3"
BLOCKDEV: Final = b"4"
DIRECTORY: Final = b"5"
FIFO: Final = b"6"
CONTIGUOUS: Final = b"7"
PAX_LOCAL: Final = b"x"
PAX_GLOBAL: Final = b"g"
GNU_LONGNAME: Final = b"L"
GNU_LONGLINK: Final = b"K"
GNU_SPARSE: Final = b"S"
_EXTENSIONS: Final = (PAX_LOCAL, PAX_GLOBAL, GNU_LONGNAME, GNU_LONGLINK)
_KNOWN_TYPES: Final = (REGULAR, AREGULAR, HARDLINK, SYMLINK, CHAR, BLOCKDEV, DIRECTORY, FIFO, CONTIGUOUS, GNU_SPARSE)
_MAX_EXTENSION: Final = 16 * MiB  # a PAX or long-name block larger than this is not a header
# GNU tar writes a region per run of data in a sparse file: a million is far more than real images hold,
# and bounds the memory a hostile map can take. Not Final (which compiled code inlines): a test lowers it.
MAX_SPARSE_REGIONS = 1_000_000
XATTR_PREFIX: Final = b"SCHILY.xattr."
_PAX_TIME: Final = re.compile(rb"-?[0-9]{1,100}(\.[0-9]{0,100})?")
Data = TypeVar("Data", bound=bytes | memoryview)


# Compiled code runs a written __init__ natively, the one dataclasses generates interpreted: the fields' defaults
# are the __init__'s.
@dataclass(init=False)
class TarEntry:
    name: bytes
    type: bytes
    mode: int
    uid: int
    gid: int
    size: int  # the file's size (for sparse files, with the holes)
    mtime: int
    mtime_ns: int
    linkname: bytes
    devmajor: int
    devminor: int
    xattrs: dict[str, bytes]
    sparse: list[tuple[int, int]] | None  # data regions (offset, length) of a sparse file
    # Where the entry's stored data starts in the stream: a regular file's bytes (for a sparse file, its
    # data regions back to back) lie at [data_offset, data_offset + stored bytes) of the uncompressed tar.
    data_offset: int

    def __init__(
        self, name: bytes, type: bytes, mode: int, uid: int, gid: int, size: int, mtime: int, mtime_ns: int,
        linkname: bytes, devmajor: int, devminor: int, xattrs: dict[str, bytes] | None = None,
        sparse: list[tuple[int, int]] | None = None, data_offset: int = 0,
    ) -> None:  # fmt: skip
        self.name, self.type, self.mode, self.uid, self.gid, self.size = name, type, mode, uid, gid, size
        self.mtime, self.mtime_ns, self.linkname = mtime, mtime_ns, linkname
        self.devmajor, self.devminor = devmajor, devminor
        self.xattrs = {} if xattrs is None else xattrs
        self.sparse, self.data_offset = sparse, data_offset

    def __reduce__(self) -> tuple[Callable[..., "TarEntry"], tuple[object, ...]]:
        # Entries cross from the parsing process in pickles (relay.py): as the constructor's arguments they
        # pickle and load in a third of the time their attribute dicts take.
        return TarEntry, (
            self.name, self.type, self.mode, self.uid, self.gid, self.size, self.mtime, self.mtime_ns, self.linkname,
            self.devmajor, self.devminor, self.xattrs, self.sparse, self.data_offset,
        )  # fmt: skip

    @property
    def is_regular(self) -> bool:
        return self.type in (REGULAR, AREGULAR, CONTIGUOUS, GNU_SPARSE) and not self.is_directory

    @property
    def is_directory(self) -> bool:
        return self.type == DIRECTORY or (self.type == AREGULAR and self.name.endswith(b"/"))


def _pax_time(value: bytes) -> tuple[int, int]:
    """(seconds, nanoseconds) of a PAX time, rounded down to the nanosecond."""
    # POSIX: decimal digits, optionally a fraction; nothing else (no exponents, no infinities).
    if not _PAX_TIME.fullmatch(value):
        raise TarFormatError(f"PAX time {value[:40]!r} is not a decimal number")
    whole, _, fraction = value.partition(b".")
    seconds = int(whole)
    nanoseconds = int(fraction[:9].ljust(9, b"0")) if fraction else 0
    if whole.startswith(b"-") and fraction.strip(b"0"):
        # -W.F lies F before second -W: in second -W-1, at 1 s less F rounded up to the nanosecond.
        rounded_up = nanoseconds + (1 if fraction[9:].strip(b"0") else 0)
        seconds, nanoseconds = seconds - 1, 1_000_000_000 - rounded_up
    return seconds, nanoseconds


def _pax_int(value: bytes) -> int:
    """A non-negative decimal (sizes, ids, sparse maps)."""
    if not value.isdigit():
        raise TarFormatError(f"PAX number {value[:40]!r} is not a non-negative integer")
    return int(value)


# What a decompressing stream raises for bad input (Python's gzip: BadGzipFile, EOFError, zlib.error).
# Our own layer streams raise a LayoutError naming the blob instead, which passes through.
_STREAM_ERRORS: Final = (OSError, EOFError, zlib.error)


def _check_region_count(count: int) -> None:
    if count > MAX_SPARSE_REGIONS:
        raise TarFormatError(f"a sparse map of {count} regions; at most {MAX_SPARSE_REGIONS} are read")


def _check_regions(regions: list[tuple[int, int]], size: int, stored: int) -> None:
    """A sparse map's regions lie in order, apart, inside the file's size, and in the data stored for it."""
    end = 0
    data = 0
    for offset, length in regions:
        if offset < end or offset + length > size:
            raise TarFormatError(f"sparse region {offset}+{length} overlaps another or ends past the size {size}")
        end = offset + length
        data += length
    if data > stored:
        raise TarFormatError(f"sparse regions hold {data} bytes; the entry stores {stored}")


def _truncated(at: int) -> TarFormatError:
    return TarFormatError(f"the stream ends inside the archive at byte {at}")


class EntryCursor(ABC):
    """Entries of a layer tar, in order, with the current regular file's bytes read through `read_at`.

    A subclass yields the entries (each set as `_entry` by `_begin`) and gives the current entry's stored
    bytes, forward only (`_take`, `_skip_data`, and `_take_view` if it can lend them); the logical reads,
    with the holes of sparse files, are worked out here once.
    """

    def __init__(self) -> None:
        self._begin(None)

    @abstractmethod
    def __iter__(self) -> Iterator[TarEntry]: ...

    @abstractmethod
    def drain(self) -> None:
        """Read the stream to its end (past the end-of-archive blocks), so that its trailer is checked."""

    @abstractmethod
    def _take(self, size: int) -> bytes:
        """The current entry's next `size` stored bytes; TarFormatError if it holds fewer."""

    @abstractmethod
    def _skip_data(self, size: int) -> None:
        """Pass over the current entry's next `size` stored bytes."""

    def _take_view(self, size: int) -> bytes | memoryview:
        """As `_take`, or a view of the bytes valid until the next read."""
        return self._take(size)

    def _begin(self, entry: TarEntry | None) -> None:
        self._sparse_pos = 0  # logical offset reached in the current entry
        self._region = 0  # first sparse region not yet wholly read
        self._entry = entry

    def read_at(self, offset: int, length: int) -> bytes:
        """Bytes [offset, offset+length) of the current regular file; offsets never go back.

        Holes of sparse files read as zeros.
        """
        return self._read_logical(offset, length, self._take)

    def read_view(self, offset: int, length: int) -> bytes | memoryview:
        """What `read_at` gives, possibly as a view valid only until the next read or entry: for a caller that
        copies the bytes on at once, one copy fewer. A sparse file's bytes are always a copy."""
        return self._read_logical(offset, length, self._take_view)

    def _read_logical(self, offset: int, length: int, take: Callable[[int], Data]) -> Data | bytes:
        entry = self._entry
        if entry is None or not entry.is_regular:
            raise TarFormatError("no regular file to read")
        if offset < self._sparse_pos:
            raise ValueError("tar data can only be read forward")
        if entry.sparse is None:
            self._skip_data(offset - self._sparse_pos)
            data = take(min(length, entry.size - offset))
            self._sparse_pos = offset + len(data)
            return data
        parts: list[bytes | memoryview] = []
        pos = offset
        end = min(offset + length, entry.size)
        regions = entry.sparse
        # Regions before `pos` are never needed again: start where the last read stopped (linear overall).
        while self._region < len(regions) and sum(regions[self._region]) <= pos:
            self._region += 1
        for index in range(self._region, len(regions)):
            start, size = regions[index]
            if start + size <= pos or size == 0:
                continue
            if start >= end:
                break
            if start > pos:
                parts.append(bytes(start - pos))
                pos = start
            count = min(end, start + size) - pos
            parts.append(self._take(count))  # copies: taking the next piece may free a lent one's bytes
            pos += count
        if pos < end:
            parts.append(bytes(end - pos))
        self._sparse_pos = end
        return b"".join(parts)


class TarReader(EntryCursor):
    """Iterate entries; read each regular file's data with `read_at` before moving on."""

    def __init__(self, stream: BinaryIO) -> None:
        super().__init__()
        self._stream = stream
        self._offset = 0  # bytes consumed from the stream
        self._global: dict[bytes, bytes] = {}
        self._data_left = 0  # stored bytes of the current entry not yet read
        self._padding = 0

    def _read(self, size: int) -> bytes:
        try:
            return self._stream.read(size)
        except _STREAM_ERRORS as exc:
            raise TarFormatError(f"the stream cannot be read at byte {self._offset}: {exc}") from None

    @property
    def offset(self) -> int:
        """Bytes of the stream parsed so far."""
        return self._offset

    def drain(self) -> None:
        while self._read(STREAM_CHUNK):
            pass

    def _read_exact(self, size: int) -> bytes:
        data = self._read(size)
        while len(data) < size:
            more = self._read(size - len(data))
            if not more:
                raise _truncated(self._offset + len(data))
            data += more
        self._offset += size
        return data

    def _skip(self, size: int) -> None:
        while size:
            size -= len(self._read_exact(min(size, STREAM_CHUNK)))

    def __iter__(self) -> Iterator[TarEntry]:
        while True:
            self._finish_entry()
            entry = self._next()
            if entry is None:
                return
            yield entry

    def _finish_entry(self) -> None:
        self._skip(self._data_left + self._padding)
        self._data_left = self._padding = 0
        self._begin(None)

    def _block(self) -> bytes | None:
        """The next header block; None at a clean end of archive."""
        data = self._read(BLOCK)
        while 0 < len(data) < BLOCK:
            more = self._read(BLOCK - len(data))
            if not more:
                break
            data += more
        if not data:
            return None  # a stream without the end-of-archive blocks, as some tools write
        if len(data) < BLOCK:
            raise TarFormatError(f"the stream ends inside a header at byte {self._offset + len(data)}")
        self._offset += BLOCK
        return data

    def _next(self) -> TarEntry | None:
        pax: dict[bytes, bytes] = dict(self._global)
        long_name: bytes | None = None
        long_link: bytes | None = None
        while True:
            at = self._offset
            block = self._block()
            if block is None or not any(block):
                return None  # one zero block ends the archive for us; the rest is padding
            if not checksum_ok(block):
                raise TarFormatError(f"bad header checksum at byte {at}")
            fields = HEADER.unpack_from(block)
            kind = fields[_TYPEFLAG]
            size = parse_number(fields[_SIZE])
            if kind in _EXTENSIONS:
                if not 0 <= size <= _MAX_EXTENSION:
                    raise TarFormatError(f"extension header at byte {at} claims {size} bytes")
                data = self._read_exact(size)
                self._skip(-size % BLOCK)
                if kind == PAX_LOCAL:
                    pax.update(pax_records(data))
                elif kind == PAX_GLOBAL:
                    self._global.update(pax_records(data))
                    pax.update(self._global)
                elif kind == GNU_LONGNAME:
                    long_name = cstring(data)
                else:
                    long_link = cstring(data)
                continue
            return self._entry_from(block, fields, size, pax, long_name, long_link)

    def _entry_from(
        self,
        block: bytes,
        fields: tuple[bytes, ...],
        size: int,
        pax: dict[bytes, bytes],
        long_name: bytes | None,
        long_link: bytes | None,
    ) -> TarEntry:
        name = cstring(fields[_NAME])
        if fields[_MAGIC] == USTAR_MAGIC and fields[_VERSION] == USTAR_VERSION:
            prefix = cstring(fields[_PREFIX])
            if prefix:
                name = prefix + b"/" + name
        kind = fields[_TYPEFLAG]
        entry = TarEntry(
            name=pax.get(b"path", long_name or name),
            type=kind,
            mode=parse_number(fields[_MODE]) & 0o7777,
            uid=_pax_int(pax[b"uid"]) if b"uid" in pax else parse_number(fields[_UID]),
            gid=_pax_int(pax[b"gid"]) if b"gid" in pax else parse_number(fields[_GID]),
            size=_pax_int(pax[b"size"]) if b"size" in pax else size,
            mtime=parse_number(fields[_MTIME]),
            mtime_ns=0,
            linkname=pax.get(b"linkpath", long_link or cstring(fields[_LINKNAME])),
            devmajor=parse_number(fields[_DEVMAJOR]),
            devminor=parse_number(fields[_DEVMINOR]),
        )
        if b"mtime" in pax:
            try:
                entry.mtime, entry.mtime_ns = _pax_time(pax[b"mtime"])
            except TarFormatError as exc:
                raise TarFormatError(f"entry {entry.name.decode('utf-8', 'backslashreplace')!r}: {exc}") from None
        for key, value in pax.items():
            if key.startswith(XATTR_PREFIX):
                entry.xattrs[key[len(XATTR_PREFIX) :].decode("utf-8", "surrogateescape")] = value
        # Only regular files (and types we do not know) carry data, as tarfile reads them.
        stored = entry.size
        if stored < 0 or entry.uid < 0 or entry.gid < 0:
            raise TarFormatError(f"entry {entry.name!r} has a negative size or owner")
        carries_data = entry.is_regular or kind not in _KNOWN_TYPES
        self._data_left = stored if carries_data else 0
        self._padding = -stored % BLOCK if carries_data else 0
        self._begin(entry)
        if kind == GNU_SPARSE:
            entry.sparse, entry.size = self._old_gnu_sparse(block)
        elif any(key.startswith(b"GNU.sparse.") for key in pax):
            entry.sparse, entry.size = self._pax_sparse(pax, stored)
            entry.name = pax.get(b"GNU.sparse.name", entry.name)
        if entry.sparse is not None:
            _check_regions(entry.sparse, entry.size, stored)
        entry.data_offset = self._offset  # past old GNU sparse extension blocks and a PAX 1.0 map
        return entry

    def _old_gnu_sparse(self, block: bytes) -> tuple[list[tuple[int, int]], int]:
        regions = self._gnu_map(block, GNU_SPARSE_MAP, GNU_SPARSE_ENTRIES)
        extended = block[GNU_IS_EXTENDED]
        while extended:
            ext = self._read_exact(BLOCK)
            regions += self._gnu_map(ext, 0, GNU_EXT_ENTRIES)
            _check_region_count(len(regions))
            extended = ext[GNU_EXT_IS_EXTENDED]
        return regions, parse_number(header_field(block, GNU_REALSIZE))

    @staticmethod
    def _gnu_map(block: bytes, at: int, count: int) -> list[tuple[int, int]]:
        regions = []
        for i in range(count):
            offset_field = block[at + 2 * NUMBER * i : at + 2 * NUMBER * i + NUMBER]
            if not any(offset_field):
                break
            length_field = block[at + 2 * NUMBER * i + NUMBER : at + 2 * NUMBER * (i + 1)]
            regions.append((parse_number(offset_field), parse_number(length_field)))
        return regions

    def _pax_sparse(self, pax: dict[bytes, bytes], stored: int) -> tuple[list[tuple[int, int]], int]:
        """PAX sparse format 0.1 (map in a record) and 1.0 (map in decimal lines at the start of the data)."""
        real = _pax_int(pax.get(b"GNU.sparse.realsize", pax.get(b"GNU.sparse.size", str(stored).encode())))
        if b"GNU.sparse.map" in pax:
            numbers = [_pax_int(n) for n in pax[b"GNU.sparse.map"].split(b",") if n]
        elif pax.get(b"GNU.sparse.major") == b"1":
            chunks = [self._take(BLOCK)]
            if b"\n" not in chunks[0]:
                raise TarFormatError("PAX sparse map: its first line (the count) is longer than a block")
            count = _pax_int(chunks[0].split(b"\n", 1)[0])
            _check_region_count(count)
            newlines = chunks[0].count(b"\n")
            while newlines < 1 + 2 * count:
                chunks.append(self._take(BLOCK))
                newlines += chunks[-1].count(b"\n")
            lines = b"".join(chunks).split(b"\n")
            numbers = [_pax_int(n) for n in lines[1 : 1 + 2 * count]]
        else:
            raise TarFormatError("PAX sparse format 0.0 (repeated GNU.sparse.offset records) is not supported")
        if len(numbers) % 2:
            raise TarFormatError("sparse map has an odd count of numbers")
        _check_region_count(len(numbers) // 2)
        return list(zip(numbers[::2], numbers[1::2], strict=True)), real

    def stored_chunks(self) -> Iterator[bytes]:
        """The rest of the current entry's stored bytes, in pieces of at most STREAM_CHUNK; in a stream cut short,
        the bytes it holds are given before the error."""
        while self._data_left:
            data = self._read(min(self._data_left, STREAM_CHUNK))
            if not data:
                raise _truncated(self._offset)
            self._offset += len(data)
            self._data_left -= len(data)
            yield data

    def _skip_data(self, size: int) -> None:
        if size > self._data_left:
            raise TarFormatError("read past the entry's data")
        self._skip(size)
        self._data_left -= size

    def _take(self, size: int) -> bytes:
        if size > self._data_left:
            raise TarFormatError(f"entry {self._entry.name if self._entry else b''!r} holds less data than its size")
        data = self._read_exact(size)
        self._data_left -= size
        return data
