"""Read-only access to an ext4 file system: file data, xattrs, device numbers, usage, and a tree walk.

For inspecting images, never for changing them. `Filesystem` keeps every inode and directory it reads,
which applying a layer needs; here nothing is kept beyond the device's bounded block cache, so walking a
tree of any size keeps memory flat. Layouts: kernel ext4 documentation ("Extended Attributes", "Index
Nodes" for device numbers), and the kernel's old/new_decode_dev.
"""

import struct
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Final

from ..treewalk import walk_tree
from ..units import STREAM_CHUNK
from .device import BlockDevice, LowerRead
from .dirs import Directory
from .errors import CorruptFilesystem
from .fs import MAX_FILE_SIZE, Filesystem
from .layout import (
    BLOCK_SIZE,
    COMPAT_HAS_JOURNAL,
    EXT4_MAGIC,
    GOOD_OLD_INODE_SIZE,
    INCOMPAT_64BIT,
    INCOMPAT_EXTENTS,
    INCOMPAT_FLEX_BG,
    ROOT_INO,
    SUPERBLOCK_OFFSET,
    SUPERBLOCK_SIZE,
    GroupDesc,
    Inode,
    Superblock,
)
from .placement import COPY_DATA, DataPlacement

# The writer's tables of xattr name indexes and ACL forms (xattr.py), read here in the other direction.
from .xattr import (
    BLOCK_HEADER,
    ENTRY,
    MAGIC,
    XATTR_MAGIC,
    XattrError,
    index_prefix,
    value_from_disk,
)

_ZEROS: Final = bytes(STREAM_CHUNK)
_EROFS_MAGIC: Final = 0xE0F5E1E2  # at byte 1024 of an erofs image, like ext4's superblock


class ImageFilesystem(Filesystem):
    """An ext4 file system opened for reading only: nothing read is cached beyond the device's blocks."""

    def __init__(
        self, device: BlockDevice, sb: Superblock, descs: list[GroupDesc], placement: DataPlacement = COPY_DATA
    ) -> None:
        super().__init__(device, sb, descs, placement)
        # Reading file data block by block through the device's cache would evict the metadata;
        # `open_image` points this at the disk itself.
        self.read_disk: LowerRead = self._read_through_device

    def _read_through_device(self, offset: int, length: int) -> bytes:
        first, last = offset // BLOCK_SIZE, (offset + length - 1) // BLOCK_SIZE
        data = b"".join(self.device.read(b) for b in range(first, last + 1))
        start = offset - first * BLOCK_SIZE
        return data[start : start + length]

    def inode(self, ino: int) -> Inode:
        block, offset = self._location(ino)
        return Inode(self.device.read(block)[offset : offset + self.geo.inode_size])

    def directory(self, ino: int) -> Directory:
        self._dirs.clear()  # parse afresh each time; keep none
        self._dir_tree_blocks.clear()
        return super().directory(ino)

    def entries(self, ino: int) -> dict[bytes, int]:
        """A directory's entries (without "." and ".."), name to inode number."""
        return {name: child for name, (child, _) in self.directory(ino).entries.items()}

    def iter_data(self, inode: Inode, where: str) -> Iterator[bytes]:
        """A regular file's bytes, in order, in pieces of at most STREAM_CHUNK; holes read as zeros."""
        size = inode.size
        if size > MAX_FILE_SIZE:
            raise CorruptFilesystem(f"{where}: size {size} is more than an ext4 file can have")
        # Unwritten (preallocated) extents read as zeros, like holes.
        runs = sorted(run for run in self.block_mapping(inode, where).runs if not run.unwritten)
        pos = 0
        for run in runs:
            start = max(run.logical * BLOCK_SIZE, pos)  # a crafted overlap is read once
            end = min(size, (run.logical + run.length) * BLOCK_SIZE)
            if start >= end:
                continue
            if run.physical + run.length > self.device.block_count:
                raise CorruptFilesystem(f"{where}: data extent at block {run.physical} lies outside the disk")
            yield from _zeros(start - pos)
            disk = run.physical * BLOCK_SIZE - run.logical * BLOCK_SIZE
            for offset in range(start, end, STREAM_CHUNK):
                yield self.read_disk(disk + offset, min(STREAM_CHUNK, end - offset))
            pos = end
        yield from _zeros(size - pos)

    def xattrs(self, inode: Inode, where: str) -> dict[str, bytes]:
        """Extended attributes as the kernel lists them: in-inode ones, then the attribute block's.

        POSIX ACLs come back in the form tar and getxattr carry; attributes of a name index the
        kernel does not know are left out, as it leaves them out of listxattr.
        """
        found: dict[str, bytes] = {}
        raw = inode.raw
        if len(raw) > GOOD_OLD_INODE_SIZE:
            start = GOOD_OLD_INODE_SIZE + inode.get("i_extra_isize")
            if start + MAGIC.size <= len(raw) and MAGIC.unpack_from(raw, start)[0] == XATTR_MAGIC:
                area = bytes(raw[start + MAGIC.size :])
                _parse_entries(area, 0, found, f"{where} (in-inode xattrs)")
        block = inode.file_acl
        if block:
            if block >= self.device.block_count:
                raise CorruptFilesystem(f"{where}: xattr block {block} lies outside the disk")
            data = bytes(self.device.read(block))
            if BLOCK_HEADER.unpack_from(data, 0)[0] != XATTR_MAGIC:
                raise CorruptFilesystem(f"{where}: xattr block {block} has no magic")
            _parse_entries(data, BLOCK_HEADER.size, found, f"{where} (xattr block {block})")
        return found

    def device_numbers(self, inode: Inode) -> tuple[int, int]:
        return device_numbers(inode)

    def walk(self, start: int = ROOT_INO) -> Iterator["Entry"]:
        """Every entry under `start` (itself first, path ()), depth first, names in byte order.

        A directory met twice (a loop a crafted image may hold) is a CorruptFilesystem.
        """
        for path, ino, inode in walk_tree(start, self.inode, self.entries, CorruptFilesystem):
            yield Entry(path, ino, inode)


