"""The engines that run the overlaybd tools (`--engine overlaybd-tools`): per layer, the Go convertor's
sequence and arguments (convertor-spec.md §2.3, §2.5, §2.7), in a directory of the work directory.

They differ from the native engines only in how a layer's blob is made (native.OverlaybdEngine.write_commit,
turbo.TurboOciEngine.write_meta); layouts, plans, the work directory and the output are shared. Departures
from the Go convertor, none of which changes what the tools are asked to do:
- each tool gets `--service_config_path`, a private service config (tools.py);
- the source layer is read, and its digest and DiffID checked, by us: the overlaybd engine gives the tools its
  uncompressed tar, as the Go convertor does; the TurboOCI engine's `layer.tar` is a symbolic link to the
  source blob, which later layers name as their lower's `targetFile`;
- with --reserve the tools' scratch files are kept for both engines (the Go convertor keeps the TurboOCI
  engine's writable files never).
"""

import os
from collections.abc import Sequence
from pathlib import Path

from ..formats.commit import BlobOptions
from ..formats.turbo_archive import GZIP_META_NAME
from ..formats.zfile_layout import DEFAULT_BLOCK_SIZE, Algorithm
from ..oci.mediatypes import TURBO_TARGET_DIGEST
from ..units import GiB, KiB
from .artefacts import ConvertedLayer, SourceLayer
from .native import COMMIT_NAME, Ext4Options, OverlaybdEngine, stack_of
from .tools import (
    APPLY,
    COMMIT,
    CREATE,
    LAYER_TAR,
    TURBO_APPLY,
    WRITABLE_DATA,
    WRITABLE_INDEX,
    Argument,
    OverlaybdTools,
    ToolError,
    lower_entry,
    write_image_config,
    write_service_config,
)
from .turbo import TurboOciEngine

# What the Go convertor gives overlaybd-create as the size in GiB without --mkfs: the stock baselayer's (§2.5).
BASELAYER_VSIZE_GIB = 64


class _ToolsEngine:
    """What both tools engines hold: the tools, checked when the engine is made, and the scratch-file policy."""

    def __init__(self, tools: OverlaybdTools, keep_files: bool) -> None:
        self.tools = tools
        self.keep_files = keep_files
        self._tool_digests = tools.identity()  # once per run: every layer's key holds it

    def _clean(self, *paths: Path) -> None:
        if not self.keep_files:
            for path in paths:
                path.unlink(missing_ok=True)


