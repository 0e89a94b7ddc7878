"""An image's root file system as a directory on the host, never writing outside it.

- the directory is built inside a fresh private (0700) temporary directory beside the target, renamed
  into place only when complete, and removed on failure: nothing half-written is left behind;
- every object is made relative to an open descriptor of its parent directory, with O_EXCL/O_NOFOLLOW
  semantics (mkdir, symlink, mknod and link fail on an existing name; directories are opened O_NOFOLLOW),
  so no symlink, whether from the image or not, is ever followed on the host. Symlinks are recreated
  verbatim: an absolute or climbing target is only a string until something outside follows it;
- names that could climb out are skipped and reported (extract.py).
Owners, device nodes and privileged xattrs need root; without it they are reported, not faked.
"""

import os
import shutil
import stat
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from .errors import InspectError
from .extract import ExtractReport, safe_entries
from .readfs import EntryView, ImageFs, InodeView
from .tree import display

_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
_FILE_FLAGS = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC


@dataclass
class _OpenDir:
    path: tuple[bytes, ...]
    fd: int
    inode: InodeView


class _DirWriter:
    def __init__(self, fs: ImageFs, root_fd: int, privileged: bool, report: ExtractReport) -> None:
        self.fs = fs
        self.root_fd = root_fd
        self.privileged = privileged
        self.report = report
        self.first_path: dict[int, bytes] = {}
        self.me = (os.geteuid(), os.getegid())

    def run(self) -> None:
        root = self.fs.inode(self.fs.root)
        stack = [_OpenDir((), self.root_fd, root)]
        try:
            for entry in safe_entries(self.fs, self.report):
                while stack[-1].path != entry.path[: len(stack[-1].path)]:
                    self._finish(stack.pop())
                if stack[-1].path != entry.path[:-1]:
                    continue  # below a directory that was not made (already reported)
                made = self._make(stack[-1].fd, entry)
                if made is not None:
                    stack.append(made)
            while stack:
                self._finish(stack.pop())
        finally:
            for opened in stack[1:]:
                os.close(opened.fd)

    def _make(self, dir_fd: int, entry: EntryView) -> _OpenDir | None:
        inode, name, path = entry.inode, entry.path[-1], b"/".join(entry.path)
        kind = inode.file_type
        if kind != stat.S_IFDIR and entry.ino in self.first_path:
            os.link(self.first_path[entry.ino], name, src_dir_fd=self.root_fd, dst_dir_fd=dir_fd, follow_symlinks=False)
            self.report.entries += 1
            return None
        opened: _OpenDir | None = None
        if kind == stat.S_IFDIR:
            os.mkdir(name, 0o700, dir_fd=dir_fd)
            opened = _OpenDir(entry.path, os.open(name, _DIR_FLAGS, dir_fd=dir_fd), inode)
        elif kind == stat.S_IFREG:
            self._write_file(dir_fd, name, entry)
        elif kind == stat.S_IFLNK:
            os.symlink(self.fs.symlink_target(entry.ino), name, dir_fd=dir_fd)
            self._stamp_by_name(dir_fd, name, inode, path, symlink=True)
        elif kind in (stat.S_IFCHR, stat.S_IFBLK, stat.S_IFIFO, stat.S_IFSOCK):
            device = os.makedev(*self.fs.device_numbers(inode)) if kind in (stat.S_IFCHR, stat.S_IFBLK) else 0
            try:
                os.mknod(name, kind | 0o600, device, dir_fd=dir_fd)
            except PermissionError:
                self.report.warn("not created: device nodes need root", path)
                return None
            self._stamp_by_name(dir_fd, name, inode, path, symlink=False)
        else:
            self.report.warn(f"skipped: unknown file type {kind:#o}", path)
            return None
        if kind != stat.S_IFDIR and inode.links > 1:
            self.first_path[entry.ino] = path
        self.report.entries += 1
        return opened

    def _write_file(self, dir_fd: int, name: bytes, entry: EntryView) -> None:
        inode, path = entry.inode, b"/".join(entry.path)
        fd = os.open(name, _FILE_FLAGS, 0o600, dir_fd=dir_fd)
        try:
            offset = 0
            for chunk in self.fs.iter_data(inode, display(path)):
                if chunk.count(0) != len(chunk):  # runs of zeros stay holes
                    _pwrite_all(fd, chunk, offset)
                offset += len(chunk)
            os.ftruncate(fd, offset)
            self.report.file_bytes += offset
            self._stamp_fd(fd, inode, path)
        finally:
            os.close(fd)

    def _finish(self, opened: _OpenDir) -> None:
        """A directory's own metadata, once everything inside it exists (which changed its mtime)."""
        try:
            self._stamp_fd(opened.fd, opened.inode, b"/".join(opened.path))
        finally:
            if opened.fd != self.root_fd:
                os.close(opened.fd)

    # Owner first: chown clears setuid/setgid bits and security.capability, so mode and xattrs follow it.
    def _stamp_fd(self, fd: int, inode: InodeView, path: bytes) -> None:
        self._chown(lambda: os.fchown(fd, inode.uid, inode.gid), inode, path)
        self._set_xattrs(lambda name, value: os.setxattr(fd, name, value), inode, path)
        os.fchmod(fd, inode.mode & 0o7777)
        os.utime(fd, ns=(_ns(inode), _ns(inode)))

    def _stamp_by_name(self, dir_fd: int, name: bytes, inode: InodeView, path: bytes, symlink: bool) -> None:
        """For what cannot be opened safely (symlinks, devices, fifos): *at calls that do not follow the name."""
        self._chown(lambda: os.chown(name, inode.uid, inode.gid, dir_fd=dir_fd, follow_symlinks=False), inode, path)
        # No fd-relative lsetxattr exists: /proc/self/fd/N is the directory itself, and the last name is not followed.
        proc = b"/proc/self/fd/%d/" % dir_fd + name
        self._set_xattrs(lambda key, value: os.setxattr(proc, key, value, follow_symlinks=False), inode, path)
        if not symlink:  # a symlink has no mode of its own; this one was just made here, never a symlink
            os.chmod(name, inode.mode & 0o7777, dir_fd=dir_fd)
        os.utime(name, ns=(_ns(inode), _ns(inode)), dir_fd=dir_fd, follow_symlinks=False)

    def _chown(self, chown: Callable[[], None], inode: InodeView, path: bytes) -> None:
        if self.privileged:
            try:
                chown()
            except OSError as exc:  # e.g. an id a user namespace does not map
                self.report.warn(f"owner not kept: {exc.strerror}", path)
        elif (inode.uid, inode.gid) != self.me:
            self.report.warn("owner not kept: changing owners needs root", path)

    def _set_xattrs(self, setter: Callable[[str, bytes], None], inode: InodeView, path: bytes) -> None:
        for key, value in self.fs.xattrs(inode, display(path)).items():
            try:
                setter(key, value)
            except OSError as exc:
                self.report.warn(f"xattr {key.split('.')[0]}.* not set: {exc.strerror}", path)


