"""Read the tree of a raw ext4 image with the real tools: `debugfs` (always), a read-only loop mount (root only).

Both give the `ocimodel.Tree` structure (path -> Entry, hard-link groups), so that an image can be
compared with the model of its layers. Nothing here uses obdlayout.

debugfs is driven in batches (`debugfs -f CMDFILE IMAGE`), naming inodes as `<INO>` so that no
file name ever has to be quoted: `ls -p` for directory listings, `stat` for links, times, device
numbers and fast symlink targets, `ea_list`/`ea_get -f` for xattrs (ACLs come back in the VFS
form) and `dump` for file contents and slow symlink targets.
"""

import hashlib
import os
import re
import stat
import subprocess
import tempfile
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from .ocimodel import LOST_FOUND, ROOT, Entry, Tree, canonical_xattr
from .shared import require_tool

DEBUGFS_TIMEOUT = 600
ROOT_INO = 2
_ECHO = re.compile(rb"^debugfs: (.*)$", re.M)
# `ls -p`: /ino/mode/uid/gid/name/size/ (size empty for directories); names hold no '/' but may hold '\n'.
_LS_P = re.compile(rb"^/(\d+)/(\d+)/(-?\d+)/(-?\d+)/([^/]*)/(\d*)/$", re.M)
_KINDS = {
    stat.S_IFDIR: "dir",
    stat.S_IFREG: "file",
    stat.S_IFLNK: "symlink",
    stat.S_IFCHR: "chr",
    stat.S_IFBLK: "blk",
    stat.S_IFIFO: "fifo",
    stat.S_IFSOCK: "sock",
}
INODE_FLAG_EXTENTS = 0x80000


class DebugfsError(Exception):
    pass


def _u32(text: bytes) -> int:
    """debugfs prints 32-bit ids with %d."""
    value = int(text)
    return value + (1 << 32) if value < 0 else value


def decode_time(low: int, extra: int | None) -> tuple[int, int]:
    """ext4's seconds (signed 32-bit, plus 2 epoch bits from the extra field) and nanoseconds."""
    seconds = low - (1 << 32) if low & 0x80000000 else low
    if extra is None:
        return seconds, 0
    return seconds + ((extra & 3) << 32), extra >> 2


@dataclass
class Ext4Tree:
    tree: Tree
    inodes: dict[bytes, int]  # path -> inode number
    flags: dict[int, int] = field(default_factory=dict)  # inode -> i_flags
    blocks: dict[int, int] = field(default_factory=dict)  # inode -> i_blocks (512-byte units)
    xattr_blocks: dict[int, int] = field(default_factory=dict)  # inode -> its xattr block (File ACL), 0 if none
    sizes: dict[int, int] = field(default_factory=dict)  # inode -> i_size (also for directories)
    times: dict[int, tuple[tuple[int, int], tuple[int, int], tuple[int, int]]] = field(default_factory=dict)
    extents: dict[int, list[tuple[int, int, int]]] = field(default_factory=dict)  # (logical, physical, length)


def run_debugfs(image: Path, commands: Sequence[str], cwd: Path) -> list[tuple[str, bytes]]:
    """Run commands in one debugfs; returns (command, output) pairs in order."""
    script = cwd / "debugfs.cmds"
    script.write_text("".join(f"{c}\n" for c in commands))
    try:
        result = subprocess.run(
            [require_tool("debugfs"), "-f", str(script), str(image)],
            cwd=cwd,
            stdin=subprocess.DEVNULL,
            capture_output=True,
            timeout=DEBUGFS_TIMEOUT,
        )
    finally:
        script.unlink()
    if result.returncode != 0:
        raise DebugfsError(f"debugfs exit {result.returncode}: {result.stderr[-2000:]!r}")
    out = result.stdout
    marks = list(_ECHO.finditer(out))
    pieces = []
    for i, mark in enumerate(marks):
        end = marks[i + 1].start() if i + 1 < len(marks) else len(out)
        pieces.append((mark.group(1).decode(), out[mark.end() + 1 : end]))
    if [c for c, _ in pieces] != list(commands):
        raise DebugfsError(f"debugfs echoed {len(pieces)} of {len(commands)} commands: {result.stderr[-2000:]!r}")
    return pieces


