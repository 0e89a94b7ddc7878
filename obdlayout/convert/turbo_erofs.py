"""TurboOCI with EROFS (`--fstype erofs`, convertor-spec.md §1, §2.7; overlaybd-formats.md §7.5): per layer,
the EROFS metadata of the merged tree as a warp layer over the original layer tar, made by our EROFS writer
(erofs/writer.py). Packed and published as the ext4 TurboOCI layers are (turbo.py), as `erofs.fs.meta`.
"""

from collections.abc import Sequence
from contextlib import ExitStack
from pathlib import Path
from typing import BinaryIO

from ..erofs.errors import ErofsError
from ..erofs.reader import ErofsImage
from ..erofs.writer import ErofsLayer
from ..ext4.device import BlockDevice
from ..ext4.layout import BLOCK_SIZE
from ..formats.blob import StackLayer, open_layers
from ..formats.commit import DEFAULT_BLOB, BlobOptions, LayerBlobWriter
from ..formats.turbo_archive import FS_META_NAMES
from ..layers.errors import LayerError
from ..layers.rules import ApplyStats, apply_layer
from ..tar.reader import EntryCursor
from .artefacts import ConvertedLayer, SourceLayer
from .native import DEFAULT_VSIZE, stack_of
from .turbo import TurboOciEngine, gzip_index_builder, keep_spooled_index

EROFS_META_NAME = FS_META_NAMES[1]


def build_erofs_layer(
    out: BinaryIO,
    layer_tar: BinaryIO | EntryCursor,
    *,
    lowers: Sequence[StackLayer] = (),
    layer_name: str = "layer",
    vsize: int = DEFAULT_VSIZE,
    options: BlobOptions = DEFAULT_BLOB,
) -> ApplyStats:
    """Apply `layer_tar` (uncompressed; its offsets are those the warp layer maps to) on the EROFS image of
    `lowers` (bottom first), or on a new one in a disk of `vsize` bytes, and write the changed blocks as a
    warp layer blob."""
    with ExitStack() as stack:
        lower = open_layers(list(lowers), stack) if lowers else None
        virtual_size = lower.virtual_size if lower else vsize
        blob = LayerBlobWriter(
            out, virtual_size=virtual_size, uuid=None, parent_uuid=None, options=options, ordered=False, warp=True
        )
        try:
            device = BlockDevice(virtual_size // BLOCK_SIZE, blob.lsmt, lower.read if lower else None)
            try:
                image = ErofsImage(lower.read, virtual_size) if lower else None
            except ErofsError as exc:
                raise LayerError(layer_name, f"the EROFS image of the layers below: {exc.problem}") from None
            tree = ErofsLayer(device, image)
            stats = apply_layer(tree, layer_tar, layer_name)
            try:
                tree.flush()
            except ErofsError as exc:
                raise LayerError(layer_name, exc.problem) from None
            device.commit()
            blob.close()
        except BaseException:
            blob.abort()
            raise
    return stats


class NativeTurboErofsEngine(TurboOciEngine):
    """TurboOCI layers whose file system is EROFS, made by our EROFS writer."""

    name = "turbo-oci-erofs"
    needs_gzip_index = True
    fs_meta_name = EROFS_META_NAME

    def write_meta(
        self, source: SourceLayer, lowers: Sequence[ConvertedLayer], meta: Path, gzip_meta: Path | None
    ) -> tuple[str, ...]:
        index = gzip_index_builder(source, gzip_meta)
        with source.open_entries(index) as tar, meta.open("w+b") as sink:
            stats = build_erofs_layer(
                sink,
                tar,
                lowers=stack_of(lowers),
                layer_name=source.label,
                vsize=self.options.vsize,
                options=self.options.blob,
            )
        keep_spooled_index(source, gzip_meta)
        return tuple(stats.warnings)
