"""The tree the OCI layer rules give for a source image: its layer tars applied, in memory, to an empty root.

Built independently of the ext4 writer on purpose: `verify --against` compares the converted image with
this model, and building the model with the writer would check the converter against itself. What it
shares with ext4/apply.py is the statement of the rules (the whiteout names, the stamp of implied parent
directories, the cleaning of entry names), and it follows the same documented choices:
- `.wh.NAME` deletes NAME, `.wh..wh..opq` empties its directory, both sparing what the same layer made;
- an existing path is replaced, except a directory by a directory, which takes the new metadata and xattrs;
- missing parents are made 0755 root:root at time 0; symlinks among parents resolve inside the image;
- an entry naming the root itself is skipped (as overlaybd-apply does).
Where ext4 narrows what a file system can hold, the model narrows alike: symlinks have mode 0777, xattrs
of namespaces ext4 has no index for are not kept, POSIX ACLs are compared in their canonical form.
"""

import hashlib
import stat
import zlib
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import BinaryIO

from ..ext4.apply import OPAQUE_MARKER, PARENT_STAMP, WHITEOUT_PREFIX, LayerError, clean_path
from ..ext4.errors import Ext4Error
from ..ext4.reader import READ_CHUNK
from ..ext4.tarstream import BLOCKDEV, CHAR, FIFO, HARDLINK, SYMLINK, TarEntry, TarFormatError, TarReader
from ..ext4.xattr import XattrError, acl_from_disk, acl_to_disk, split_name
from .paths import ResolveError, resolve
from .tree import Node, Tree

_ACL_NAMES = ("system.posix_acl_access", "system.posix_acl_default")
_DEVICE_KINDS = {CHAR: stat.S_IFCHR, BLOCKDEV: stat.S_IFBLK, FIFO: stat.S_IFIFO}


@dataclass(eq=False)  # compared and hashed by identity: the layer's "made here" set holds directories
class _Dir:
    node: Node
    children: dict[bytes, "_Dir | Node"] = field(default_factory=dict)


_Item = _Dir | Node


class _Ops:
    """The model seen through paths.PathOps."""

    def lookup(self, directory: _Item, name: bytes) -> _Item | None:
        return directory.children.get(name) if isinstance(directory, _Dir) else None

    def is_directory(self, node: _Item) -> bool:
        return isinstance(node, _Dir)

    def symlink_target(self, node: _Item) -> bytes | None:
        return node.target if isinstance(node, Node) and node.kind == stat.S_IFLNK else None


_OPS = _Ops()


class _RuleError(Exception):
    """An entry the layer rules cannot apply (the converter refuses it too)."""


def _parent_node() -> Node:
    return Node(stat.S_IFDIR, PARENT_STAMP.mode, PARENT_STAMP.uid, PARENT_STAMP.gid, (PARENT_STAMP.mtime, 0))


class SourceTree:
    """Apply layers bottom first with `apply`, then take the result with `tree`."""

    def __init__(self) -> None:
        self.root = _Dir(_parent_node())

    def apply(self, stream: BinaryIO, layer: str) -> None:
        """Apply one uncompressed layer tar; LayerError naming the layer and entry if it cannot be."""
        applier = _Layer(self.root)
        member: TarEntry | None = None
        try:
            tar = TarReader(stream)
            for member in tar:
                applier.entry(tar, member)
        except (_RuleError, ResolveError, Ext4Error) as exc:
            raise LayerError(f"{layer}: entry {_name(member)}: {exc}") from None
        except (TarFormatError, EOFError, OSError, zlib.error, ValueError) as exc:
            where = f"after entry {_name(member)}" if member is not None else "at its start"
            raise LayerError(f"{layer}: the tar stream is truncated or corrupt {where}: {exc}") from None

    def tree(self) -> Tree:
        out: Tree = {}
        for path, item in _flatten(self.root):
            out[b"/".join(path)] = item.node if isinstance(item, _Dir) else item
        return out


