"""Compose the writers into one layer blob: LSMT, optionally inside a ZFile, optionally tar-wrapped.

This is what `overlaybd-commit [-z] [-t]` produces (overlaybd-formats.md §1, §2.6, §3.7, §4).
"""

import errno
import os
from dataclasses import dataclass
from typing import BinaryIO

from ..units import STREAM_CHUNK
from .lsmt_writer import LsmtSummary, LsmtWriter
from .tarwrap import TarWrapperWriter
from .zfile_layout import DEFAULT_BLOCK_SIZE, Algorithm
from .zfile_writer import ZFileSummary, ZFileWriter

PACK_BLOCK = 4096  # granularity at which all-zero data is left out of a packed image
_PACK_READ = STREAM_CHUNK
_ZERO_BLOCK = bytes(PACK_BLOCK)


@dataclass(frozen=True)
class BlobOptions:
    compression: Algorithm | None = Algorithm.LZ4  # None: a plain LSMT, no ZFile
    block_size: int = DEFAULT_BLOCK_SIZE
    tar: bool = True
    jobs: int = 1


DEFAULT_BLOB = BlobOptions()


@dataclass(frozen=True)
class BlobSummary:
    lsmt: LsmtSummary
    zfile: ZFileSummary | None
    size: int


class LayerBlobWriter:
    """Write extents through `.lsmt`, then `close()`. `out` must be seekable (headers are rewritten)."""

    def __init__(
        self,
        out: BinaryIO,
        *,
        virtual_size: int,
        uuid: str | None,
        parent_uuid: str | None,
        options: BlobOptions = DEFAULT_BLOB,
        user_tag: bytes = b"",
        ordered: bool = True,
        warp: bool = False,
    ) -> None:
        self._out = out
        self._start = out.tell()
        self._tar = TarWrapperWriter(out) if options.tar else None
        self._zfile = (
            ZFileWriter(out, algorithm=options.compression, block_size=options.block_size, jobs=options.jobs)
            if options.compression is not None
            else None
        )
        self.lsmt = LsmtWriter(
            self._zfile or out,
            virtual_size=virtual_size,
            uuid=uuid,
            parent_uuid=parent_uuid,
            user_tag=user_tag,
            ordered=ordered,
            warp=warp,
        )

    def close(self) -> BlobSummary:
        lsmt = self.lsmt.close()
        zfile = self._zfile.close() if self._zfile else None
        if self._tar:
            self._tar.close()
        return BlobSummary(lsmt, zfile, self._out.tell() - self._start)

    def abort(self) -> None:
        if self._zfile:
            self._zfile.abort()


def pack_raw_image(image: BinaryIO, blob: LayerBlobWriter) -> None:
    """Every non-zero 4 KiB block of a raw disk image as data; holes and zero blocks are left out."""
    fd = image.fileno()
    size = os.fstat(fd).st_size
    run_start = 0
    run: list[bytes] = []

    def flush() -> None:
        if run:
            blob.lsmt.write_data(run_start, b"".join(run))
            run.clear()

    for start, end in _data_regions(fd, size):
        for pos in range(start, end, _PACK_READ):
            chunk = os.pread(fd, min(_PACK_READ, end - pos), pos)
            for off in range(0, len(chunk), PACK_BLOCK):
                block = chunk[off : off + PACK_BLOCK]
                if block == _ZERO_BLOCK[: len(block)]:
                    flush()
                    continue
                if not run:
                    run_start = pos + off
                run.append(block)
                # Whole 1 MiB calls cut the LSMT records exactly as one large call would (32 KiB pieces).
                if len(run) * PACK_BLOCK >= _PACK_READ:
                    flush()
        flush()


def _data_regions(fd: int, size: int) -> list[tuple[int, int]]:
    """The allocated parts of a sparse file, widened to whole 4 KiB blocks."""
    regions: list[tuple[int, int]] = []
    pos = 0
    try:
        while pos < size:
            data = os.lseek(fd, pos, os.SEEK_DATA)
            hole = os.lseek(fd, data, os.SEEK_HOLE)
            start = max(data - data % PACK_BLOCK, regions[-1][1] if regions else 0)
            end = min(size, -(-hole // PACK_BLOCK) * PACK_BLOCK)
            if start < end:
                regions.append((start, end))
            pos = hole
    except OSError as exc:
        if exc.errno != errno.ENXIO:  # the file system cannot tell: read it all
            return [(0, size)]
        # ENXIO: no data past pos
    return regions
