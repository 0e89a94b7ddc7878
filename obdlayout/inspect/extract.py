"""An image's root file system as a pax tar stream, and what both kinds of extraction share.

Names a crafted ext4 may hold but that could climb or split ("", ".", "..", or holding "/" or NUL) are
skipped and reported, by the tar too, where an extractor would act on them. Owners, modes, xattrs, device
numbers, hard links and nanosecond mtimes are kept (tarwriter.py).
"""

import stat
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import BinaryIO

from ..tar.reader import BLOCKDEV, CHAR, DIRECTORY, FIFO, HARDLINK, REGULAR, SYMLINK
from .readfs import EntryView, ImageFs
from .tarwriter import Member, PaxTarWriter
from .tree import display

_TAR_TYPES = {stat.S_IFCHR: CHAR, stat.S_IFBLK: BLOCKDEV, stat.S_IFIFO: FIFO, stat.S_IFLNK: SYMLINK}


@dataclass
class ExtractReport:
    entries: int = 0
    file_bytes: int = 0
    # problem -> (how many entries, the first of them)
    warnings: dict[str, tuple[int, str]] = field(default_factory=dict)

    def warn(self, problem: str, path: bytes) -> None:
        count, first = self.warnings.get(problem, (0, display(path)))
        self.warnings[problem] = (count + 1, first)

    def lines(self) -> list[str]:
        return [
            f"{problem}: {count} entr{'y' if count == 1 else 'ies'} (first {first})"
            for problem, (count, first) in self.warnings.items()
        ]


def safe_name(name: bytes) -> bool:
    return bool(name) and name not in (b".", b"..") and b"/" not in name and b"\0" not in name


def safe_entries(fs: ImageFs, report: ExtractReport) -> Iterator[EntryView]:
    """The tree below the root, less what has an unsafe name (and everything under it)."""
    for entry in fs.walk(fs.root):
        if not entry.path:
            continue
        if not all(safe_name(name) for name in entry.path):
            if not safe_name(entry.path[-1]):
                report.warn("skipped: a name that could escape the root", b"/".join(entry.path))
            continue
        yield entry


def extract_tar(fs: ImageFs, out: BinaryIO) -> ExtractReport:
    """The tree as a pax tar: the root's entries (not the root itself, which applying a layer skips),
    directories before their contents, a hard link's second and later paths as links to the first."""
    report = ExtractReport()
    writer = PaxTarWriter(out)
    first_path: dict[int, bytes] = {}  # inode with several links -> the path it was written under
    for entry in safe_entries(fs, report):
        inode = entry.inode
        kind = inode.file_type
        path = b"/".join(entry.path)
        where = display(path)
        member = Member(path, REGULAR, inode.mode & 0o7777, inode.uid, inode.gid, inode.mtime)
        if kind != stat.S_IFDIR and entry.ino in first_path:
            member.type, member.linkname = HARDLINK, first_path[entry.ino]
            writer.add(member)
            report.entries += 1
            continue
        if kind == stat.S_IFSOCK:
            report.warn("skipped: a socket, which tar cannot hold", path)
            continue
        member.xattrs = fs.xattrs(inode, where)
        if kind == stat.S_IFDIR:
            member.name, member.type = path + b"/", DIRECTORY
            writer.add(member)
        elif kind == stat.S_IFREG:
            member.size = inode.size
            writer.add(member, fs.iter_data(inode, where))
            report.file_bytes += inode.size
        elif kind in _TAR_TYPES:
            member.type = _TAR_TYPES[kind]
            if kind == stat.S_IFLNK:
                member.linkname = fs.symlink_target(entry.ino)
            elif kind != stat.S_IFIFO:
                member.devmajor, member.devminor = fs.device_numbers(inode)
            writer.add(member)
        else:
            report.warn(f"skipped: unknown file type {kind:#o}", path)
            continue
        if kind != stat.S_IFDIR and inode.links > 1:
            first_path[entry.ino] = path
        report.entries += 1
    writer.close()
    return report
