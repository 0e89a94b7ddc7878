"""The archive a TurboOCI layer is published as, `turboOCIv1.tar.gz` (convertor-spec.md §2.7, §3.3): a gzip
tar of the file system metadata (`ext4.fs.meta`, a warp layer), the empty marker `.turbo.ociv1` and, for a
gzip target, its index `gzip.meta`.

Written as Go's archive/tar and compress/gzip (level 1) write it for the Go convertor, with two departures:
the members' mode is always 0644 (Go takes the file's own, so the umask decides), and the deflate data is
zlib's, not Go's compress/flate; so the tar inside and the gzip header are Go's bytes, the archive's digest
is not. Read with our own tar reader: the archive is small (metadata only) and is read into memory.
"""

import gzip
import hashlib
import io
import zlib
from collections.abc import Sequence
from pathlib import Path
from typing import Final

from ..tar.reader import TarReader
from ..tar.ustar import BLOCK, TarFormatError
from ..units import STREAM_CHUNK
from .errors import FormatError
from .tarwrap import GO_END_OF_ARCHIVE, go_member_header

ARCHIVE_NAME: Final = "turboOCIv1.tar.gz"
FS_META_NAMES: Final = ("ext4.fs.meta", "erofs.fs.meta")  # the snapshotter picks the file system by this name
GZIP_META_NAME: Final = "gzip.meta"
MARKER_NAME: Final = ".turbo.ociv1"
MEMBER_MODE: Final = 0o644
GZIP_LEVEL: Final = 1  # containerd's CompressStream: compress/gzip BestSpeed
MAX_MEMBER: Final = 1 << 30  # metadata of even the largest images is far smaller; beyond this an archive is hostile


class _Hashing:
    """A sink that hashes what it is given, then passes it on."""

    def __init__(self, sink: gzip.GzipFile) -> None:
        self.sink = sink
        self.hasher = hashlib.sha256()

    def write(self, data: bytes) -> None:
        self.hasher.update(data)
        self.sink.write(data)


def write_archive(path: Path, members: Sequence[tuple[str, Path]]) -> str:
    """The archive holding `members` (name, file) in order; returns its DiffID, the sha256 of the tar inside
    (§3.4), as "sha256:<hex>"."""
    with (
        path.open("wb") as raw,
        gzip.GzipFile(filename="", mode="wb", compresslevel=GZIP_LEVEL, fileobj=raw, mtime=0) as packed,
    ):
        tar = _Hashing(packed)
        for name, member in members:
            size = member.stat().st_size
            tar.write(go_member_header(size, name.encode(), MEMBER_MODE))
            with member.open("rb") as data:
                while chunk := data.read(STREAM_CHUNK):
                    tar.write(chunk)
            tar.write(bytes(-size % BLOCK))
        tar.write(GO_END_OF_ARCHIVE)
    return "sha256:" + tar.hasher.hexdigest()


class TurboArchive:
    """An archive's members, read into memory and checked: one fs meta, the marker, at most one gzip index."""

    def __init__(self, path: str, data: bytes) -> None:
        self.path = path
        try:
            tar_bytes = gzip.decompress(data)
        except (OSError, EOFError, zlib.error) as exc:
            raise FormatError(path, f"is not a gzip stream: {exc}") from None
        self.diff_id = "sha256:" + hashlib.sha256(tar_bytes).hexdigest()
        members: dict[str, bytes] = {}
        try:
            reader = TarReader(io.BytesIO(tar_bytes))
            for entry in reader:
                name = entry.name.decode("utf-8", "replace")
                if not entry.is_regular or name in members or entry.size > MAX_MEMBER:
                    raise FormatError(path, f"member {name!r} is not one regular file of a TurboOCI archive")
                members[name] = reader.read_at(0, entry.size)
        except TarFormatError as exc:
            raise FormatError(path, f"the tar inside is broken: {exc.problem}") from None
        metas = [name for name in FS_META_NAMES if name in members]
        if len(metas) != 1 or MARKER_NAME not in members:
            raise FormatError(path, f"holds {sorted(members)}: a TurboOCI archive holds one fs meta and {MARKER_NAME}")
        self.fs_meta_name = metas[0]
        self.fs_meta = members[self.fs_meta_name]
        self.gzip_meta = members.get(GZIP_META_NAME)
        self.members = sorted(members)

    @classmethod
    def read(cls, path: str | Path) -> "TurboArchive":
        try:
            with open(path, "rb") as archive:
                data = archive.read()
        except OSError as exc:
            raise FormatError(str(path), f"cannot read: {exc.strerror}") from None
        return cls(str(path), data)
