"""Build the converted image's JSON documents from a plan and the converted layers, and publish them.

What changes follows the Go convertor (convertor-spec.md §3.1-§3.6); the bytes follow its serialization (§3.7,
gojson.py). Two departures, both keeping information Go loses:
- the config keeps every key of the source config; Go's round trip through image-spec's Image struct drops
  those the struct does not declare (§3.4: `container`, `container_config`, `docker_version`, config.Hostname…);
- a nested index's descriptor keeps its platform and annotations, which Go drops (§2.1, §8.7).
"""

import copy
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from . import gojson
from .descriptor import Descriptor
from .digest import BlobRef, ref_of
from .errors import LayoutError
from .mediatypes import (
    ARTIFACT_TYPE_OVERLAYBD,
    DOCKER_CONFIG,
    DOCKER_LAYER_GZIP,
    DOCKER_LAYER_TAR,
    DOCKER_MANIFEST,
    OCI_CONFIG,
    OCI_INDEX,
    OCI_LAYER_GZIP,
    OCI_LAYER_TAR,
    OCI_MANIFEST,
    OVERLAYBD_BLOB_DIGEST,
    OVERLAYBD_BLOB_SIZE,
    OVERLAYBD_VERSION,
    OVERLAYBD_VERSION_VALUE,
)
from .plan import ImagePlan, IndexPlan, Node
from .writer import LayoutWriter


@dataclass(frozen=True)
class OutputTypes:
    """The media types of what is written (convertor-spec.md §3.1)."""

    manifest: str
    config: str
    layer: str  # an uncompressed layer (overlaybd blobs, baselayers)
    layer_gzip: str  # a gzip-compressed layer (TurboOCI archives)
    index: str | None  # None: an index keeps its source media type


OCI_TYPES = OutputTypes(OCI_MANIFEST, OCI_CONFIG, OCI_LAYER_TAR, OCI_LAYER_GZIP, OCI_INDEX)
DOCKER_TYPES = OutputTypes(DOCKER_MANIFEST, DOCKER_CONFIG, DOCKER_LAYER_TAR, DOCKER_LAYER_GZIP, None)


@dataclass(frozen=True)
class OutputLayer:
    """A converted layer as the output image names it; the engine that made it says what goes here."""

    ref: BlobRef
    gzip: bool  # the blob is a gzip-compressed tar (else an uncompressed one): picks the media type (§3.1)
    annotations: dict[str, str]
    diff_id: str  # its rootfs.diff_ids entry in the config (§3.4)


@dataclass(frozen=True)
class OutputOptions:
    oci: bool = False  # --oci: OCI media types; otherwise Docker ones
    referrer: bool = False  # --referrer: subject and artifactType on every manifest and index; forces --oci
    artifact_type: str = ARTIFACT_TYPE_OVERLAYBD  # of what the engine makes, written with --referrer
    base_layer: OutputLayer | None = None  # --mkfs=false: the baselayer, put below every image (§2.4)

    @property
    def types(self) -> OutputTypes:
        return OCI_TYPES if self.oci or self.referrer else DOCKER_TYPES


@dataclass(frozen=True)
class BuiltNode:
    descriptor: Descriptor  # the source's descriptor (platform, annotations) for the new content
    blobs: tuple[bytes, ...]  # configs, manifests and indexes to write, each before any that names it
    layers: tuple[BlobRef, ...]  # the layer blobs it names, which must already be in the destination


def overlaybd_layer(ref: BlobRef) -> OutputLayer:
    """An overlaybd layer (or baselayer): the blob, uncompressed, so its DiffID is its digest, and the three
    annotations (§3.3, §3.4)."""
    annotations = {
        OVERLAYBD_BLOB_DIGEST: ref.digest,
        OVERLAYBD_BLOB_SIZE: str(ref.size),
        OVERLAYBD_VERSION: OVERLAYBD_VERSION_VALUE,
    }
    return OutputLayer(ref, gzip=False, annotations=annotations, diff_id=ref.digest)