@dataclass(frozen=True)
class Entry:
    path: tuple[bytes, ...]  # names from the root; () is the root itself
    ino: int
    inode: Inode


@dataclass(frozen=True)
class Usage:
    inodes_used: int  # as e2fsck counts "files": the reserved inodes included
    inodes_total: int
    bytes_used: int  # allocated blocks, metadata included
    bytes_total: int


def open_image(read: LowerRead, virtual_size: int) -> ImageFilesystem:
    """The ext4 file system on a virtual disk read by `read(offset, length)`."""
    fs = ImageFilesystem.open(BlockDevice(virtual_size // BLOCK_SIZE, None, read))
    assert isinstance(fs, ImageFilesystem)
    fs.read_disk = read
    return fs


def fs_type_at(read: LowerRead) -> str:
    """What kind of file system a disk starts with: ext2/3/4, erofs, or "unknown"."""
    head = read(SUPERBLOCK_OFFSET, SUPERBLOCK_SIZE)
    sb = Superblock(head)
    if sb.get("s_magic") == EXT4_MAGIC:
        if sb.get("s_feature_incompat") & (INCOMPAT_EXTENTS | INCOMPAT_64BIT | INCOMPAT_FLEX_BG):
            return "ext4"
        return "ext3" if sb.get("s_feature_compat") & COMPAT_HAS_JOURNAL else "ext2"
    if struct.unpack_from("<I", head, 0)[0] == _EROFS_MAGIC:
        return "erofs"
    return "unknown"


def usage(fs: Filesystem) -> Usage:
    """Counts from the group descriptors, which the kernel and e2fsck keep exact (the superblock's may lag)."""
    free_inodes = sum(d.free_inodes for d in fs.alloc.descs)
    free_blocks = sum(d.free_blocks for d in fs.alloc.descs)
    inodes = fs.sb.get("s_inodes_count")
    return Usage(
        inodes_used=inodes - free_inodes,
        inodes_total=inodes,
        bytes_used=(fs.sb.blocks_count - free_blocks) * BLOCK_SIZE,
        bytes_total=fs.sb.blocks_count * BLOCK_SIZE,
    )


def device_numbers(inode: Inode) -> tuple[int, int]:
    """(major, minor) of a character or block device: old-style in i_block[0] if set, else new-style in i_block[1]."""
    old, new = struct.unpack_from("<II", inode.i_block)
    if old:
        return (old >> 8) & 0xFF, old & 0xFF
    return (new & 0xFFF00) >> 8, (new & 0xFF) | ((new >> 12) & 0xFFF00)


def _parse_entries(area: bytes, first: int, found: dict[str, bytes], where: str) -> None:
    """Entries from `first` until a zero word; value offsets count from the area's start (for the in-inode
    area, which begins after its magic, that is its first entry; for a block, the block's start)."""
    pos = first
    while pos + 4 <= len(area) and area[pos : pos + 4] != b"\0\0\0\0":
        if pos + ENTRY.size > len(area):
            raise CorruptFilesystem(f"{where}: entry at {pos} runs past the end")
        name_len, index, value_offs, value_inum, value_size, _ = ENTRY.unpack_from(area, pos)
        name = area[pos + ENTRY.size : pos + ENTRY.size + name_len]
        if len(name) != name_len:
            raise CorruptFilesystem(f"{where}: entry at {pos} has a name past the end")
        if value_inum:
            raise CorruptFilesystem(f"{where}: value of {name!r} lives in inode {value_inum} (ea_inode)")
        start = value_offs
        value = area[start : start + value_size]
        if len(value) != value_size:
            raise CorruptFilesystem(f"{where}: value of {name!r} runs past the end")
        prefix = index_prefix(index)
        if prefix is not None:
            full = prefix + name.decode("utf-8", "surrogateescape")
            try:
                found[full] = value_from_disk(index, value)
            except XattrError as exc:
                raise CorruptFilesystem(f"{where}: {full}: {exc}") from None
        pos += (ENTRY.size + name_len + 3) & ~3


def _zeros(count: int) -> Iterator[bytes]:
    while count > 0:
        take = min(count, STREAM_CHUNK)
        yield _ZEROS[:take]
        count -= take
