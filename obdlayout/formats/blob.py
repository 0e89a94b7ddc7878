"""Open any layer blob, whatever its wrapping: tar → ZFile → LSMT, each optional but LSMT (overlaybd-formats.md §1)."""

import os
from collections.abc import Iterator, Sequence
from contextlib import ExitStack
from dataclasses import asdict, dataclass
from typing import Any, BinaryIO

from ..tar.ustar import TarFormatError
from ..units import STREAM_CHUNK
from . import lsmt_layout as lsmt
from .errors import FormatError
from .gzindex import GzipIndex, IndexedGzip
from .lsmt_reader import LsmtLayer
from .source import ByteSource, BytesSource, FileSource
from .stack import ZEROED, LsmtStack
from .tarwrap import PAX_PAYLOAD_OFFSET, parse_wrapper
from .zfile_layout import HT_SIZE, HeaderTrailer, block_digest_ok
from .zfile_reader import ZFileReader, is_zfile

WRAP_NONE = "none"
WRAP_TAR = "tar"
WRAP_TAR_PAX = "tar+pax"
KIND_COMMITTED = "committed"  # overlaybd-commit output (header sealed bit set)
KIND_SEALED = "sealed"  # overlaybd-commit --seal output (RW header kept)
KIND_WARP = "turbo-oci-warp"  # TurboOCI fs meta
_ZERO_CHUNK = bytes(STREAM_CHUNK)


class Blob:
    """An opened layer blob. Use as a context manager, or call `close`."""

    def __init__(self, path: str | os.PathLike[str], warp: bool | None = None, contents: bytes | None = None) -> None:
        """`warp`: whether the layer is a TurboOCI warp layer; None guesses (lsmt_reader.LsmtLayer).
        `contents`: the blob's bytes when they are already in memory (a member of a TurboOCI layer archive);
        `path` then only names it."""
        self.path = os.fspath(path)
        self._warp = warp
        self._fd = -1
        if contents is not None:
            self._open(BytesSource(contents, self.path))
            return
        try:
            self._fd = os.open(self.path, os.O_RDONLY)
        except OSError as exc:
            raise FormatError(self.path, f"cannot open: {exc.strerror}") from None
        try:
            self._open(FileSource(self._fd, self.path))
        except BaseException:
            os.close(self._fd)
            raise

    def _open(self, whole: FileSource | BytesSource) -> None:
        self._whole = whole
        head = whole.pread(0, PAX_PAYLOAD_OFFSET)
        try:
            wrapper = parse_wrapper(head)
        except TarFormatError as exc:
            raise FormatError(self.path, exc.problem) from None
        payload: ByteSource = whole
        self.wrapping = WRAP_NONE
        if wrapper is not None:
            self.wrapping = WRAP_TAR_PAX if wrapper.pax else WRAP_TAR
            available = whole.size - wrapper.offset
            if wrapper.size > available:
                raise FormatError(
                    self.path,
                    f"truncated: the tar wrapper holds a {wrapper.size}-byte payload at {wrapper.offset}, "
                    f"but only {max(available, 0)} bytes follow",
                )
            payload = whole.window(wrapper.offset, wrapper.size, f"{self.path} (tar payload)")
        self._tar_end = wrapper.offset + wrapper.size if wrapper is not None else None
        self.payload = payload
        self.zfile: ZFileReader | None = None
        lsmt_source: ByteSource = payload
        if is_zfile(payload.pread(0, HT_SIZE)):
            self.zfile = ZFileReader(payload)
            lsmt_source = self.zfile
        elif wrapper is not None and lsmt.HeaderTrailer.unpack(payload.pread(0, lsmt.HT_SPACE)) is None:
            raise FormatError(
                self.path,
                f"is a tar archive (first member {wrapper.member!r}) holding neither a ZFile nor an LSMT layer",
            )
        self.layer = LsmtLayer(lsmt_source, self._warp)

    def close(self) -> None:
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1

    def __enter__(self) -> "Blob":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def info(self) -> "BlobInfo":
        layer = self.layer
        z = self.zfile
        if layer.is_warp:
            kind = KIND_WARP
        elif layer.header.flags & lsmt.FLAG_SEALED:
            kind = KIND_COMMITTED
        else:
            kind = KIND_SEALED
        return BlobInfo(
            path=self.path,
            file_size=self._whole.size,
            kind=kind,
            wrapping=self.wrapping,
            compression=z.algorithm.name.lower() if z else "none",
            block_size=z.block_size if z else None,
            lsmt_size=layer.source.size,
            uuid=layer.uuid,
            parent_uuid=layer.parent_uuid,
            virtual_size=layer.virtual_size,
            records=len(layer.records),
            zeroed_records=sum(1 for r in layer.records if r.zeroed),
            data_bytes=layer.data_bytes,
            target_records=sum(1 for r in layer.records if r.in_target),
            target_bytes=layer.target_bytes,
            user_tag=layer.trailer.user_tag.decode("utf-8", "replace"),
        )

    def iter_lsmt(self) -> Iterator[bytes]:
        """The plain LSMT layer's bytes, in order (decompressing and checking a ZFile)."""
        if self.zfile is not None:
            yield from self.zfile.iter_blocks()
            return
        for offset in range(0, self.payload.size, STREAM_CHUNK):
            yield self.payload.pread(offset, STREAM_CHUNK)

    def verify(self) -> None:
        """Every check beyond those made on opening: all block CRCs and sizes, the ZFile trailer, and, for a
        tar-wrapped blob, the padding and end-of-archive blocks after the payload (zeros, as GNU tar requires)."""
        if self._tar_end is not None:
            for offset in range(self._tar_end, self._whole.size, STREAM_CHUNK):
                tail = self._whole.pread(offset, STREAM_CHUNK)
                if tail.strip(b"\0"):
                    raise FormatError(
                        self.path, "the tar wrapper's padding or end-of-archive blocks hold non-zero bytes"
                    )
        z = self.zfile
        if z is None:
            return
        for _ in z.iter_blocks():
            pass
        trailer_block = self.payload.pread(self.payload.size - HT_SIZE, HT_SIZE)
        trailer = HeaderTrailer.unpack(trailer_block)
        if z.digests_checked:
            if trailer is None or not block_digest_ok(trailer_block):
                raise FormatError(self.path, "ZFile trailer digest does not match its contents")
            if z.header_overwritten and (trailer.index_offset, trailer.index_size) != (
                z.info.index_offset,
                z.info.index_size,
            ):
                raise FormatError(self.path, "ZFile header and trailer disagree on the jump table")
        if z.blocks_end != z.info.index_offset:
            raise FormatError(
                self.path,
                f"ZFile blocks end at {z.blocks_end} but the jump table starts at {z.info.index_offset}",
            )


