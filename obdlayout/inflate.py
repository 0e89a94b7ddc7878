"""zlib's inflate through ctypes, for what Python's zlib module cannot do: stop at deflate block boundaries
(Z_BLOCK, with the bit offset of the boundary) while decompressing a gzip stream, and start a raw inflate in
the middle of a byte (inflatePrime) with a preset window. The gzip index (formats/gzindex.py) needs both: its
checkpoints are block boundaries, and reading from one starts mid-byte (overlaybd-formats.md §7.3).

The system's libz (Debian's zlib1g, on every Debian system) is used directly; inflate runs without the GIL,
so a layer decompresses beside the Python code consuming it.
"""

import ctypes
import ctypes.util
from collections.abc import Iterator
from dataclasses import dataclass
from functools import cache

from .errors import ObdlayoutError

Z_OK = 0
Z_STREAM_END = 1
Z_NEED_DICT = 2
Z_BUF_ERROR = -5
Z_NO_FLUSH = 0
Z_BLOCK = 5
# zlib.h, inflate(): data_type = unused bits in the last input byte (0-7), + 64 while decoding the last block,
# + 128 right after an end-of-block code or after the gzip/zlib header, before the first block.
_UNUSED_BITS_MASK = 7
_LAST_BLOCK = 64
_AT_BLOCK_BOUNDARY = 128
GZIP_OR_ZLIB_WBITS = 47  # 15 + 32: a gzip or zlib header, detected
RAW_WBITS = -15
WINDOW = 32768  # deflate's largest back-reference distance


class InflateError(ObdlayoutError):
    """zlib cannot be used, or the compressed stream is corrupt; `where` names the stream."""


class _ZStream(ctypes.Structure):
    """zlib.h's z_stream (its layout is the platform's C layout of these fields)."""

    _fields_ = [
        ("next_in", ctypes.c_void_p),
        ("avail_in", ctypes.c_uint),
        ("total_in", ctypes.c_ulong),
        ("next_out", ctypes.c_void_p),
        ("avail_out", ctypes.c_uint),
        ("total_out", ctypes.c_ulong),
        ("msg", ctypes.c_char_p),
        ("state", ctypes.c_void_p),
        ("zalloc", ctypes.c_void_p),
        ("zfree", ctypes.c_void_p),
        ("opaque", ctypes.c_void_p),
        ("data_type", ctypes.c_int),
        ("adler", ctypes.c_ulong),
        ("reserved", ctypes.c_ulong),
    ]


_StreamPointer = ctypes.POINTER(_ZStream)


@cache
def _libz() -> ctypes.CDLL:
    name = ctypes.util.find_library("z") or "libz.so.1"
    try:
        lib = ctypes.CDLL(name)
    except OSError as exc:
        raise InflateError(name, f"cannot load zlib (Debian: zlib1g): {exc}") from None
    lib.zlibVersion.restype = ctypes.c_char_p
    lib.inflateInit2_.argtypes = [_StreamPointer, ctypes.c_int, ctypes.c_char_p, ctypes.c_int]
    lib.inflate.argtypes = [_StreamPointer, ctypes.c_int]
    lib.inflateEnd.argtypes = [_StreamPointer]
    lib.inflatePrime.argtypes = [_StreamPointer, ctypes.c_int, ctypes.c_int]
    lib.inflateSetDictionary.argtypes = [_StreamPointer, ctypes.c_char_p, ctypes.c_uint]
    return lib


def zlib_version() -> str:
    """The version of the libz this module uses."""
    return str(_libz().zlibVersion().decode("ascii"))