def _ns(inode: InodeView) -> int:
    seconds, nanoseconds = inode.mtime
    return seconds * 1_000_000_000 + nanoseconds


def _pwrite_all(fd: int, data: bytes, offset: int) -> None:
    view = memoryview(data)
    while view:
        done = os.pwrite(fd, view, offset)
        view, offset = view[done:], offset + done


def extract_dir(fs: ImageFs, target: Path, privileged: bool | None = None) -> ExtractReport:
    """Make `target` (absent, or an empty directory) hold the image's tree; the root's metadata goes on it."""
    if privileged is None:
        privileged = os.geteuid() == 0
    if os.path.lexists(target) and not (target.is_dir() and not target.is_symlink() and not any(target.iterdir())):
        raise InspectError(str(target), "exists and is not an empty directory")
    parent = target.absolute().parent
    temp = Path(tempfile.mkdtemp(prefix=f".{target.name}.", suffix=".part", dir=parent))
    report = ExtractReport()
    try:
        root_fd = os.open(temp, _DIR_FLAGS)
        try:
            _DirWriter(fs, root_fd, privileged, report).run()
        finally:
            os.close(root_fd)
        os.rename(temp, target)  # replaces an empty directory, atomically
    except BaseException:
        _remove_tree(temp)
        raise
    return report


def _remove_tree(path: Path) -> None:
    """Remove a partial extraction, even where it already made a directory read-only.

    The tree is ours and private (under a 0700 directory); symlinks in it are never followed."""
    if not path.exists():
        return
    os.chmod(path, 0o700)
    for directory, subdirectories, _ in os.walk(path):
        for name in subdirectories:
            inner = os.path.join(directory, name)
            if not os.path.islink(inner):
                os.chmod(inner, 0o700)
    shutil.rmtree(path)
