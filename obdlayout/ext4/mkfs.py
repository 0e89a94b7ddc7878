"""mkfs: a new ext4 file system with the parameters overlaybd's tools use (overlaybd-formats.md §6.1).

4 KiB blocks, 256-byte inodes, one inode per 16 KiB, 5 % reserved, no journal, no checksums,
features 64bit sparse_super sparse_super2 filetype dir_index ext_attr dir_nlink large_file
huge_file flex_bg extent extra_isize. Deliberate differences from photon's mkfs:
- no resize_inode: it reserves 1024 GDT blocks per backup for online growth, which an image never
  needs, and writes them in every layer that the reference tools emit;
- flex_bg groups of 16 (photon sets the flag with groups of 1): bitmaps and inode tables of 16
  groups sit together, so most groups' block bitmaps and all untouched inode tables are zeros,
  which are never written (LSMT holes read as zeros). Inode bitmaps are written: e2fsck wants
  the padding past each group's inodes set.
No clock and no random source: the UUID and hash seed are zero, as photon's mkfs leaves them.
"""

from typing import Final

from ..layers.tree import Stamp
from ..units import MiB
from .alloc import has_super
from .device import BlockDevice
from .errors import Ext4Error
from .fs import Filesystem
from .layout import (
    BLOCK_SIZE,
    COMPAT_DIR_INDEX,
    COMPAT_EXT_ATTR,
    COMPAT_SPARSE_SUPER2,
    DESC_SIZE_64BIT,
    ERRORS_CONTINUE,
    EXT4_MAGIC,
    EXTRA_ISIZE,
    FIRST_INO,
    FLAGS_SIGNED_HASH,
    HASH_HALF_MD4,
    INCOMPAT_64BIT,
    INCOMPAT_EXTENTS,
    INCOMPAT_FILETYPE,
    INCOMPAT_FLEX_BG,
    INODE_SIZE,
    LOG_BLOCK_SIZE,
    LOST_FOUND_INO,
    MOUNT_OPTS_XATTR_USER_ACL,
    RO_COMPAT_DIR_NLINK,
    RO_COMPAT_EXTRA_ISIZE,
    RO_COMPAT_HUGE_FILE,
    RO_COMPAT_LARGE_FILE,
    RO_COMPAT_SPARSE_SUPER,
    ROOT_INO,
    STATE_CLEAN,
    SUPERBLOCK_SIZE,
    GroupDesc,
    Superblock,
)
from .placement import COPY_DATA, DataPlacement

BLOCKS_PER_GROUP: Final = BLOCK_SIZE * 8
BYTES_PER_INODE: Final = 16384
RESERVED_PERCENT: Final = 5
LOG_GROUPS_PER_FLEX: Final = 4
INODES_PER_BLOCK: Final = BLOCK_SIZE // INODE_SIZE
# mke2fs drops a last group too small to be worth its overhead.
MIN_LAST_GROUP_BLOCKS: Final = 256
MIN_SIZE: Final = 8 * MiB
# photon's mkfs: lost+found made, then expanded twice.
LOST_FOUND_BLOCKS: Final = 3
ROOT_STAMP: Final = Stamp(mode=0o755, uid=0, gid=0, mtime=0)
LOST_FOUND_STAMP: Final = Stamp(mode=0o700, uid=0, gid=0, mtime=0)


def _superblock(blocks: int, groups: int, inodes_per_group: int) -> Superblock:
    sb = Superblock(bytes(SUPERBLOCK_SIZE))
    sb.set("s_feature_incompat", INCOMPAT_FILETYPE | INCOMPAT_EXTENTS | INCOMPAT_64BIT | INCOMPAT_FLEX_BG)
    sb.set("s_feature_compat", COMPAT_EXT_ATTR | COMPAT_DIR_INDEX | COMPAT_SPARSE_SUPER2)
    ro_compat = RO_COMPAT_SPARSE_SUPER | RO_COMPAT_LARGE_FILE | RO_COMPAT_HUGE_FILE | RO_COMPAT_DIR_NLINK
    sb.set("s_feature_ro_compat", ro_compat | RO_COMPAT_EXTRA_ISIZE)
    sb.set("s_inodes_count", groups * inodes_per_group)
    sb.blocks_count = blocks
    sb.r_blocks_count = blocks * RESERVED_PERCENT // 100
    sb.free_blocks_count = blocks
    sb.set("s_free_inodes_count", groups * inodes_per_group)
    sb.set("s_first_data_block", 0)
    sb.set("s_log_block_size", LOG_BLOCK_SIZE)
    sb.set("s_log_cluster_size", LOG_BLOCK_SIZE)
    sb.set("s_blocks_per_group", BLOCKS_PER_GROUP)
    sb.set("s_clusters_per_group", BLOCKS_PER_GROUP)
    sb.set("s_inodes_per_group", inodes_per_group)
    sb.set("s_max_mnt_count", -1)
    sb.set("s_magic", EXT4_MAGIC)
    sb.set("s_state", STATE_CLEAN)
    sb.set("s_errors", ERRORS_CONTINUE)
    sb.set("s_rev_level", 1)
    sb.set("s_first_ino", FIRST_INO)
    sb.set("s_inode_size", INODE_SIZE)
    sb.set("s_def_hash_version", HASH_HALF_MD4)
    sb.set("s_desc_size", DESC_SIZE_64BIT)
    sb.set("s_default_mount_opts", MOUNT_OPTS_XATTR_USER_ACL)
    sb.set("s_min_extra_isize", EXTRA_ISIZE)
    sb.set("s_want_extra_isize", EXTRA_ISIZE)
    sb.set("s_flags", FLAGS_SIGNED_HASH)
    sb.set("s_log_groups_per_flex", LOG_GROUPS_PER_FLEX)
    # sparse_super2: backups in group 1 and the last group only (photon asks for {1, last}).
    sb.set("s_backup_bgs_0", 1 if groups > 1 else 0)
    sb.set("s_backup_bgs_1", groups - 1 if groups > 2 else 0)
    return sb