def build(node: Node, converted: Mapping[str, OutputLayer], options: OutputOptions) -> BuiltNode:
    """The output for a planned tree; `converted` maps each source layer's chain ID to its converted layer.
    A node the plan shares among several indexes is built once (the plan is a DAG, oci/walk.py)."""
    built: dict[int, BuiltNode] = {}

    def output(current: Node) -> BuiltNode:
        known = built.get(id(current))
        if known is None:
            if isinstance(current, ImagePlan):
                known = build_image(current, _layers(current, converted, options), options)
            else:
                known = build_index(current, [output(child) for child in current.children], options)
            built[id(current)] = known
        return known

    return output(node)


def _layers(image: ImagePlan, converted: Mapping[str, OutputLayer], options: OutputOptions) -> list[OutputLayer]:
    layers = [] if options.base_layer is None else [options.base_layer]
    for layer in image.layers:
        if layer.chain_id not in converted:
            raise KeyError(f"manifest {image.descriptor.digest}, layer {layer.index}: no converted blob given")
        layers.append(converted[layer.chain_id])
    return layers


def build_config(image: ImagePlan, layers: Sequence[OutputLayer]) -> dict[str, Any]:
    """The source config with rootfs.diff_ids naming the new layers (§3.4). Nothing else changes, `history`
    included."""
    config = copy.deepcopy(image.config)
    config["rootfs"] = {**config["rootfs"], "diff_ids": [layer.diff_id for layer in layers]}
    return config


def build_image(image: ImagePlan, layers: Sequence[OutputLayer], options: OutputOptions) -> BuiltNode:
    """`layers`: every layer of the output image, bottom first (the baselayer, if any, included)."""
    types = options.types
    config = gojson.marshal(build_config(image, layers), gojson.IMAGE)
    manifest = copy.deepcopy(image.manifest.fields)
    manifest["mediaType"] = types.manifest
    manifest["config"] = Descriptor.of(types.config, ref_of(config)).to_json()
    manifest["layers"] = [
        Descriptor.of(types.layer_gzip if layer.gzip else types.layer, layer.ref, layer.annotations).to_json()
        for layer in layers
    ]
    if options.referrer:
        manifest["artifactType"] = options.artifact_type
        manifest["subject"] = image.descriptor.content()
    data = gojson.marshal(manifest, gojson.MANIFEST)
    refs = tuple(layer.ref for layer in layers)
    return BuiltNode(image.descriptor.with_content(types.manifest, ref_of(data)), (config, data), refs)


def build_index(node: IndexPlan, children: Sequence[BuiltNode], options: OutputOptions) -> BuiltNode:
    """An index of the converted children, in source order, with every other field kept (§3.5)."""
    media_type = options.types.index or node.descriptor.media_type
    index = copy.deepcopy(node.index.fields)
    index["manifests"] = [child.descriptor.to_json() for child in children]
    if options.types.index is not None:
        index["mediaType"] = options.types.index
    if options.referrer:
        index["artifactType"] = options.artifact_type
        index["subject"] = node.descriptor.content()
    data = gojson.marshal(index, gojson.INDEX)
    # Children may share documents and layers: each is written once, before anything that names it.
    blobs = dict.fromkeys(blob for child in children for blob in child.blobs)
    layers = dict.fromkeys(ref for child in children for ref in child.layers)
    return BuiltNode(node.descriptor.with_content(media_type, ref_of(data)), (*blobs, data), tuple(layers))


def publish(writer: LayoutWriter, outputs: Mapping[str, BuiltNode]) -> None:
    """Write each output's documents, then tag it in index.json (one update for all tags).

    The layer blobs must be in the destination already; a multi-arch output becomes one tagged entry pointing
    to its index blob, as skopeo writes it (ecosystem.md §2.3).
    """
    for built in outputs.values():
        for ref in built.layers:
            if not writer.has_blob(ref):
                raise LayoutError(str(writer.blob_path(ref.digest)), f"layer blob {ref.digest} is not in the layout")
    for built in outputs.values():
        for data in built.blobs:
            writer.put_bytes(data)
    writer.set_tags({tag: built.descriptor for tag, built in outputs.items()})
