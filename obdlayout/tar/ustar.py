"""The POSIX ustar header block, shared by the blob tar wrapper, the layer tar reader and `extract --tar`.

Layout: POSIX.1-2001 "pax" / ustar header (IEEE Std 1003.1, tar format); GNU tar's base-256
numbers for values that do not fit the octal fields.
"""

import itertools
import struct
import zlib
from collections.abc import Iterator
from typing import Final

from ..errors import ObdlayoutError

BLOCK: Final = 512
# Header fields: (offset, length).
NAME: Final = (0, 100)
MODE: Final = (100, 8)
UID: Final = (108, 8)
GID: Final = (116, 8)
SIZE: Final = (124, 12)
MTIME: Final = (136, 12)
CHKSUM: Final = (148, 8)
TYPEFLAG: Final = (156, 1)
LINKNAME: Final = (157, 100)
MAGIC: Final = (257, 6)
VERSION: Final = (263, 2)
UNAME: Final = (265, 32)
GNAME: Final = (297, 32)
DEVMAJOR: Final = (329, 8)
DEVMINOR: Final = (337, 8)
PREFIX: Final = (345, 155)

HEADER_FIELDS: Final = (
    NAME, MODE, UID, GID, SIZE, MTIME, CHKSUM, TYPEFLAG, LINKNAME, MAGIC, VERSION, UNAME, GNAME, DEVMAJOR, DEVMINOR,
    PREFIX,
)  # fmt: skip
# Every field of a header block at once (the fields lie back to back from byte 0 to 500).
HEADER: Final = struct.Struct("".join(f"{length}s" for _, length in HEADER_FIELDS))
assert all(a[0] + a[1] == b[0] for a, b in itertools.pairwise(HEADER_FIELDS))

USTAR_MAGIC: Final = b"ustar\x00"
USTAR_VERSION: Final = b"00"
_CHKSUM_BLANKS: Final = CHKSUM[1] * ord(" ")  # the checksum is computed with its own field as spaces
_BASE256_POSITIVE: Final = 0x80
_BASE256_NEGATIVE: Final = 0xFF


class TarFormatError(ObdlayoutError):
    """The bytes are not a well-formed tar (or end early); the caller names the stream."""

    def __init__(self, problem: str) -> None:
        super().__init__("", problem)


def field(block: bytes | bytearray, spec: tuple[int, int]) -> bytes:
    return bytes(block[spec[0] : spec[0] + spec[1]])


def cstring(raw: bytes) -> bytes:
    return raw.split(b"\0", 1)[0]


def parse_number(raw: bytes) -> int:
    """An octal field, or GNU base-256 (first byte 0x80, or 0xff for negative). TarFormatError if neither."""
    try:
        # The usual form (digits, then NULs or spaces) in one call: ten fields a header, two headers an entry.
        # Whatever int() takes here, the general form below takes the same way.
        return int(raw.rstrip(b"\0 ") or b"0", 8)
    except ValueError:
        return _parse_any_number(raw)


def _parse_any_number(raw: bytes) -> int:
    if raw and raw[0] in (_BASE256_POSITIVE, _BASE256_NEGATIVE):
        value = int.from_bytes(raw[1:], "big")
        return value - (1 << (8 * len(raw) - 8)) if raw[0] == _BASE256_NEGATIVE else value
    text = raw.replace(b"\0", b" ").strip()
    if not text:
        return 0
    try:
        return int(text, 8)
    except ValueError:
        raise TarFormatError(f"tar header field {raw!r} is not a number") from None


def checksum_ok(block: bytes) -> bool:
    """The stored checksum matches the unsigned or the (historic) signed byte sum."""
    chk = field(block, CHKSUM)
    try:
        stored = parse_number(chk)
    except TarFormatError:
        return False
    unsigned = byte_sum(block) - sum(chk) + _CHKSUM_BLANKS
    if stored == unsigned:
        return True
    high = sum(1 for b in block[:BLOCK] if b > 127) - sum(1 for b in chk if b > 127)
    return stored == unsigned - 256 * high


def byte_sum(block: bytes | bytearray) -> int:
    """The sum of a header block's bytes, by zlib: Adler-32's low half is 1 + the byte sum mod 65521, exact for
    a half block (at most 256 * 255 = 65280); five times faster than Python's sum() on every header."""
    half = BLOCK // 2
    return (zlib.adler32(block[:half]) & 0xFFFF) + (zlib.adler32(block[half:BLOCK]) & 0xFFFF) - 2


def zero_padded_octal(value: int, spec: tuple[int, int]) -> bytes:
    """A numeric field as Go's archive/tar and GNU tar write it: zero-padded digits, then a NUL."""
    return b"%0*o\x00" % (spec[1] - 1, value)


def pax_record(key: bytes, value: bytes) -> bytes:
    """A PAX record "LEN key=value\\n" whose length counts its own digits."""
    body = b" " + key + b"=" + value + b"\n"
    length = len(body) + 1
    while len(str(length)) + len(body) != length:
        length += 1
    return str(length).encode("ascii") + body


def pax_records(data: bytes) -> Iterator[tuple[bytes, bytes]]:
    """The (key, value) records of a PAX extended header's data; TarFormatError if one is malformed."""
    pos = 0
    while pos < len(data) and data[pos] != 0:
        space = data.find(b" ", pos)
        try:
            length = int(data[pos:space])
        except ValueError:
            raise TarFormatError("malformed PAX record length") from None
        if space < 0 or length <= space - pos or pos + length > len(data):
            raise TarFormatError("malformed PAX record")
        key, sep, value = data[space + 1 : pos + length - 1].partition(b"=")
        if not sep:
            raise TarFormatError("PAX record without '='")
        yield key, value
        pos += length


def stamp_checksum(block: bytearray) -> bytes:
    """Fill in the checksum field the way libtar writes it ("%6o " then NUL)."""
    block[CHKSUM[0] : CHKSUM[0] + CHKSUM[1]] = b" " * CHKSUM[1]
    block[CHKSUM[0] : CHKSUM[0] + CHKSUM[1]] = b"%6o \x00" % sum(block)
    return bytes(block)
