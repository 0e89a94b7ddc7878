"""Read-only access to an EROFS image on a virtual disk: inodes, directories, file data, xattrs, a tree walk.

What the writer needs of the layers below (their superblock, directories and inodes), and what inspecting
an image needs. Every structure read is checked against the rules the kernel and fsck.erofs enforce
(erofs-format.md §10), so a crafted image gives a CorruptErofs, never another exception. Supported: what
TurboOCI images hold, FLAT_PLAIN and FLAT_INLINE data, inline xattrs (erofs-format.md §4, §7.1); compressed
and chunk-based files and shared xattrs are refused by name.
"""

import stat
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import ClassVar, Final

from ..treewalk import walk_tree
from ..units import STREAM_CHUNK
from .errors import CorruptErofs
from .layout import (
    BLOCK_SIZE,
    BLOCK_SIZE_BITS,
    COMPACT_INODE,
    DIRENT,
    EXTENDED_INODE,
    FLAT_INLINE,
    FLAT_PLAIN,
    FORMAT_EXTENDED,
    INODE_HEAD,
    KNOWN_FORMAT_BITS,
    LAYOUT_SHIFT,
    MAGIC,
    MAX_FILE_TYPE,
    MAX_NAME_LEN,
    SLOT_SIZE,
    SUPERBLOCK,
    SUPERBLOCK_OFFSET,
    XATTR_ENTRY,
    XATTR_HEADER,
    XATTR_PREFIXES,
    XATTR_WHOLE_NAMES,
    decode_rdev,
    xattr_area_size,
)

Read = Callable[[int, int], bytes]  # (offset, length) -> bytes of the virtual disk
_KINDS: Final = {stat.S_IFREG, stat.S_IFDIR, stat.S_IFLNK, stat.S_IFCHR, stat.S_IFBLK, stat.S_IFIFO, stat.S_IFSOCK}


@dataclass(frozen=True, slots=True)
class Superblock:
    root_nid: int
    inos: int
    blocks: int
    build_time: tuple[int, int]

    @classmethod
    def parse(cls, raw: bytes) -> "Superblock":
        if len(raw) < SUPERBLOCK.size:
            raise CorruptErofs("the disk is too small to hold an EROFS superblock")
        fields = SUPERBLOCK.unpack_from(raw)
        magic, _, _, blkszbits, extslots, root_nid, inos, build_time, build_nsec, blocks, meta_blkaddr = fields[:11]
        xattr_blkaddr, incompat, extra_devices, dirblkbits = fields[11], fields[14], fields[16], fields[18]
        if magic != MAGIC:
            raise CorruptErofs(f"no EROFS superblock at byte {SUPERBLOCK_OFFSET}")
        if blkszbits != BLOCK_SIZE_BITS or dirblkbits:
            raise CorruptErofs(f"blocks of 2^{blkszbits} bytes; only {BLOCK_SIZE}-byte blocks are supported")
        if incompat or extra_devices or extslots or meta_blkaddr or xattr_blkaddr:
            raise CorruptErofs("the image uses EROFS features TurboOCI images do not (compression, devices, …)")
        return cls(root_nid, inos, blocks, (build_time, build_nsec))


@dataclass(frozen=True, slots=True)
class ErofsInode:
    nid: int
    extended: bool
    layout: int
    xattr_size: int
    mode: int
    links: int
    size: int
    raw_blkaddr: int  # the first data block, or the rdev of a device
    ino: int
    uid: int
    gid: int
    mtime: tuple[int, int]  # seconds, nanoseconds

    @property
    def file_type(self) -> int:
        return stat.S_IFMT(self.mode)

    @property
    def inode_size(self) -> int:
        return EXTENDED_INODE.size if self.extended else COMPACT_INODE.size

    @property
    def inline_offset(self) -> int:
        """Where a FLAT_INLINE inode's tail starts: right after the inode and its xattrs (§3.6)."""
        return self.nid * SLOT_SIZE + self.inode_size + self.xattr_size


@dataclass(frozen=True, slots=True)
class Entry:
    path: tuple[bytes, ...]  # names from the root; () is the root itself
    ino: int  # the nid
    inode: ErofsInode


