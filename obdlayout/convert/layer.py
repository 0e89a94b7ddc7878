"""Convert one OCI layer: the lower layer blobs and the layer's tar stream in, one layer blob out."""

import os
from collections.abc import Sequence
from contextlib import ExitStack
from dataclasses import dataclass
from typing import BinaryIO

from ..ext4.apply import ApplyStats, apply_layer
from ..ext4.device import BlockDevice
from ..ext4.fs import Filesystem
from ..ext4.layout import BLOCK_SIZE
from ..ext4.mkfs import mkfs
from ..formats.blob import open_stack
from ..formats.commit import BlobOptions, BlobSummary, LayerBlobWriter

GiB = 1 << 30
DEFAULT_VSIZE = 64 * GiB
DEFAULT_OPTIONS = BlobOptions()


@dataclass(frozen=True)
class LayerResult:
    blob: BlobSummary
    apply: ApplyStats
    metadata_blocks: int
    data_bytes: int


def build_layer(
    out: BinaryIO,
    layer_tar: BinaryIO,
    *,
    lowers: Sequence[str | os.PathLike[str]] = (),
    layer_name: str = "layer",
    vsize: int = DEFAULT_VSIZE,
    uuid: str | None = None,
    parent_uuid: str | None = None,
    options: BlobOptions = DEFAULT_OPTIONS,
) -> LayerResult:
    """Apply `layer_tar` (uncompressed) on the stack `lowers` (bottom first), or on a new file system
    of `vsize` bytes when there are none, and write exactly the blocks it changed as a layer blob.
    """
    with ExitStack() as stack:
        lower = open_stack(lowers, stack) if lowers else None
        virtual_size = lower.virtual_size if lower else vsize
        blob = LayerBlobWriter(
            out, virtual_size=virtual_size, uuid=uuid, parent_uuid=parent_uuid, options=options, ordered=False
        )
        try:
            device = BlockDevice(virtual_size // BLOCK_SIZE, blob.lsmt, lower.read if lower else None)
            fs = Filesystem.open(device) if lower else mkfs(device)
            stats = apply_layer(fs, layer_tar, layer_name)
            fs.flush()
            metadata = device.commit()
            summary = blob.close()
        except BaseException:
            blob.abort()
            raise
    return LayerResult(summary, stats, metadata, device.data_bytes)
