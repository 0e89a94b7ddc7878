"""An ext4 file system opened on a block device, with the operations that applying a layer needs.

Inodes and directories that a layer reads are cached; those it changes are written back by
`flush`, which also lays out changed directories, then the bitmaps, descriptors and superblock.
Nothing here reads the clock or a random source: the same operations give the same blocks.
"""

import struct
from collections.abc import Mapping
from dataclasses import replace
from typing import Final

from ..layers.tree import SYMLINK_PERMISSIONS, FileContent, Stamp
from .alloc import Allocator, Geometry
from .device import BlockDevice
from .dirs import Directory
from .errors import CorruptFilesystem, Ext4Error, UnsupportedFilesystem
from .extents import Mapping as BlockMapping
from .extents import Run, build_extents, read_block_map, read_extents, split_runs, tree_blocks_needed
from .layout import (
    BLOCK_SIZE,
    DESC_SIZE_64BIT,
    DIR_NLINK_MAX,
    EXT4_MAGIC,
    FAST_SYMLINK_MAX,
    FILE_TYPE_OF_MODE,
    GOOD_OLD_INODE_SIZE,
    INCOMPAT_64BIT,
    INCOMPAT_EXTENTS,
    INCOMPAT_META_BG,
    INCOMPAT_RECOVER,
    INODE_FLAG_EXTENTS,
    INODE_FLAG_HUGE_FILE,
    INODE_FLAG_INDEX,
    INODE_FLAG_INLINE_DATA,
    LOG_BLOCK_SIZE,
    MAX_NAME_LEN,
    ROOT_INO,
    S_IFBLK,
    S_IFCHR,
    S_IFDIR,
    S_IFLNK,
    S_IFMT,
    S_IFREG,
    SECTORS_PER_BLOCK,
    SUPERBLOCK_OFFSET,
    SUPERBLOCK_SIZE,
    SUPPORTED_INCOMPAT,
    SUPPORTED_RO_COMPAT,
    GroupDesc,
    Inode,
    Superblock,
    clamp_time,
)
from .placement import COPY_DATA, DataPlacement
from .xattr import XattrError, block_refcount, layout, make_attrs

MAX_LINKS: Final = 65000
# Extents address 2^32 logical blocks: with 4 KiB blocks, 16 TiB is the largest file (ext4 docs, "Extent Tree").
MAX_FILE_SIZE: Final = (1 << 32) * BLOCK_SIZE
# Old-style device numbers fit one i_block word when major and minor are both below 256.
_OLD_DEV_LIMIT: Final = 256
# The new encoding (Linux's new_encode_dev) holds 12 bits of major and 20 of minor.
MAJOR_LIMIT: Final = 1 << 12
MINOR_LIMIT: Final = 1 << 20


def _check_name(name: bytes) -> None:
    if not name or len(name) > MAX_NAME_LEN or b"/" in name or b"\0" in name or name in (b".", b".."):
        raise Ext4Error(f"{name!r} cannot be an ext4 file name (1 to {MAX_NAME_LEN} bytes, no '/' or NUL)")


