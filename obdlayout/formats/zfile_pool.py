"""Block compression spread over worker processes that share memory with the writer.

Threads do not scale here (at 4 KiB a block the codecs hold the GIL for most of their time), and
pickling megabytes through pipes costs as much as compressing them. So input and output batches
live in anonymous shared mappings inherited by forked workers; only slot numbers travel by pipe.
"""

import mmap
import os
from array import array
from collections.abc import Callable
from contextlib import suppress
from multiprocessing import get_context
from multiprocessing.process import BaseProcess
from multiprocessing.queues import SimpleQueue
from typing import Final

from ..lifetime import die_with_parent, keep_from_later_children
from .crc import BLOCK_CRC_SEED, raw_crc32c
from .zfile_layout import BLOCK_SLACK, CRC_STRUCT, JUMP_ENTRY, Algorithm, BlockCodec

# Batches in flight per worker. On a machine whose cores are all busy (the layer's decompressing process,
# this writer, the workers), a worker may wait for a core; the writer runs on meanwhile until every slot is
# taken, so a deeper queue keeps it from stopping for the workers.
SLOTS_PER_WORKER: Final = 4


def output_capacity(batch_bytes: int, block_size: int) -> int:
    """Room for a batch's compressed blocks: §3.4 caps each at block_size + 512, plus its CRC."""
    blocks = -(-batch_bytes // block_size)
    return blocks * (block_size + BLOCK_SLACK + CRC_STRUCT.size)


def compress_into(codec: BlockCodec, block_size: int, src: memoryview, dst: memoryview) -> tuple[int, bytes]:
    """Compress `src` block by block into `dst`, each block followed by its CRC (§3.3).

    Returns the bytes used in `dst` and the blocks' u32 jump-table lengths.
    """
    lengths = array(JUMP_ENTRY)
    pos = 0
    for start in range(0, len(src), block_size):
        packed = codec.compress(src[start : start + block_size])
        end = pos + len(packed)
        dst[pos:end] = packed
        CRC_STRUCT.pack_into(dst, end, raw_crc32c(packed, BLOCK_CRC_SEED))
        pos = end + CRC_STRUCT.size
        lengths.append(len(packed) + CRC_STRUCT.size)
    return pos, lengths.tobytes()


Task = tuple[int, int]  # slot, input length
Result = tuple[int, int, bytes, str]  # slot, output length, jump lengths, error ("" if none)


def _work(
    algo: Algorithm,
    block_size: int,
    batch_bytes: int,
    out_capacity: int,
    inputs: mmap.mmap,
    outputs: mmap.mmap,
    tasks: "SimpleQueue[Task | None]",
    results: "SimpleQueue[Result]",
    parent: int,
) -> None:
    die_with_parent(parent)
    codec = BlockCodec(algo)
    in_view, out_view = memoryview(inputs), memoryview(outputs)
    while (task := tasks.get()) is not None:
        slot, length = task
        try:
            src = in_view[slot * batch_bytes : slot * batch_bytes + length]
            dst = out_view[slot * out_capacity : (slot + 1) * out_capacity]
            used, lengths = compress_into(codec, block_size, src, dst)
            results.put((slot, used, lengths, ""))
        except Exception as exc:  # reported to the writer, which raises it
            results.put((slot, 0, b"", f"{type(exc).__name__}: {exc}"))


Store = Callable[[memoryview, bytes], None]  # told each compressed batch, in order, with its jump lengths


class CompressorPool:
    """`workers` forked processes. The writer fills `buffer` (shared memory) and `submit`s it; `store` is told
    the compressed batches in order, each before its slot is reused."""

    def __init__(self, algo: Algorithm, block_size: int, batch_bytes: int, workers: int, store: Store) -> None:
        ctx = get_context("fork")  # workers need only what this module holds; no re-import of __main__
        self._batch = batch_bytes
        self._slots = SLOTS_PER_WORKER * workers
        self._capacity = output_capacity(batch_bytes, block_size)
        self._inputs = mmap.mmap(-1, self._slots * batch_bytes)
        self._outputs = mmap.mmap(-1, self._slots * self._capacity)
        self._in_view = memoryview(self._inputs)
        self._out_view = memoryview(self._outputs)
        self._store = store
        self._tasks: SimpleQueue[Task | None] = ctx.SimpleQueue()
        self._results: SimpleQueue[Result] = ctx.SimpleQueue()
        self._free = list(range(self._slots))
        self._filling = self._free.pop()  # the slot `buffer` shows
        self._next_seq = 0  # sequence number of the next batch submitted
        self._next_out = 0  # sequence number of the next batch to hand back
        self._seq_of_slot: dict[int, int] = {}
        self._done: dict[int, tuple[int, int, bytes]] = {}  # seq -> slot, used, lengths
        args = (
            algo, block_size, batch_bytes, self._capacity, self._inputs, self._outputs, self._tasks, self._results,
            os.getpid(),
        )  # fmt: skip
        self._procs: list[BaseProcess] = [ctx.Process(target=_work, args=args, daemon=True) for _ in range(workers)]
        for proc in self._procs:
            proc.start()
        for mapping in (self._inputs, self._outputs):
            keep_from_later_children(mapping)

    @property
    def buffer(self) -> memoryview:
        """Where the writer puts the next batch (a whole batch's room); a new one after each `submit`."""
        return self._in_view[self._filling * self._batch : (self._filling + 1) * self._batch]

    def submit(self, length: int) -> None:
        """Queue the first `length` bytes of `buffer` as a batch, and store what has finished."""
        slot = self._filling
        self._seq_of_slot[slot] = self._next_seq
        self._next_seq += 1
        self._tasks.put((slot, length))
        self._collect(block=False)
        while not self._free:
            self._collect(block=True)
        self._filling = self._free.pop()

    def drain(self) -> None:
        """Store every batch submitted."""
        while self._next_out < self._next_seq:
            self._collect(block=True)

    def close(self) -> None:
        for _ in self._procs:
            self._tasks.put(None)
        for proc in self._procs:
            proc.join()
        self._release()

    def terminate(self) -> None:
        for proc in self._procs:
            proc.kill()
            proc.join()
        self._release()

    def _release(self) -> None:
        self._in_view.release()
        self._out_view.release()
        with suppress(BufferError):  # a view handed out is still held (by a traceback): freed with it
            self._inputs.close()
        with suppress(BufferError):
            self._outputs.close()

    def _collect(self, block: bool) -> None:
        while block or not self._results.empty():
            slot, used, lengths, error = self._results.get()
            if error:
                raise RuntimeError(f"ZFile compression worker failed: {error}")
            self._done[self._seq_of_slot.pop(slot)] = (slot, used, lengths)
            block = False
            while self._next_out in self._done:
                slot, used, lengths = self._done.pop(self._next_out)
                self._next_out += 1
                with self._out_view[slot * self._capacity : slot * self._capacity + used] as compressed:
                    self._store(compressed, lengths)
                self._free.append(slot)