def _chunks(items: Sequence[str], size: int) -> Iterator[Sequence[str]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]


def _batch(image: Path, commands: list[str], cwd: Path, size: int = 50_000) -> list[tuple[str, bytes]]:
    out: list[tuple[str, bytes]] = []
    for chunk in _chunks(commands, size):
        out.extend(run_debugfs(image, chunk, cwd))
    return out


@dataclass
class _Listed:
    ino: int
    mode: int
    uid: int
    gid: int
    size: int


_STAT_LINKS = re.compile(rb"^Links: (\d+)\s+Blockcount: (\d+)", re.M)
_STAT_FLAGS = re.compile(rb"Flags: 0x([0-9a-f]+)")
_STAT_FILE_ACL = re.compile(rb"^File ACL: (\d+)", re.M)
_STAT_SIZE = re.compile(rb"Size: (\d+)\n")
_STAT_TIME = re.compile(rb"^ *(a|c|m)time: 0x([0-9a-f]+)(?::([0-9a-f]+))? --", re.M)
_STAT_DEVICE = re.compile(rb"^(?:\(New-style\) )?Device major/minor number: (\d+):(\d+) ", re.M)
_STAT_FAST_LINK = b'Fast link dest: "'
_STAT_EXTENT = re.compile(rb"\((\d+)(?:-(\d+))?\):(\d+)(?:-(\d+))?")
_EA_NAME = re.compile(rb"^  (\S+) \((\d+)\)", re.M)


def read_tree(image: Path, workdir: Path | None = None) -> Ext4Tree:
    """The whole tree of `image` but lost+found, read with debugfs."""
    with tempfile.TemporaryDirectory(dir=workdir) as tmp:
        return _read_tree(image, Path(tmp))


