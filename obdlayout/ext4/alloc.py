"""Block and inode allocation over the group bitmaps, keeping every count consistent.

Allocation is first-fit from a moving goal ("continue after the last allocation"), so the same
input always gives the same placement. Blocks freed during a layer are only released when the
layer commits: a block this layer already emitted as file data is never handed out again in it.
"""

import re
from dataclasses import dataclass
from typing import Final

from ..units import GiB, MiB
from .checksum import group_desc_checksum
from .device import BlockDevice
from .errors import NoSpace
from .layout import (
    BG_BLOCK_UNINIT,
    BG_INODE_UNINIT,
    BLOCK_SIZE,
    COMPAT_SPARSE_SUPER2,
    RO_COMPAT_GDT_CSUM,
    RO_COMPAT_SPARSE_SUPER,
    SUPERBLOCK_OFFSET,
    GroupDesc,
    Superblock,
)

# A byte holding a bit of the wanted value: not all zeros (looking for a 1), not all ones (for a 0).
_BYTE_WITH: Final = {True: re.compile(rb"[^\x00]"), False: re.compile(rb"[^\xff]")}


def first_bit(bitmap: bytearray, start: int, end: int, value: bool) -> int:
    """The first bit equal to `value` in [start, end), or -1."""
    bit = start
    while bit < end:
        if bit & 7 == 0:
            found = _BYTE_WITH[value].search(bitmap, bit >> 3, (end + 7) >> 3)
            if found is None:
                return -1
            bit = max(bit, found.start() << 3)
        if bool(bitmap[bit >> 3] >> (bit & 7) & 1) == value:
            return bit if bit < end else -1
        bit += 1
    return -1


def set_bits(bitmap: bytearray, start: int, count: int, value: bool) -> None:
    end = start + count
    while start < end and start & 7:
        _set_bit(bitmap, start, value)
        start += 1
    whole = (end - start) >> 3
    if whole:
        bitmap[start >> 3 : (start >> 3) + whole] = (b"\xff" if value else b"\x00") * whole
        start += whole << 3
    while start < end:
        _set_bit(bitmap, start, value)
        start += 1


def _set_bit(bitmap: bytearray, bit: int, value: bool) -> None:
    if value:
        bitmap[bit >> 3] |= 1 << (bit & 7)
    else:
        bitmap[bit >> 3] &= ~(1 << (bit & 7)) & 0xFF


def bit_is_set(bitmap: bytearray | bytes, bit: int) -> bool:
    return bool(bitmap[bit >> 3] >> (bit & 7) & 1)


@dataclass(frozen=True)
class Geometry:
    block_count: int
    first_data_block: int
    blocks_per_group: int
    inodes_per_group: int
    inode_size: int
    desc_size: int
    group_count: int
    gdt_blocks: int
    reserved_gdt_blocks: int

    def group_of_block(self, block: int) -> int:
        return (block - self.first_data_block) // self.blocks_per_group

    def group_start(self, group: int) -> int:
        return self.first_data_block + group * self.blocks_per_group

    def blocks_in_group(self, group: int) -> int:
        return min(self.blocks_per_group, self.block_count - self.group_start(group))


def has_super(sb: Superblock, group: int) -> bool:
    """Whether a group holds a superblock backup (and the descriptor table after it)."""
    if group == 0:
        return True
    if sb.get("s_feature_compat") & COMPAT_SPARSE_SUPER2:
        return group in (sb.get("s_backup_bgs_0"), sb.get("s_backup_bgs_1"))
    if group == 1 or not sb.get("s_feature_ro_compat") & RO_COMPAT_SPARSE_SUPER:
        return True
    for base in (3, 5, 7):
        power = base
        while power < group:
            power *= base
        if power == group:
            return True
    return False


