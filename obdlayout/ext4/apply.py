"""Apply one OCI layer (a tar stream) to a file system, with the OCI image-spec layer rules.

The rules (image-spec layer.md; overlaybd-formats.md §6.4 for what overlaybd-apply does):
- `.wh.NAME` deletes NAME recursively, `.wh..wh..opq` empties its directory of what lower
  layers put there; both spare what this same layer created, and neither is stored;
- a path that exists is replaced, except a directory over a directory, which keeps its
  contents and takes the new metadata;
- missing parent directories are created 0755 root:root; symlinks among the parents resolve
  inside the image, never on the host.
Beyond overlaybd-apply, which loses data there: PAX uid/gid/mtime (with sub-second times) and
base-256 numbers are honoured, a whiteout under a non-directory deletes nothing, and GNU sparse
files keep their holes.
"""

import zlib
from dataclasses import dataclass, field
from typing import BinaryIO

from .errors import Ext4Error, NoSpace
from .fs import READ_CHUNK, Filesystem, Stamp
from .layout import BLOCK_SIZE, ROOT_INO, S_IFBLK, S_IFCHR, S_IFDIR, S_IFIFO, S_IFLNK
from .tarstream import BLOCKDEV, CHAR, FIFO, HARDLINK, SYMLINK, TarEntry, TarFormatError, TarReader

WHITEOUT_PREFIX = b".wh."
OPAQUE_MARKER = b".wh..wh..opq"
PARENT_STAMP = Stamp(mode=0o755, uid=0, gid=0, mtime=0)
MAX_SYMLINK_HOPS = 40  # as the kernel's path walk
MAX_ID = 2**32 - 1


class NotADirectoryInImage(Ext4Error):
    """A path goes through something that is not a directory."""


class LayerError(Exception):
    """A layer cannot be applied; the message names the layer and, where known, the entry."""


@dataclass
class ApplyStats:
    entries: int = 0
    files: int = 0
    file_bytes: int = 0
    whiteouts: int = 0
    warnings: list[str] = field(default_factory=list)


def clean_path(name: bytes) -> list[bytes]:
    """Plan 9 style: drop empty and "." parts, resolve ".." without climbing above the root."""
    parts: list[bytes] = []
    for part in name.split(b"/"):
        if part in (b"", b"."):
            continue
        if part == b"..":
            if parts:
                parts.pop()
            continue
        parts.append(part)
    return parts


def _stamp(entry: TarEntry) -> Stamp:
    if not 0 <= entry.uid <= MAX_ID or not 0 <= entry.gid <= MAX_ID:
        raise Ext4Error(f"owner {entry.uid}:{entry.gid} does not fit ext4's 32-bit ids")
    return Stamp(mode=entry.mode, uid=entry.uid, gid=entry.gid, mtime=entry.mtime, mtime_ns=entry.mtime_ns)


