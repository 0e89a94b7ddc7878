"""Apply one OCI layer (an uncompressed tar stream) to a file system, with the OCI image-spec layer rules.

The rules (image-spec layer.md; overlaybd-formats.md §6.4 for what overlaybd-apply does):
- `.wh.NAME` deletes NAME recursively, `.wh..wh..opq` hides everything the lower layers put below its
  directory, also inside subdirectories this layer re-added; both spare what this same layer created,
  and neither is stored;
- a path that exists is replaced, except a directory over a directory, which keeps its contents and
  takes the new metadata and xattrs;
- missing parent directories are created 0755 root:root at time 0, for whiteouts too (containerd's
  mkparent and overlaybd-apply both run before the whiteout is looked at); symlinks among the parents
  resolve inside the image, never on the host; below a non-directory a whiteout deletes nothing;
- a hard link adds a name to its target (its own header's metadata is not applied); an entry naming
  the root itself is skipped, as overlaybd-apply does.
Beyond overlaybd-apply, which loses data there: PAX uid/gid/mtime (with sub-second times) and base-256
numbers are honoured (tar/reader.py), and GNU sparse files keep their holes.
"""

import stat
from dataclasses import dataclass, field
from typing import BinaryIO, Final, Generic, TypeVar

from ..tar.reader import BLOCKDEV, CHAR, FIFO, HARDLINK, SYMLINK, EntryCursor, TarEntry, TarReader
from ..tar.ustar import TarFormatError
from .errors import EntryError, LayerError, RuleError
from .paths import NotADirectory, ResolveError, clean_path, resolve
from .tree import FileContent, FileTree, Stamp

WHITEOUT_PREFIX: Final = b".wh."
OPAQUE_MARKER: Final = b".wh..wh..opq"
PARENT_STAMP: Final = Stamp(mode=0o755, uid=0, gid=0, mtime=0)
MAX_ID: Final = 2**32 - 1  # Linux uid_t / gid_t
# Linux's PATH_MAX: no tool that made a layer through system calls can have named a longer path; a longer
# one would make a tree of thousands of directories, one per path component.
MAX_PATH_BYTES: Final = 4096
# Far beyond real layers (a large distribution image holds a few hundred thousand entries); bounds the
# memory a hostile layer can make the file system take. Not Final (which compiled code inlines): a test lowers it.
MAX_ENTRIES = 10_000_000
_DEVICE_KINDS: Final = {CHAR: stat.S_IFCHR, BLOCKDEV: stat.S_IFBLK, FIFO: stat.S_IFIFO}

N = TypeVar("N")


@dataclass
class ApplyStats:
    entries: int = 0
    files: int = 0
    file_bytes: int = 0
    whiteouts: int = 0
    warnings: list[str] = field(default_factory=list)


def stamp_of(entry: TarEntry) -> Stamp:
    """The metadata a tar entry gives; ids beyond 32 bits are refused (no Linux file system holds them)."""
    if not 0 <= entry.uid <= MAX_ID or not 0 <= entry.gid <= MAX_ID:
        raise RuleError(f"owner {entry.uid}:{entry.gid} does not fit 32-bit ids")
    return Stamp(mode=entry.mode, uid=entry.uid, gid=entry.gid, mtime=entry.mtime, mtime_ns=entry.mtime_ns)


