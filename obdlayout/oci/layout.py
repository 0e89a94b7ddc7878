"""Read an OCI image layout (ecosystem.md §1.1-§1.3): `oci-layout`, `index.json`, tags and blobs.

Every blob is read through a BlobReader, which checks its size on opening and its size and digest as the
last byte goes by, so nothing unverified is ever handed on as complete.
"""

import hashlib
import io
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from ..units import STREAM_CHUNK, MiB
from . import gojson
from .descriptor import Descriptor
from .digest import ALGORITHM, PREFIX, BlobRef, encoded
from .documents import Index, Manifest
from .errors import LayoutError
from .mediatypes import LAYOUT_VERSION, OCI_INDEX, REF_NAME
from .walk import IndexWalker

LAYOUT_FILE = "oci-layout"
INDEX_FILE = "index.json"
BLOBS_DIR = "blobs"
# Manifests, indexes and configs are read whole. Registries need only accept manifests up to 4 MiB
# (distribution-spec); configs with long histories are larger, so allow a generous multiple of that.
JSON_BLOB_LIMIT = 16 * MiB


class BlobReader(io.RawIOBase):
    """A blob's bytes, checked against its descriptor: LayoutError on a size or digest mismatch."""

    def __init__(self, path: Path, ref: BlobRef) -> None:
        super().__init__()
        self.path = path
        self.ref = ref
        self._hasher = hashlib.sha256()
        self._left = ref.size
        self._checked = False
        try:
            self._file = open(path, "rb", buffering=0)  # noqa: SIM115 - closed by close()
        except FileNotFoundError:
            raise LayoutError(str(path), f"blob {ref.digest} is missing") from None
        except OSError as exc:
            raise LayoutError(str(path), f"cannot open blob: {exc.strerror}") from None
        actual = os.fstat(self._file.fileno()).st_size
        if actual != ref.size:
            self._file.close()
            short = "truncated: " if actual < ref.size else ""
            raise LayoutError(str(path), f"{short}blob is {actual} bytes, its descriptor says {ref.size}")

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        view = memoryview(buffer).cast("B")
        want = min(len(view), self._left)
        if want == 0:
            if len(view):
                self._check()
            return 0
        got = self._file.readinto(view[:want])
        if not got:
            done = self.ref.size - self._left
            raise LayoutError(str(self.path), f"truncated: blob ended after {done} of {self.ref.size} bytes")
        self._hasher.update(view[:got])
        self._left -= got
        if self._left == 0:
            self._check()
        return got

    def _check(self) -> None:
        """At the descriptor's size: nothing more may follow, and the digest must match."""
        if self._checked:
            return
        if self._file.read(1):
            raise LayoutError(str(self.path), f"blob is longer than the {self.ref.size} bytes its descriptor says")
        actual = PREFIX + self._hasher.hexdigest()
        if actual != self.ref.digest:
            raise LayoutError(str(self.path), f"digest mismatch: expected {self.ref.digest}, content is {actual}")
        self._checked = True

    def drain(self) -> None:
        """Read what is left, so that the size and digest are checked even if the consumer stopped early."""
        while self.read(STREAM_CHUNK):
            pass

    def close(self) -> None:
        if not self.closed:
            self._file.close()
        super().close()


def read_layout_file(root: Path) -> None:
    """Check `oci-layout`: a JSON object whose imageLayoutVersion is 1.0.0 (ecosystem.md §1.1)."""
    path = root / LAYOUT_FILE
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise LayoutError(str(path), "missing: this directory is not an OCI image layout") from None
    except OSError as exc:
        raise LayoutError(str(path), f"cannot read: {exc.strerror}") from None
    try:
        obj = gojson.parse(data)
    except ValueError as exc:
        raise LayoutError(str(path), str(exc)) from None
    version = obj.get("imageLayoutVersion") if isinstance(obj, dict) else None
    if version != LAYOUT_VERSION:
        raise LayoutError(str(path), f"imageLayoutVersion is {version!r}, not {LAYOUT_VERSION!r}")


def read_index_file(root: Path) -> Index | None:
    """`index.json`, validated; None when there is none yet."""
    path = root / INDEX_FILE
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise LayoutError(str(path), f"cannot read: {exc.strerror}") from None
    try:
        return Index.parse(gojson.parse(data), OCI_INDEX)
    except ValueError as exc:
        raise LayoutError(str(path), str(exc)) from None


