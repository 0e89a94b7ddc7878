"""Streaming ZFile writer, as `overlaybd-commit -z` writes (overlaybd-formats.md §3.1-§3.5, §3.7).

Blocks are compressed in batches, in worker processes when `jobs` > 1 (the codecs release little of
the GIL at 4 KiB granularity, so threads would not scale). Each block is compressed on its own and
results are written in input order, so the output is the same bytes whatever the number of workers.
"""

import os
from array import array
from collections import deque
from concurrent.futures import Executor, Future, ProcessPoolExecutor
from dataclasses import dataclass
from multiprocessing import get_context
from typing import BinaryIO

from .crc import BLOCK_CRC_SEED, raw_crc32c
from .zfile_layout import (
    BLOCK_SIZES,
    CRC_STRUCT,
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

# Work is handed to workers about 1 MiB of input at a time: large enough to amortise the hand-off,
# small enough to keep memory bounded (at most 2 batches per worker are in flight).
BATCH_BYTES = 1 << 20

_codecs: dict[Algorithm, BlockCodec] = {}


def compress_batch(algo: Algorithm, block_size: int, data: bytes) -> tuple[bytes, bytes]:
    """Compress whole blocks of `data` (the last may be short): the blocks with their CRCs, and their u32 lengths."""
    codec = _codecs.get(algo)
    if codec is None:
        codec = _codecs[algo] = BlockCodec(algo)
    view = memoryview(data)
    parts: list[bytes] = []
    lengths = array(JUMP_ENTRY)
    for start in range(0, len(view), block_size):
        packed = codec.compress(view[start : start + block_size])
        parts.append(packed)
        parts.append(CRC_STRUCT.pack(raw_crc32c(packed, BLOCK_CRC_SEED)))
        lengths.append(len(packed) + CRC_STRUCT.size)
    return b"".join(parts), lengths.tobytes()


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
        executor: Executor | None = None,
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
        self._executor = executor
        self._own_executor = False
        self._batch_bytes = max(block_size, BATCH_BYTES - BATCH_BYTES % block_size)
        self._pending = bytearray()
        self._in_flight: deque[Future[tuple[bytes, bytes]]] = deque()
        self._lengths = array(JUMP_ENTRY)
        self._position = HT_SIZE  # bytes written, relative to the ZFile's start
        self._original = 0
        self._summary: ZFileSummary | None = None
        sink.write(self._header(INITIAL_HEADER_FLAGS, index_offset=0, index_crc=0).pack())

    def write(self, data: bytes | bytearray | memoryview) -> int:
        if self._summary is not None:
            raise ValueError("ZFile is already closed")
        self._pending += data
        self._original += len(data)
        whole = len(self._pending) - len(self._pending) % self._batch_bytes
        if whole:
            view = memoryview(self._pending)
            for start in range(0, whole, self._batch_bytes):
                self._submit(bytes(view[start : start + self._batch_bytes]))
            view.release()
            del self._pending[:whole]
        return len(data)

    def close(self) -> ZFileSummary:
        if self._summary is not None:
            return self._summary
        try:
            if self._pending:
                self._submit(bytes(self._pending))
                self._pending = bytearray()
            while self._in_flight:
                self._take_oldest()
        finally:
            self._shutdown()
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
        for future in self._in_flight:
            future.cancel()
        self._in_flight.clear()
        self._shutdown()

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

    def _submit(self, batch: bytes) -> None:
        if self._jobs == 1 and self._executor is None:
            self._store(compress_batch(self._algo, self._block_size, batch))
            return
        if self._executor is None:
            # Lazily, so that small files never pay for starting workers; fork, because the workers
            # need nothing but this module and must not re-import the caller's __main__.
            self._executor = ProcessPoolExecutor(self._jobs, mp_context=get_context("fork"))
            self._own_executor = True
        self._in_flight.append(self._executor.submit(compress_batch, self._algo, self._block_size, batch))
        while len(self._in_flight) > 2 * self._jobs:
            self._take_oldest()

    def _take_oldest(self) -> None:
        self._store(self._in_flight.popleft().result())

    def _store(self, result: tuple[bytes, bytes]) -> None:
        blob, lengths = result
        self._sink.write(blob)
        self._lengths.frombytes(lengths)
        self._position += len(blob)

    def _shutdown(self) -> None:
        if self._own_executor and self._executor is not None:
            self._executor.shutdown(cancel_futures=True)
            self._executor = None
            self._own_executor = False