@dataclass(frozen=True)
class BlobInfo:
    path: str
    file_size: int
    kind: str
    wrapping: str
    compression: str
    block_size: int | None
    lsmt_size: int
    uuid: str
    parent_uuid: str
    virtual_size: int
    records: int
    zeroed_records: int
    data_bytes: int
    target_records: int
    target_bytes: int
    user_tag: str

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def _open_file(path: str | os.PathLike[str], stack: ExitStack) -> FileSource:
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError as exc:
        raise FormatError(os.fspath(path), f"cannot open: {exc.strerror}") from None
    stack.callback(os.close, fd)
    return FileSource(fd, os.fspath(path))


def open_target(
    path: str | os.PathLike[str], gzip_index: str | os.PathLike[str] | None, stack: ExitStack
) -> ByteSource:
    """A warp layer's original layer blob as the uncompressed tar it holds: the file itself, or, when it is
    gzip-compressed, read through its gzip index. Open until `stack` closes."""
    blob = _open_file(path, stack)
    if gzip_index is None:
        return blob
    return IndexedGzip(blob, GzipIndex(_open_file(gzip_index, stack)))


def open_stack(paths: Sequence[str | os.PathLike[str]], stack: ExitStack) -> LsmtStack:
    """Open blobs bottom-first as one virtual disk; they stay open until `stack` closes."""
    return LsmtStack([stack.enter_context(Blob(p)).layer for p in paths])


@dataclass(frozen=True)
class StackLayer:
    """A layer of a stack: its blob, and for a TurboOCI warp layer the original layer blob its file data lies
    in, with the gzip index to read it at random offsets when it is gzip-compressed."""

    blob: str | os.PathLike[str]
    target: str | os.PathLike[str] | None = None
    gzip_index: str | os.PathLike[str] | None = None


def open_layers(layers: Sequence[StackLayer], stack: ExitStack) -> LsmtStack:
    """Open layers bottom-first as one virtual disk, warp layers reading their targets; all stay open until
    `stack` closes."""
    opened: list[LsmtLayer] = []
    targets: list[ByteSource | None] = []
    for layer in layers:
        warp = layer.target is not None
        opened.append(stack.enter_context(Blob(layer.blob, warp=warp or None)).layer)
        targets.append(open_target(layer.target, layer.gzip_index, stack) if layer.target is not None else None)
    return LsmtStack(opened, targets)


def write_raw(disk: LsmtStack, out: BinaryIO) -> int:
    """Write the virtual disk as a sparse raw image: only mapped, non-zero data is written. Returns bytes written."""
    fd = out.fileno()
    os.ftruncate(fd, 0)
    os.ftruncate(fd, disk.virtual_size)
    written = 0
    for seg in disk.segments():
        if seg.layer == ZEROED:
            continue
        for pos in range(seg.start, seg.end, STREAM_CHUNK):
            take = min(STREAM_CHUNK, seg.end - pos)
            chunk = disk.read_segment(seg, seg.moffset + pos - seg.start, take)
            if chunk != _ZERO_CHUNK[:take]:
                os.pwrite(fd, chunk, pos)
                written += take
    return written
