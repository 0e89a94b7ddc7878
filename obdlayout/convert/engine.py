"""The layer engine seam: how one source layer becomes its converted artefacts.

An engine is chosen once per run (pipeline.py) and sees one layer at a time: the source layer (its
layout, plan and verified tar stream, artefacts.SourceLayer) and its own results for the layers below,
and writes its files into a fresh directory the work directory gives it. What it returns
(artefacts.ConvertedLayer) is all the pipeline needs: how the output image names the layer (media type,
annotations, DiffID), the files DST must hold, and what the next layer is converted on. The work
directory keeps that under a key made of the layer's chain and the engine's identity, so a rerun, or
another image sharing the chain, reuses it.
"""

import hashlib
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Protocol

from .. import __version__
from .artefacts import ConvertedLayer, SourceLayer
from .workdir import WorkDir

# Part of every layer's key: change it when the bytes written for the same input and options change.
LAYER_FORMAT = f"obdlayout/{__version__}/1"


class LayerEngine(Protocol):
    artifact_type: str  # the output's artifactType under --referrer (convertor-spec.md §3.1)
    needs_gzip_index: bool  # whether it indexes gzip layers (so one shared decompression must build the index)
    keyed_by_blob: bool  # whether its output depends on the compressed source blobs, not only on their tars
    # Whether it reads a layer by SourceLayer.open_entries alone, without a gzip observer (whose process is not
    # started ahead): the entries of the layer above may then be started (SourceLayer.ahead) while it converts
    # this one.
    reads_entries: bool

    def identity(self) -> dict[str, object]:
        """The engine's name and every option that changes the bytes it writes (JSON values)."""
        ...

    def base_layer(self, work: WorkDir) -> ConvertedLayer | None:
        """The layer put below every image (the baselayer with --no-mkfs), kept in `work`; None if none."""
        ...

    def convert(self, source: SourceLayer, lowers: Sequence[ConvertedLayer], out: Path) -> ConvertedLayer:
        """Convert `source` on `lowers` (bottom first: the base layer, if any, then this engine's results for
        the layers below), writing into the empty directory `out`."""
        ...


def layer_key(engine: LayerEngine, chain_id: str, blob_chain: str) -> str:
    """Everything that decides a layer's bytes: the whole chain below it and the engine with its options (and
    for an engine keyed by blob, the chain of the compressed source blobs too: worker.blob_chain)."""
    identity = {"format": LAYER_FORMAT, "engine": engine.identity(), "chain": chain_id}
    if engine.keyed_by_blob:
        identity["blobs"] = blob_chain
    return hashlib.sha256(json.dumps(identity, sort_keys=True).encode()).hexdigest()[:32]