def blob_path(root: Path, digest: str) -> Path:
    try:
        return root / BLOBS_DIR / ALGORITHM / encoded(digest)
    except ValueError as exc:
        raise LayoutError(str(root / BLOBS_DIR), str(exc)) from None


def has_blob(root: Path, ref: BlobRef) -> bool:
    """Whether the blob is present with the right size (its digest is checked when it is read)."""
    try:
        return blob_path(root, ref.digest).stat().st_size == ref.size
    except (FileNotFoundError, NotADirectoryError):
        return False


class Layout:
    """A layout directory opened for reading. index.json is read once, on opening."""

    def __init__(self, root: str | os.PathLike[str]) -> None:
        self.root = Path(root)
        read_layout_file(self.root)
        index = read_index_file(self.root)
        if index is None:
            raise LayoutError(str(self.root / INDEX_FILE), "missing: an OCI image layout must have one")
        self.index = index

    @property
    def index_path(self) -> str:
        return str(self.root / INDEX_FILE)

    def tags(self) -> list[str]:
        return [d.annotations[REF_NAME] for d in self.index.manifests if REF_NAME in d.annotations]

    def resolve_tag(self, tag: str) -> Descriptor:
        """The first index.json entry with this ref name, as skopeo picks it (ecosystem.md §1.2)."""
        for descriptor in self.index.manifests:
            if descriptor.annotations.get(REF_NAME) == tag:
                return descriptor
        known = ", ".join(repr(t) for t in self.tags()) or "none"
        raise LayoutError(self.index_path, f"no entry is tagged {tag!r} (tags: {known})")

    def resolve_digest(self, digest: str) -> Descriptor:
        """The descriptor of `digest` nearest index.json (its own entries first), as `walk` finds them."""
        for descriptor in self.walk():
            if descriptor.digest == digest:
                return descriptor
        raise LayoutError(self.index_path, f"{digest} is neither an entry nor inside any index it names")

    def walk(self) -> Iterator[Descriptor]:
        """Every descriptor reachable from index.json through indexes (not into manifests), each digest once,
        nearest first."""
        walker = IndexWalker(self.read_index, skip_attestations=False)
        return (visit.descriptor for visit in walker.walk(self.index.manifests, breadth_first=True))

    def blob_path(self, digest: str) -> Path:
        return blob_path(self.root, digest)

    def open_blob(self, descriptor: Descriptor) -> BlobReader:
        """A verifying stream of the blob; the caller closes it (it is a context manager)."""
        return BlobReader(self.blob_path(descriptor.digest), descriptor.ref)

    def has_blob(self, descriptor: Descriptor) -> bool:
        return has_blob(self.root, descriptor.ref)

    def read_blob(self, descriptor: Descriptor) -> bytes:
        """A small blob (manifest, index, config), whole and verified."""
        if descriptor.size > JSON_BLOB_LIMIT:
            raise LayoutError(
                str(self.blob_path(descriptor.digest)),
                f"{descriptor.media_type} of {descriptor.size} bytes is over the {JSON_BLOB_LIMIT}-byte limit",
            )
        with self.open_blob(descriptor) as reader:
            return reader.readall()

    def read_json(self, descriptor: Descriptor) -> Any:
        data = self.read_blob(descriptor)
        try:
            return gojson.parse(data)
        except ValueError as exc:
            raise LayoutError(str(self.blob_path(descriptor.digest)), f"{descriptor.media_type}: {exc}") from None

    def read_index(self, descriptor: Descriptor) -> Index:
        try:
            return Index.parse(self.read_json(descriptor), descriptor.media_type)
        except ValueError as exc:
            raise LayoutError(str(self.blob_path(descriptor.digest)), f"index {descriptor.digest}: {exc}") from None

    def read_manifest(self, descriptor: Descriptor) -> Manifest:
        try:
            return Manifest.parse(self.read_json(descriptor), descriptor.media_type)
        except ValueError as exc:
            raise LayoutError(str(self.blob_path(descriptor.digest)), f"manifest {descriptor.digest}: {exc}") from None