def _read_tree(image: Path, tmp: Path) -> Ext4Tree:
    listed: dict[bytes, _Listed] = {}
    root = run_debugfs(image, [f"ls -p <{ROOT_INO}>"], tmp)[0][1]
    own = [m for m in _LS_P.finditer(root) if m.group(5) == b"."]
    if not own:
        raise DebugfsError(f"no root directory: {root[:300]!r}")
    listed[ROOT] = _listed(own[0])
    todo = [(ROOT, ROOT_INO)]
    while todo:
        outputs = _batch(image, [f"ls -p <{ino}>" for _, ino in todo], tmp)
        following = []
        for (path, _), (_, out) in zip(todo, outputs, strict=True):
            for match in _LS_P.finditer(out):
                name = match.group(5)
                if name in (b".", b"..") or match.group(1) == b"0":
                    continue  # (inode 0: an unused record, which `ls -p` lists too)
                child = path + name if path == ROOT else path + b"/" + name
                if child == LOST_FOUND:
                    continue
                entry = _listed(match)
                listed[child] = entry
                if stat.S_ISDIR(entry.mode):
                    following.append((child, entry.ino))
        todo = following

    inodes = sorted({e.ino for e in listed.values()})
    result = Ext4Tree(Tree({}, set()), {p: e.ino for p, e in listed.items()})
    stats = dict(zip(inodes, (o for _, o in _batch(image, [f"stat <{i}>" for i in inodes], tmp)), strict=True))
    eas = dict(zip(inodes, (o for _, o in _batch(image, [f"ea_list <{i}>" for i in inodes], tmp)), strict=True))
    by_ino = {e.ino: e for e in listed.values()}
    mode_of = {e.ino: e.mode for e in listed.values()}
    size_of = {e.ino: e.size for e in listed.values()}

    # Contents: files and slow symlinks are dumped, xattrs fetched one by one.
    fetch: list[str] = []
    dumped: dict[int, Path] = {}
    for ino in inodes:
        kind = _KINDS.get(stat.S_IFMT(mode_of[ino]), "?")
        if (kind == "file" and size_of[ino]) or (kind == "symlink" and _STAT_FAST_LINK not in stats[ino]):
            dumped[ino] = tmp / f"d{ino}"
            fetch.append(f"dump <{ino}> d{ino}")
    xattr_files: dict[tuple[int, str], Path] = {}
    for ino in inodes:
        for match in _EA_NAME.finditer(eas[ino]):
            name = match.group(1).decode()
            where = tmp / f"x{len(xattr_files)}"
            xattr_files[(ino, name)] = where
            fetch.append(f"ea_get -f {where.name} <{ino}> {name}")
    _batch(image, fetch, tmp, size=2000)

    entries: dict[int, Entry] = {}
    for ino in inodes:
        out = stats[ino]
        mode = mode_of[ino]
        kind = _KINDS.get(stat.S_IFMT(mode), f"?{mode:o}")
        links = _STAT_LINKS.search(out)
        flags = _STAT_FLAGS.search(out)
        size_match = _STAT_SIZE.search(out)
        if links is None or flags is None or size_match is None:
            raise DebugfsError(f"cannot parse stat <{ino}>: {out[:500]!r}")
        times = {m.group(1): _time(m) for m in _STAT_TIME.finditer(out)}
        result.flags[ino] = int(flags.group(1), 16)
        result.blocks[ino] = int(links.group(2))
        acl = _STAT_FILE_ACL.search(out)
        result.xattr_blocks[ino] = int(acl.group(1)) if acl else 0
        result.sizes[ino] = int(size_match.group(1))
        result.times[ino] = (times[b"a"], times[b"c"], times[b"m"])
        result.extents[ino] = _extents(out)
        size = int(size_match.group(1)) if kind in ("file", "symlink") else 0
        sha256 = target = rdev = None
        if kind == "file":
            sha256 = _sha256(dumped[ino]) if ino in dumped else hashlib.sha256(b"").hexdigest()
        elif kind == "symlink":
            if ino in dumped:
                target = dumped[ino].read_bytes()
            else:
                start = out.index(_STAT_FAST_LINK) + len(_STAT_FAST_LINK)
                target = out[start : start + size]
        elif kind in ("chr", "blk"):
            device = _STAT_DEVICE.search(out)
            if device is None:
                raise DebugfsError(f"no device numbers in stat <{ino}>: {out[:500]!r}")
            rdev = (int(device.group(1)), int(device.group(2)))
        xattrs = []
        for (owner, name), where in xattr_files.items():
            if owner == ino:
                if not where.exists():
                    raise DebugfsError(f"ea_get of {name} on <{ino}> wrote nothing")
                xattrs.append((name, canonical_xattr(name, where.read_bytes())))
        entries[ino] = Entry(
            kind=kind,
            mode=stat.S_IMODE(mode),
            uid=by_ino[ino].uid,
            gid=by_ino[ino].gid,
            mtime=times[b"m"],
            links=int(links.group(1)),
            size=size,
            sha256=sha256,
            target=target,
            rdev=rdev,
            xattrs=tuple(sorted(xattrs)),
        )
    names: dict[int, list[bytes]] = {}
    for path, ino in result.inodes.items():
        result.tree.entries[path] = entries[ino]
        names.setdefault(ino, []).append(path)
    result.tree.groups = {frozenset(paths) for paths in names.values() if len(paths) > 1}
    return result


def _listed(match: re.Match[bytes]) -> _Listed:
    size = match.group(6)
    return _Listed(
        int(match.group(1)), int(match.group(2), 8), _u32(match.group(3)), _u32(match.group(4)), int(size or 0)
    )


