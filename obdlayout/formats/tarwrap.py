"""The tar wrapper around layer blobs (overlaybd-formats.md §4).

Writes exactly what `overlaybd-commit -t` writes: a PAX header `overlaybd.pax` holding `size=`,
a ustar header `overlaybd.commit` with size field 0, the payload, then two zero blocks. Reads that
form and the plain one-member ustar form (Go archive/tar, payload at 512).
"""

from dataclasses import dataclass
from typing import BinaryIO, Final

from ..tar.ustar import (
    BLOCK,
    CHKSUM,
    DEVMAJOR,
    DEVMINOR,
    GID,
    GNAME,
    MAGIC,
    MODE,
    MTIME,
    NAME,
    SIZE,
    TYPEFLAG,
    UID,
    UNAME,
    USTAR_MAGIC,
    USTAR_VERSION,
    VERSION,
    TarFormatError,
    checksum_ok,
    cstring,
    field,
    parse_number,
    pax_record,
    pax_records,
    stamp_checksum,
    zero_padded_octal,
)
from ..units import STREAM_CHUNK

PAX_PAYLOAD_OFFSET: Final = 3 * BLOCK  # PAX header, PAX record block, member header
PLAIN_PAYLOAD_OFFSET: Final = BLOCK

PAX_NAME: Final = b"overlaybd.pax"
MEMBER_NAME: Final = b"overlaybd.commit"
MEMBER_MODE: Final = 0o100644  # the tool writes the output file's st_mode; fixed here for reproducibility
OWNER_NAME: Final = b"root"
TYPE_PAX: Final = b"x"
TYPE_FILE: Final = b"0"


def _put(block: bytearray, spec: tuple[int, int], value: bytes) -> None:
    offset, length = spec
    block[offset : offset + len(value)] = value[:length]


def _octal(value: int, spec: tuple[int, int]) -> bytes:
    """libtar's forms: 8-byte fields "%6o \\0", 12-byte fields "%11o " (space-padded)."""
    width = spec[1]
    return b"%6o \x00" % value if width == 8 else b"%11o " % value


def wrapper_headers(payload_size: int) -> bytes:
    """The three 512-byte blocks that precede the payload."""
    record = pax_record(b"size", str(payload_size).encode())
    pax = bytearray(BLOCK)
    _put(pax, NAME, PAX_NAME)
    _put(pax, SIZE, _octal(len(record), SIZE))
    _put(pax, TYPEFLAG, TYPE_PAX)
    _put(pax, MAGIC, USTAR_MAGIC)
    _put(pax, VERSION, USTAR_VERSION)
    member = bytearray(BLOCK)
    _put(member, NAME, MEMBER_NAME)
    _put(member, MODE, _octal(MEMBER_MODE, MODE))
    _put(member, UID, _octal(0, UID))
    _put(member, GID, _octal(0, GID))
    _put(member, SIZE, _octal(0, SIZE))
    _put(member, MTIME, _octal(0, MTIME))
    _put(member, TYPEFLAG, TYPE_FILE)
    _put(member, MAGIC, USTAR_MAGIC)
    _put(member, VERSION, USTAR_VERSION)
    _put(member, UNAME, OWNER_NAME)
    _put(member, GNAME, OWNER_NAME)
    return stamp_checksum(pax) + record.ljust(BLOCK, b"\x00") + stamp_checksum(member)


# How the Go convertor wraps the baselayer (convertor-spec.md §2.4): Go's archive/tar, one ustar member.
GO_MEMBER_MODE: Final = 0o444
GO_END_OF_ARCHIVE: Final = bytes(2 * BLOCK)  # two zero blocks, no padding to a 10 KiB record