class Allocator:
    def __init__(self, device: BlockDevice, sb: Superblock, descs: list[GroupDesc], geometry: Geometry) -> None:
        self._device = device
        self.sb = sb
        self.descs = descs
        self.geo = geometry
        self._gdt_csum = bool(sb.get("s_feature_ro_compat") & RO_COMPAT_GDT_CSUM)
        self._block_maps: dict[int, bytearray] = {}
        self._inode_maps: dict[int, bytearray] = {}
        # Per group, a bit below which every inode is in use: the search for the first free one starts there
        # rather than at 0 (the same inode is found; a layer of many files makes thousands).
        self._inode_floor: dict[int, int] = {}
        self._dirty_block_maps: set[int] = set()
        self._dirty_inode_maps: set[int] = set()
        self._dirty_descs: set[int] = set()
        self._pending_frees: list[tuple[int, int]] = []
        self._block_goal = 0
        self._inode_goal_group = 0
        # The counters live here as plain ints while a layer is applied (struct access per file
        # is slow); `commit` writes them back into the descriptors and the superblock.
        self._free_blocks = [d.free_blocks for d in descs]
        self._free_inodes = [d.free_inodes for d in descs]
        self._used_dirs = [d.used_dirs for d in descs]
        self._flags = [d.get("bg_flags") for d in descs]
        self._itable_unused = [d.itable_unused for d in descs]
        self.free_blocks_total = sb.free_blocks_count
        self.free_inodes_total = sb.get("s_free_inodes_count")

    def _full(self, detail: str, needed_blocks: int) -> NoSpace:
        """The error for a full disk, with a virtual size that would hold the layers."""
        used = self.geo.block_count - self.free_blocks_total
        total = (used + needed_blocks) * BLOCK_SIZE
        gib = -(-total * 5 // 4 // GiB)  # a quarter of headroom, in whole GiB
        return NoSpace(
            f"the file system is full ({detail}); convert with a virtual size of at least {gib} GiB "
            f"(the layers need about {total // MiB} MiB)"
        )

    # -- blocks ---------------------------------------------------------------------------------

    def alloc_blocks(self, count: int) -> list[tuple[int, int]]:
        """`count` blocks as (start, length) runs, first-fit from the goal, wrapping around once."""
        if count > self.free_blocks_total:
            raise self._full(f"needs {count} more blocks, {self.free_blocks_total} are free", count)
        runs: list[tuple[int, int]] = []
        remaining = count
        geo = self.geo
        start_group = geo.group_of_block(max(self._block_goal, geo.first_data_block)) % geo.group_count
        for step in range(geo.group_count + 1):
            group = (start_group + step) % geo.group_count
            if self._free_blocks[group] == 0:
                continue
            bitmap = self._block_map(group)
            size = geo.blocks_in_group(group)
            first = self._block_goal - geo.group_start(group) if step == 0 else 0
            bit = max(0, min(first, size))
            while remaining and bit < size:
                bit = first_bit(bitmap, bit, size, False)
                if bit < 0:
                    break
                limit = min(size, bit + remaining)
                used = first_bit(bitmap, bit, limit, True)
                end = limit if used < 0 else used
                length = end - bit
                self._take_blocks(group, bit, length)
                start = geo.group_start(group) + bit
                if runs and runs[-1][0] + runs[-1][1] == start:
                    runs[-1] = (runs[-1][0], runs[-1][1] + length)
                else:
                    runs.append((start, length))
                remaining -= length
                bit = end
            if not remaining:
                last_start, last_len = runs[-1]
                self._block_goal = last_start + last_len
                return runs
        raise self._full(f"needs {count} blocks but the free ones are in use this layer", count)

    def free_blocks(self, start: int, count: int) -> None:
        """Release at commit (see the module docstring)."""
        if count:
            self._pending_frees.append((start, count))

    def mark_blocks_used(self, start: int, count: int) -> None:
        """For mkfs: blocks that hold metadata from the start."""
        while count:
            group = self.geo.group_of_block(start)
            bit = start - self.geo.group_start(group)
            take = min(count, self.geo.blocks_in_group(group) - bit)
            if take <= 0:
                raise ValueError(f"block {start} lies past the end of the file system")
            self._take_blocks(group, bit, take)
            start += take
            count -= take

    def _take_blocks(self, group: int, bit: int, count: int) -> None:
        set_bits(self._block_maps[group] if group in self._block_maps else self._block_map(group), bit, count, True)
        self._free_blocks[group] -= count
        self._flags[group] &= ~BG_BLOCK_UNINIT
        self.free_blocks_total -= count
        self._dirty_block_maps.add(group)
        self._dirty_descs.add(group)

    def _block_map(self, group: int) -> bytearray:
        bitmap = self._block_maps.get(group)
        if bitmap is None:
            if self._flags[group] & BG_BLOCK_UNINIT:
                bitmap = self._uninit_block_map(group)
            else:
                bitmap = bytearray(self._device.read(self.descs[group].block_bitmap)[: self.geo.blocks_per_group // 8])
            # Bits past the end of the disk (last group) count as used.
            size = self.geo.blocks_in_group(group)
            if size < self.geo.blocks_per_group:
                set_bits(bitmap, size, self.geo.blocks_per_group - size, True)
            self._block_maps[group] = bitmap
        return bitmap

    def _uninit_block_map(self, group: int) -> bytearray:
        """What mke2fs/the kernel compute for a BLOCK_UNINIT group: its backups and any group's metadata in it."""
        geo = self.geo
        bitmap = bytearray(geo.blocks_per_group // 8)
        first = geo.group_start(group)
        if has_super(self.sb, group):
            set_bits(bitmap, 0, 1 + geo.gdt_blocks + geo.reserved_gdt_blocks, True)
        itable_blocks = geo.inodes_per_group * geo.inode_size // BLOCK_SIZE
        for desc in self.descs:
            for start, count in ((desc.block_bitmap, 1), (desc.inode_bitmap, 1), (desc.inode_table, itable_blocks)):
                lo, hi = max(start, first), min(start + count, first + geo.blocks_per_group)
                if lo < hi:
                    set_bits(bitmap, lo - first, hi - lo, True)
        return bitmap

    # -- inodes ---------------------------------------------------------------------------------

    def alloc_inode(self, directory: bool) -> int:
        geo = self.geo
        for step in range(geo.group_count):
            group = (self._inode_goal_group + step) % geo.group_count
            if self._free_inodes[group] == 0:
                continue
            bitmap = self._inode_map(group)
            bit = first_bit(bitmap, self._inode_floor.get(group, 0), geo.inodes_per_group, False)
            if bit < 0:
                continue
            _set_bit(bitmap, bit, True)
            self._inode_floor[group] = bit + 1
            self._free_inodes[group] -= 1
            if directory:
                self._used_dirs[group] += 1
            self._flags[group] &= ~BG_INODE_UNINIT
            if self._gdt_csum:
                self._itable_unused[group] = min(self._itable_unused[group], geo.inodes_per_group - bit - 1)
            self.free_inodes_total -= 1
            self._dirty_inode_maps.add(group)
            self._dirty_descs.add(group)
            self._inode_goal_group = group
            return group * geo.inodes_per_group + bit + 1
        raise self._full("no free inodes are left", 0)

    def mark_inode_used(self, ino: int, directory: bool) -> None:
        """For mkfs: the reserved inodes, root and lost+found."""
        group, bit = divmod(ino - 1, self.geo.inodes_per_group)
        if bit_is_set(self._inode_map(group), bit):
            return
        self._inode_goal_group = group
        allocated = self.alloc_inode(directory)
        if allocated != ino:
            raise AssertionError(f"mkfs expected inode {ino}, got {allocated}")

    def free_inode(self, ino: int, directory: bool) -> None:
        group, bit = divmod(ino - 1, self.geo.inodes_per_group)
        _set_bit(self._inode_map(group), bit, False)
        self._inode_floor[group] = min(self._inode_floor.get(group, 0), bit)
        self._free_inodes[group] += 1
        if directory:
            self._used_dirs[group] -= 1
        self.free_inodes_total += 1
        self._dirty_inode_maps.add(group)
        self._dirty_descs.add(group)

    def _inode_map(self, group: int) -> bytearray:
        bitmap = self._inode_maps.get(group)
        if bitmap is None:
            size = self.geo.inodes_per_group // 8
            if self._flags[group] & BG_INODE_UNINIT:
                bitmap = bytearray(size)
            else:
                bitmap = bytearray(self._device.read(self.descs[group].inode_bitmap)[:size])
            self._inode_maps[group] = bitmap
        return bitmap

    # -- commit ---------------------------------------------------------------------------------

    def commit(self) -> None:
        """Release pending frees; write changed bitmaps, descriptors and the superblock to the device."""
        for start, count in self._pending_frees:
            while count:
                group = self.geo.group_of_block(start)
                bit = start - self.geo.group_start(group)
                take = min(count, self.geo.blocks_in_group(group) - bit)
                set_bits(self._block_map(group), bit, take, False)
                self._free_blocks[group] += take
                self.free_blocks_total += take
                self._dirty_block_maps.add(group)
                self._dirty_descs.add(group)
                start += take
                count -= take
        self._pending_frees.clear()
        for group in sorted(self._dirty_block_maps):
            bitmap = self._block_maps[group]
            self._device.modify(self.descs[group].block_bitmap)[: len(bitmap)] = bitmap
        for group in sorted(self._dirty_inode_maps):
            bitmap = self._inode_maps[group]
            # e2fsck checks that the block's bytes past the group's inodes are all ones.
            self._device.replace(self.descs[group].inode_bitmap, bitmap + b"\xff" * (BLOCK_SIZE - len(bitmap)))
        for group in self._dirty_descs:
            desc = self.descs[group]
            desc.free_blocks = self._free_blocks[group]
            desc.free_inodes = self._free_inodes[group]
            desc.used_dirs = self._used_dirs[group]
            desc.set("bg_flags", self._flags[group])
            desc.itable_unused = self._itable_unused[group]
        self.sb.free_blocks_count = self.free_blocks_total
        self.sb.set("s_free_inodes_count", self.free_inodes_total)
        self.write_descriptors(sorted(self._dirty_descs), self.geo.first_data_block + 1)
        self._dirty_block_maps.clear()
        self._dirty_inode_maps.clear()
        self._dirty_descs.clear()
        self._device.modify(0)[SUPERBLOCK_OFFSET : SUPERBLOCK_OFFSET + len(self.sb.raw)] = self.sb.raw

    def touch_all_groups(self) -> None:
        """For mkfs: every descriptor is new, and every inode bitmap needs its padding written."""
        for group in range(self.geo.group_count):
            self._inode_map(group)
        self._dirty_descs.update(range(self.geo.group_count))
        self._dirty_inode_maps.update(range(self.geo.group_count))

    def write_descriptors(self, groups: list[int], table_start: int) -> None:
        size = self.geo.desc_size
        per_block = BLOCK_SIZE // size
        for group in groups:
            desc = self.descs[group]
            if self._gdt_csum:
                desc.set("bg_checksum", group_desc_checksum(self.sb.uuid, group, desc))
            block, index = divmod(group, per_block)
            self._device.modify(table_start + block)[index * size : (index + 1) * size] = desc.raw
