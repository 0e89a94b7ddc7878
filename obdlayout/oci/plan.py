"""Plan a conversion: which images of a source layout to convert, and everything the later stages need of them.

Follows the Go convertor's walk (convertor-spec.md §2.1, §8.1): a selected descriptor is a manifest, or an index
whose entries are walked recursively, nested indexes staying nested. It departs where §8 and ecosystem.md §6.1
advise, and records each departure as a warning in the plan:
- BuildKit attestation manifests are dropped (as Go does since ea729f2);
- index entries of a media type that is neither a manifest nor an index are dropped (OCI: an unknown media
  type MUST NOT be an error), and so are manifests that are not images (their config is not an image config);
- a platform filter may narrow what is converted (Go converts every platform, §3.5).
Every problem that would make the conversion fail later (an encrypted or unknown layer type, a missing blob,
a config whose diff_ids do not match the layers, a layer that is already overlaybd) fails here instead.
"""

import json
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

from . import gojson
from .descriptor import Descriptor, Platform
from .digest import chain_ids, check_digest, encoded, layer_uuids
from .documents import Index, Manifest
from .errors import LayoutError
from .layout import Layout
from .mediatypes import (
    CONFIG_TYPES,
    DOCKER_SCHEMA1_MANIFESTS,
    INDEX_TYPES,
    LAYER_COMPRESSION,
    MANIFEST_TYPES,
    NON_DISTRIBUTABLE_LAYERS,
    OVERLAYBD_ANNOTATION_PREFIX,
    Compression,
    is_encrypted,
)
from .walk import IndexWalker


@dataclass(frozen=True)
class Selection:
    """What to convert: tags and digests of the source layout, optionally narrowed to some platforms."""

    tags: tuple[str, ...] = ()
    digests: tuple[str, ...] = ()
    platforms: tuple[Platform, ...] = ()


@dataclass(frozen=True)
class LayerPlan:
    index: int
    descriptor: Descriptor
    compression: Compression  # as the media type declares it
    diff_id: str  # from the source config, as the Go convertor takes it (§2.3)
    chain_id: str  # the dedup key and, as a uuid, the LSMT layer's identity
    uuid: str
    parent_uuid: str | None


@dataclass(frozen=True)
class ImagePlan:
    descriptor: Descriptor  # as the source names it: index entry or index.json entry, platform included
    manifest: Manifest
    config: dict[str, Any]
    platform: Platform  # the descriptor's, else the config's
    layers: tuple[LayerPlan, ...]


@dataclass(frozen=True)
class IndexPlan:
    descriptor: Descriptor
    index: Index
    children: tuple["ImagePlan | IndexPlan", ...]  # in source order, dropped entries left out


Node = ImagePlan | IndexPlan


@dataclass(frozen=True)
class RootPlan:
    selected_by: str  # "tag 'x'" or "digest sha256:…"
    node: Node


@dataclass(frozen=True)
class ConversionPlan:
    roots: tuple[RootPlan, ...]
    warnings: tuple[str, ...]

    def images(self) -> list[ImagePlan]:
        """Every image to convert, once each, in tree order (the same manifest may appear in several places)."""
        seen: set[str] = set()
        found: list[ImagePlan] = []
        for root in self.roots:
            for image in iter_images(root.node):
                if image.descriptor.digest not in seen:
                    seen.add(image.descriptor.digest)
                    found.append(image)
        return found


def iter_images(node: Node) -> Iterator[ImagePlan]:
    """Every image below `node`, depth first in index order; a node several indexes share comes once."""
    stack = [node]
    seen: set[int] = set()
    while stack:
        current = stack.pop()
        if id(current) in seen:
            continue
        seen.add(id(current))
        if isinstance(current, ImagePlan):
            yield current
        else:
            stack.extend(reversed(current.children))


def plan(layout: Layout, selection: Selection) -> ConversionPlan:
    """The images `selection` names, checked and ready to convert; LayoutError naming the first problem."""
    if not selection.tags and not selection.digests:
        raise ValueError("nothing selected: give at least one tag or digest")
    planner = _Planner(layout, selection.platforms)
    roots: list[RootPlan] = []
    for tag in selection.tags:
        label = f"tag {tag!r}"
        roots.append(RootPlan(label, planner.root(label, layout.resolve_tag(tag))))
    for digest in selection.digests:
        label = f"digest {check_digest(digest)}"
        roots.append(RootPlan(label, planner.root(label, layout.resolve_digest(digest))))
    return ConversionPlan(tuple(roots), tuple(planner.warnings))


