"""What `inspect` shows of an image: its documents, its layer blobs, and the file system they make.

Cheap by design: blobs are opened (headers and LSMT indexes read), not read whole; usage comes from the
ext4 group descriptors. A layer or file system that cannot be read is described by its problem, so that
one bad layer does not hide the rest; `verify` is the command that judges.
"""

from contextlib import ExitStack
from dataclasses import asdict, dataclass, field
from typing import Any

from ..ext4.errors import Ext4Error
from ..ext4.reader import fs_type_at, open_image, usage
from ..formats.blob import BlobInfo
from ..formats.errors import FormatError
from ..oci.descriptor import Descriptor
from ..oci.layout import Layout
from ..oci.mediatypes import OVERLAYBD_ANNOTATION_PREFIX, OVERLAYBD_BLOB_FS_TYPE, TURBO_TARGET_DIGEST
from .image import FoundImage, is_overlaybd, open_layers
from .layers import open_layer


@dataclass
class LayerSummary:
    digest: str
    size: int
    media_type: str
    blob: BlobInfo | None  # None: absent or not an overlaybd layer blob (see problem); a TurboOCI layer's fs meta
    problem: str | None = None
    target: str | None = None  # a TurboOCI layer: the original layer holding its file data
    gzip_index_entries: int | None = None  # ... and the checkpoints of its gzip index, for a gzip target


@dataclass
class FilesystemSummary:
    type: str
    virtual_size: int
    files: int | None = None  # inodes in use, as e2fsck counts files
    bytes_used: int | None = None  # allocated blocks, metadata included
    bytes_total: int | None = None
    problem: str | None = None


@dataclass
class ImageSummary:
    tag: str
    platform: str | None
    indexes: list[str]  # digests of the indexes above the manifest, top first
    manifest: dict[str, Any]  # mediaType, digest, size
    config: dict[str, Any]
    layers: list[LayerSummary] = field(default_factory=list)
    filesystem: FilesystemSummary | None = None  # None when a layer is not an overlaybd blob

    def as_dict(self) -> dict[str, Any]:
        out = asdict(self)
        for layer, raw in zip(out["layers"], self.layers, strict=True):
            if raw.blob is not None:
                blob = layer["blob"]
                del blob["path"]  # the layout's own file; the digest names it
        return out


def summarize(layout: Layout, image: FoundImage) -> ImageSummary:
    summary = ImageSummary(
        tag=image.tag,
        platform=str(image.platform) if image.platform else None,
        indexes=list(image.parents),
        manifest=image.descriptor.content(),
        config=image.manifest.config.content(),
    )
    for layer in image.manifest.layers:
        summary.layers.append(_layer(layout, layer))
    if summary.layers and all(layer.blob is not None for layer in summary.layers):
        # Only the embedded convertor declares it (convertor-spec.md §3.3); when it does, it should be right.
        declared = {la.annotations.get(OVERLAYBD_BLOB_FS_TYPE) for la in image.manifest.layers} - {None}
        summary.filesystem = _filesystem(layout, image, declared)
    return summary


def _layer(layout: Layout, layer: Descriptor) -> LayerSummary:
    summary = LayerSummary(layer.digest, layer.size, layer.media_type, None)
    if not is_overlaybd(layer):
        summary.problem = f"not an overlaybd layer (no {OVERLAYBD_ANNOTATION_PREFIX}* annotations)"
        return summary
    if not layout.has_blob(layer):
        summary.problem = "the blob is missing (or not of the size its descriptor gives)"
        return summary
    try:
        with ExitStack() as stack:
            opened = open_layer(layout, layer, stack)
            summary.blob = opened.blob.info()
            if opened.archive is not None:
                summary.target = layer.annotations.get(TURBO_TARGET_DIGEST)
                index = opened.gzip_index
                summary.gzip_index_entries = len(index.entries) if index is not None else None
    except FormatError as exc:
        summary.problem = exc.problem
    return summary


def _filesystem(layout: Layout, image: FoundImage, declared: set[str | None]) -> FilesystemSummary:
    try:
        with open_layers(layout, list(image.manifest.layers)) as disk:
            found = fs_type_at(disk.read)
            summary = FilesystemSummary(found, disk.virtual_size)
            if declared and declared != {found}:
                summary.problem = f"the layers declare {', '.join(sorted(map(str, declared)))}, the disk holds {found}"
            elif found.startswith("ext"):
                counts = usage(open_image(disk.read, disk.virtual_size))
                summary.files = counts.inodes_used
                summary.bytes_used, summary.bytes_total = counts.bytes_used, counts.bytes_total
    except (FormatError, Ext4Error) as exc:
        return FilesystemSummary("unknown", 0, problem=str(exc))
    return summary