def go_member_header(size: int, name: bytes = MEMBER_NAME, mode: int = GO_MEMBER_MODE) -> bytes:
    """The ustar header Go's archive/tar writes for a regular file given only its name, mode and size (owner
    0:0, no user or group names, mtime 0): the baselayer's `overlaybd.commit` (mode 0444), and the members of
    a TurboOCI layer archive (convertor-spec.md §2.7)."""
    header = bytearray(BLOCK)
    _put(header, NAME, name)
    for spec, value in ((MODE, mode), (UID, 0), (GID, 0), (SIZE, size), (MTIME, 0), (DEVMAJOR, 0),
                        (DEVMINOR, 0)):  # fmt: skip
        _put(header, spec, zero_padded_octal(value, spec))
    _put(header, TYPEFLAG, TYPE_FILE)
    _put(header, MAGIC, USTAR_MAGIC)
    _put(header, VERSION, USTAR_VERSION)
    # archive/tar writes the checksum as six octal digits, a NUL, then a space.
    header[CHKSUM[0] : CHKSUM[0] + CHKSUM[1]] = b" " * CHKSUM[1]
    header[CHKSUM[0] : CHKSUM[0] + CHKSUM[1]] = b"%06o\x00 " % sum(header)
    return bytes(header)


def write_go_wrapped(source: BinaryIO, size: int, out: BinaryIO) -> None:
    """`source` (`size` bytes) as the Go convertor's baselayer tar."""
    out.write(go_member_header(size))
    remaining = size
    while remaining:
        chunk = source.read(min(remaining, STREAM_CHUNK))
        if not chunk:
            raise ValueError(f"the file ended {remaining} bytes early")
        out.write(chunk)
        remaining -= len(chunk)
    out.write(bytes(-size % BLOCK) + GO_END_OF_ARCHIVE)


class TarWrapperWriter:
    """Reserves the header blocks at the file's current position; `close` fills them in and ends the archive."""

    def __init__(self, out: BinaryIO) -> None:
        self._out = out
        self._base = out.tell()
        out.write(bytes(PAX_PAYLOAD_OFFSET))

    def close(self) -> int:
        """Returns the total size of the wrapped blob."""
        end = self._out.tell()
        payload = end - self._base - PAX_PAYLOAD_OFFSET
        self._out.write(bytes(-payload % BLOCK + 2 * BLOCK))
        total = self._out.tell() - self._base
        self._out.seek(self._base)
        self._out.write(wrapper_headers(payload))
        self._out.seek(self._base + total)
        return total


@dataclass(frozen=True)
class TarPayload:
    offset: int
    size: int
    pax: bool
    member: str


def _pax_size(data: bytes) -> int:
    return next((int(value) for key, value in pax_records(data) if key == b"size"), 0)


def is_tar_header(block: bytes) -> bool:
    """§4: ustar magic "ustar", version "00" and a valid header checksum."""
    return (
        len(block) >= BLOCK
        and field(block, MAGIC)[:5] == USTAR_MAGIC[:5]
        and field(block, VERSION) == USTAR_VERSION
        and checksum_ok(block[:BLOCK])
    )


def parse_wrapper(head: bytes) -> TarPayload | None:
    """Where the payload lies, given the first 1536 bytes of a blob; None if it is not tar-wrapped.

    Raises TarFormatError for a tar header whose fields or extension records cannot be parsed.
    """
    if not is_tar_header(head):
        return None
    if field(head, TYPEFLAG) not in (TYPE_PAX, b"g"):
        return TarPayload(
            PLAIN_PAYLOAD_OFFSET,
            parse_number(field(head, SIZE)),
            pax=False,
            member=_name(head),
        )
    if len(head) < PAX_PAYLOAD_OFFSET:
        raise TarFormatError("tar wrapper is cut short inside its headers")
    try:
        pax_size = _pax_size(head[BLOCK : 2 * BLOCK])
    except (ValueError, TarFormatError):
        raise TarFormatError("tar wrapper's PAX record is malformed") from None
    member = head[2 * BLOCK : 3 * BLOCK]
    if not is_tar_header(member):
        raise TarFormatError("tar wrapper's member header after the PAX record is not valid ustar")
    size = pax_size or parse_number(field(member, SIZE))
    return TarPayload(PAX_PAYLOAD_OFFSET, size, pax=True, member=_name(member))


def _name(block: bytes) -> str:
    return cstring(field(block, NAME)).decode("utf-8", "replace")