@dataclass
class _Planner:
    layout: Layout
    platforms: Sequence[Platform]
    warnings: list[str] = field(default_factory=list)
    # Planned nodes by descriptor: an index may name the same child many times, and several indexes
    # may share one; each is planned once and the plan is a DAG (walk.py says why).
    _planned: dict[str, Node | None] = field(default_factory=dict)
    _label: str = ""  # of the root being planned, for warnings

    def __post_init__(self) -> None:
        self.walker = IndexWalker(self.layout.read_index, on_skip=self._dropped)

    def _dropped(self, index: Descriptor, entry: Descriptor) -> None:
        self.warnings.append(f"{self._label}: dropped attestation manifest {entry.digest} of {index.digest}")

    def root(self, label: str, descriptor: Descriptor) -> Node:
        first_warning = len(self.warnings)
        self._label = label
        node = self._node(label, descriptor, top=True, depth=0)
        if node is None:
            dropped = "; ".join(self.warnings[first_warning:])
            wanted = " or ".join(str(p) for p in self.platforms)
            problem = f"nothing for platform {wanted}" if wanted else "nothing to convert"
            raise LayoutError(
                self._where(descriptor),
                f"{label}: {descriptor.digest} has {problem}" + (f" ({dropped})" if dropped else ""),
            )
        return node

    def _where(self, descriptor: Descriptor) -> str:
        return str(self.layout.blob_path(descriptor.digest))

    def _node(self, label: str, descriptor: Descriptor, top: bool, depth: int) -> Node | None:
        """The plan for a descriptor, or None when it is filtered out or dropped (never at the top)."""
        key = json.dumps(descriptor.to_json(), sort_keys=True)
        if key not in self._planned:
            self._planned[key] = self._plan_node(label, descriptor, top, depth)
        return self._planned[key]

    def _plan_node(self, label: str, descriptor: Descriptor, top: bool, depth: int) -> Node | None:
        media_type = descriptor.media_type
        if media_type in INDEX_TYPES:
            return self._index(label, descriptor, depth)
        if media_type in MANIFEST_TYPES:
            return self._image(label, descriptor, top)
        if media_type in DOCKER_SCHEMA1_MANIFESTS:
            problem = "Docker schema 1 manifests are not supported; convert the image to schema 2 or OCI first"
        elif top:
            problem = f"media type {media_type!r} is neither an image manifest nor an index"
        else:
            self.warnings.append(f"{label}: dropped index entry {descriptor.digest} of media type {media_type!r}")
            return None
        raise LayoutError(self._where(descriptor), f"{label}: {descriptor.digest}: {problem}")

    def _index(self, label: str, descriptor: Descriptor, depth: int) -> IndexPlan | None:
        children: list[Node] = []
        for child in self.walker.children(descriptor, depth):
            node = self._node(label, child, top=False, depth=depth + 1)
            if node is not None:
                children.append(node)
        return IndexPlan(descriptor, self.walker.index(descriptor), tuple(children)) if children else None

    def _image(self, label: str, descriptor: Descriptor, top: bool) -> ImagePlan | None:
        if descriptor.platform is not None and not self._selected(descriptor.platform):
            return None
        manifest = self.layout.read_manifest(descriptor)
        where = self._where(descriptor)
        context = f"{label}, manifest {descriptor.digest}"
        if manifest.config.media_type not in CONFIG_TYPES:
            problem = f"not an image: its config has media type {manifest.config.media_type!r}"
            if top:
                raise LayoutError(where, f"{context}: {problem}")
            self.warnings.append(f"{context}: dropped, {problem}")
            return None
        config = self.layout.read_json(manifest.config)
        config_where = str(self.layout.blob_path(manifest.config.digest))
        if not isinstance(config, dict):
            raise LayoutError(config_where, f"{context}: the image config is not a JSON object")
        platform = descriptor.platform or Platform.from_json(config)
        if descriptor.platform is None and not self._selected(platform):
            return None
        try:
            gojson.marshal(config, gojson.IMAGE)  # the output config is this one re-marshalled: fail now, not later
            diff_ids = _diff_ids(config)
        except ValueError as exc:
            raise LayoutError(config_where, f"{context}: image config: {exc}") from None
        if len(diff_ids) != len(manifest.layers):
            raise LayoutError(
                config_where,
                f"{context}: the config lists {len(diff_ids)} diff_ids for {len(manifest.layers)} layers",
            )
        for i, layer in enumerate(manifest.layers):
            self._check_layer(f"{context}, layer {i}", layer)
        chains = chain_ids(diff_ids)
        layers = tuple(
            LayerPlan(i, layer, LAYER_COMPRESSION[layer.media_type], diff, chain, uuid, parent)
            for i, (layer, diff, chain, (uuid, parent)) in enumerate(
                zip(manifest.layers, diff_ids, chains, layer_uuids(chains), strict=True)
            )
        )
        return ImagePlan(descriptor, manifest, config, platform, layers)

    def _selected(self, platform: Platform) -> bool:
        return not self.platforms or any(p.matches(platform) for p in self.platforms)

    def _check_layer(self, context: str, layer: Descriptor) -> None:
        where = self._where(layer)
        media_type = layer.media_type
        if is_encrypted(media_type):
            raise LayoutError(where, f"{context}: media type {media_type!r} is encrypted; decrypt the image first")
        if media_type not in LAYER_COMPRESSION:
            raise LayoutError(where, f"{context}: unsupported layer media type {media_type!r}")
        if any(key.startswith(OVERLAYBD_ANNOTATION_PREFIX) for key in layer.annotations):
            raise LayoutError(where, f"{context}: is already an overlaybd layer (it has overlaybd annotations)")
        if not self.layout.has_blob(layer):
            path = self.layout.blob_path(layer.digest)
            if path.is_file():
                actual = path.stat().st_size
                short = "truncated: " if actual < layer.size else ""
                raise LayoutError(where, f"{context}: {short}blob is {actual} bytes, its descriptor says {layer.size}")
            urls = f"; it is non-distributable, its urls: {', '.join(layer.urls)}" if layer.urls else ""
            raise LayoutError(where, f"{context}: blob {layer.digest} ({layer.size} bytes) is missing{urls}")
        if media_type in NON_DISTRIBUTABLE_LAYERS:
            self.warnings.append(f"{context}: non-distributable layer {layer.digest} becomes a distributable one")


def _diff_ids(config: dict[str, Any]) -> list[str]:
    rootfs = config.get("rootfs")
    diff_ids = rootfs.get("diff_ids") if isinstance(rootfs, dict) else None
    if not isinstance(diff_ids, list):
        raise ValueError("rootfs.diff_ids is missing")
    for i, diff in enumerate(diff_ids):
        try:
            encoded(diff)  # a sha256 digest: chain IDs and layer uuids are made of it (§2.3)
        except ValueError as exc:
            raise ValueError(f"rootfs.diff_ids[{i}]: {exc}") from None
    return diff_ids
