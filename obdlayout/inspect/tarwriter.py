"""Write a POSIX pax tar stream, keeping what a root file system holds that ustar cannot.

A pax extended header ('x', POSIX.1-2001) precedes an entry when it needs one: names and link targets
over 100 bytes, ids, sizes and times beyond the octal fields, sub-second mtimes, and xattrs as
`SCHILY.xattr.NAME` (the star/GNU tar convention; values are binary-safe). Header layout: ustar.py.
"""

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import BinaryIO

from ..tar.ustar import (
    BLOCK,
    DEVMAJOR,
    DEVMINOR,
    GID,
    LINKNAME,
    MAGIC,
    MODE,
    MTIME,
    NAME,
    SIZE,
    TYPEFLAG,
    UID,
    USTAR_MAGIC,
    USTAR_VERSION,
    VERSION,
    pax_record,
    stamp_checksum,
    zero_padded_octal,
)

PAX_HEADER = b"x"
_PAX_DIR = b"PaxHeaders/"
_END = bytes(2 * BLOCK)


@dataclass
class Member:
    name: bytes  # a directory's ends in "/"
    type: bytes  # a ustar typeflag (tar/reader.py names them)
    mode: int
    uid: int
    gid: int
    mtime: tuple[int, int]  # seconds, nanoseconds
    size: int = 0
    linkname: bytes = b""
    devmajor: int = 0
    devminor: int = 0
    xattrs: dict[str, bytes] = field(default_factory=dict)


def _fits(value: int, spec: tuple[int, int]) -> bool:
    return 0 <= value < 1 << (3 * (spec[1] - 1))  # octal digits, one byte left for the NUL


def _octal(block: bytearray, spec: tuple[int, int], value: int) -> None:
    # A value that does not fit is carried by the pax header instead.
    block[spec[0] : spec[0] + spec[1]] = zero_padded_octal(value if _fits(value, spec) else 0, spec)


def _text(block: bytearray, spec: tuple[int, int], value: bytes) -> None:
    block[spec[0] : spec[0] + spec[1]] = value[: spec[1]].ljust(spec[1], b"\0")


def _decimal_time(seconds: int, nanoseconds: int) -> bytes:
    """The exact decimal value (seconds + nanoseconds / 1e9), as pax wants it: -1.5 for (-2, 500000000)."""
    total = seconds * 1_000_000_000 + nanoseconds
    sign = "-" if total < 0 else ""
    whole, fraction = divmod(abs(total), 1_000_000_000)
    return f"{sign}{whole}.{fraction:09d}".encode("ascii") if fraction else f"{sign}{whole}".encode("ascii")


def _is_utf8(value: bytes) -> bool:
    try:
        value.decode("utf-8")
    except UnicodeDecodeError:
        return False
    return True


class PaxTarWriter:
    """Entries in the order given; `close` writes the end-of-archive blocks (the stream is not closed)."""

    def __init__(self, out: BinaryIO) -> None:
        self._out = out

    def add(self, member: Member, data: Iterable[bytes] = ()) -> None:
        """One entry; `data` must yield exactly `member.size` bytes (regular files only)."""
        records = self._records(member)
        if records:
            payload = b"".join(records)
            base = member.name.rstrip(b"/").rsplit(b"/", 1)[-1]
            self._header(Member(_PAX_DIR + base[: 100 - len(_PAX_DIR)], PAX_HEADER, 0o644, 0, 0, (0, 0), len(payload)))
            self._out.write(payload + bytes(-len(payload) % BLOCK))
        self._header(member)
        written = 0
        for chunk in data:
            self._out.write(chunk)
            written += len(chunk)
        if written != member.size:
            raise ValueError(f"{member.name!r}: {written} bytes of data for a {member.size}-byte entry")
        self._out.write(bytes(-written % BLOCK))

    def close(self) -> None:
        self._out.write(_END)

    @staticmethod
    def _records(member: Member) -> list[bytes]:
        records: list[bytes] = []
        binary = False
        for key, value, spec in ((b"path", member.name, NAME), (b"linkpath", member.linkname, LINKNAME)):
            if len(value) > spec[1]:
                records.append(pax_record(key, value))
                binary = binary or not _is_utf8(value)
        if binary:
            records.insert(0, pax_record(b"hdrcharset", b"BINARY"))
        for key, number, spec in ((b"uid", member.uid, UID), (b"gid", member.gid, GID), (b"size", member.size, SIZE)):
            if not _fits(number, spec):
                records.append(pax_record(key, str(number).encode("ascii")))
        seconds, nanoseconds = member.mtime
        if nanoseconds or not _fits(seconds, MTIME):
            records.append(pax_record(b"mtime", _decimal_time(seconds, nanoseconds)))
        for name, value in sorted(member.xattrs.items()):
            key = b"SCHILY.xattr." + name.encode("utf-8", "surrogateescape")
            records.append(pax_record(key, value))
        return records

    def _header(self, member: Member) -> None:
        block = bytearray(BLOCK)
        _text(block, NAME, member.name)
        _octal(block, MODE, member.mode)
        _octal(block, UID, member.uid)
        _octal(block, GID, member.gid)
        _octal(block, SIZE, member.size)
        _octal(block, MTIME, member.mtime[0])
        _text(block, TYPEFLAG, member.type)
        _text(block, LINKNAME, member.linkname)
        _text(block, MAGIC, USTAR_MAGIC)
        _text(block, VERSION, USTAR_VERSION)
        _octal(block, DEVMAJOR, member.devmajor)
        _octal(block, DEVMINOR, member.devminor)
        self._out.write(stamp_checksum(block))
