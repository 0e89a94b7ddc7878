"""One layer of a TurboOCI EROFS image: the merged tree's metadata, appended to the image the layers below
made, as a layers.tree.FileTree that the layer rules drive (erofs-format.md §8-§9, §12).

Each layer writes only new blocks past the lower image's end, plus a few in-place patches:
- the first layer puts the superblock and the root (with its 16 KiB xattr reservation, §7.5) in blocks 0-4;
  every later layer rewrites those five blocks, its root in the same slot, so the 16-bit root nid never
  changes (§9.4);
- a directory that changed, or below which anything changed, gets a new inode and a new body; what it
  kept from below is kept by reference (the old nid), and the ".." of a kept subdirectory is patched in
  place to its parent's new nid (§9.3); a kept file that gains or loses a hard link has its link count
  patched in place;
- regular files are FLAT_PLAIN in fresh blocks mapped to their bytes in the layer tar (§1.3); directories
  and symlinks are FLAT_INLINE where their tail fits (§4.2).
Deletions are expressed by the rewritten directories lacking the names: no whiteout, no overlay xattr.
Beyond erofs-utils (§9.2): a directory only implied by a later layer keeps the lower one's attributes.
Nothing here reads the clock or a random source: the same layers give the same bytes.
"""

import stat
from collections.abc import Mapping
from dataclasses import dataclass, replace
from typing import Final

from ..ext4.device import BlockDevice
from ..ext4.extents import Run
from ..ext4.placement import MAP_TO_TAR
from ..layers.tree import SYMLINK_PERMISSIONS, FileContent, Stamp
from .errors import CorruptErofs, ErofsError
from .layout import (
    BLOCK_SIZE,
    BLOCK_SIZE_BITS,
    COMPACT_INODE,
    COMPACT_LIMIT,
    COMPACT_NLINK,
    COMPACT_SIZE_LIMIT,
    DIRENT,
    EXTENDED_INODE,
    EXTENDED_NLINK,
    FILE_TYPE_OF_KIND,
    FLAT_INLINE,
    FLAT_PLAIN,
    FORMAT_EXTENDED,
    LAYOUT_SHIFT,
    MAGIC,
    MAX_NAME_LEN,
    MAX_XATTR_ICOUNT,
    MAX_XATTR_VALUE,
    NULL_ADDR,
    ROOT_NID,
    ROOT_OFFSET,
    ROOT_SLOT_END,
    ROOT_XATTR_SIZE,
    SLOT_SIZE,
    SUPERBLOCK,
    SUPERBLOCK_OFFSET,
    XATTR_ENTRY,
    XATTR_HEADER,
    XATTR_PREFIXES,
    XATTR_WHOLE_NAMES,
    encode_rdev,
    xattr_icount,
)
from .reader import ErofsImage, ErofsInode, dirent_block