class _Layer:
    def __init__(self, root: _Dir) -> None:
        self.root = root
        self.created: set[tuple[_Dir, bytes]] = set()  # (directory, name) this layer made or replaced

    def _mkdir(self, parent: _Item, name: bytes) -> _Item:
        assert isinstance(parent, _Dir)
        made = parent.children[name] = _Dir(_parent_node())
        self.created.add((parent, name))
        return made

    def _directory(self, parts: list[bytes], create: bool) -> _Dir | None:
        root: _Item = self.root
        if not create:
            try:
                found = resolve(_OPS, root, parts)
            except ResolveError:
                return None
            return found if isinstance(found, _Dir) else None
        found = resolve(_OPS, root, parts, mkdir=self._mkdir)
        if not isinstance(found, _Dir):
            raise _RuleError(f"parent {b'/'.join(parts)!r} is not a directory")
        return found

    def entry(self, tar: TarReader, member: TarEntry) -> None:
        parts = clean_path(member.name)
        if not parts:
            return
        *parent_parts, base = parts
        if base.startswith(WHITEOUT_PREFIX):
            self._whiteout(parent_parts, base)
            return
        parent = self._directory(parent_parts, create=True)
        assert parent is not None
        existing = parent.children.get(base)
        target = self._link_target(member) if member.type == HARDLINK else None
        if existing is not None:
            if member.is_directory and isinstance(existing, _Dir):
                _stamp(existing.node, member)
                existing.node.xattrs = _xattrs(member)
                self.created.add((parent, base))
                return
            if existing is target:
                return  # a hard link to itself
            del parent.children[base]
        parent.children[base] = target if target is not None else _create(tar, member)
        self.created.add((parent, base))

    def _whiteout(self, parent_parts: list[bytes], base: bytes) -> None:
        parent = self._directory(parent_parts, create=False)
        if parent is None:
            return  # nothing below a missing path or a non-directory
        if base == OPAQUE_MARKER:
            for name in [n for n in parent.children if (parent, n) not in self.created]:
                del parent.children[name]
            return
        name = base[len(WHITEOUT_PREFIX) :]
        if name in parent.children and (parent, name) not in self.created:
            del parent.children[name]

    def _link_target(self, member: TarEntry) -> Node:
        *parent_parts, base = clean_path(member.linkname) or [b""]
        parent = self._directory(parent_parts, create=False)
        target = parent.children.get(base) if parent is not None and base else None
        if target is None:
            raise _RuleError(f"hard link target {member.linkname!r} does not exist")
        if isinstance(target, _Dir):
            raise _RuleError("a hard link cannot point at a directory")
        return target


def _create(tar: TarReader, member: TarEntry) -> _Item:
    node = Node(stat.S_IFREG, 0, 0, 0, (0, 0), xattrs=_xattrs(member))
    _stamp(node, member)
    if member.is_directory:
        node.kind = stat.S_IFDIR
        return _Dir(node)
    if member.is_regular:
        node.size = member.size
        node.sha256 = _content_hash(tar, member.size)
    elif member.type == SYMLINK:
        node.kind = stat.S_IFLNK
        node.mode = 0o777  # a symlink's mode is not its own to choose
        node.target = member.linkname
    elif member.type in _DEVICE_KINDS:
        node.kind = _DEVICE_KINDS[member.type]
        if member.type != FIFO:
            node.rdev = (member.devmajor, member.devminor)
    else:
        raise _RuleError(f"tar entry type {member.type!r} cannot be represented in a file system")
    return node


def _stamp(node: Node, member: TarEntry) -> None:
    node.mode = member.mode & 0o7777
    node.uid, node.gid = member.uid, member.gid
    node.mtime = (member.mtime, member.mtime_ns)


def _content_hash(tar: TarReader, size: int) -> str:
    hasher = hashlib.sha256()
    for offset in range(0, size, READ_CHUNK):
        want = min(READ_CHUNK, size - offset)
        data = tar.read_at(offset, want)
        if len(data) != want:
            raise _RuleError(f"file data ended after {offset + len(data)} of {size} bytes")
        hasher.update(data)
    return hasher.hexdigest()


def _xattrs(member: TarEntry) -> dict[str, bytes]:
    kept: dict[str, bytes] = {}
    for name, value in member.xattrs.items():
        if split_name(name) is None:
            continue  # ext4 has no namespace for it (the converter warns and leaves it out)
        try:
            kept[name] = acl_from_disk(acl_to_disk(value)) if name in _ACL_NAMES else value
        except XattrError as exc:
            raise _RuleError(str(exc)) from None
    return kept


def _flatten(root: _Dir) -> Iterator[tuple[tuple[bytes, ...], _Item]]:
    """Depth first, names in byte order; a stack, not recursion, as a tar may nest deeper than Python."""
    stack: list[tuple[tuple[bytes, ...], _Item]] = [((), root)]
    while stack:
        path, item = stack.pop()
        yield path, item
        if isinstance(item, _Dir):
            stack.extend(((*path, name), item.children[name]) for name in sorted(item.children, reverse=True))


def _name(member: TarEntry | None) -> str:
    return repr(member.name.decode("utf-8", "backslashreplace")) if member is not None else "(none)"
