"""Streaming ZFile writer, as `overlaybd-commit -z` writes (overlaybd-formats.md §3.1-§3.5, §3.7).

Input is cut into batches of whole blocks, compressed in this process or, with `jobs` > 1, by a pool
of worker processes (zfile_pool.py), into whose shared memory the input is copied as it comes. Each block
is compressed on its own and batches are written in input order, so the output is the same bytes whatever
the number of workers.
"""

import os
from array import array
from collections.abc import Callable
from dataclasses import dataclass
from typing import BinaryIO, Final

from ..units import MiB
from .crc import raw_crc32c
from .zfile_layout import (
    BLOCK_SIZES,
    DEFAULT_BLOCK_SIZE,
    HT_SIZE,
    INITIAL_HEADER_FLAGS,
    JUMP_ENTRY,
    OVERWRITTEN_HEADER_FLAGS,
    TRAILER_FLAGS,
    Algorithm,
    BlockCodec,
    HeaderTrailer,
)
from .zfile_pool import CompressorPool, compress_into, output_capacity

# Work is handed out about 1 MiB of input at a time: large enough to amortise the hand-off,
# small enough to keep memory bounded (zfile_pool.SLOTS_PER_WORKER batches per worker).
BATCH_BYTES: Final = MiB


@dataclass(frozen=True)
class ZFileSummary:
    blocks: int
    original_size: int
    compressed_size: int  # whole ZFile, header to trailer


def default_jobs() -> int:
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


class ZFileWriter:
    """File-like sink: bytes written to it come out ZFile-compressed into `sink` at its current position."""

    def __init__(
        self,
        sink: BinaryIO,
        *,
        algorithm: Algorithm = Algorithm.LZ4,
        block_size: int = DEFAULT_BLOCK_SIZE,
        jobs: int = 1,
    ) -> None:
        if block_size not in BLOCK_SIZES:
            raise ValueError(f"ZFile block size {block_size} is not one of {', '.join(map(str, BLOCK_SIZES))}")
        if jobs < 1:
            raise ValueError("jobs must be at least 1")
        self._sink = sink
        self._base = sink.tell()
        self._algo = algorithm
        self._block_size = block_size
        self._jobs = jobs
        self._batch_bytes = max(block_size, BATCH_BYTES - BATCH_BYTES % block_size)
        self._pool: CompressorPool | None = None
        self._codec: BlockCodec | None = None
        self._scratch = bytearray()
        self._pending = bytearray(self._batch_bytes)  # the batch being filled, until there is a pool
        self._batch = memoryview(self._pending)  # the batch being filled: its first `_fill` bytes
        self._fill = 0
        self._lengths = array(JUMP_ENTRY)
        self._position = HT_SIZE  # bytes written, relative to the ZFile's start
        self._original = 0
        self._summary: ZFileSummary | None = None
        sink.write(self._header(INITIAL_HEADER_FLAGS, index_offset=0, index_crc=0).pack())

    def write(self, data: bytes | bytearray | memoryview) -> int:
        if self._summary is not None:
            raise ValueError("ZFile is already closed")
        batch = self._batch_bytes
        with memoryview(data) as whole_view, whole_view.cast("B") as view:
            size = len(view)
            self._original += size
            start = 0
            while start < size:
                if not self._fill and size - start >= batch and self._jobs == 1:
                    # Compressed straight from the caller's buffer, without copying it first.
                    self._compress_here(view[start : start + batch])
                    start += batch
                    continue
                take = min(size - start, batch - self._fill)
                self._batch[self._fill : self._fill + take] = view[start : start + take]
                self._fill += take
                start += take
                if self._fill == batch:
                    self._compress(last=False)
        return size

    def close(self) -> ZFileSummary:
        if self._summary is not None:
            return self._summary
        try:
            self._compress(last=True)
        except BaseException:
            self.abort()
            raise
        self._close_pool(CompressorPool.close)
        table = self._lengths.tobytes()
        index_offset = self._position
        index_crc = raw_crc32c(table)
        self._sink.write(table)
        self._sink.write(self._header(TRAILER_FLAGS, index_offset, index_crc).pack())
        end = self._sink.tell()
        # §3.2: overlaybd-commit -z rewrites the header with the index facts (flag 0x08).
        self._sink.seek(self._base)
        self._sink.write(self._header(OVERWRITTEN_HEADER_FLAGS, index_offset, index_crc).pack())
        self._sink.seek(end)
        self._summary = ZFileSummary(len(self._lengths), self._original, end - self._base)
        return self._summary

    def abort(self) -> None:
        """Stop the workers without finishing the file (after an error upstream)."""
        self._close_pool(CompressorPool.terminate)

    def _close_pool(self, end: Callable[[CompressorPool], None]) -> None:
        if self._pool is not None:
            self._batch.release()  # a view of the pool's memory, which `end` unmaps
            self._batch = memoryview(self._pending)
            end(self._pool)
            self._pool = None

    def _header(self, flags: int, index_offset: int, index_crc: int) -> HeaderTrailer:
        return HeaderTrailer(
            flags=flags,
            index_offset=index_offset,
            index_size=len(self._lengths) if index_offset else 0,
            original_file_size=self._original if index_offset else 0,
            index_crc=index_crc,
            block_size=self._block_size,
            algo=int(self._algo),
            verify=True,
        )

    def _compress(self, last: bool) -> None:
        """Compress the batch being filled (the last may be short or empty), writing out whatever is finished
        in order."""
        fill, self._fill = self._fill, 0
        if self._jobs > 1 and (self._pool is not None or not last):
            if self._pool is None:
                # Started at the first full batch, so that small files never pay for forking workers.
                self._pool = CompressorPool(self._algo, self._block_size, self._batch_bytes, self._jobs, self._store)
                self._pool.buffer[:fill] = self._batch[:fill]
            if fill:
                self._pool.submit(fill)
            self._batch.release()
            self._batch = self._pool.buffer
            if last:
                self._pool.drain()
            return
        if fill:
            self._compress_here(self._batch[:fill])

    def _compress_here(self, batch: memoryview) -> None:
        if self._codec is None:
            self._codec = BlockCodec(self._algo)
            self._scratch = bytearray(output_capacity(self._batch_bytes, self._block_size))
        with memoryview(self._scratch) as scratch:
            used, lengths = compress_into(self._codec, self._block_size, batch, scratch)
            self._store(scratch[:used], lengths)

    def _store(self, blob: memoryview, lengths: bytes) -> None:
        self._sink.write(blob)
        self._lengths.frombytes(lengths)
        self._position += len(blob)
