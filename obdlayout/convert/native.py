"""The overlaybd engines' shared part, and the native one: each layer applied by our own ext4 writer and
written as an overlaybd layer blob.

What `overlaybd-create`, `overlaybd-apply` and `overlaybd-commit -z -t` make for the Go convertor
(convertor-spec.md §2.3-§2.5), with no overlaybd tool: only the blocks a layer changes are written.
The engine running those tools (tools_engines.py) shares everything here but how the blob is made.
"""

import os
from abc import ABC, abstractmethod
from collections.abc import Sequence
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

from ..ext4.device import BlockDevice
from ..ext4.fs import Filesystem
from ..ext4.layout import BLOCK_SIZE
from ..ext4.mkfs import mkfs
from ..ext4.placement import COPY_DATA, DataPlacement
from ..formats.blob import StackLayer, open_layers
from ..formats.commit import DEFAULT_BLOB, BlobOptions, BlobSummary, LayerBlobWriter
from ..formats.tarwrap import write_go_wrapped
from ..layers.rules import ApplyStats, apply_layer
from ..oci.digest import BlobRef, digest_file, encoded
from ..oci.layers import BlockObserver
from ..oci.mediatypes import ARTIFACT_TYPE_OVERLAYBD
from ..oci.output import overlaybd_layer
from ..tar.reader import EntryCursor
from ..units import GiB
from .artefacts import ConvertedLayer, SourceLayer
from .errors import ConvertError
from .workdir import WorkDir

DEFAULT_VSIZE = 64 * GiB
DEFAULT_BASELAYER = Path("/opt/overlaybd/baselayers/ext4_64")
COMMIT_NAME = "overlaybd.commit"  # as the Go convertor names a layer blob (§2.3)
BASELAYER_TAR_NAME = "ext4_64.tar"  # the baselayer as the Go convertor publishes it (§2.4)


@dataclass(frozen=True)
class LayerResult:
    blob: BlobSummary
    apply: ApplyStats


