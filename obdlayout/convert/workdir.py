"""The work directory: finished layer blobs by key, kept until the destination holds them.

A convert that is killed leaves its finished layers here, so a rerun skips them. Converts into the
same destination share the directory: each holds a shared lock on it while it runs, and the last
one to finish removes it (unless told to keep it). Entries are written under temporary names and
renamed into place, and a layer is the same bytes whoever makes it, so sharing is safe.
"""

import fcntl
import hashlib
import json
import os
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import BinaryIO

from ..oci.digest import BlobRef, digest_stream

BLOB_MODE = 0o644
LOCK_NAME = "lock"
LAYERS = "layers"
DUMP = "dump"


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

    def layer_path(self, key: str) -> Path:
        return self.path / LAYERS / f"{key}.blob"

    def lookup(self, key: str) -> BlobRef | None:
        """The finished layer stored under `key`, if any."""
        try:
            record = json.loads((self.path / LAYERS / f"{key}.json").read_text())
            ref = BlobRef(str(record["digest"]), int(record["size"]))
        except (OSError, ValueError, KeyError, TypeError):
            return None
        return ref if self.layer_path(key).is_file() and self.layer_path(key).stat().st_size == ref.size else None

    @contextmanager
    def new_layer(self, key: str) -> Iterator[BinaryIO]:
        """A file to write the layer into; stored under `key` if the block ends without error."""
        fd, temp = tempfile.mkstemp(prefix=f".{key}.", suffix=".part", dir=self.path / LAYERS)
        try:
            with os.fdopen(fd, "w+b") as out:
                yield out
                out.flush()
                out.seek(0)
                ref = digest_stream(out)
                os.fchmod(out.fileno(), BLOB_MODE)  # it becomes a layout blob by hard link
            os.replace(temp, self.layer_path(key))
        except BaseException:
            Path(temp).unlink(missing_ok=True)
            raise
        self._write_record(key, ref)

    def _write_record(self, key: str, ref: BlobRef) -> None:
        fd, temp = tempfile.mkstemp(prefix=f".{key}.", suffix=".json.part", dir=self.path / LAYERS)
        with os.fdopen(fd, "w") as out:
            json.dump({"digest": ref.digest, "size": ref.size}, out)
        os.replace(temp, self.path / LAYERS / f"{key}.json")

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
