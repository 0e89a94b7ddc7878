"""Write into an OCI image layout safely, even with other writers at work (ecosystem.md §1.1, §2.3).

- A blob is written under a temporary name in blobs/sha256, synced, then renamed to its digest: no reader
  ever sees a partial blob under its final name. A blob already present with the right content is kept.
- `index.json` is changed last, under an exclusive lock on `index.json.lock`: it is read again under the
  lock, the new tags are merged in (an entry with the same ref name is replaced, never duplicated) and the
  result replaces the file atomically. Two writers tagging at once therefore lose nothing.
- The layout's own files are never followed through a symlink (a link planted there could make a write land
  outside the layout); temporary files a killed writer left behind are removed by the next one; `rollback`
  removes the blobs a writer added, for a conversion that failed before tagging anything.
"""

import fcntl
import os
import re
import shutil
import tempfile
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any, BinaryIO

from ..atomic import atomic_output
from ..lifetime import PART_SUFFIX, part_prefix, sweep_stale_parts
from . import gojson
from .descriptor import Descriptor
from .digest import ALGORITHM, BlobRef, digest_stream, ref_of
from .documents import SCHEMA_VERSION
from .errors import LayoutError
from .layout import (
    BLOBS_DIR,
    INDEX_FILE,
    LAYOUT_FILE,
    BlobReader,
    blob_path,
    has_blob,
    read_index_file,
    read_layout_file,
)
from .mediatypes import LAYOUT_VERSION, OCI_INDEX, REF_NAME

LOCK_FILE = "index.json.lock"
FILE_MODE = 0o644
# annotations.md grammar of org.opencontainers.image.ref.name: components of alphanumerics joined by
# separators [-._:@+] or "--", the components joined by "/".
_COMPONENT = r"[A-Za-z0-9]+(?:(?:[-._:@+]|--)[A-Za-z0-9]+)*"
_REF_NAME = re.compile(rf"{_COMPONENT}(?:/{_COMPONENT})*")


def check_tag(tag: str) -> str:
    if not _REF_NAME.fullmatch(tag):
        raise ValueError(f"tag {tag!r} is not a valid org.opencontainers.image.ref.name")
    return tag


def check_destination(root: Path) -> None:
    """Everything about a layout to be written that can be checked before writing: it is a directory (or
    absent), its own files are no symlinks, and its oci-layout and index.json, where present, are sound."""
    if not root.exists():
        return
    if not root.is_dir():
        raise LayoutError(str(root), "is not a directory (an OCI image layout is written there)")
    for name in (LAYOUT_FILE, INDEX_FILE, LOCK_FILE, BLOBS_DIR, f"{BLOBS_DIR}/{ALGORITHM}"):
        if (root / name).is_symlink():
            raise LayoutError(
                str(root / name), "is a symlink; a layout's own files must not be (refusing to follow it)"
            )
    if (root / LAYOUT_FILE).exists():
        read_layout_file(root)
    read_index_file(root)


class PendingBlob:
    """A blob being written: write (and seek) in `file`; `ref` is known once its with-block has ended."""

    def __init__(self, file: BinaryIO) -> None:
        self.file = file
        self._ref: BlobRef | None = None

    @property
    def ref(self) -> BlobRef:
        if self._ref is None:
            raise RuntimeError("the blob is still being written")
        return self._ref

    def finish(self, ref: BlobRef) -> None:
        self._ref = ref