def build_layer(
    out: BinaryIO,
    layer_tar: BinaryIO | EntryCursor,
    *,
    lowers: Sequence[str | os.PathLike[str] | StackLayer] = (),
    layer_name: str = "layer",
    vsize: int = DEFAULT_VSIZE,
    uuid: str | None = None,
    parent_uuid: str | None = None,
    options: BlobOptions = DEFAULT_BLOB,
    placement: DataPlacement = COPY_DATA,
) -> LayerResult:
    """Apply `layer_tar` (uncompressed) on the stack `lowers` (bottom first), or on a new file system
    of `vsize` bytes when there are none, and write exactly the blocks it changed as a layer blob.
    With a placement that maps file data to the tar (TurboOCI), the blob is a warp layer.
    """
    with ExitStack() as stack:
        specs = [lower if isinstance(lower, StackLayer) else StackLayer(lower) for lower in lowers]
        lower = open_layers(specs, stack) if specs else None
        virtual_size = lower.virtual_size if lower else vsize
        blob = LayerBlobWriter(
            out,
            virtual_size=virtual_size,
            uuid=uuid,
            parent_uuid=parent_uuid,
            options=options,
            ordered=False,
            warp=placement.maps_to_target,
        )
        try:
            device = BlockDevice(virtual_size // BLOCK_SIZE, blob.lsmt, lower.read if lower else None)
            fs = Filesystem.open(device, placement) if lower else mkfs(device, placement)
            stats = apply_layer(fs, layer_tar, layer_name)
            fs.flush()
            device.commit()
            summary = blob.close()
        except BaseException:
            blob.abort()
            raise
    return LayerResult(summary, stats)


@dataclass(frozen=True)
class Ext4Options:
    """What decides the bytes of an engine that writes ext4 images."""

    mkfs: bool = True  # a new file system in the first layer; else start from `baselayer`
    baselayer: Path = DEFAULT_BASELAYER
    vsize: int = DEFAULT_VSIZE  # bytes, with mkfs
    blob: BlobOptions = DEFAULT_BLOB


def write_native_layer(
    options: Ext4Options,
    source: SourceLayer,
    lowers: Sequence[ConvertedLayer],
    path: Path,
    *,
    uuids: bool,
    placement: DataPlacement = COPY_DATA,
    gzip_index: BlockObserver | None = None,
) -> LayerResult:
    """The layer blob at `path`, by our writer: `source` applied on `lowers`; with `uuids`, the chain's (§2.3)."""
    with source.open_entries(gzip_index) as tar, path.open("w+b") as sink:
        return build_layer(
            sink,
            tar,
            lowers=stack_of(lowers),
            layer_name=source.label,
            vsize=options.vsize,
            uuid=source.plan.uuid if uuids else None,
            parent_uuid=source.plan.parent_uuid if uuids else None,
            options=options.blob,
            placement=placement,
        )


def stack_of(lowers: Sequence[ConvertedLayer]) -> list[StackLayer]:
    """The stack a layer is converted on, bottom first."""
    return [layer for lower in lowers for layer in lower.lower]


class Ext4Engine:
    """What the engines writing ext4 images share: the baselayer with --no-mkfs, and their identity."""

    name = ""

    def __init__(self, options: Ext4Options) -> None:
        self.options = options
        self._baselayer = options.baselayer.absolute()  # recorded in the work directory, read by workers
        # The baselayer's digest is part of every layer's identity; reading it now also finds a missing
        # or unreadable baselayer before any work starts.
        self._base = None if options.mkfs else baselayer_ref(self._baselayer)

    def identity(self) -> dict[str, object]:
        options = self.options
        return {
            "engine": self.name,
            "base": self._base.digest if self._base else None,
            "vsize": options.vsize if options.mkfs else None,
            "compression": options.blob.compression.name if options.blob.compression else None,
            "block_size": options.blob.block_size,
            "tar": options.blob.tar,
        }


class OverlaybdEngine(Ext4Engine, ABC):
    """engine.LayerEngine for overlaybd layers; `write_commit` makes the blob."""

    artifact_type = ARTIFACT_TYPE_OVERLAYBD
    needs_gzip_index = False
    keyed_by_blob = False  # a layer blob is made of the tar alone
    reads_entries = False

    def base_layer(self, work: WorkDir) -> ConvertedLayer | None:
        if self._base is None:
            return None
        key = f"baselayer-{encoded(self._base.digest)[:32]}"
        return work.lookup(key) or work.build(key, self._wrap_baselayer)

    def _wrap_baselayer(self, out: Path) -> ConvertedLayer:
        """The baselayer as the Go convertor publishes it (tar-wrapped, §2.4); layers convert on the raw file."""
        path = out / BASELAYER_TAR_NAME
        source = self._baselayer
        try:
            with source.open("rb") as raw, path.open("wb") as sink:
                write_go_wrapped(raw, os.fstat(raw.fileno()).st_size, sink)
        except OSError as exc:
            raise ConvertError(str(source), f"cannot read the baselayer: {exc.strerror}") from None
        ref = digest_file(path)
        return ConvertedLayer(overlaybd_layer(ref), ((path, ref),), (StackLayer(source),))

    def convert(self, source: SourceLayer, lowers: Sequence[ConvertedLayer], out: Path) -> ConvertedLayer:
        blob = out / COMMIT_NAME
        warnings = self.write_commit(source, lowers, blob)
        ref = digest_file(blob)
        return ConvertedLayer(overlaybd_layer(ref), ((blob, ref),), (StackLayer(blob),), warnings)

    @abstractmethod
    def write_commit(self, source: SourceLayer, lowers: Sequence[ConvertedLayer], blob: Path) -> tuple[str, ...]:
        """Write the layer blob `blob` (in the layer's directory): `source` applied on `lowers`, with the chain's
        uuids. Returns the warnings to show."""


class NativeExt4Engine(OverlaybdEngine):
    """Overlaybd layers made by our ext4 writer."""

    name = "native-ext4"
    reads_entries = True

    def write_commit(self, source: SourceLayer, lowers: Sequence[ConvertedLayer], blob: Path) -> tuple[str, ...]:
        return tuple(write_native_layer(self.options, source, lowers, blob, uuids=True).apply.warnings)


def baselayer_ref(path: Path) -> BlobRef:
    """The baselayer's digest and size; a ConvertError naming it if it cannot be read."""
    try:
        return digest_file(path)
    except OSError as exc:
        raise ConvertError(str(path), f"cannot read the baselayer: {exc.strerror}") from None
