"""The work directory: converted layers by key, kept until the destination holds them.

A convert that is killed leaves its finished layers here, so a rerun skips them. Converts into the
same destination share the directory: each holds a shared lock on it while it runs, and the last
one to finish removes it (unless told to keep it). A layer is built in a temporary directory and
renamed into place whole, its record (artefacts.ConvertedLayer) inside it; a layer is the same bytes
whoever makes it, so when two converts build the same one, the first to finish is kept.
"""

import errno
import fcntl
import hashlib
import json
import os
import shutil
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

from ..oci.digest import digest_file
from .artefacts import ConvertedLayer

BLOB_MODE = 0o644  # layer files become layout blobs by hard link
LOCK_NAME = "lock"
LAYERS = "layers"
RECORD = "layer.json"
DUMP = "dump"
SCRATCH = "scratch"


class WorkDir:
    def __init__(self, path: Path, keep: bool) -> None:
        self.path = path
        self.keep = keep
        self._lock_fd = -1

    def __enter__(self) -> "WorkDir":
        # Lock, then check the lock file is still the one in the directory: a convert that just
        # finished may have removed the directory between our open and our lock.
        while True:
            (self.path / LAYERS).mkdir(parents=True, exist_ok=True)
            fd = os.open(self.path / LOCK_NAME, os.O_RDWR | os.O_CREAT, 0o644)
            fcntl.flock(fd, fcntl.LOCK_SH)
            try:
                same = os.stat(self.path / LOCK_NAME).st_ino == os.fstat(fd).st_ino
            except FileNotFoundError:
                same = False
            if same:
                self._lock_fd = fd
                return self
            os.close(fd)

    def __exit__(self, *exc: object) -> None:
        fd, self._lock_fd = self._lock_fd, -1
        try:
            if not self.keep:
                try:
                    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                except BlockingIOError:
                    return  # another convert is still using it
                shutil.rmtree(self.path, ignore_errors=True)
        finally:
            os.close(fd)

    def layer_dir(self, key: str) -> Path:
        """Where the layer stored under `key` is."""
        return self.path / LAYERS / key

    def lookup(self, key: str, verify: bool = True) -> ConvertedLayer | None:
        """The finished layer stored under `key`, if it is whole: its files of the recorded sizes and, with
        `verify`, digests. One that is not (a file changed since: damage, or a hand's edit) is removed, so
        that the layer is converted again rather than published."""
        home = self.layer_dir(key)
        try:
            layer = ConvertedLayer.from_record(json.loads((home / RECORD).read_text()), home)
        except (OSError, ValueError, KeyError, TypeError):
            return None
        for path, ref in layer.blobs:
            ours = path.is_relative_to(home)  # not a source blob named by a TurboOCI layer: checked when published
            try:
                sound = path.stat().st_size == ref.size and (not verify or not ours or digest_file(path) == ref)
            except OSError:
                sound = False
            if not sound:
                if ours:
                    shutil.rmtree(home, ignore_errors=True)
                return None
        return layer

    def build(self, key: str, make: Callable[[Path], ConvertedLayer]) -> ConvertedLayer:
        """The layer `make` writes into the empty directory it is given, stored under `key`."""
        temp = Path(tempfile.mkdtemp(prefix=f".{key}.", suffix=".part", dir=self.path / LAYERS))
        try:
            made = make(temp)
            for path, _ in made.blobs:
                if path.is_relative_to(temp):
                    os.chmod(path, BLOB_MODE)
            (temp / RECORD).write_text(json.dumps(made.record(temp)))
            try:
                os.rename(temp, self.layer_dir(key))
            except OSError as exc:
                if exc.errno not in (errno.EEXIST, errno.ENOTEMPTY):
                    raise
                shutil.rmtree(temp)  # another convert stored it first
        except BaseException:
            shutil.rmtree(temp, ignore_errors=True)
            raise
        stored = self.lookup(key, verify=False)  # just made, and hashed as it was made
        assert stored is not None, f"layer {key} is not whole in {self.path} right after it was stored"
        return stored

    @contextmanager
    def scratch(self, name: str) -> Iterator[Path]:
        """A path for a temporary file (a spooled layer tar), removed when the block ends."""
        directory = self.path / SCRATCH
        directory.mkdir(exist_ok=True)
        fd, temp = tempfile.mkstemp(prefix=f".{name}.", dir=directory)
        os.close(fd)
        try:
            yield Path(temp)
        finally:
            Path(temp).unlink(missing_ok=True)

    def dump(self, relative: str, data: bytes) -> Path:
        target = self.path / DUMP / relative
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(data)
        return target


def default_work_dir(destination: Path) -> Path:
    """Beside the destination (same file system, so blobs are linked, not copied), named after it."""
    absolute = destination.resolve()
    tag = hashlib.sha256(str(absolute).encode()).hexdigest()[:12]
    return absolute.parent / f".{absolute.name}.obdlayout-work-{tag}"