def _inodes_per_group(blocks: int, groups: int) -> int:
    inodes = min(blocks * BLOCK_SIZE // BYTES_PER_INODE, 2**32 - 1)
    per_group = -(-inodes // groups)
    per_group = min(BLOCKS_PER_GROUP, -(-per_group // INODES_PER_BLOCK) * INODES_PER_BLOCK)  # whole table blocks
    if groups * per_group >= 2**32:
        per_group = (2**32 - 1) // groups // INODES_PER_BLOCK * INODES_PER_BLOCK
    return per_group


def _geometry(block_count: int) -> tuple[int, int, int]:
    """Blocks, groups and inodes per group. As mke2fs does, a last group too small to hold its own
    metadata (its superblock backup, and its bitmaps and inode table when it starts a flex group)
    with room to spare is left out."""
    blocks = block_count
    while True:
        groups = -(-blocks // BLOCKS_PER_GROUP)
        inodes_per_group = _inodes_per_group(blocks, groups)
        last = groups - 1
        last_size = blocks - last * BLOCKS_PER_GROUP
        overhead = 0
        if last in (0, 1) or (groups > 2 and last == groups - 1):  # sparse_super2 backups: 1 and the last
            overhead += 1 + -(-groups * DESC_SIZE_64BIT // BLOCK_SIZE)
        if last % (1 << LOG_GROUPS_PER_FLEX) == 0:
            overhead += 2 + inodes_per_group // INODES_PER_BLOCK
        if groups == 1 or last_size >= overhead + MIN_LAST_GROUP_BLOCKS:
            return blocks, groups, inodes_per_group
        blocks = last * BLOCKS_PER_GROUP


def mkfs(device: BlockDevice, placement: DataPlacement = COPY_DATA) -> Filesystem:
    """A new, empty file system filling the device (root 0755, lost+found 0700)."""
    if device.block_count * BLOCK_SIZE < MIN_SIZE:
        raise Ext4Error(f"a file system needs at least {MIN_SIZE // MiB} MiB")
    blocks, groups, inodes_per_group = _geometry(device.block_count)
    sb = _superblock(blocks, groups, inodes_per_group)
    itable_blocks = inodes_per_group // INODES_PER_BLOCK
    gdt_blocks = -(-groups * DESC_SIZE_64BIT // BLOCK_SIZE)

    descs = [GroupDesc(bytes(DESC_SIZE_64BIT)) for _ in range(groups)]
    flex = 1 << LOG_GROUPS_PER_FLEX
    for first in range(0, groups, flex):
        members = range(first, min(first + flex, groups))
        cursor = first * BLOCKS_PER_GROUP + (1 + gdt_blocks if has_super(sb, first) else 0)
        for group in members:
            descs[group].block_bitmap = cursor
            cursor += 1
        for group in members:
            descs[group].inode_bitmap = cursor
            cursor += 1
        for group in members:
            descs[group].inode_table = cursor
            cursor += itable_blocks
    for group, desc in enumerate(descs):
        desc.free_blocks = min(BLOCKS_PER_GROUP, blocks - group * BLOCKS_PER_GROUP)
        desc.free_inodes = inodes_per_group

    fs = Filesystem(device, sb, descs, placement)
    for group in range(groups):
        if has_super(sb, group):
            fs.alloc.mark_blocks_used(group * BLOCKS_PER_GROUP, 1 + gdt_blocks)
    for desc in descs:
        fs.alloc.mark_blocks_used(desc.block_bitmap, 1)
        fs.alloc.mark_blocks_used(desc.inode_bitmap, 1)
        fs.alloc.mark_blocks_used(desc.inode_table, itable_blocks)
    for ino in range(1, ROOT_INO):
        fs.alloc.mark_inode_used(ino, directory=False)
    fs.make_root(ROOT_STAMP)
    for ino in range(ROOT_INO + 1, LOST_FOUND_INO):
        fs.alloc.mark_inode_used(ino, directory=False)
    lost_found = fs.mkdir(ROOT_INO, b"lost+found", LOST_FOUND_STAMP)
    if lost_found != LOST_FOUND_INO:
        raise AssertionError(f"lost+found became inode {lost_found}")
    fs.reserve_directory_blocks(lost_found, LOST_FOUND_BLOCKS)
    fs.alloc.touch_all_groups()
    fs.flush()
    _write_backups(fs, gdt_blocks)
    return fs


def _write_backups(fs: Filesystem, gdt_blocks: int) -> None:
    """Superblock and descriptor copies at the start of each backup group (s_block_group_nr = group)."""
    primary_gdt = [bytes(fs.device.read(1 + i)) for i in range(gdt_blocks)]
    for group in range(1, len(fs.alloc.descs)):
        if not has_super(fs.sb, group):
            continue
        start = group * BLOCKS_PER_GROUP
        copy = Superblock(fs.sb.raw)
        copy.set("s_block_group_nr", group)
        fs.device.replace(start, bytes(copy.raw).ljust(BLOCK_SIZE, b"\0"))
        for i, data in enumerate(primary_gdt):
            fs.device.replace(start + 1 + i, data)