class LayoutWriter:
    """A layout directory opened for writing; created, with its `oci-layout` file, if missing."""

    def __init__(self, root: str | os.PathLike[str]) -> None:
        self.root = Path(root)
        check_destination(self.root)
        self._blobs = self.root / BLOBS_DIR / ALGORITHM
        self._blobs.mkdir(parents=True, exist_ok=True)
        sweep_stale_parts(self.root)
        sweep_stale_parts(self._blobs)
        self._added: list[Path] = []  # blobs this writer put in place, for `rollback`
        if not (self.root / LAYOUT_FILE).exists():
            with atomic_output(self.root / LAYOUT_FILE, FILE_MODE) as out:
                out.write(gojson.marshal({"imageLayoutVersion": LAYOUT_VERSION}, ()))

    def blob_path(self, digest: str) -> Path:
        return blob_path(self.root, digest)

    def has_blob(self, ref: BlobRef) -> bool:
        return has_blob(self.root, ref)

    @contextmanager
    def new_blob(self) -> Iterator[PendingBlob]:
        """Write a blob of yet unknown digest; it is hashed and renamed into place when the block ends."""
        fd, temp = tempfile.mkstemp(prefix=part_prefix("blob"), suffix=PART_SUFFIX, dir=self._blobs)
        try:
            with os.fdopen(fd, "w+b") as out:
                pending = PendingBlob(out)
                yield pending
                out.flush()
                out.seek(0)
                ref = digest_stream(out)
                os.fchmod(out.fileno(), FILE_MODE)
                os.fsync(out.fileno())
            self._install(Path(temp), ref)
        except BaseException:
            Path(temp).unlink(missing_ok=True)
            raise
        pending.finish(ref)

    def add_file(self, path: Path, ref: BlobRef) -> None:
        """A finished file as a blob, under a temporary name first. `ref` must be the digest and size this run
        found by reading `path` (as it made or reused it): a hard link is that very file and is not hashed
        again; a copy (`path` on another file system) is checked against `ref`."""
        if self._holds(ref):
            return
        fd, temp = tempfile.mkstemp(prefix=part_prefix("blob"), suffix=PART_SUFFIX, dir=self._blobs)
        os.close(fd)
        os.unlink(temp)
        try:
            try:
                os.link(path, temp)
            except OSError:
                shutil.copyfile(path, temp)
                os.chmod(temp, FILE_MODE)
                with BlobReader(Path(temp), ref) as reader:
                    reader.drain()
            self._install(Path(temp), ref)
        except BaseException:
            Path(temp).unlink(missing_ok=True)
            raise

    def put_bytes(self, data: bytes) -> BlobRef:
        ref = ref_of(data)
        if not self._holds(ref):
            with self.new_blob() as pending:
                pending.file.write(data)
        return ref

    def _holds(self, ref: BlobRef) -> bool:
        """Whether the blob is present with exactly the right content."""
        try:
            with BlobReader(self.blob_path(ref.digest), ref) as reader:
                reader.drain()
        except LayoutError:
            return False
        return True

    def _install(self, temp: Path, ref: BlobRef) -> None:
        if self._holds(ref):
            temp.unlink()
        else:
            os.replace(temp, self.blob_path(ref.digest))
            self._added.append(self.blob_path(ref.digest))

    def rollback(self) -> None:
        """Remove the blobs this writer added (under the index lock: no writer is tagging meanwhile)."""
        with self._index_lock():
            for path in self._added:
                path.unlink(missing_ok=True)
        self._added.clear()

    def set_tags(self, tags: Mapping[str, Descriptor]) -> None:
        """Point each tag at its descriptor in index.json, keeping every other entry and field."""
        for tag in tags:
            check_tag(tag)
        with self._index_lock():
            index = read_index_file(self.root)
            fields: dict[str, Any] = (
                dict(index.fields) if index else {"schemaVersion": SCHEMA_VERSION, "mediaType": OCI_INDEX}
            )
            entries = [d.to_json() for d in index.manifests] if index else []
            for tag, descriptor in tags.items():
                _put_entry(entries, tag, descriptor.with_annotation(REF_NAME, tag).to_json())
            fields["manifests"] = entries
            with atomic_output(self.root / INDEX_FILE, FILE_MODE) as out:
                out.write(gojson.marshal(fields, gojson.INDEX))
                out.flush()
                os.fsync(out.fileno())

    @contextmanager
    def _index_lock(self) -> Iterator[None]:
        try:
            fd = os.open(self.root / LOCK_FILE, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW, FILE_MODE)
        except OSError as exc:
            raise LayoutError(str(self.root / LOCK_FILE), f"cannot open the lock: {exc.strerror}") from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            yield
        finally:
            os.close(fd)  # releases the lock


def _put_entry(entries: list[dict[str, Any]], tag: str, entry: dict[str, Any]) -> None:
    """Replace the first entry tagged `tag` and drop any later duplicates, or append."""
    tagged = [i for i, e in enumerate(entries) if (e.get("annotations") or {}).get(REF_NAME) == tag]
    if not tagged:
        entries.append(entry)
        return
    entries[tagged[0]] = entry
    for i in reversed(tagged[1:]):
        del entries[i]