FIRST_FREE_BLOCK: Final = -(-ROOT_SLOT_END // BLOCK_SIZE)  # blocks 0-4 hold the superblock and the root slot
ROOT_STAMP: Final = Stamp(mode=0o755, uid=0, gid=0, mtime=0)
_KIND_OF_FILE_TYPE: Final = {file_type: kind for kind, file_type in FILE_TYPE_OF_KIND.items()}
# §8.3: overlayfs' opaque marker; the merged tree says what it said, so overlaybd strips it.
STRIPPED_XATTRS: Final = frozenset({"trusted.overlay.opaque"})
_DOT, _DOTDOT = b".", b".."


class _Node:
    """A file of the merged tree. A node from below stays as it is on disk (`lower_nid`) until something
    changes it (`changed`); what it holds is read from there when first asked."""

    __slots__ = (
        "blkaddr",
        "changed",
        "children",
        "kind",
        "links",
        "lower_nid",
        "nid",
        "parent",
        "rdev",
        "size",
        "stamp",
        "target",
        "xattrs",
    )

    def __init__(self, kind: int, stamp: Stamp | None, lower_nid: int | None = None) -> None:
        self.kind = kind
        self.stamp = stamp  # None: the lower inode's
        self.xattrs: dict[str, bytes] | None = None if lower_nid is not None else {}
        self.lower_nid = lower_nid
        self.children: dict[bytes, _Node] | None = None if lower_nid is not None else {}
        self.links = 1
        self.changed = lower_nid is None
        self.size = 0
        self.blkaddr = 0  # a regular file's first block (FLAT_PLAIN)
        self.target = b""
        self.rdev = 0
        self.nid = lower_nid or 0
        self.parent: _Node | None = None  # a directory's (the one directory holding it)


@dataclass
class _Placed:
    """A node's new inode: what its body is and where it goes."""

    node: _Node
    parent: _Node
    body: bytes = b""  # directory or symlink contents (empty for others)
    layout: int = FLAT_PLAIN
    blkaddr: int = 0  # first of the body's blocks (the full ones, when its tail is inline)
    compact: bool = False  # a 32-byte inode (§3.4)
    head: int = 0  # bytes of the inode and its xattr area


class ErofsLayer:
    """The merged tree of the lower image (None: the first layer) with this layer's changes; `flush` writes
    them to `device`. Regular files' data is placed as each file arrives (`create_file`)."""

    def __init__(self, device: BlockDevice, lower: ErofsImage | None) -> None:
        self.device = device
        self.lower = lower
        self.warnings: list[str] = []
        self._by_nid: dict[int, _Node] = {}  # lower nodes, so that hard links stay one node
        self._inodes: dict[int, ErofsInode] = {}
        self._link_changes: set[_Node] = set()
        if lower is None:
            self._root = _Node(stat.S_IFDIR, ROOT_STAMP)
            self._next_block = FIRST_FREE_BLOCK
            self._inos = 0
        else:
            self._root = self._lower_node(lower.root, stat.S_IFDIR)
            self._next_block = lower.sb.blocks
            self._inos = lower.sb.inos

    # -- the lower image ------------------------------------------------------------------------

    def _lower_inode(self, nid: int) -> ErofsInode:
        inode = self._inodes.get(nid)
        if inode is None:
            assert self.lower is not None
            inode = self._inodes[nid] = self.lower.inode(nid)
        return inode

    def _lower_node(self, nid: int, kind: int) -> _Node:
        node = self._by_nid.get(nid)
        if node is None:
            node = self._by_nid[nid] = _Node(kind, None, nid)
            if kind != stat.S_IFDIR:
                node.links = self._lower_inode(nid).links
        return node

    def _children(self, node: _Node) -> dict[bytes, _Node]:
        if node.children is None:
            assert self.lower is not None and node.lower_nid is not None
            node.children = {}
            for name, nid, file_type in self.lower.dirents(self._lower_inode(node.lower_nid)):
                if name in (_DOT, _DOTDOT):
                    continue
                kind = _KIND_OF_FILE_TYPE.get(file_type)
                if kind is None:
                    raise CorruptErofs(f"directory inode {node.lower_nid}: entry {name!r} of unknown type")
                child = node.children[name] = self._lower_node(nid, kind)
                if kind == stat.S_IFDIR:
                    child.parent = node
        return node.children

    def _stamp(self, node: _Node) -> Stamp:
        if node.stamp is None:
            assert node.lower_nid is not None
            inode = self._lower_inode(node.lower_nid)
            node.stamp = Stamp(inode.mode & 0o7777, inode.uid, inode.gid, inode.mtime[0], inode.mtime[1])
        return node.stamp

    def _xattrs(self, node: _Node) -> dict[str, bytes]:
        if node.xattrs is None:
            assert self.lower is not None and node.lower_nid is not None
            node.xattrs = self.lower.xattrs(self._lower_inode(node.lower_nid), f"inode {node.lower_nid}")
        return node.xattrs

    # -- layers.tree.FileTree -------------------------------------------------------------------

    @property
    def root(self) -> _Node:
        return self._root

    def lookup(self, directory: _Node, name: bytes) -> _Node | None:
        return self._children(directory).get(name)

    def kind(self, node: _Node) -> int:
        return node.kind

    def symlink_target(self, node: _Node) -> bytes:
        if node.lower_nid is not None and not node.changed:
            assert self.lower is not None
            return self.lower.symlink_target(node.lower_nid)
        return node.target

    def children(self, directory: _Node) -> list[bytes]:
        return list(self._children(directory))

    def _add(self, parent: _Node, name: bytes, node: _Node) -> _Node:
        if not 0 < len(name) <= MAX_NAME_LEN or b"/" in name or b"\0" in name or name in (_DOT, _DOTDOT):
            raise ErofsError(f"{name!r} cannot be an EROFS file name (1 to {MAX_NAME_LEN} bytes, no '/' or NUL)")
        self._children(parent)[name] = node
        if node.kind == stat.S_IFDIR:
            node.parent = parent
        self._touch(parent)
        return node

    def mkdir(self, parent: _Node, name: bytes, stamp: Stamp) -> _Node:
        return self._add(parent, name, _Node(stat.S_IFDIR, stamp))

    def create_file(self, parent: _Node, name: bytes, stamp: Stamp, content: FileContent) -> _Node:
        node = self._add(parent, name, _Node(stat.S_IFREG, stamp))
        node.size = content.size
        if content.size:
            node.blkaddr = self._allocate(-(-content.size // BLOCK_SIZE))
            self._place_data(node.blkaddr, content)
        return node

    def symlink(self, parent: _Node, name: bytes, target: bytes, stamp: Stamp) -> _Node:
        if not target or len(target) >= BLOCK_SIZE or b"\0" in target:
            raise ErofsError(f"symlink target of {len(target)} bytes cannot be stored (1 to {BLOCK_SIZE - 1}, no NUL)")
        node = self._add(parent, name, _Node(stat.S_IFLNK, replace(stamp, mode=SYMLINK_PERMISSIONS)))
        node.target = target
        return node

    def mknod(self, parent: _Node, name: bytes, kind: int, stamp: Stamp, major: int, minor: int) -> _Node:
        node = self._add(parent, name, _Node(kind, stamp))
        if kind != stat.S_IFIFO:
            if major >= 1 << 12 or minor >= 1 << 20:
                raise ErofsError(f"device {major}:{minor} does not fit Linux's 12-bit major, 20-bit minor")
            node.rdev = encode_rdev(major, minor)
        return node

    def link(self, parent: _Node, name: bytes, target: _Node) -> None:
        self._add(parent, name, target)
        self._count_link(target, +1)

    def remove(self, parent: _Node, name: bytes) -> None:
        node = self._children(parent).pop(name)
        self._touch(parent)
        pending = [node]
        while pending:  # every name below a removed directory goes too
            current = pending.pop()
            if current.kind == stat.S_IFDIR:
                pending.extend(self._children(current).values())
            else:
                self._count_link(current, -1)

    @staticmethod
    def _touch(node: _Node | None) -> None:
        """The node needs a new inode, and so does every directory above it (each names the one below by nid)."""
        while node is not None and not node.changed:
            node.changed = True
            node = node.parent

    def _count_link(self, node: _Node, change: int) -> None:
        node.links += change
        if node.lower_nid is not None and not node.changed:
            self._link_changes.add(node)

    def set_metadata(self, node: _Node, stamp: Stamp) -> None:
        node.stamp = stamp  # the xattrs stay (a lower node's are read from below when written)
        self._touch(node)

    def set_xattrs(self, node: _Node, xattrs: Mapping[str, bytes]) -> None:
        kept: dict[str, bytes] = {}
        for full, value in xattrs.items():
            if full in STRIPPED_XATTRS:
                self.warnings.append(f"xattr {full!r} left out: the merged EROFS tree holds what it marks")
            elif _split_name(full) is None:
                self.warnings.append(f"xattr {full!r} left out: EROFS has no name index for it")
            elif len(value) > MAX_XATTR_VALUE:
                raise ErofsError(f"xattr {full!r} has a {len(value)}-byte value; EROFS holds at most {MAX_XATTR_VALUE}")
            else:
                kept[full] = value
        node.xattrs = kept
        self._touch(node)

    # -- file data ------------------------------------------------------------------------------

    def _allocate(self, blocks: int) -> int:
        first = self._next_block
        self._next_block += blocks
        if self._next_block > self.device.block_count:
            raise ErofsError(
                f"the {self.device.block_count * BLOCK_SIZE}-byte virtual disk is full (give a larger --vsize)"
            )
        return first

    def _place_data(self, block: int, content: FileContent) -> None:
        """The file's blocks, from `block` on, placed as the ext4 TurboOCI path places them (MapToTar): mapped to
        its bytes in the tar, the rest of the last block unmapped (it reads zeros: the range is new in this
        layer); a sparse file's data written into the layer, its holes left unwritten."""
        spans: list[list[int]] = []  # block ranges holding data, merged
        for offset, length, _ in content.stored_ranges():
            first, end = offset // BLOCK_SIZE, -(-(offset + length) // BLOCK_SIZE)
            if spans and first <= spans[-1][1]:
                spans[-1][1] = max(spans[-1][1], end)
            else:
                spans.append([first, end])
        MAP_TO_TAR.place(self.device, [Run(first, block + first, end - first) for first, end in spans], content)

    # -- writing the layer ----------------------------------------------------------------------

    def flush(self) -> None:
        """Lay out every new inode and directory, patch what is kept below, write the superblock."""
        placed = self._renumbered()
        self._root.nid = ROOT_NID
        for item in placed:
            item.body = self._body(item)  # its size: the nids it names are not known yet
            item.compact = self._compact(item)
            inode = COMPACT_INODE.size if item.compact else EXTENDED_INODE.size
            item.head = inode + len(_xattr_area(self._xattrs(item.node), None))
            item.layout = self._layout(item)
            blocks = len(item.body) // BLOCK_SIZE if item.layout == FLAT_INLINE else -(-len(item.body) // BLOCK_SIZE)
            if blocks:
                item.blkaddr = self._allocate(blocks)
        root, others = placed[0], placed[1:]
        stream_start = self._next_block
        stream = self._place_inodes(others)
        for item in placed:
            item.body = self._body(item)
            self._write_body_blocks(item)
            record = self._record(item)
            if item is not root:
                at = item.node.nid * SLOT_SIZE - stream_start * BLOCK_SIZE
                stream[at : at + len(record)] = record
        self._patch_lower(placed)
        self._write_head(self._record(root))
        for offset in range(0, len(stream), BLOCK_SIZE):
            self.device.replace(stream_start + offset // BLOCK_SIZE, stream[offset : offset + BLOCK_SIZE])

    def _renumbered(self) -> list[_Placed]:
        """The nodes that need a new inode, root first, breadth first in name order: the new and changed
        ones (a change marks every directory above it changed too)."""
        self._root.changed = True
        order = [_Placed(self._root, self._root)]
        seen = {id(self._root)}
        at = 0
        while at < len(order):
            directory = order[at].node
            at += 1
            if directory.kind != stat.S_IFDIR:
                continue
            children = self._children(directory)  # a changed directory's entries are all rewritten
            for name in sorted(children):
                child = children[name]
                if child.changed and id(child) not in seen:
                    seen.add(id(child))
                    order.append(_Placed(child, directory))
        return order

    def _body(self, item: _Placed) -> bytes:
        node = item.node
        if node.kind == stat.S_IFLNK:
            return node.target
        if node.kind != stat.S_IFDIR:
            return b""
        return _directory_body(node, item.parent.nid)

    def _compact(self, item: _Placed) -> bool:
        """§3.4: a compact inode's times are the superblock's build time (0), its ids and links 16 bits; the
        root is always extended, so that any later root fits its slot."""
        node = item.node
        stamp = self._stamp(node)
        small = max(stamp.uid, stamp.gid, _links(node)) <= COMPACT_LIMIT and _size(item) <= COMPACT_SIZE_LIMIT
        return node is not self._root and small and stamp.mtime == 0 and stamp.mtime_ns == 0

    def _layout(self, item: _Placed) -> int:
        """FLAT_INLINE when the body's tail fits the block its inode ends in (§4.2), else FLAT_PLAIN."""
        tail = len(item.body) % BLOCK_SIZE
        if not tail:
            return FLAT_PLAIN
        if item.node is self._root:
            return FLAT_INLINE if ROOT_SLOT_END % BLOCK_SIZE + tail <= BLOCK_SIZE else FLAT_PLAIN
        return FLAT_INLINE if item.head + tail <= BLOCK_SIZE else FLAT_PLAIN

    def _place_inodes(self, others: list[_Placed]) -> bytearray:
        """Give every new inode but the root's a nid: 32-byte slots in fresh blocks, a record (inode, xattrs,
        inline tail) never crossing a block boundary unless larger than a block. Returns those blocks, zeroed."""
        start = self._next_block * BLOCK_SIZE
        position = start
        for item in others:
            size = item.head
            if item.layout == FLAT_INLINE:
                size += len(item.body) % BLOCK_SIZE
            if size <= BLOCK_SIZE and position % BLOCK_SIZE + size > BLOCK_SIZE:
                position += -position % BLOCK_SIZE
            item.node.nid = position // SLOT_SIZE
            position += -(-size // SLOT_SIZE) * SLOT_SIZE
        blocks = -(-(position - start) // BLOCK_SIZE)
        self._allocate(blocks)
        return bytearray(blocks * BLOCK_SIZE)

    def _write_body_blocks(self, item: _Placed) -> None:
        body = item.body
        full = len(body) if item.layout == FLAT_PLAIN else len(body) - len(body) % BLOCK_SIZE
        for offset in range(0, full, BLOCK_SIZE):
            block = body[offset : offset + BLOCK_SIZE]
            self.device.replace(item.blkaddr + offset // BLOCK_SIZE, block + bytes(BLOCK_SIZE - len(block)))

    def _record(self, item: _Placed) -> bytes:
        """The inode, its xattr area (the root's padded to its slot) and its inline tail."""
        node = item.node
        self._inos += 1
        stamp = self._stamp(node)
        root = node is self._root
        xattrs = _xattr_area(self._xattrs(node), ROOT_XATTR_SIZE if root else None)
        if root and len(xattrs) > ROOT_XATTR_SIZE:
            raise ErofsError(f"the root's xattrs take {len(xattrs)} bytes; its slot holds {ROOT_XATTR_SIZE}")
        size = _size(item)
        if node.kind == stat.S_IFREG:
            i_u = node.blkaddr
        elif node.kind in (stat.S_IFCHR, stat.S_IFBLK):
            i_u = node.rdev
        elif item.layout == FLAT_INLINE and size < BLOCK_SIZE:
            i_u = NULL_ADDR
        else:
            i_u = item.blkaddr
        mode = node.kind | stamp.mode
        i_format = item.layout << LAYOUT_SHIFT
        icount = xattr_icount(len(xattrs))
        links = _links(node)
        if item.compact:
            inode = COMPACT_INODE.pack(i_format, icount, mode, links, size, i_u, self._inos, stamp.uid, stamp.gid)
        else:
            inode = EXTENDED_INODE.pack(
                i_format | FORMAT_EXTENDED,
                icount,
                mode,
                size,
                i_u,
                self._inos,
                stamp.uid,
                stamp.gid,
                stamp.mtime,
                stamp.mtime_ns,
                links,
            )
        tail = item.body[size - size % BLOCK_SIZE :] if item.layout == FLAT_INLINE else b""
        return inode + xattrs + tail

    def _patch_lower(self, placed: list[_Placed]) -> None:
        """In place, below: ".." of every kept subdirectory of a renewed directory (fsck checks it, §9.3),
        and the link count of every kept file that gained or lost a name."""
        for item in placed:
            node = item.node
            if node.kind != stat.S_IFDIR:
                continue
            assert node.children is not None
            for child in node.children.values():
                if child.kind == stat.S_IFDIR and not child.changed:
                    self._patch_parent(child.nid, node.nid)
        for node in sorted(self._link_changes, key=lambda n: n.nid):
            if node.changed or node.links <= 0:
                continue
            inode = self._lower_inode(node.nid)
            offset = node.nid * SLOT_SIZE
            if inode.extended:
                self._patch(offset + EXTENDED_NLINK, node.links.to_bytes(4, "little"))
            elif node.links <= COMPACT_LIMIT:
                self._patch(offset + COMPACT_NLINK, node.links.to_bytes(2, "little"))
            else:
                raise ErofsError(f"inode {node.nid} would have {node.links} links, more than a compact inode holds")

    def _patch_parent(self, nid: int, parent_nid: int) -> None:
        assert self.lower is not None
        inode = self._lower_inode(nid)
        full = inode.size if inode.layout == FLAT_PLAIN else inode.size - inode.size % BLOCK_SIZE
        for start in range(0, inode.size, BLOCK_SIZE):
            block = self.lower.content(inode, start, BLOCK_SIZE)
            for index, (name, entry_nid, _) in enumerate(dirent_block(block, f"directory inode {nid}")):
                if name != _DOTDOT:
                    continue
                if entry_nid != parent_nid:
                    where = inode.raw_blkaddr * BLOCK_SIZE + start if start < full else inode.inline_offset
                    self._patch(where + index * DIRENT.size, parent_nid.to_bytes(8, "little"))
                return
        raise CorruptErofs(f"directory inode {nid} has no '..' entry")

    def _patch(self, offset: int, data: bytes) -> None:
        block, at = divmod(offset, BLOCK_SIZE)
        self.device.modify(block)[at : at + len(data)] = data

    def _write_head(self, root_record: bytes) -> None:
        """Blocks 0-4: the superblock and the root's slot (§2, §7.5)."""
        head = bytearray(FIRST_FREE_BLOCK * BLOCK_SIZE)
        head[ROOT_OFFSET : ROOT_OFFSET + len(root_record)] = root_record
        superblock = SUPERBLOCK.pack(
            MAGIC, 0, 0, BLOCK_SIZE_BITS, 0, ROOT_NID, self._inos, 0, 0, self._next_block, 0, 0,
            bytes(16), bytes(16), 0, 0, 0, 0, 0, 0, 0, 0, 0,
        )  # fmt: skip
        head[SUPERBLOCK_OFFSET : SUPERBLOCK_OFFSET + len(superblock)] = superblock
        for block in range(FIRST_FREE_BLOCK):
            self.device.replace(block, head[block * BLOCK_SIZE : (block + 1) * BLOCK_SIZE])


def _links(node: _Node) -> int:
    """§5.4: a directory's 2 + its subdirectories; a file's names."""
    if node.kind != stat.S_IFDIR:
        return node.links
    assert node.children is not None
    return 2 + sum(1 for child in node.children.values() if child.kind == stat.S_IFDIR)


def _size(item: _Placed) -> int:
    return len(item.body) if item.node.kind in (stat.S_IFDIR, stat.S_IFLNK) else item.node.size


def _directory_body(node: _Node, parent_nid: int) -> bytes:
    """§5.2-§5.3: dirents then names per block, all names in unsigned byte order, "." and ".." among them."""
    assert node.children is not None
    entries = [(_DOT, node.nid, stat.S_IFDIR), (_DOTDOT, parent_nid, stat.S_IFDIR)]
    entries += [(name, child.nid, child.kind) for name, child in node.children.items()]
    entries.sort(key=lambda entry: entry[0])
    blocks: list[bytes] = []
    start = 0
    used = 0
    for index, (name, _, _) in enumerate(entries):
        if used + DIRENT.size + len(name) > BLOCK_SIZE:
            blocks.append(_directory_block(entries[start:index]).ljust(BLOCK_SIZE, b"\0"))
            start, used = index, 0
        used += DIRENT.size + len(name)
    blocks.append(_directory_block(entries[start:]))
    return b"".join(blocks)


def _directory_block(entries: list[tuple[bytes, int, int]]) -> bytes:
    nameoff = DIRENT.size * len(entries)
    heads = []
    for name, nid, kind in entries:
        heads.append(DIRENT.pack(nid, nameoff, FILE_TYPE_OF_KIND[kind]))
        nameoff += len(name)
    return b"".join(heads) + b"".join(name for name, _, _ in entries)


def _split_name(full: str) -> tuple[int, bytes] | None:
    """(name index, stored name) as §7.2 stores a full xattr name; None for a namespace EROFS has no index for."""
    for index, whole in XATTR_WHOLE_NAMES.items():
        if full == whole:
            return index, b""
    for index, prefix in XATTR_PREFIXES.items():
        if full.startswith(prefix) and len(full) > len(prefix):
            name = full[len(prefix) :].encode("utf-8", "surrogateescape")
            return (index, name) if len(name) <= 255 else None
    return None


def _xattr_area(xattrs: Mapping[str, bytes], size: int | None) -> bytes:
    """§7.1-§7.2: the inline area, entries in name order; empty when there are none and no size is asked."""
    if not xattrs and size is None:
        return b""
    parts = [XATTR_HEADER.pack(0, 0)]
    for full in sorted(xattrs):
        split = _split_name(full)
        if split is None:  # set_xattrs keeps only names that split: this one came from a damaged lower inode
            raise CorruptErofs(f"an xattr named {full!r} cannot be stored again")
        index, name = split
        value = xattrs[full]
        entry = XATTR_ENTRY.pack(len(name), index, len(value)) + name + value
        parts.append(entry + bytes(-len(entry) % 4))
    area = b"".join(parts)
    if size is not None and len(area) <= size:
        area += bytes(size - len(area))
    if xattr_icount(len(area)) > MAX_XATTR_ICOUNT:
        raise ErofsError(f"xattrs of {len(area)} bytes; an EROFS inode holds at most {4 * MAX_XATTR_ICOUNT + 8}")
    return area