class _Applier:
    def __init__(self, fs: Filesystem) -> None:
        self.fs = fs
        self.created: set[tuple[int, bytes]] = set()  # (directory inode, name) made by this layer
        self.stats = ApplyStats()
        # Directories already resolved, by path: tar entries come directory by directory.
        self._resolved: dict[tuple[bytes, ...], int] = {}

    def remove(self, parent: int, name: bytes) -> None:
        self.fs.remove(parent, name)
        self._resolved.clear()

    def walk(self, parts: list[bytes], create: bool) -> int | None:
        """The directory at `parts`, following symlinks inside the image; None if absent (and not created)."""
        key = tuple(parts)
        known = self._resolved.get(key)
        if known is not None:
            return known
        fs = self.fs
        trail = [ROOT_INO]
        todo = list(reversed(parts))
        hops = 0
        while todo:
            name = todo.pop()
            if name == b"..":
                if len(trail) > 1:
                    trail.pop()
                continue
            if name == b".":
                continue
            child = fs.lookup(trail[-1], name)
            if child is None:
                if not create:
                    return None
                child = fs.mkdir(trail[-1], name, PARENT_STAMP)
                self.created.add((trail[-1], name))
            file_type = fs.inode(child).file_type
            if file_type == S_IFLNK:
                hops += 1
                if hops > MAX_SYMLINK_HOPS:
                    raise Ext4Error(f"too many symlinks while resolving {b'/'.join(parts)!r}")
                target = fs.symlink_target(child)
                if target.startswith(b"/"):
                    trail = [ROOT_INO]
                todo.extend(reversed([p for p in target.split(b"/") if p]))
                continue
            if file_type != S_IFDIR:
                if create:
                    raise NotADirectoryInImage(f"parent {name!r} is not a directory")
                return None
            trail.append(child)
        self._resolved[key] = trail[-1]
        return trail[-1]

    def whiteout(self, parent_parts: list[bytes], base: bytes) -> None:
        self.stats.whiteouts += 1
        # Missing parents are made first, as for any entry (containerd's and overlaybd-apply's order);
        # below a non-directory there is nothing to delete (overlaybd-apply aborts there).
        try:
            parent = self.walk(parent_parts, create=True)
        except NotADirectoryInImage:
            return
        assert parent is not None
        fs = self.fs
        if base == OPAQUE_MARKER:
            self._clear_lower(parent)
            return
        name = base[len(WHITEOUT_PREFIX) :]
        if fs.lookup(parent, name) is not None and (parent, name) not in self.created:
            self.remove(parent, name)

    def _clear_lower(self, directory: int) -> None:
        """Everything below `directory` that this layer did not put there goes (an opaque directory).

        A subdirectory this layer re-added over a lower one kept the lower contents: they go too.
        """
        fs = self.fs
        pending = [directory]
        while pending:
            current = pending.pop()
            for child in fs.children(current):
                if (current, child) not in self.created:
                    self.remove(current, child)
                    continue
                ino = fs.lookup(current, child)
                if ino is not None and fs.inode(ino).file_type == S_IFDIR:
                    pending.append(ino)

    def entry(self, tar: TarReader, member: TarEntry) -> None:
        parts = clean_path(member.name)
        if not parts:
            return  # the root itself, as overlaybd-apply does
        *parent_parts, base = parts
        if base.startswith(WHITEOUT_PREFIX):
            self.whiteout(parent_parts, base)
            return
        fs = self.fs
        stamp = _stamp(member)
        parent = self.walk(parent_parts, create=True)
        assert parent is not None
        existing = fs.lookup(parent, base)
        target = self._link_target(member) if member.type == HARDLINK else None
        if existing is not None:
            if member.is_directory and fs.inode(existing).file_type == S_IFDIR:
                fs.restamp(existing, stamp)
                fs.set_xattrs(existing, member.xattrs)
                self.created.add((parent, base))
                return
            if existing == target:
                return  # a hard link to itself
            self.remove(parent, base)
            if target is not None:
                target = self._link_target(member)  # the replaced path may have held the target
        ino = self._create(tar, member, parent, base, stamp, target)
        self.created.add((parent, base))
        if target is None and member.xattrs:
            fs.set_xattrs(ino, member.xattrs)

    def _link_target(self, member: TarEntry) -> int:
        *parent_parts, base = clean_path(member.linkname) or [b""]
        parent = self.walk(parent_parts, create=False)
        target = self.fs.lookup(parent, base) if parent is not None and base else None
        if target is None:
            raise Ext4Error(f"hard link target {member.linkname!r} does not exist")
        return target

    def _create(
        self, tar: TarReader, member: TarEntry, parent: int, base: bytes, stamp: Stamp, target: int | None
    ) -> int:
        fs = self.fs
        if member.is_directory:
            return fs.mkdir(parent, base, stamp)
        if member.is_regular:
            ino = fs.write_file(parent, base, stamp, member.size, tar.read_at, member.sparse)
            self.stats.files += 1
            self.stats.file_bytes += member.size
            return ino
        if member.type == SYMLINK:
            return fs.symlink(parent, base, member.linkname, stamp)
        if target is not None:
            fs.link(parent, base, target)
            return target
        if member.type in (CHAR, BLOCKDEV):
            kind = S_IFCHR if member.type == CHAR else S_IFBLK
            return fs.mknod(parent, base, kind, stamp, member.devmajor, member.devminor)
        if member.type == FIFO:
            return fs.mknod(parent, base, S_IFIFO, stamp)
        raise Ext4Error(f"tar entry type {member.type!r} cannot be represented in ext4")


def apply_layer(fs: Filesystem, stream: BinaryIO, layer: str) -> ApplyStats:
    """Apply the uncompressed tar `stream` to `fs`; `layer` names the layer in errors."""
    applier = _Applier(fs)
    member: TarEntry | None = None
    try:
        tar = TarReader(stream)
        for member in tar:
            applier.stats.entries += 1
            applier.entry(tar, member)
        # Past the end-of-archive blocks: a decompressor checks its trailer (gzip CRC) only at the end.
        while stream.read(READ_CHUNK):
            pass
    except NoSpace as exc:
        raise LayerError(
            f"{layer}: the file system is full at entry {_name(member)} ({exc}); "
            f"convert with a virtual size of at least {_size_hint(fs, exc.needed_blocks)}"
        ) from None
    except Ext4Error as exc:
        raise LayerError(f"{layer}: entry {_name(member)}: {exc}") from None
    except (TarFormatError, EOFError, OSError, zlib.error, ValueError) as exc:
        where = f"after entry {_name(member)}" if member is not None else "at its start"
        raise LayerError(f"{layer}: the tar stream is truncated or corrupt {where}: {exc}") from None
    applier.stats.warnings.extend(f"{layer}: {warning}" for warning in fs.warnings)
    fs.warnings.clear()
    return applier.stats


def _name(member: TarEntry | None) -> str:
    return repr(member.name.decode("utf-8", "backslashreplace")) if member is not None else "(none)"


def _size_hint(fs: Filesystem, needed_blocks: int) -> str:
    used = fs.sb.blocks_count - fs.alloc.free_blocks_total
    total = (used + needed_blocks) * BLOCK_SIZE
    gib = -(-total * 5 // 4 // (1 << 30))  # a quarter of headroom, in whole GiB
    return f"{gib} GiB (the layers need about {total >> 20} MiB)"