def _commit_options(blob: BlobOptions) -> list[str]:
    """overlaybd-commit's ZFile options beyond the Go convertor's (which has only the defaults)."""
    if blob.compression is None:
        return []
    options = []
    if blob.compression is not Algorithm.LZ4:
        options += ["--algorithm", blob.compression.name.lower()]
    if blob.block_size != DEFAULT_BLOCK_SIZE:
        options += ["--bs", str(blob.block_size // KiB)]
    return options


def _expect_output(path: Path, tool: str, where: str) -> None:
    if not path.is_file():
        raise ToolError(where, f"{tool} succeeded but wrote no {path.name}")


class ToolsOverlaybdEngine(_ToolsEngine, OverlaybdEngine):
    """Overlaybd layers made by overlaybd-create, overlaybd-apply and overlaybd-commit (§2.3)."""

    name = "overlaybd-tools"

    def __init__(self, options: Ext4Options, tools_dir: Path, *, sparse: bool = True, keep_files: bool = False) -> None:
        OverlaybdEngine.__init__(self, options)
        _ToolsEngine.__init__(self, OverlaybdTools(tools_dir, (CREATE, APPLY, COMMIT)), keep_files)
        self.sparse = sparse

    def identity(self) -> dict[str, object]:
        return {**super().identity(), "tools": self._tool_digests, "sparse": self.sparse}

    def write_commit(self, source: SourceLayer, lowers: Sequence[ConvertedLayer], blob: Path) -> tuple[str, ...]:
        layer_dir, where = blob.parent, source.label
        data, index, tar = layer_dir / WRITABLE_DATA, layer_dir / WRITABLE_INDEX, layer_dir / LAYER_TAR
        source.save_tar(tar)
        first = source.plan.index == 0
        mkfs = self.options.mkfs and first
        vsize = self.options.vsize // GiB if mkfs else BASELAYER_VSIZE_GIB if first else 0
        sparse = ["-s"] if self.sparse else []
        create: list[Argument] = [data, index, str(vsize), *sparse, *(["--mkfs"] if mkfs else [])]
        self.tools.run(CREATE, create, layer_dir, where)
        config = write_image_config(
            layer_dir,
            [lower_entry(layer, None) for layer in stack_of(lowers)],
            {"index": str(index), "data": str(data)},
        )
        service = write_service_config(layer_dir)
        apply: list[Argument] = [tar, config, "--service_config_path", service]
        self.tools.run(APPLY, apply, layer_dir, where)
        flags = ["-z"] if self.options.blob.compression else []
        flags += ["-t"] if self.options.blob.tar else []
        uuids = ["--uuid", source.plan.uuid]
        if source.plan.parent_uuid:
            uuids += ["--parent-uuid", source.plan.parent_uuid]
        commit: list[Argument] = [data, index, blob, *flags, *uuids, *_commit_options(self.options.blob)]
        self.tools.run(COMMIT, commit, layer_dir, where)
        _expect_output(blob, COMMIT, where)
        self._clean(tar, data, index)
        return ()


class ToolsTurboOciEngine(_ToolsEngine, TurboOciEngine):
    """TurboOCI layers made by overlaybd-create --turboOCI, turboOCI-apply and overlaybd-commit --fastoci (§2.7)."""

    name = "turbo-oci-tools"
    needs_gzip_index = False  # turboOCI-apply makes it

    def __init__(self, options: Ext4Options, tools_dir: Path, *, keep_files: bool = False) -> None:
        TurboOciEngine.__init__(self, options)
        _ToolsEngine.__init__(self, OverlaybdTools(tools_dir, (CREATE, TURBO_APPLY, COMMIT)), keep_files)

    def identity(self) -> dict[str, object]:
        return {**super().identity(), "tools": self._tool_digests}

    def write_meta(
        self, source: SourceLayer, lowers: Sequence[ConvertedLayer], meta: Path, gzip_meta: Path | None
    ) -> tuple[str, ...]:
        layer_dir, where = meta.parent, source.label
        data, index, tar = layer_dir / WRITABLE_DATA, layer_dir / WRITABLE_INDEX, layer_dir / LAYER_TAR
        source.check()
        tar.symlink_to(source.blob_path)
        mkfs = self.options.mkfs and source.plan.index == 0
        vsize = self.options.vsize // GiB if self.options.mkfs else BASELAYER_VSIZE_GIB  # every layer (§2.5)
        create: list[Argument] = [data, index, "-s", str(vsize), "--turboOCI", *(["--mkfs"] if mkfs else [])]
        self.tools.run(CREATE, create, layer_dir, where)
        entries = [
            lower_entry(layer, lower.output.annotations.get(TURBO_TARGET_DIGEST))
            for lower in lowers
            for layer in lower.lower
        ]
        config = write_image_config(layer_dir, entries, {"index": str(index), "data": str(data), "target": str(tar)})
        service = write_service_config(layer_dir)
        gz_index = layer_dir / GZIP_META_NAME  # given whatever the layer's compression, as Go does
        apply: list[Argument] = [tar, config, "--gz_index_path", gz_index, "--service_config_path", service]
        self.tools.run(TURBO_APPLY, apply, layer_dir, where)
        commit = layer_dir / COMMIT_NAME
        flags = ["-z"] if self.options.blob.compression else []
        committing: list[Argument] = [data, index, commit, *flags, "--fastoci", *_commit_options(self.options.blob)]
        self.tools.run(COMMIT, committing, layer_dir, where)
        _expect_output(commit, COMMIT, where)
        os.rename(commit, meta)
        if gzip_meta is not None:
            _expect_output(gzip_meta, TURBO_APPLY, where)
        self._clean(tar, data, index)
        return ()
