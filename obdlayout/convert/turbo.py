"""The TurboOCI engines' shared part, and the native one: per layer, the ext4 metadata as a warp layer over
the original layer tar, and a gzip index, packed as the Go convertor's turbo engine publishes them
(convertor-spec.md §2.7, §3.1-§3.4; overlaybd-formats.md §7).

The original layer blob stays the data: file extents map to its uncompressed tar (ext4/placement.MapToTar),
so converting reads and indexes each layer, and writes no file data. Per layer:
- `ext4.fs.meta`: the committed warp LSMT in a ZFile (what `overlaybd-commit -z --turboOCI` writes);
- `gzip.meta`: the gzip index (formats/gzindex.py), for gzip layers, built in the pass that decompresses;
- `turboOCIv1.tar.gz`: both and the empty marker `.turbo.ociv1` (formats/turbo_archive.py says where its
  bytes depart from Go's).
The original blob is published too: the snapshotter fetches it by the layer's target-digest annotation.
The engine running the overlaybd tools (tools_engines.py) shares everything here but how fs.meta and
gzip.meta are made.
"""

import dataclasses
import shutil
from abc import ABC, abstractmethod
from collections.abc import Sequence
from pathlib import Path

from ..ext4.placement import MAP_TO_TAR
from ..formats.blob import StackLayer
from ..formats.gzindex import GzipIndexBuilder
from ..formats.turbo_archive import ARCHIVE_NAME, FS_META_NAMES, GZIP_META_NAME, MARKER_NAME, write_archive
from ..oci.digest import digest_file
from ..oci.mediatypes import (
    ARTIFACT_TYPE_TURBO,
    DOCKER_LAYER_GZIP,
    DOCKER_LAYER_TAR,
    OCI_LAYER_GZIP,
    OCI_LAYER_TAR,
    OVERLAYBD_BLOB_DIGEST,
    OVERLAYBD_BLOB_SIZE,
    OVERLAYBD_VERSION,
    TURBO_TARGET_DIGEST,
    TURBO_TARGET_MEDIA_TYPE,
    TURBO_VERSION_VALUE,
    Compression,
)
from ..oci.output import OutputLayer, overlaybd_layer
from .artefacts import ConvertedLayer, SourceLayer
from .errors import ConvertError
from .native import Ext4Engine, Ext4Options, write_native_layer
from .workdir import WorkDir


class TurboOciEngine(Ext4Engine, ABC):
    """engine.LayerEngine for TurboOCI layers; `write_meta` makes the fs meta (and the gzip index)."""

    artifact_type = ARTIFACT_TYPE_TURBO
    keyed_by_blob = True  # the gzip index and the target annotations are of the compressed blob
    reads_entries = False  # it builds the gzip index from the blob beside the entries (not started ahead)
    fs_meta_name = FS_META_NAMES[0]  # the snapshotter picks the file system by it

    def __init__(self, options: Ext4Options) -> None:
        # The fs meta is what `overlaybd-commit -z --turboOCI` writes: a ZFile, never tar-wrapped (§2.7).
        super().__init__(dataclasses.replace(options, blob=dataclasses.replace(options.blob, tar=False)))

    def base_layer(self, work: WorkDir) -> ConvertedLayer | None:
        """The raw baselayer, published as it is (not tar-wrapped, unlike the overlaybd engine's, §2.4)."""
        if self._base is None:
            return None
        base = StackLayer(self._baselayer)
        return ConvertedLayer(overlaybd_layer(self._base), ((self._baselayer, self._base),), (base,))

    def convert(self, source: SourceLayer, lowers: Sequence[ConvertedLayer], out: Path) -> ConvertedLayer:
        compression = source.compression()
        if compression is Compression.ZSTD:
            raise ConvertError(
                source.label,
                "is zstd-compressed: TurboOCI reads its layers at random offsets, which overlaybd can do for gzip "
                "(through a gzip index) and plain tar only; convert this image with --overlaybd",
            )
        gzip_meta = out / GZIP_META_NAME if compression is Compression.GZIP else None
        meta = out / self.fs_meta_name
        warnings = self.write_meta(source, lowers, meta, gzip_meta)
        marker = out / MARKER_NAME
        marker.touch()
        archive = out / ARCHIVE_NAME
        members = [(self.fs_meta_name, meta), (MARKER_NAME, marker)] + (
            [(GZIP_META_NAME, gzip_meta)] if gzip_meta else []
        )
        diff_id = write_archive(archive, members)
        ref = digest_file(archive)
        target = source.plan.descriptor
        annotations = {
            OVERLAYBD_VERSION: TURBO_VERSION_VALUE,
            OVERLAYBD_BLOB_DIGEST: ref.digest,
            OVERLAYBD_BLOB_SIZE: str(ref.size),
            TURBO_TARGET_DIGEST: target.digest,
            TURBO_TARGET_MEDIA_TYPE: target_media_type(target.media_type, compression),
        }
        return ConvertedLayer(
            OutputLayer(ref, gzip=True, annotations=annotations, diff_id=diff_id),
            ((archive, ref), (source.blob_path, target.ref)),
            (StackLayer(meta, source.blob_path, gzip_meta),),
            warnings,
        )

    @abstractmethod
    def write_meta(
        self, source: SourceLayer, lowers: Sequence[ConvertedLayer], meta: Path, gzip_meta: Path | None
    ) -> tuple[str, ...]:
        """Write the fs meta `meta` (in the layer's directory): `source` applied on `lowers` as a warp layer over
        the source blob, and for a gzip layer its index `gzip_meta`. Returns the warnings to show."""


class NativeTurboOciEngine(TurboOciEngine):
    """TurboOCI layers made by our ext4 writer in metadata-only mode."""

    name = "turbo-oci-ext4"
    needs_gzip_index = True

    def write_meta(
        self, source: SourceLayer, lowers: Sequence[ConvertedLayer], meta: Path, gzip_meta: Path | None
    ) -> tuple[str, ...]:
        index = gzip_index_builder(source, gzip_meta)
        # No uuids: the Go convertor commits TurboOCI layers without --uuid.
        result = write_native_layer(
            self.options, source, lowers, meta, uuids=False, placement=MAP_TO_TAR, gzip_index=index
        )
        keep_spooled_index(source, gzip_meta)
        return tuple(result.apply.warnings)


def gzip_index_builder(source: SourceLayer, gzip_meta: Path | None) -> GzipIndexBuilder | None:
    """What builds a gzip layer's index `gzip_meta` as the layer is read; None for a plain tar, or when the
    layer was spooled (that pass made the index: `keep_spooled_index`)."""
    return GzipIndexBuilder(gzip_meta) if gzip_meta is not None and source.spool is None else None


def keep_spooled_index(source: SourceLayer, gzip_meta: Path | None) -> None:
    """The index a spooling pass made, as `gzip_meta`."""
    if gzip_meta is not None and source.spool is not None:
        assert source.spool.gzip_index is not None
        shutil.copyfile(source.spool.gzip_index, gzip_meta)


def target_media_type(source_media_type: str, compression: Compression) -> str:
    """§3.3: the Docker family if the source layer's type is a Docker one, else OCI; gzip or plain tar as the
    blob's bytes say."""
    docker = source_media_type.startswith("application/vnd.docker.")
    if compression is Compression.GZIP:
        return DOCKER_LAYER_GZIP if docker else OCI_LAYER_GZIP
    return DOCKER_LAYER_TAR if docker else OCI_LAYER_TAR
