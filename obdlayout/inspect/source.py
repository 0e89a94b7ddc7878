"""The tree the OCI layer rules give for a source image: its layer tars applied, in memory, to an empty root.

The rules are layers/rules.py, the same code the ext4 writer is driven by; what is independent of the
writer is the file system: an in-memory tree (this module's `SourceTree`, a layers.tree.FileTree) rather
than ext4. So `verify --against` compares the converted image, as read back from its ext4, with what the
rules make of the source, never with the writer's own bookkeeping. (The rules themselves are tested
against an independent model, tests/ocimodel.py.)

Where ext4 narrows what a file system can hold, the tree narrows alike: symlinks have mode 0777, xattrs of
namespaces ext4 has no index for are not kept, POSIX ACLs are compared in their canonical form.
"""

import hashlib
import stat
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, replace
from typing import BinaryIO

from ..ext4.fs import MAX_FILE_SIZE
from ..ext4.layout import clamp_time
from ..ext4.xattr import XattrError, acl_from_disk, acl_to_disk, split_name
from ..layers.errors import TreeError
from ..layers.rules import PARENT_STAMP, apply_layer
from ..layers.tree import SYMLINK_PERMISSIONS, FileContent, Stamp
from ..units import STREAM_CHUNK
from .tree import Node, Tree

_ACL_NAMES = ("system.posix_acl_access", "system.posix_acl_default")


@dataclass(eq=False, slots=True)  # compared and hashed by identity: a hard link is the same item twice
class Item:
    node: Node
    children: dict[bytes, "Item"] | None = None  # directories only


def _item(kind: int, stamp: Stamp, directory: bool = False) -> Item:
    node = Node(kind, stamp.mode & 0o7777, stamp.uid, stamp.gid, _stored_time(stamp))
    return Item(node, {} if directory else None)


def _stored_time(stamp: Stamp) -> tuple[int, int]:
    """The time ext4 stores (clamped to its range as the kernel and the writer clamp it)."""
    return clamp_time(stamp.mtime, stamp.mtime_ns, extra=True)


class SourceTree:
    """Apply layers bottom first with `apply`, then take the result with `tree`."""

    def __init__(self) -> None:
        self._root = _item(stat.S_IFDIR, PARENT_STAMP, directory=True)
        self.warnings: list[str] = []  # nobody reads them: the converter said them when it converted

    def apply(self, stream: BinaryIO, layer: str) -> None:
        """Apply one uncompressed layer tar; LayerError naming the layer and entry if it cannot be."""
        apply_layer(self, stream, layer)

    def tree(self) -> Tree:
        return {b"/".join(path): item.node for path, item in _flatten(self._root)}

    # -- layers.tree.FileTree ------------------------------------------------------------------------

    @property
    def root(self) -> Item:
        return self._root

    def lookup(self, directory: Item, name: bytes) -> Item | None:
        return directory.children.get(name) if directory.children is not None else None

    def kind(self, node: Item) -> int:
        return node.node.kind

    def symlink_target(self, node: Item) -> bytes:
        return node.node.target or b""

    def children(self, directory: Item) -> list[bytes]:
        return list(directory.children or ())

    def _add(self, parent: Item, name: bytes, item: Item) -> Item:
        assert parent.children is not None
        parent.children[name] = item
        return item

    def mkdir(self, parent: Item, name: bytes, stamp: Stamp) -> Item:
        return self._add(parent, name, _item(stat.S_IFDIR, stamp, directory=True))

    def create_file(self, parent: Item, name: bytes, stamp: Stamp, content: FileContent) -> Item:
        if content.size > MAX_FILE_SIZE:  # the converter refuses it, and hashing it would take days
            raise TreeError(f"a file of {content.size} bytes; ext4 holds files of at most {MAX_FILE_SIZE}")
        item = _item(stat.S_IFREG, stamp)
        item.node.size = content.size
        item.node.sha256 = _content_hash(content)
        return self._add(parent, name, item)

    def symlink(self, parent: Item, name: bytes, target: bytes, stamp: Stamp) -> Item:
        item = _item(stat.S_IFLNK, replace(stamp, mode=SYMLINK_PERMISSIONS))
        item.node.target = target
        return self._add(parent, name, item)

    def link(self, parent: Item, name: bytes, target: Item) -> None:
        self._add(parent, name, target)

    def mknod(self, parent: Item, name: bytes, kind: int, stamp: Stamp, major: int, minor: int) -> Item:
        item = _item(kind, stamp)
        if kind != stat.S_IFIFO:
            item.node.rdev = (major, minor)
        return self._add(parent, name, item)

    def remove(self, parent: Item, name: bytes) -> None:
        assert parent.children is not None
        del parent.children[name]

    def set_metadata(self, node: Item, stamp: Stamp) -> None:
        record = node.node
        record.mode = stamp.mode & 0o7777
        record.uid, record.gid = stamp.uid, stamp.gid
        record.mtime = _stored_time(stamp)

    def set_xattrs(self, node: Item, xattrs: Mapping[str, bytes]) -> None:
        kept: dict[str, bytes] = {}
        for name, value in xattrs.items():
            if split_name(name) is None:
                continue  # ext4 has no namespace for it (the converter warns and leaves it out)
            try:
                kept[name] = acl_from_disk(acl_to_disk(value)) if name in _ACL_NAMES else value
            except XattrError as exc:
                raise TreeError(str(exc)) from None
        node.node.xattrs = kept


def _content_hash(content: FileContent) -> str:
    hasher = hashlib.sha256()
    for offset in range(0, content.size, STREAM_CHUNK):
        want = min(STREAM_CHUNK, content.size - offset)
        data = content.read(offset, want)
        if len(data) != want:
            raise TreeError(f"file data ended after {offset + len(data)} of {content.size} bytes")
        hasher.update(data)
    return hasher.hexdigest()


def _flatten(root: Item) -> Iterator[tuple[tuple[bytes, ...], Item]]:
    """Depth first, names in byte order; a stack, not recursion, as a tar may nest deeper than Python."""
    stack: list[tuple[tuple[bytes, ...], Item]] = [((), root)]
    while stack:
        path, item = stack.pop()
        yield path, item
        if item.children is not None:
            children = item.children
            stack.extend(((*path, name), children[name]) for name in sorted(children, reverse=True))