class ErofsImage:
    """The EROFS file system on a disk of `size` bytes read by `read(offset, length)`."""

    type: ClassVar[str] = "erofs"

    def __init__(self, read: Read, size: int) -> None:
        self.read = read
        self.disk_size = size
        self.sb = Superblock.parse(read(SUPERBLOCK_OFFSET, SUPERBLOCK.size))
        if self.sb.blocks * BLOCK_SIZE > size:
            raise CorruptErofs(f"the superblock counts {self.sb.blocks} blocks, more than the {size}-byte disk")
        root = self.inode(self.sb.root_nid)
        if root.file_type != stat.S_IFDIR:
            raise CorruptErofs(f"the root inode (nid {self.sb.root_nid}) is not a directory")

    @property
    def root(self) -> int:
        return self.sb.root_nid

    def _read(self, offset: int, length: int, what: str) -> bytes:
        if offset < 0 or offset + length > self.disk_size:
            raise CorruptErofs(f"{what} at byte {offset} lies outside the disk")
        return self.read(offset, length)

    def inode(self, nid: int) -> ErofsInode:
        where = f"inode {nid}"
        offset = nid * SLOT_SIZE
        head = self._read(offset, COMPACT_INODE.size, where)
        i_format, icount = INODE_HEAD.unpack_from(head)
        if i_format & ~KNOWN_FORMAT_BITS:
            raise CorruptErofs(f"{where}: unknown format bits {i_format:#x}")
        layout = i_format >> LAYOUT_SHIFT
        if layout not in (FLAT_PLAIN, FLAT_INLINE):
            raise CorruptErofs(f"{where}: data layout {layout} (compressed or chunk-based) is not supported")
        xattr_size = xattr_area_size(icount)
        if xattr_size == XATTR_HEADER.size:
            raise CorruptErofs(f"{where}: an xattr area of only a header")
        if i_format & FORMAT_EXTENDED:
            raw = self._read(offset, EXTENDED_INODE.size, where)
            _, _, mode, size, i_u, ino, uid, gid, mtime, nsec, nlink = EXTENDED_INODE.unpack_from(raw)
            if nsec >= 1_000_000_000:
                raise CorruptErofs(f"{where}: {nsec} nanoseconds")
            inode = ErofsInode(nid, True, layout, xattr_size, mode, nlink, size, i_u, ino, uid, gid, (mtime, nsec))
        else:
            _, _, mode, nlink, size, i_u, ino, uid, gid = COMPACT_INODE.unpack_from(head)
            mtime = self.sb.build_time
            inode = ErofsInode(nid, False, layout, xattr_size, mode, nlink, size, i_u, ino, uid, gid, mtime)
        if stat.S_IFMT(mode) not in _KINDS:
            raise CorruptErofs(f"{where}: bogus mode {mode:#o}")
        if size > self.disk_size and inode.file_type in (stat.S_IFREG, stat.S_IFDIR, stat.S_IFLNK):
            raise CorruptErofs(f"{where}: size {size} is more than the disk")
        if layout == FLAT_INLINE:
            tail = size % BLOCK_SIZE
            if not tail or inode.inline_offset % BLOCK_SIZE + tail > BLOCK_SIZE:
                raise CorruptErofs(f"{where}: inline data across blocks")
        return inode

    def content(self, inode: ErofsInode, offset: int, length: int) -> bytes:
        """Bytes [offset, offset+length) of a file's, directory's or symlink's contents (within its size)."""
        length = max(0, min(length, inode.size - offset))
        if not length:
            return b""
        full = inode.size if inode.layout == FLAT_PLAIN else inode.size - inode.size % BLOCK_SIZE
        parts = []
        if offset < full:
            take = min(length, full - offset)
            if inode.raw_blkaddr * BLOCK_SIZE + full > self.disk_size:
                raise CorruptErofs(f"inode {inode.nid}: data blocks from {inode.raw_blkaddr} lie outside the disk")
            parts.append(self._read(inode.raw_blkaddr * BLOCK_SIZE + offset, take, f"inode {inode.nid} data"))
            offset, length = offset + take, length - take
        if length:
            parts.append(self._read(inode.inline_offset + offset - full, length, f"inode {inode.nid} inline data"))
        return b"".join(parts)

    def iter_data(self, inode: ErofsInode, where: str) -> Iterator[bytes]:
        """A regular file's bytes, in order, in pieces of at most STREAM_CHUNK."""
        _ = where  # the errors name the inode
        for offset in range(0, inode.size, STREAM_CHUNK):
            yield self.content(inode, offset, STREAM_CHUNK)

    def symlink_target(self, nid: int) -> bytes:
        inode = self.inode(nid)
        if inode.size > 65536:
            raise CorruptErofs(f"inode {nid}: a symlink of {inode.size} bytes")
        return self.content(inode, 0, inode.size)

    def device_numbers(self, inode: ErofsInode) -> tuple[int, int]:
        return decode_rdev(inode.raw_blkaddr)

    def dirents(self, inode: ErofsInode) -> list[tuple[bytes, int, int]]:
        """A directory's entries, "." and ".." included: (name, nid, file type), checked as fsck checks them."""
        where = f"directory inode {inode.nid}"
        found: list[tuple[bytes, int, int]] = []
        for start in range(0, inode.size, BLOCK_SIZE):
            entries = dirent_block(self.content(inode, start, BLOCK_SIZE), where)
            if found and entries[0][0] <= found[-1][0]:
                raise CorruptErofs(f"{where}: entry {entries[0][0]!r} out of order")
            found += entries
        return found

    def entries(self, nid: int) -> dict[bytes, int]:
        """A directory's entries (without "." and ".."), name to nid."""
        inode = self.inode(nid)
        if inode.file_type != stat.S_IFDIR:
            raise CorruptErofs(f"inode {nid} is not a directory")
        return {name: child for name, child, _ in self.dirents(inode) if name not in (b".", b"..")}

    def xattrs(self, inode: ErofsInode, where: str) -> dict[str, bytes]:
        """The inline xattrs, full names to values; names of an index the kernel does not know are skipped."""
        if not inode.xattr_size:
            return {}
        area = self._read(inode.nid * SLOT_SIZE + inode.inode_size, inode.xattr_size, f"{where} xattrs")
        if area[4]:  # h_shared_count
            raise CorruptErofs(f"{where}: shared xattrs are not supported")
        found: dict[str, bytes] = {}
        pos = XATTR_HEADER.size
        while pos + XATTR_ENTRY.size <= len(area):
            name_len, index, value_size = XATTR_ENTRY.unpack_from(area, pos)
            end = pos + XATTR_ENTRY.size + name_len + value_size
            if end > len(area):
                raise CorruptErofs(f"{where}: xattr entry at {pos} runs past its area")
            name = area[pos + XATTR_ENTRY.size : pos + XATTR_ENTRY.size + name_len].decode("utf-8", "surrogateescape")
            value = area[end - value_size : end]
            if index in XATTR_WHOLE_NAMES and not name:
                found[XATTR_WHOLE_NAMES[index]] = value
            elif index in XATTR_PREFIXES:
                found[XATTR_PREFIXES[index] + name] = value
            pos += (end - pos + 3) & ~3
        return found

    def walk(self, start: int) -> Iterator[Entry]:
        """Every entry under `start` (itself first, path ()), depth first, names in byte order. A directory met
        twice (a loop a crafted image may hold) is a CorruptErofs."""
        for path, nid, inode in walk_tree(start, self.inode, self.entries, CorruptErofs):
            yield Entry(path, nid, inode)