class _Rules(Generic[N]):
    def __init__(self, tree: FileTree[N]) -> None:
        self.tree = tree
        self.created: set[tuple[N, bytes]] = set()  # (directory, name) made or re-stated by this layer
        self.stats = ApplyStats()
        # Directories already resolved, by path: tar entries come directory by directory.
        self._resolved: dict[tuple[bytes, ...], N] = {}

    def _remove(self, parent: N, name: bytes, node: N) -> None:
        """Remove `node`, which is `name` in `parent`."""
        # Only a directory or a symlink can lie on the way to a resolved directory: removing anything else
        # keeps them all (a layer replacing the files below it removes a file for every entry).
        on_paths = self.tree.kind(node) in (stat.S_IFDIR, stat.S_IFLNK)
        self.tree.remove(parent, name)
        if on_paths:
            self._resolved.clear()

    def _make_parent(self, parent: N, name: bytes) -> N:
        made = self.tree.mkdir(parent, name, PARENT_STAMP)
        self.created.add((parent, name))
        return made

    def _directory(self, parts: list[bytes]) -> N:
        """The directory at `parts`, made (with its missing parents) if absent; NotADirectory if a
        non-directory is in the way."""
        key = tuple(parts)
        known = self._resolved.get(key)
        if known is not None:
            return known
        found = resolve(self.tree, self.tree.root, parts, mkdir=self._make_parent)
        if self.tree.kind(found) != stat.S_IFDIR:
            raise NotADirectory(f"/{b'/'.join(parts).decode('utf-8', 'backslashreplace')} is not a directory")
        self._resolved[key] = found
        return found

    def entry(self, tar: EntryCursor, member: TarEntry) -> None:
        if len(member.name) > MAX_PATH_BYTES:
            raise RuleError(f"a path of {len(member.name)} bytes; at most {MAX_PATH_BYTES} (PATH_MAX) are accepted")
        parts = clean_path(member.name)
        if not parts:
            return
        *parent_parts, base = parts
        if base.startswith(WHITEOUT_PREFIX):
            self._whiteout(parent_parts, base)
            return
        tree = self.tree
        stamp = stamp_of(member)
        parent = self._directory(parent_parts)
        existing = tree.lookup(parent, base)
        target = self._link_target(member) if member.type == HARDLINK else None
        if existing is not None:
            if member.is_directory and tree.kind(existing) == stat.S_IFDIR:
                tree.set_metadata(existing, stamp)
                tree.set_xattrs(existing, member.xattrs)
                self.created.add((parent, base))
                return
            if existing == target:  # a hard link to itself
                self.created.add((parent, base))
                return
            self._remove(parent, base, existing)
            if target is not None:
                target = self._link_target(member)  # the replaced path may have held the target
        node = self._create(tar, member, parent, base, stamp, target)
        self.created.add((parent, base))
        if target is None and member.xattrs:
            tree.set_xattrs(node, member.xattrs)

    def _whiteout(self, parent_parts: list[bytes], base: bytes) -> None:
        self.stats.whiteouts += 1
        try:
            parent = self._directory(parent_parts)
        except NotADirectory:
            return
        if base == OPAQUE_MARKER:
            self._clear_lower(parent)
            return
        name = base[len(WHITEOUT_PREFIX) :]
        node = self.tree.lookup(parent, name)
        if node is not None and (parent, name) not in self.created:
            self._remove(parent, name, node)

    def _clear_lower(self, directory: N) -> None:
        """Everything below `directory` that this layer did not put there goes (an opaque directory).

        A subdirectory this layer re-added over a lower one kept the lower contents: they go too
        (containerd's applier walks into it; overlayfs does not merge a lower into an opaque parent).
        """
        tree = self.tree
        pending = [directory]
        while pending:
            current = pending.pop()
            for child in tree.children(current):
                node = tree.lookup(current, child)
                if node is None:
                    continue
                if (current, child) not in self.created:
                    self._remove(current, child, node)
                    continue
                if tree.kind(node) == stat.S_IFDIR:
                    pending.append(node)

    def _link_target(self, member: TarEntry) -> N:
        *parent_parts, base = clean_path(member.linkname) or [b""]
        target = None
        if base:
            try:
                parent = resolve(self.tree, self.tree.root, parent_parts)
                target = self.tree.lookup(parent, base) if self.tree.kind(parent) == stat.S_IFDIR else None
            except ResolveError:
                target = None
        if target is None:
            raise RuleError(f"hard link target {member.linkname!r} does not exist")
        if self.tree.kind(target) == stat.S_IFDIR:
            raise RuleError(f"hard link target {member.linkname!r} is a directory")
        return target

    def _create(self, tar: EntryCursor, member: TarEntry, parent: N, base: bytes, stamp: Stamp, target: N | None) -> N:
        tree = self.tree
        if member.is_directory:
            return tree.mkdir(parent, base, stamp)
        if member.is_regular:
            self.stats.files += 1
            self.stats.file_bytes += member.size
            content = FileContent(member.size, member.sparse, tar.read_view, member.data_offset)
            return tree.create_file(parent, base, stamp, content)
        if member.type == SYMLINK:
            return tree.symlink(parent, base, member.linkname, stamp)
        if target is not None:
            tree.link(parent, base, target)
            return target
        kind = _DEVICE_KINDS.get(member.type)
        if kind is not None:
            major, minor = (member.devmajor, member.devminor) if kind != stat.S_IFIFO else (0, 0)
            return tree.mknod(parent, base, kind, stamp, major, minor)
        raise RuleError(f"tar entry type {member.type!r} is not a file system object")


def apply_layer(tree: FileTree[N], stream: BinaryIO | EntryCursor, layer: str) -> ApplyStats:
    """Apply the uncompressed tar `stream` (or its entries, parsed elsewhere) to `tree`; `layer` names the
    layer in errors (LayerError).

    The stream is read to its end, past the end-of-archive blocks: a decompressor checks its trailer (a
    gzip CRC, a digest) only there. Errors of the stream itself (a LayoutError naming a blob) and of the
    lower layers' blobs (FormatError) pass through unchanged: they are not the tar's fault.
    """
    rules = _Rules(tree)
    member: TarEntry | None = None
    try:
        tar = stream if isinstance(stream, EntryCursor) else TarReader(stream)
        for member in tar:
            rules.stats.entries += 1
            if rules.stats.entries > MAX_ENTRIES:
                raise LayerError(layer, f"holds more than {MAX_ENTRIES} entries, more than a layer is accepted with")
            rules.entry(tar, member)
            if tree.warnings:
                rules.stats.warnings.extend(f"{layer}: entry {_name(member)}: {w}" for w in tree.warnings)
                tree.warnings.clear()
        tar.drain()
    except EntryError as exc:
        raise LayerError(layer, f"entry {_name(member)}: {exc.problem}") from None
    except TarFormatError as exc:
        where = f"after entry {_name(member)}" if member is not None else "at its start"
        raise LayerError(layer, f"the tar stream is truncated or corrupt {where}: {exc.problem}") from None
    return rules.stats


def _name(member: TarEntry | None) -> str:
    return repr(member.name.decode("utf-8", "backslashreplace")) if member is not None else "(none)"