class _Inflater:
    """One z_stream; `close` (or garbage collection) frees zlib's state."""

    def __init__(self, wbits: int, where: str) -> None:
        self._lib = _libz()
        self._stream = _ZStream()
        self.where = where
        ret = self._lib.inflateInit2_(
            ctypes.byref(self._stream), wbits, self._lib.zlibVersion(), ctypes.sizeof(_ZStream)
        )
        if ret != Z_OK:
            raise InflateError(where, f"zlib inflateInit2 failed ({ret})")
        self._open = True
        self._input: ctypes.Array[ctypes.c_char] | None = None  # kept alive while zlib points into it

    def close(self) -> None:
        if self._open:
            self._lib.inflateEnd(ctypes.byref(self._stream))
            self._open = False

    def __del__(self) -> None:
        self.close()

    def _set_input(self, data: bytes) -> None:
        self._input = ctypes.create_string_buffer(data, len(data))
        self._stream.next_in = ctypes.addressof(self._input)
        self._stream.avail_in = len(data)

    def _inflate(self, out: ctypes.Array[ctypes.c_char], flush: int) -> tuple[int, int]:
        """(zlib's return code, bytes written into `out`)."""
        stream = self._stream
        stream.next_out = ctypes.addressof(out)
        stream.avail_out = len(out)
        ret = self._lib.inflate(ctypes.byref(stream), flush)
        if ret not in (Z_OK, Z_STREAM_END, Z_BUF_ERROR):
            message = stream.msg.decode("ascii", "replace") if stream.msg else f"error {ret}"
            raise InflateError(self.where, f"the deflate stream is corrupt: {message}")
        return ret, len(out) - stream.avail_out


@dataclass(frozen=True)
class Boundary:
    """A deflate block boundary: the compressed stream's next block starts `bits` bits before byte `en_pos`
    (so at bit 8*en_pos - bits), and produces the uncompressed byte `de_pos` onwards."""

    en_pos: int
    de_pos: int
    bits: int


class BlockInflater:
    """Decompress a gzip (or zlib) stream fed in pieces, telling every block boundary that is not the last.

    `feed` yields, in order, output bytes and Boundary events; `finished` says whether the first member's
    end was reached (what follows it is left unread: `trailing` counts it).
    """

    def __init__(self, where: str, out_chunk: int = 1 << 20) -> None:
        self._inflater = _Inflater(GZIP_OR_ZLIB_WBITS, where)
        self._out = ctypes.create_string_buffer(out_chunk)
        self.total_in = 0
        self.total_out = 0
        self.finished = False
        self.trailing = 0

    def feed(self, data: bytes) -> Iterator[bytes | Boundary]:
        if self.finished:
            self.trailing += len(data)
            return
        inflater = self._inflater
        stream = inflater._stream
        inflater._set_input(data)
        while True:
            before_in = stream.avail_in
            ret, produced = inflater._inflate(self._out, Z_BLOCK)
            self.total_in += before_in - stream.avail_in
            if produced:
                self.total_out += produced
                yield ctypes.string_at(self._out, produced)
            if ret == Z_STREAM_END:
                self.finished = True
                self.trailing += stream.avail_in
                return
            kind = stream.data_type
            if kind & _AT_BLOCK_BOUNDARY and not kind & _LAST_BLOCK:
                yield Boundary(self.total_in, self.total_out, kind & _UNUSED_BITS_MASK)
            if stream.avail_in == 0 and stream.avail_out != 0:
                return  # everything fed is consumed
            if ret == Z_BUF_ERROR and produced == 0:
                return

    def close(self) -> None:
        self._inflater.close()


class RawInflater:
    """A raw deflate stream started mid-stream: at a block boundary, primed with the bits of the byte before
    it and the 32 KiB window that precedes it (gzip index checkpoints)."""

    def __init__(self, where: str, first_byte: int | None, bits: int, window: bytes) -> None:
        self._inflater = _Inflater(RAW_WBITS, where)
        lib, stream = self._inflater._lib, ctypes.byref(self._inflater._stream)
        if bits:
            assert first_byte is not None
            if lib.inflatePrime(stream, bits, first_byte >> (8 - bits)) != Z_OK:
                raise InflateError(where, "zlib inflatePrime failed")
        if lib.inflateSetDictionary(stream, window, len(window)) != Z_OK:
            raise InflateError(where, "zlib inflateSetDictionary failed")
        self.ended = False

    def inflate(self, data: bytes, want: int) -> tuple[bytes, int]:
        """Up to `want` bytes of output from `data` (fed whole), and how many bytes of `data` were left over."""
        inflater = self._inflater
        inflater._set_input(data)
        out = ctypes.create_string_buffer(want)
        ret, produced = inflater._inflate(out, Z_NO_FLUSH)
        if ret == Z_STREAM_END:
            self.ended = True
        return ctypes.string_at(out, produced), inflater._stream.avail_in

    def close(self) -> None:
        self._inflater.close()