def dirent_block(block: bytes, where: str) -> list[tuple[bytes, int, int]]:
    """The entries of one directory block (§5.2): (name, nid, file type), names strictly ascending."""
    first_nameoff = DIRENT.unpack_from(block.ljust(DIRENT.size, b"\0"))[1]
    if not first_nameoff or first_nameoff % DIRENT.size or first_nameoff >= len(block):
        raise CorruptErofs(f"{where}: a directory block with a bad first name offset {first_nameoff}")
    count = first_nameoff // DIRENT.size
    heads = [DIRENT.unpack_from(block, i * DIRENT.size) for i in range(count)]
    found: list[tuple[bytes, int, int]] = []
    for i, (nid, nameoff, file_type) in enumerate(heads):
        end = heads[i + 1][1] if i + 1 < count else len(block)
        if not first_nameoff <= nameoff < end:
            raise CorruptErofs(f"{where}: bad name offset {nameoff}")
        name = block[nameoff:end]
        if i + 1 == count:
            name = name.split(b"\0", 1)[0]
        if not 0 < len(name) <= MAX_NAME_LEN or b"/" in name or b"\0" in name:
            raise CorruptErofs(f"{where}: bad name {name!r}")
        if file_type > MAX_FILE_TYPE or (found and name <= found[-1][0]):
            raise CorruptErofs(f"{where}: entry {name!r} out of order or of bad type {file_type}")
        found.append((name, nid, file_type))
    return found
