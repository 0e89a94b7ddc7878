"""The content store: converted blobs by digest, `blobs/sha256/<hex>`, on local or shared storage.

A blob enters whole or not at all (written or linked under a temporary name, then renamed), so a reader
never sees half of one, and several converters may store the same blob at once. Nothing here trusts a
stored file: `verify` hashes it, and the cache drops what does not match.
"""

import hashlib
import os
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import suppress
from pathlib import Path

from ..lifetime import PART_SUFFIX, part_prefix, sweep_stale_parts
from ..oci.digest import PREFIX, BlobRef, encoded
from ..units import STREAM_CHUNK

BLOBS = Path("blobs") / "sha256"


class ContentStore:
    def __init__(self, root: Path) -> None:
        self.root = root
        self.blobs = root / BLOBS

    def open(self) -> None:
        """Create the store if needed, and remove what converters that were killed left half written."""
        self.blobs.mkdir(parents=True, exist_ok=True)
        sweep_stale_parts(self.blobs)

    def path(self, digest: str) -> Path:
        return self.blobs / encoded(digest)

    def has(self, ref: BlobRef) -> bool:
        try:
            return self.path(ref.digest).stat().st_size == ref.size
        except OSError:
            return False

    def put_file(self, source: Path, ref: BlobRef) -> None:
        """Store `source`, whose digest is `ref` (the caller hashed it as it was made)."""
        if self.has(ref):
            return
        temp = self._temp(ref)
        try:
            try:
                os.link(source, temp)
            except OSError:  # another file system: copy
                shutil.copyfile(source, temp)
            os.replace(temp, self.path(ref.digest))
        finally:
            with suppress(FileNotFoundError):
                os.unlink(temp)

    def put_bytes(self, data: bytes) -> BlobRef:
        ref = BlobRef(PREFIX + hashlib.sha256(data).hexdigest(), len(data))
        if not self.has(ref):
            temp = self._temp(ref)
            try:
                temp.write_bytes(data)
                os.replace(temp, self.path(ref.digest))
            finally:
                with suppress(FileNotFoundError):
                    os.unlink(temp)
        return ref

    def verify(self, ref: BlobRef) -> bool:
        """Whether the stored blob is there, of its size and digest."""
        if not self.has(ref):
            return False
        sha = hashlib.sha256()
        try:
            with self.path(ref.digest).open("rb") as blob:
                while chunk := blob.read(STREAM_CHUNK):
                    sha.update(chunk)
        except OSError:
            return False
        return PREFIX + sha.hexdigest() == ref.digest

    def remove(self, digest: str) -> None:
        with suppress(FileNotFoundError):
            os.unlink(self.path(digest))

    def entries(self) -> Iterator[tuple[str, int]]:
        """Every stored blob: (digest, size)."""
        try:
            listing = list(os.scandir(self.blobs))
        except FileNotFoundError:
            return
        for entry in listing:
            if len(entry.name) == 64 and not entry.name.startswith("."):
                with suppress(FileNotFoundError):
                    yield PREFIX + entry.name, entry.stat().st_size

    def _temp(self, ref: BlobRef) -> Path:
        fd, name = tempfile.mkstemp(prefix=part_prefix(encoded(ref.digest)[:16]), suffix=PART_SUFFIX, dir=self.blobs)
        os.close(fd)
        os.unlink(name)  # a free name: os.link needs one that does not exist
        return Path(name)
