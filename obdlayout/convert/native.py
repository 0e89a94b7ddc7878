"""The native engine: each layer applied by our own ext4 writer and written as an overlaybd layer blob.

What `overlaybd-create`, `overlaybd-apply` and `overlaybd-commit -z -t` make for the Go convertor
(convertor-spec.md §2.3-§2.5), with no overlaybd tool: only the blocks a layer changes are written.
"""

import os
from collections.abc import Sequence
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

from ..ext4.device import BlockDevice
from ..ext4.fs import Filesystem
from ..ext4.layout import BLOCK_SIZE
from ..ext4.mkfs import mkfs
from ..formats.blob import open_stack
from ..formats.commit import DEFAULT_BLOB, BlobOptions, BlobSummary, LayerBlobWriter
from ..formats.tarwrap import write_go_wrapped
from ..layers.rules import ApplyStats, apply_layer
from ..oci.digest import digest_file
from ..oci.mediatypes import ARTIFACT_TYPE_OVERLAYBD
from ..oci.output import overlaybd_layer
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
    layer_tar: BinaryIO,
    *,
    lowers: Sequence[str | os.PathLike[str]] = (),
    layer_name: str = "layer",
    vsize: int = DEFAULT_VSIZE,
    uuid: str | None = None,
    parent_uuid: str | None = None,
    options: BlobOptions = DEFAULT_BLOB,
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
            stats.warnings.extend(f"{layer_name}: {warning}" for warning in fs.warnings)
            fs.flush()
            device.commit()
            summary = blob.close()
        except BaseException:
            blob.abort()
            raise
    return LayerResult(summary, stats)


@dataclass(frozen=True)
class NativeOptions:
    mkfs: bool = True  # a new file system in the first layer; else start from `baselayer`
    baselayer: Path = DEFAULT_BASELAYER
    vsize: int = DEFAULT_VSIZE  # bytes, with mkfs
    blob: BlobOptions = DEFAULT_BLOB


class NativeExt4Engine:
    """engine.LayerEngine for overlaybd layers, made by our ext4 writer."""

    artifact_type = ARTIFACT_TYPE_OVERLAYBD

    def __init__(self, options: NativeOptions) -> None:
        self.options = options
        self._baselayer = options.baselayer.absolute()  # recorded in the work directory, read by workers
        # The baselayer's digest is part of every layer's identity; reading it now also finds a missing
        # or unreadable baselayer before any work starts.
        self._base_digest = None if options.mkfs else _baselayer_digest(self._baselayer)

    def identity(self) -> dict[str, object]:
        options = self.options
        return {
            "engine": "native-ext4",
            "base": self._base_digest,
            "vsize": options.vsize if options.mkfs else None,
            "compression": options.blob.compression.name if options.blob.compression else None,
            "block_size": options.blob.block_size,
            "tar": options.blob.tar,
        }

    def base_layer(self, work: WorkDir) -> ConvertedLayer | None:
        if self._base_digest is None:
            return None
        key = f"baselayer-{self._base_digest[len('sha256:') :][:32]}"
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
        return ConvertedLayer(overlaybd_layer(ref), ((path, ref),), (source,))

    def convert(self, source: SourceLayer, lowers: Sequence[ConvertedLayer], out: Path) -> ConvertedLayer:
        blob = out / COMMIT_NAME
        with source.open_tar() as tar, blob.open("w+b") as sink:
            result = build_layer(
                sink,
                tar,
                lowers=[path for lower in lowers for path in lower.lower],
                layer_name=source.label,
                vsize=self.options.vsize,
                uuid=source.plan.uuid,
                parent_uuid=source.plan.parent_uuid,
                options=self.options.blob,
            )
        ref = digest_file(blob)
        return ConvertedLayer(overlaybd_layer(ref), ((blob, ref),), (blob,), tuple(result.apply.warnings))


def _baselayer_digest(path: Path) -> str:
    try:
        return digest_file(path).digest
    except OSError as exc:
        raise ConvertError(str(path), f"cannot read the baselayer: {exc.strerror}") from None
