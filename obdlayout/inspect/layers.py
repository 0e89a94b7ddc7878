"""A converted image's layers, opened for reading: overlaybd layer blobs, or TurboOCI layers.

A TurboOCI layer (convertor-spec.md §3.3) is an archive holding the file system metadata as a warp layer and,
for a gzip target, a gzip index; its file data lies in the original layer blob that its target-digest
annotation names, read through that index (formats/gzindex.py). The archive is small and read into memory.
"""

from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path

from ..formats.blob import Blob, open_target
from ..formats.errors import FormatError
from ..formats.gzindex import GzipIndex, IndexedGzip
from ..formats.source import ByteSource, BytesSource
from ..formats.stack import LsmtStack
from ..formats.turbo_archive import GZIP_META_NAME, TurboArchive
from ..oci.descriptor import Descriptor
from ..oci.digest import check_digest
from ..oci.layout import Layout
from ..oci.mediatypes import OVERLAYBD_VERSION, TURBO_TARGET_DIGEST, TURBO_VERSION_VALUE


def is_turbo(layer: Descriptor) -> bool:
    """Whether a layer descriptor says it is a TurboOCI layer (its version annotation, §3.3)."""
    return layer.annotations.get(OVERLAYBD_VERSION) == TURBO_VERSION_VALUE


@dataclass(frozen=True)
class OpenedLayer:
    descriptor: Descriptor
    path: Path  # the layer blob in the layout
    blob: Blob  # its LSMT layer: the blob itself, or a TurboOCI layer's fs meta
    archive: TurboArchive | None  # a TurboOCI layer's archive
    target_path: Path | None  # a TurboOCI layer's original layer blob
    target: ByteSource | None  # ... as the uncompressed tar the warp layer reads

    @property
    def gzip_index(self) -> GzipIndex | None:
        if self.archive is None or self.archive.gzip_meta is None:
            return None
        return GzipIndex(BytesSource(self.archive.gzip_meta, f"{self.path}:{GZIP_META_NAME}"))


def open_layer(layout: Layout, layer: Descriptor, stack: ExitStack) -> OpenedLayer:
    """A layer of a converted image, open until `stack` closes; FormatError if it cannot be read as one."""
    path = layout.blob_path(layer.digest)
    if not is_turbo(layer):
        return OpenedLayer(layer, path, stack.enter_context(Blob(path)), None, None, None)
    archive = TurboArchive.read(path)
    meta = stack.enter_context(Blob(f"{path}:{archive.fs_meta_name}", warp=True, contents=archive.fs_meta))
    digest = layer.annotations.get(TURBO_TARGET_DIGEST, "")
    try:
        target_path = layout.blob_path(check_digest(digest))
    except ValueError as exc:
        raise FormatError(str(path), f"annotation {TURBO_TARGET_DIGEST}: {exc}") from None
    if not target_path.is_file():
        raise FormatError(str(path), f"its target layer {digest} is not in the layout ({target_path})")
    if archive.gzip_meta is None:
        target = open_target(target_path, None, stack)
    else:
        index = GzipIndex(BytesSource(archive.gzip_meta, f"{path}:{GZIP_META_NAME}"))
        target = IndexedGzip(open_target(target_path, None, stack), index)
    return OpenedLayer(layer, path, meta, archive, target_path, target)


def open_stack_of(layout: Layout, layers: list[Descriptor], stack: ExitStack) -> LsmtStack:
    """An image's layers, bottom first, as its virtual disk; open until `stack` closes."""
    opened = [open_layer(layout, layer, stack) for layer in layers]
    return LsmtStack([layer.blob.layer for layer in opened], [layer.target for layer in opened])