class Filesystem:
    """An ext4 file system as a layers.tree.FileTree: nodes are inode numbers. `placement` decides where
    regular files' data goes (placement.py)."""

    def __init__(
        self, device: BlockDevice, sb: Superblock, descs: list[GroupDesc], placement: DataPlacement = COPY_DATA
    ) -> None:
        self.device = device
        self.placement = placement
        self.sb = sb
        geo = Geometry(
            block_count=sb.blocks_count,
            first_data_block=sb.get("s_first_data_block"),
            blocks_per_group=sb.get("s_blocks_per_group"),
            inodes_per_group=sb.get("s_inodes_per_group"),
            inode_size=sb.get("s_inode_size"),
            desc_size=sb.desc_size,
            group_count=len(descs),
            gdt_blocks=-(-len(descs) * sb.desc_size // BLOCK_SIZE),
            reserved_gdt_blocks=sb.get("s_reserved_gdt_blocks"),
        )
        self.geo = geo
        self.alloc = Allocator(device, sb, descs, geo)
        # Read once: every inode read or written looks them up, and neither changes while a layer is applied.
        self._inodes_count = sb.get("s_inodes_count")
        self._inode_tables = [desc.inode_table for desc in descs]
        self._inodes: dict[int, Inode] = {}
        self._dirty_inodes: set[int] = set()
        self._dirs: dict[int, Directory] = {}
        self._dir_tree_blocks: dict[int, list[int]] = {}
        self.warnings: list[str] = []

    @classmethod
    def open(cls, device: BlockDevice, placement: DataPlacement = COPY_DATA) -> "Filesystem":
        """The file system the device's lower layers hold; refuses features it could not keep consistent."""
        sb = Superblock(device.read(0)[SUPERBLOCK_OFFSET : SUPERBLOCK_OFFSET + SUPERBLOCK_SIZE])
        if sb.get("s_magic") != EXT4_MAGIC:
            raise CorruptFilesystem("the lower layers hold no ext4 file system (no superblock magic)")
        if sb.get("s_log_block_size") != LOG_BLOCK_SIZE:
            raise UnsupportedFilesystem(f"block size {1024 << sb.get('s_log_block_size')}: only 4096 is supported")
        incompat = sb.get("s_feature_incompat")
        if incompat & INCOMPAT_RECOVER:
            raise UnsupportedFilesystem("the file system's journal needs recovery")
        unsupported = incompat & ~SUPPORTED_INCOMPAT | incompat & INCOMPAT_META_BG
        if unsupported:
            raise UnsupportedFilesystem(f"incompatible feature flags {unsupported:#x} are not supported")
        ro_unsupported = sb.get("s_feature_ro_compat") & ~SUPPORTED_RO_COMPAT
        if ro_unsupported:
            raise UnsupportedFilesystem(
                f"read-only-compatible feature flags {ro_unsupported:#x} (e.g. metadata_csum) are not supported"
            )
        inode_size = sb.get("s_inode_size")
        if inode_size < GOOD_OLD_INODE_SIZE or inode_size & (inode_size - 1) or inode_size > BLOCK_SIZE:
            raise CorruptFilesystem(f"inode size {inode_size} is invalid")
        if sb.blocks_count > device.block_count:
            raise CorruptFilesystem(
                f"the file system has {sb.blocks_count} blocks, the virtual disk only {device.block_count}"
            )
        per_group = sb.get("s_blocks_per_group")
        if per_group != BLOCK_SIZE * 8 or not sb.get("s_inodes_per_group"):
            raise UnsupportedFilesystem(f"{per_group} blocks per group: only {BLOCK_SIZE * 8} is supported")
        groups = -(-(sb.blocks_count - sb.get("s_first_data_block")) // per_group)
        if sb.get("s_inodes_count") > groups * sb.get("s_inodes_per_group"):
            raise CorruptFilesystem(
                f"{sb.get('s_inodes_count')} inodes do not fit {groups} groups of {sb.get('s_inodes_per_group')}"
            )
        size = sb.desc_size
        if incompat & INCOMPAT_64BIT and size < DESC_SIZE_64BIT:
            raise CorruptFilesystem(f"descriptor size {size} is too small for a 64bit file system")
        table = sb.get("s_first_data_block") + 1
        descs = []
        for group in range(groups):
            block, index = divmod(group * size, BLOCK_SIZE)
            descs.append(GroupDesc(device.read(table + block)[index : index + size]))
        if not incompat & INCOMPAT_EXTENTS:
            # New files are extent-mapped; like `tune2fs -O extent`, enabling the feature keeps the
            # old block-mapped files valid (an ext2/ext3 lower becomes an ext4 one).
            sb.set("s_feature_incompat", incompat | INCOMPAT_EXTENTS)
        return cls(device, sb, descs, placement)

    # -- inodes ---------------------------------------------------------------------------------

    def _location(self, ino: int) -> tuple[int, int]:
        if not 1 <= ino <= self._inodes_count:
            raise CorruptFilesystem(f"inode number {ino} is out of range")
        group, index = divmod(ino - 1, self.geo.inodes_per_group)
        if group >= len(self._inode_tables):
            raise CorruptFilesystem(f"inode {ino} lies in group {group}; the file system has {len(self._inode_tables)}")
        block, offset = divmod(index * self.geo.inode_size, BLOCK_SIZE)
        return self._inode_tables[group] + block, offset

    def inode(self, ino: int) -> Inode:
        """The inode (cached); call `touch` before changing it."""
        inode = self._inodes.get(ino)
        if inode is None:
            block, offset = self._location(ino)
            inode = Inode(self.device.read(block)[offset : offset + self.geo.inode_size])
            self._inodes[ino] = inode
        return inode

    def touch(self, ino: int) -> Inode:
        self._dirty_inodes.add(ino)
        return self.inode(ino)

    def _check_time(self, stamp: Stamp) -> None:
        """The kernel clamps times outside ext4's range; so do we (Inode), saying so."""
        seconds, _ = clamp_time(stamp.mtime, stamp.mtime_ns, self.geo.inode_size > GOOD_OLD_INODE_SIZE)
        if seconds != stamp.mtime:
            self.warnings.append(f"mtime {stamp.mtime} is outside ext4's range: {seconds} is stored")

    def _new_inode(self, file_type: int, stamp: Stamp, directory: bool = False) -> tuple[int, Inode]:
        self._check_time(stamp)
        ino = self.alloc.alloc_inode(directory)
        mode = file_type | (stamp.mode & 0o7777)
        inode = Inode.new(self.geo.inode_size, mode, stamp.uid, stamp.gid, stamp.mtime, stamp.mtime_ns)
        self._inodes[ino] = inode
        self._dirty_inodes.add(ino)
        return ino, inode

    @property
    def root(self) -> int:
        return ROOT_INO

    def kind(self, ino: int) -> int:
        return self.inode(ino).file_type

    def set_metadata(self, ino: int, stamp: Stamp) -> None:
        """New owner, permissions and times for an existing inode (its file type is kept)."""
        self._check_time(stamp)
        inode = self.touch(ino)
        inode.set("i_mode", inode.file_type | (stamp.mode & 0o7777))
        inode.uid = stamp.uid
        inode.gid = stamp.gid
        inode.set_times(stamp.mtime, stamp.mtime_ns)

    def block_mapping(self, inode: Inode, where: str) -> BlockMapping:
        file_type = inode.file_type
        fast_symlink = file_type == S_IFLNK and 0 < inode.size <= FAST_SYMLINK_MAX
        if file_type not in (S_IFREG, S_IFDIR, S_IFLNK) or fast_symlink:
            return BlockMapping([], [])
        if inode.flags & INODE_FLAG_INLINE_DATA:
            raise UnsupportedFilesystem(f"{where} stores its data inline (inline_data)")
        if inode.flags & INODE_FLAG_EXTENTS:
            return read_extents(inode.i_block, self.device.read, where)
        return read_block_map(inode.i_block, self.device.read)

    # -- directories ------------------------------------------------------------------------------

    def directory(self, ino: int) -> Directory:
        directory = self._dirs.get(ino)
        if directory is None:
            inode = self.inode(ino)
            if inode.file_type != S_IFDIR:
                raise Ext4Error(f"inode {ino} is not a directory")
            mapping = self.block_mapping(inode, f"directory inode {ino}")
            blocks = [run.physical + i for run in sorted(mapping.runs) for i in range(run.length)]
            directory = Directory.parse(ino, blocks, map(self.device.read, blocks), f"directory inode {ino}")
            self._dirs[ino] = directory
            self._dir_tree_blocks[ino] = mapping.tree_blocks
        return directory

    def reserve_directory_blocks(self, ino: int, count: int) -> None:
        directory = self.directory(ino)
        directory.min_blocks = max(directory.min_blocks, count)
        directory.dirty = True

    def lookup(self, dir_ino: int, name: bytes) -> int | None:
        entry = self.directory(dir_ino).entries.get(name)
        return entry[0] if entry else None

    def children(self, dir_ino: int) -> list[bytes]:
        return list(self.directory(dir_ino).entries)

    def _add_entry(self, dir_ino: int, name: bytes, ino: int, mode: int) -> None:
        _check_name(name)
        directory = self.directory(dir_ino)
        if name in directory.entries:
            raise Ext4Error(f"{name!r} already exists in directory inode {dir_ino}")
        directory.entries[name] = (ino, FILE_TYPE_OF_MODE[mode & S_IFMT])
        directory.dirty = True

    # -- creating -------------------------------------------------------------------------------

    def mkdir(self, parent: int, name: bytes, stamp: Stamp) -> int:
        ino, inode = self._new_inode(S_IFDIR, stamp, directory=True)
        self._new_directory(ino, inode, parent)
        self._add_entry(parent, name, ino, S_IFDIR)
        return ino

    def make_root(self, stamp: Stamp) -> None:
        """mkfs: the root directory, its own parent."""
        self.alloc.mark_inode_used(ROOT_INO, directory=True)
        inode = Inode.new(self.geo.inode_size, S_IFDIR | stamp.mode, stamp.uid, stamp.gid, stamp.mtime, stamp.mtime_ns)
        self._inodes[ROOT_INO] = inode
        self._dirty_inodes.add(ROOT_INO)
        self._new_directory(ROOT_INO, inode, ROOT_INO)

    def _new_directory(self, ino: int, inode: Inode, parent: int) -> None:
        """An empty directory; its blocks are laid out by `flush`."""
        inode.links = 2
        inode.flags = INODE_FLAG_EXTENTS
        directory = Directory(ino, parent, [])
        directory.dirty = True
        self._dirs[ino] = directory
        self._dir_tree_blocks[ino] = []

    def create_file(self, parent: int, name: bytes, stamp: Stamp, content: FileContent) -> int:
        """A regular file; blocks are allocated where it has data (a sparse file's holes stay holes, never
        read), and the placement strategy fills them."""
        if content.size > MAX_FILE_SIZE:
            raise Ext4Error(f"a file of {content.size} bytes; ext4 holds files of at most {MAX_FILE_SIZE} (16 TiB)")
        ino, inode = self._new_inode(S_IFREG, stamp)
        runs: list[Run] = []
        for first, count in _block_spans(content.size, content.regions):
            logical = first
            for start, length in self.alloc.alloc_blocks(count):
                runs.append(Run(logical, start, length))
                logical += length
        self.placement.place(self.device, runs, content)
        self._map_blocks(inode, runs)
        inode.size = content.size
        self._add_entry(parent, name, ino, S_IFREG)
        return ino

    def symlink_target(self, ino: int) -> bytes:
        inode = self.inode(ino)
        size = inode.size
        if size <= FAST_SYMLINK_MAX:
            return inode.i_block[:size]
        mapping = self.block_mapping(inode, f"symlink inode {ino}")
        if not mapping.runs or size >= BLOCK_SIZE:
            raise CorruptFilesystem(f"symlink inode {ino} has no target block")
        return bytes(self.device.read(mapping.runs[0].physical)[:size])

    def symlink(self, parent: int, name: bytes, target: bytes, stamp: Stamp) -> int:
        if not target or len(target) >= BLOCK_SIZE or b"\0" in target:
            raise Ext4Error(f"symlink target of {len(target)} bytes cannot be stored (1 to {BLOCK_SIZE - 1}, no NUL)")
        ino, inode = self._new_inode(S_IFLNK, replace(stamp, mode=SYMLINK_PERMISSIONS))
        if len(target) <= FAST_SYMLINK_MAX:
            inode.i_block = target
        else:
            ((block, _),) = self.alloc.alloc_blocks(1)
            # Kept as a metadata block: later entries of this layer may walk through the link.
            self.device.replace(block, target.ljust(BLOCK_SIZE, b"\0"))
            self._map_blocks(inode, [Run(0, block, 1)])
        inode.size = len(target)
        self._add_entry(parent, name, ino, S_IFLNK)
        return ino

    def mknod(self, parent: int, name: bytes, file_type: int, stamp: Stamp, major: int = 0, minor: int = 0) -> int:
        """A character or block device, FIFO or socket."""
        if file_type in (S_IFCHR, S_IFBLK) and not (0 <= major < MAJOR_LIMIT and 0 <= minor < MINOR_LIMIT):
            raise Ext4Error(f"device {major}:{minor} does not fit ext4 (major below {MAJOR_LIMIT}, minor below 2^20)")
        ino, inode = self._new_inode(file_type, stamp)
        if file_type in (S_IFCHR, S_IFBLK):
            if major < _OLD_DEV_LIMIT and minor < _OLD_DEV_LIMIT:
                inode.i_block = struct.pack("<I", major << 8 | minor)
            else:
                new = (minor & 0xFF) | (major & 0xFFF) << 8 | (minor & ~0xFF) << 12
                inode.i_block = struct.pack("<II", 0, new)
        self._add_entry(parent, name, ino, file_type)
        return ino

    def link(self, parent: int, name: bytes, target: int) -> None:
        inode = self.touch(target)
        if inode.file_type == S_IFDIR:
            raise Ext4Error("a hard link cannot point at a directory")
        if inode.links >= MAX_LINKS:
            raise Ext4Error(f"inode {target} already has {inode.links} links")
        inode.links += 1
        self._add_entry(parent, name, target, inode.file_type)

    def _alloc_block_list(self, count: int) -> list[int]:
        runs = self.alloc.alloc_blocks(count) if count else []
        return [start + i for start, length in runs for i in range(length)]

    def _map_blocks(self, inode: Inode, runs: list[Run]) -> list[int]:
        """Point the inode at `runs` through an extent tree; returns the tree blocks it allocated."""
        extents = split_runs(runs)
        tree = self._alloc_block_list(tree_blocks_needed(len(extents)))
        root, nodes = build_extents(extents, tree)
        for block, data in nodes:
            self.device.replace(block, data)
        inode.i_block = root
        inode.flags = (inode.flags | INODE_FLAG_EXTENTS) & ~(INODE_FLAG_INDEX | INODE_FLAG_HUGE_FILE)
        data_blocks = sum(r.length for r in extents)
        acl_blocks = 1 if inode.file_acl else 0
        inode.blocks_512 = (data_blocks + len(tree) + acl_blocks) * SECTORS_PER_BLOCK
        return tree

    # -- xattrs ---------------------------------------------------------------------------------

    def set_xattrs(self, ino: int, xattrs: Mapping[str, bytes]) -> None:
        """Replace the inode's extended attributes. Names ext4 cannot store are skipped with a warning."""
        inode = self.touch(ino)
        self._drop_xattr_block(inode)
        extra = inode.get("i_extra_isize") if self.geo.inode_size > GOOD_OLD_INODE_SIZE else 0
        extra_end = GOOD_OLD_INODE_SIZE + extra
        inode.raw[extra_end:] = bytes(len(inode.raw) - extra_end)
        if not xattrs:
            return
        try:
            attrs, skipped = make_attrs(xattrs)
            area, block = layout(attrs, len(inode.raw) - extra_end)
        except XattrError as exc:
            raise Ext4Error(str(exc)) from None
        self.warnings.extend(f"xattr {name!r} skipped: ext4 has no such namespace" for name in skipped)
        inode.raw[extra_end : extra_end + len(area)] = area
        if block is not None:
            ((where, _),) = self.alloc.alloc_blocks(1)
            self.device.replace(where, block)
            inode.file_acl = where
            inode.blocks_512 += SECTORS_PER_BLOCK

    def _drop_xattr_block(self, inode: Inode) -> None:
        block = inode.file_acl
        if not block:
            return
        refcount = block_refcount(self.device.read(block))
        if refcount is not None and refcount > 1:
            struct.pack_into("<I", self.device.modify(block), 4, refcount - 1)
        else:
            self.alloc.free_blocks(block, 1)
        inode.file_acl = 0
        inode.blocks_512 -= SECTORS_PER_BLOCK

    # -- removing -------------------------------------------------------------------------------

    def remove(self, parent: int, name: bytes) -> None:
        """Unlink `name`; a directory goes with everything under it."""
        directory = self.directory(parent)
        ino, _ = directory.entries.pop(name)
        directory.dirty = True
        pending = [ino]
        while pending:
            ino = pending.pop()
            inode = self.touch(ino)
            if inode.file_type == S_IFDIR:
                child_dir = self.directory(ino)
                for child in reversed(child_dir.entries):
                    pending.append(child_dir.entries[child][0])
                self._free_inode(ino, inode, directory=True)
                continue
            inode.links -= 1
            if inode.links <= 0:
                self._free_inode(ino, inode, directory=False)

    def _free_inode(self, ino: int, inode: Inode, directory: bool) -> None:
        where = f"inode {ino}"
        if directory:
            for block in self._dirs.pop(ino).blocks + self._dir_tree_blocks.pop(ino):
                self.alloc.free_blocks(block, 1)
        else:
            mapping = self.block_mapping(inode, where)
            for run in mapping.runs:
                self.alloc.free_blocks(run.physical, run.length)
            for block in mapping.tree_blocks:
                self.alloc.free_blocks(block, 1)
        self._drop_xattr_block(inode)
        self.alloc.free_inode(ino, directory)
        # A zeroed inode (mode 0) is what e2fsck expects of a free one.
        self._inodes[ino] = Inode(bytes(self.geo.inode_size))

    # -- flush ----------------------------------------------------------------------------------

    def flush(self) -> None:
        """Write every change into the device's metadata blocks."""
        for ino in sorted(ino for ino, d in self._dirs.items() if d.dirty):
            self._write_directory(self._dirs[ino])
        for ino in sorted(self._dirty_inodes):
            block, offset = self._location(ino)
            self.device.modify(block)[offset : offset + self.geo.inode_size] = self._inodes[ino].raw
        self._dirty_inodes.clear()
        self.alloc.commit()

    def _write_directory(self, directory: Directory) -> None:
        contents = directory.layout()
        old = directory.blocks
        blocks = old[: len(contents)] + self._alloc_block_list(max(0, len(contents) - len(old)))
        for block in old[len(contents) :] + self._dir_tree_blocks[directory.ino]:
            self.alloc.free_blocks(block, 1)
        for block, data in zip(blocks, contents, strict=True):
            self.device.replace(block, data)
        inode = self.touch(directory.ino)
        self._dir_tree_blocks[directory.ino] = self._map_blocks(inode, [Run(i, b, 1) for i, b in enumerate(blocks)])
        inode.size = len(blocks) * BLOCK_SIZE
        links = 2 + directory.subdirectories()
        # dir_nlink: past the limit the count is 1, meaning "many" (the kernel's ext4_inc_count).
        inode.links = 1 if links > DIR_NLINK_MAX else links
        directory.blocks = blocks
        directory.dirty = False


def _block_spans(size: int, data_ranges: list[tuple[int, int]] | None) -> list[tuple[int, int]]:
    """(first block, block count) of the blocks that hold data, merged and in order."""
    if data_ranges is None:
        return [(0, -(-size // BLOCK_SIZE))] if size else []
    spans: list[tuple[int, int]] = []
    for offset, length in sorted(data_ranges):
        if length <= 0:
            continue
        first, end = offset // BLOCK_SIZE, -(-(offset + length) // BLOCK_SIZE)
        if spans and first <= spans[-1][0] + spans[-1][1]:
            last_first, last_count = spans[-1]
            spans[-1] = (last_first, max(last_count, end - last_first))
        else:
            spans.append((first, end - first))
    return spans
