"""Block mappings of inodes: extent trees (read and build) and legacy block maps (read only).

Layout: kernel ext4 documentation, "The Contents of inode.i_block" (extent header, index and
leaf entries; 4 entries fit in the inode, 340 in a 4 KiB tree block).
"""

import struct
from collections.abc import Callable, Sequence
from typing import Final, NamedTuple

from .errors import CorruptFilesystem
from .layout import (
    BLOCK_SIZE,
    EXTENT_ENTRY_SIZE,
    EXTENT_HEADER,
    EXTENT_INDEX,
    EXTENT_LEAF,
    EXTENT_MAGIC,
    EXTENT_MAX_INIT_LEN,
    EXTENT_UNINIT_FLAG,
    EXTENTS_IN_BLOCK,
    EXTENTS_IN_INODE,
    I_BLOCK_SIZE,
)

ReadBlock = Callable[[int], bytes | bytearray]
_MAX_DEPTH: Final = 5  # the kernel's limit
_DIRECT_BLOCKS: Final = 12
_POINTERS_PER_BLOCK: Final = BLOCK_SIZE // 4


class Run(NamedTuple):
    """`length` blocks of a file from logical block `logical` live at physical block `physical`."""

    logical: int
    physical: int
    length: int
    unwritten: bool = False  # an unwritten (preallocated) extent: its blocks read as zeros


class Mapping(NamedTuple):
    runs: list[Run]
    tree_blocks: list[int]  # blocks holding the mapping itself (extent tree or indirect blocks)


def read_extents(i_block: bytes, read: ReadBlock, where: str) -> Mapping:
    runs: list[Run] = []
    tree: list[int] = []

    def walk(node: bytes | bytearray, depth_expected: int | None) -> None:
        magic, entries, maximum, depth, _ = EXTENT_HEADER.unpack_from(node, 0)
        if magic != EXTENT_MAGIC or entries > maximum or depth > _MAX_DEPTH:
            raise CorruptFilesystem(f"{where}: bad extent header")
        if depth_expected is not None and depth != depth_expected:
            raise CorruptFilesystem(f"{where}: extent tree depth is inconsistent")
        for i in range(entries):
            offset = EXTENT_HEADER.size + i * EXTENT_ENTRY_SIZE
            if depth == 0:
                logical, length, start_hi, start_lo = EXTENT_LEAF.unpack_from(node, offset)
                unwritten = length > EXTENT_UNINIT_FLAG
                if unwritten:
                    length -= EXTENT_UNINIT_FLAG
                runs.append(Run(logical, start_lo | (start_hi << 32), length, unwritten))
            else:
                _, leaf_lo, leaf_hi, _ = EXTENT_INDEX.unpack_from(node, offset)
                child = leaf_lo | (leaf_hi << 32)
                tree.append(child)
                walk(read(child), depth - 1)

    walk(i_block, None)
    return Mapping(runs, tree)


def read_block_map(i_block: bytes, read: ReadBlock) -> Mapping:
    """ext2/3-style direct and indirect block pointers."""
    pointers = struct.unpack("<15I", i_block)
    runs: list[Run] = []
    tree: list[int] = []
    logical = 0

    def add(physical: int) -> None:
        if physical:
            last = runs[-1] if runs else None
            if last and last.logical + last.length == logical and last.physical + last.length == physical:
                runs[-1] = Run(last.logical, last.physical, last.length + 1)
            else:
                runs.append(Run(logical, physical, 1))

    for physical in pointers[:_DIRECT_BLOCKS]:
        add(physical)
        logical += 1

    def indirect(block: int, level: int) -> None:
        nonlocal logical
        if not block:
            logical += _POINTERS_PER_BLOCK**level
            return
        tree.append(block)
        for child in struct.unpack(f"<{_POINTERS_PER_BLOCK}I", read(block)):
            if level == 1:
                add(child)
                logical += 1
            else:
                indirect(child, level - 1)

    for level, block in enumerate(pointers[_DIRECT_BLOCKS:], start=1):
        indirect(block, level)
    return Mapping(runs, tree)


def split_runs(runs: Sequence[Run]) -> list[Run]:
    """Merge touching runs, then cut them at the longest initialized extent."""
    merged: list[Run] = []
    for run in runs:
        last = merged[-1] if merged else None
        if last and last.logical + last.length == run.logical and last.physical + last.length == run.physical:
            merged[-1] = Run(last.logical, last.physical, last.length + run.length)
        else:
            merged.append(run)
    out: list[Run] = []
    for run in merged:
        for done in range(0, run.length, EXTENT_MAX_INIT_LEN):
            out.append(Run(run.logical + done, run.physical + done, min(EXTENT_MAX_INIT_LEN, run.length - done)))
    return out


def tree_blocks_needed(extent_count: int) -> int:
    """How many tree blocks `build_extents` will ask for."""
    total = 0
    count = extent_count
    while count > EXTENTS_IN_INODE:
        count = -(-count // EXTENTS_IN_BLOCK)
        total += count
    return total


def build_extents(runs: Sequence[Run], tree_blocks: Sequence[int]) -> tuple[bytes, list[tuple[int, bytes]]]:
    """The inode's i_block and the tree blocks (block number, contents) mapping `runs`.

    `runs` must come from `split_runs`; `tree_blocks` supplies `tree_blocks_needed(len(runs))` blocks.
    """
    if len(tree_blocks) != tree_blocks_needed(len(runs)):
        raise ValueError("wrong number of extent tree blocks")
    entries = [EXTENT_LEAF.pack(r.logical, r.length, r.physical >> 32, r.physical & 0xFFFFFFFF) for r in runs]
    firsts = [r.logical for r in runs]
    written: list[tuple[int, bytes]] = []
    spare = iter(tree_blocks)
    depth = 0
    while len(entries) > EXTENTS_IN_INODE:
        next_entries, next_firsts = [], []
        for start in range(0, len(entries), EXTENTS_IN_BLOCK):
            chunk = entries[start : start + EXTENTS_IN_BLOCK]
            block = next(spare)
            node = EXTENT_HEADER.pack(EXTENT_MAGIC, len(chunk), EXTENTS_IN_BLOCK, depth, 0) + b"".join(chunk)
            written.append((block, node.ljust(BLOCK_SIZE, b"\0")))
            next_entries.append(EXTENT_INDEX.pack(firsts[start], block & 0xFFFFFFFF, block >> 32, 0))
            next_firsts.append(firsts[start])
        entries, firsts = next_entries, next_firsts
        depth += 1
    root = EXTENT_HEADER.pack(EXTENT_MAGIC, len(entries), EXTENTS_IN_INODE, depth, 0) + b"".join(entries)
    return root.ljust(I_BLOCK_SIZE, b"\0"), written