def _time(match: re.Match[bytes]) -> tuple[int, int]:
    extra = match.group(3)
    return decode_time(int(match.group(2), 16), int(extra, 16) if extra is not None else None)


def _extents(out: bytes) -> list[tuple[int, int, int]]:
    """(logical, physical, length) of the data extents debugfs lists after EXTENTS:."""
    at = out.find(b"EXTENTS:\n")
    if at < 0:
        return []
    runs = []
    for match in _STAT_EXTENT.finditer(out[at:]):
        first, last, start, end = match.groups()
        length = int(last) - int(first) + 1 if last else 1
        runs.append((int(first), int(start), length))
        if end is not None and int(end) - int(start) + 1 != length:
            raise DebugfsError(f"odd extent line {match.group(0)!r}")
    return runs


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        while chunk := f.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()


# -- a second reader: the kernel, through a read-only loop mount ------------------------------------


class MountUnavailable(Exception):
    pass


@contextmanager
def mounted(image: Path, workdir: Path, writable: bool = False, fstype: str = "ext4") -> Iterator[Path]:
    """`image` mounted through a loop device, read-only unless asked; MountUnavailable when this machine cannot
    (or its kernel has no `fstype`)."""
    if os.geteuid() != 0:
        raise MountUnavailable("mounting needs root")
    point = Path(tempfile.mkdtemp(prefix="mnt-", dir=workdir))
    options = "loop,nosuid,nodev,noexec," + ("rw" if writable else "ro")
    try:
        done = subprocess.run(
            ["mount", "-t", fstype, "-o", options, str(image), str(point)],
            capture_output=True,
            text=True,
            timeout=120,
            stdin=subprocess.DEVNULL,
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        point.rmdir()
        raise MountUnavailable(f"mount failed: {exc}") from None
    if done.returncode != 0:
        point.rmdir()
        raise MountUnavailable(f"mount -o {options} failed: {done.stderr.strip()}")
    try:
        yield point
    finally:
        subprocess.run(["umount", str(point)], capture_output=True, timeout=120, check=True)
        point.rmdir()


def read_mounted(point: Path) -> tuple[Tree, dict[bytes, int]]:
    """The tree below a mount point as the kernel shows it: lstat, readlink, listxattr/getxattr, read."""
    base = os.fsencode(point)
    entries: dict[bytes, Entry] = {}
    inodes: dict[bytes, int] = {}
    todo = [ROOT]
    while todo:
        path = todo.pop()
        real = base + (b"" if path == ROOT else path)
        st = os.lstat(real)
        kind = _KINDS.get(stat.S_IFMT(st.st_mode), "?")
        xattrs = tuple(
            sorted(
                (name, canonical_xattr(name, os.getxattr(real, name, follow_symlinks=False)))
                for name in os.listxattr(real, follow_symlinks=False)
            )
        )
        entries[path] = Entry(
            kind=kind,
            mode=stat.S_IMODE(st.st_mode),
            uid=st.st_uid,
            gid=st.st_gid,
            mtime=divmod(st.st_mtime_ns, 1_000_000_000),
            links=st.st_nlink,
            size=st.st_size if kind in ("file", "symlink") else 0,
            sha256=_sha256(Path(os.fsdecode(real))) if kind == "file" else None,
            target=os.readlink(real) if kind == "symlink" else None,
            rdev=(os.major(st.st_rdev), os.minor(st.st_rdev)) if kind in ("chr", "blk") else None,
            xattrs=xattrs,
        )
        inodes[path] = st.st_ino
        if kind == "dir":
            for name in os.listdir(real):
                child = (path if path != ROOT else b"") + b"/" + name
                if child != LOST_FOUND:
                    todo.append(child)
    names: dict[int, list[bytes]] = {}
    for path, ino in inodes.items():
        names.setdefault(ino, []).append(path)
    return Tree(entries, {frozenset(p) for p in names.values() if len(p) > 1}), inodes
