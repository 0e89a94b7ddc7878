"""Check converted images end to end, reporting every fault found rather than stopping at the first.

Per image (convertor-spec.md §3, overlaybd-formats.md §1-§4):
- every blob it names (index, manifest, config, layers) is present with the size and digest its descriptor gives;
- each layer is an overlaybd layer: an uncompressed tar media type, and blob-digest, blob-size and version
  annotations that agree with its descriptor (§3.3); the config's rootfs.diff_ids are the layer digests (§3.4);
  or a TurboOCI layer: a gzip tar media type, the same annotations and the target's, its original layer
  present with the digest named, its gzip index whole and of that layer, its DiffID that of the archive's tar;
- each layer blob's structure and every CRC (formats/blob.py `Blob.verify`), a TurboOCI layer's fs meta;
- the uuid chain of overlaybd layers: each layer's parent uuid is the uuid of the layer below it (§2.9), the
  bottom one has none; the overlaybd baselayer is the one layer whose successor may have none (it is below the
  chain, §6.3). TurboOCI layers carry no uuids (the Go convertor commits them without), so have no chain;
- the merged file system: our reader walks its whole tree, and the real `e2fsck -fn` (`fsck.erofs` for EROFS)
  judges it when installed;
- with a source image: its layers' uuids are their chain IDs (§2.3), and the tree equals the tree the OCI layer
  rules give for the source (source.py), path by path. That tree is built in a helper process while this one
  checks the blobs and reads the image: the two take about as long, and each keeps a core busy.
The checks of a layer blob are made once per blob, however many images share it.
"""

import os
from collections.abc import Mapping
from concurrent.futures import Future, ProcessPoolExecutor
from contextlib import ExitStack
from dataclasses import dataclass, field
from multiprocessing import get_context
from pathlib import Path
from typing import Any

from ..ext4.reader import fs_type_at
from ..formats.blob import BlobInfo
from ..formats.errors import FormatError
from ..formats.turbo_archive import GZIP_META_NAME
from ..layers.errors import LayerError, TreeError
from ..lifetime import die_with_parent
from ..oci.descriptor import Descriptor
from ..oci.digest import digest_file
from ..oci.errors import LayoutError
from ..oci.layers import SNIFF_BYTES, open_uncompressed, sniff
from ..oci.layout import Layout
from ..oci.mediatypes import (
    CONFIG_TYPES,
    DOCKER_LAYER_GZIP,
    DOCKER_LAYER_TAR,
    LAYER_COMPRESSION,
    OCI_LAYER_GZIP,
    OCI_LAYER_TAR,
    OVERLAYBD_BLOB_DIGEST,
    OVERLAYBD_BLOB_SIZE,
    OVERLAYBD_VERSION,
    TURBO_TARGET_DIGEST,
    TURBO_TARGET_MEDIA_TYPE,
    Compression,
)
from ..oci.plan import ImagePlan, Selection, plan
from .fsck import CHECKERS, FsckResult, fsck
from .fstree import image_tree
from .image import FoundImage, find_images, is_overlaybd, open_layers
from .layers import OpenedLayer, is_turbo, open_layer
from .readfs import open_image_fs
from .source import SourceTree
from .tree import Tree, differences, display

# overlaybd-formats.md §6.3: the uuid of the ext4_64 baselayer that converting without mkfs puts at the bottom.
BASELAYER_UUID = "C02FB491-B4D4-4904-8684-A014D032AF78"
NULL_UUID = "00000000-0000-0000-0000-000000000000"
OVERLAYBD_LAYER_TYPES = frozenset({OCI_LAYER_TAR, DOCKER_LAYER_TAR})  # convertor-spec.md §3.1
TURBO_LAYER_TYPES = frozenset({OCI_LAYER_GZIP, DOCKER_LAYER_GZIP})
LOST_FOUND = b"lost+found"  # made by mkfs, no source holds it
MAX_LISTED = 1000  # differing paths listed per image; the rest are counted
HELPERS = 2  # processes: the source tree, and the file system check

OK, FAULT, NOTE = "ok", "FAULT", "note"


@dataclass
class Report:
    lines: list[tuple[str, str]] = field(default_factory=list)  # (OK | FAULT | NOTE, text), in the order found
    faults: int = 0

    def fault(self, where: str, problem: str) -> None:
        self.lines.append((FAULT, f"{where}: {problem}"))
        self.faults += 1

    def note(self, text: str) -> None:
        self.lines.append((NOTE, text))

    def ok(self, text: str) -> None:
        self.lines.append((OK, text))


@dataclass(frozen=True)
class Source:
    layout: Layout
    tag: str | None  # None: the same tag as the converted image's


@dataclass(frozen=True)
class _LayerState:
    path: Path
    info: BlobInfo | None  # None: the blob is absent, or could not be opened or verified
    sound: bool  # no fault found in it (its digest and size included)
    diff_id: str | None  # what rootfs.diff_ids must say of it (None: unknown, its archive is unreadable)


def verify(layout: Layout, tag: str | None, source: Source | None, checkers: Mapping[str, str | None]) -> Report:
    """Check the image(s) `tag` names (every tagged image when None); `checkers` are the paths of the file
    system checkers by type (fsck.CHECKERS), None where absent."""
    report = Report()
    tags = [tag] if tag is not None else layout.tags()
    if not tags:
        report.fault(layout.index_path, "tags no image (give LAYOUT:TAG for an untagged one)")
    verifier = _Verifier(layout, source, checkers, report)
    try:
        for name in tags:
            verifier.tag(name, every=tag is None)
    finally:
        verifier.close()
    for fstype in sorted(verifier.unchecked):
        checker = CHECKERS[fstype]
        report.note(
            f"{checker.command} is not installed (Debian: {checker.package}): the {fstype} file systems were "
            "only read, not checked"
        )
    return report


class _Verifier:
    def __init__(
        self, layout: Layout, source: Source | None, checkers: Mapping[str, str | None], report: Report
    ) -> None:
        self.layout = layout
        self.source = source
        self.checkers = checkers
        self.unchecked: set[str] = set()  # file system types met whose checker is absent
        self._checked_by = ""  # the checker that passed the last image's file system
        self._said: set[tuple[str, str]] = set()  # faults of source models, each reported once
        self.report = report
        self._blobs: dict[str, _LayerState] = {}
        # Source manifest digest -> its tree being built in a helper process, beside the image being read.
        self._models: dict[str, Future[_Model]] = {}
        self._helper: ProcessPoolExecutor | None = None

    def _layout_fault(self, exc: LayoutError) -> None:
        self.report.fault(exc.where, exc.problem)

    def tag(self, tag: str, every: bool) -> None:
        """`every`: the tag was not asked for by name, so an unconverted image is skipped, not a fault
        (a layout converted in place holds its sources too)."""
        images = find_images(self.layout, tag, on_error=self._layout_fault)
        if every:
            for image in [i for i in images if not any(is_overlaybd(layer) for layer in i.manifest.layers)]:
                self.report.note(f"{image.label}: not a converted image (no overlaybd layer), skipped")
                images.remove(image)
            if not images:
                return
        sources = self._source_images(self.source, tag) if self.source is not None else None
        matched: set[str] = set()
        for image in images:
            paired = self._pair(image, sources) if sources is not None else None
            if paired is not None:
                matched.add(paired.descriptor.digest)
            self._image(image, paired)
        for unmatched in [s for s in sources or [] if s.descriptor.digest not in matched]:
            self.report.note(f"source platform {unmatched.platform} of tag {tag!r} has no converted image here")

    # -- one image ------------------------------------------------------------------------------

    def _image(self, image: FoundImage, source: ImagePlan | None) -> None:
        if source is not None:
            self._model(source)  # built beside the checks of the blobs and the reading of the image
        before = self.report.faults
        where = f"{self.layout.root}:{image.tag}" + (f" ({image.platform})" if image.platform else "")
        config = self._config(image, where)
        layers = image.manifest.layers
        states = [self._layer(where, number, layer) for number, layer in enumerate(layers)]
        for number, layer in enumerate(layers):
            self._annotations(where, number, layer)
        if not layers:
            self.report.fault(where, "the image has no layers")
        if config is not None:
            self._diff_ids(where, config, [state.diff_id for state in states])
        infos = [state.info for state in states]
        turbo = any(is_turbo(layer) for layer in layers)
        if not turbo:
            self._chain(where, infos)
        if source is not None and not turbo:
            self._source_uuids(where, infos, source)
        if layers and all(info is not None for info in infos):
            self._filesystem(where, list(layers), source)
        elif layers:
            self.report.note(f"{where}: the file system was not checked, as a layer blob is absent or broken")
        # A blob shared with an image checked before had its faults reported there, once.
        if self.report.faults == before and all(state.sound for state in states):
            chain = "target layers, gzip indexes" if turbo else "uuid chain"
            checks = f"blobs, annotations, diff_ids, CRCs, {chain}, file system"
            checks += f" ({self._checked_by} clean)" if self._checked_by else ""
            checks += ", tree equal to the source's" if source is not None else ""
            self.report.ok(f"{where}: manifest {image.descriptor.digest}, {len(layers)} layer(s): {checks}")

    def _config(self, image: FoundImage, where: str) -> dict[str, Any] | None:
        descriptor = image.manifest.config
        if descriptor.media_type not in CONFIG_TYPES:
            self.report.fault(where, f"config media type {descriptor.media_type!r} is not an image config's")
        try:
            config = self.layout.read_json(descriptor)
        except LayoutError as exc:
            self.report.fault(where, f"config: {exc}")
            return None
        if not isinstance(config, dict):
            self.report.fault(where, f"config {descriptor.digest} is not a JSON object")
            return None
        return config

    def _layer(self, where: str, number: int, layer: Descriptor) -> _LayerState:
        known = self._blobs.get(layer.digest)
        if known is not None:
            return known
        path = self.layout.blob_path(layer.digest)
        label = f"{where}: layer {number}"
        before = self.report.faults
        info: BlobInfo | None = None
        diff_id: str | None = layer.digest
        if not os.path.exists(path):
            self.report.fault(label, f"{path}: blob {layer.digest} is missing")
        else:
            try:
                with self.layout.open_blob(layer) as reader:
                    reader.drain()
            except LayoutError as exc:
                self.report.fault(label, str(exc))
            try:
                with ExitStack() as stack:
                    opened = open_layer(self.layout, layer, stack)
                    opened.blob.verify()
                    info = opened.blob.info()
                    if opened.archive is not None:
                        diff_id = opened.archive.diff_id
                        self._target(label, opened)
            except FormatError as exc:
                self.report.fault(label, str(exc))
                diff_id = diff_id if not is_turbo(layer) else None
            except OSError as exc:
                self.report.fault(label, f"{path}: {exc.strerror}")
        state = self._blobs[layer.digest] = _LayerState(path, info, self.report.faults == before, diff_id)
        return state

    def _target(self, label: str, opened: OpenedLayer) -> None:
        """A TurboOCI layer's original layer: the digest its annotation names, and the gzip index of it."""
        assert opened.target_path is not None
        named = opened.descriptor.annotations.get(TURBO_TARGET_DIGEST)
        actual = digest_file(opened.target_path)
        if actual.digest != named:
            self.report.fault(label, f"{opened.target_path}: target layer content is {actual.digest}, not {named}")
        with opened.target_path.open("rb") as head:
            compression = sniff(head.read(SNIFF_BYTES))
        named_type = opened.descriptor.annotations.get(TURBO_TARGET_MEDIA_TYPE)
        if LAYER_COMPRESSION.get(named_type or "") is not compression:
            self.report.fault(
                label, f"annotation {TURBO_TARGET_MEDIA_TYPE} is {named_type!r}, the target is {compression.value}"
            )
        index = opened.gzip_index
        if (index is not None) != (compression is Compression.GZIP):
            has = "has" if index is not None else "has no"
            self.report.fault(label, f"its archive {has} {GZIP_META_NAME}, but the target is {compression.value}")
        if index is not None:
            index.verify()
            if index.header.gzip_size != actual.size:
                self.report.fault(
                    label,
                    f"{GZIP_META_NAME} indexes a {index.header.gzip_size}-byte gzip file; the target has {actual.size}",
                )

    def _annotations(self, where: str, number: int, layer: Descriptor) -> None:
        label = f"layer {number} ({layer.digest})"
        turbo = is_turbo(layer)
        if turbo and layer.media_type not in TURBO_LAYER_TYPES:
            self.report.fault(where, f"{label}: media type {layer.media_type!r} is not a gzip layer tar (TurboOCI)")
        if not turbo and layer.media_type not in OVERLAYBD_LAYER_TYPES:
            self.report.fault(where, f"{label}: media type {layer.media_type!r} is not an uncompressed layer tar")
        notes = layer.annotations
        for key in (TURBO_TARGET_DIGEST, TURBO_TARGET_MEDIA_TYPE) if turbo else ():
            if key not in notes:
                self.report.fault(where, f"{label}: annotation {key} is missing")
        expected = {OVERLAYBD_BLOB_DIGEST: layer.digest, OVERLAYBD_BLOB_SIZE: str(layer.size)}
        for key, value in expected.items():
            if key not in notes:
                self.report.fault(where, f"{label}: annotation {key} is missing")
            elif notes[key] != value:
                self.report.fault(where, f"{label}: annotation {key} is {notes[key]!r}, the descriptor says {value!r}")
        if OVERLAYBD_VERSION not in notes:
            self.report.fault(where, f"{label}: annotation {OVERLAYBD_VERSION} is missing")

    def _diff_ids(self, where: str, config: dict[str, Any], expected: list[str | None]) -> None:
        """`expected`: each layer's DiffID: an overlaybd blob is an uncompressed layer, so its digest; a TurboOCI
        layer's is the digest of the tar in its archive (§3.4); None where it could not be read."""
        rootfs = config.get("rootfs")
        diff_ids = rootfs.get("diff_ids") if isinstance(rootfs, dict) else None
        if not isinstance(diff_ids, list):
            self.report.fault(where, "config has no rootfs.diff_ids list")
            return
        if len(diff_ids) != len(expected):
            self.report.fault(where, f"config lists {len(diff_ids)} diff_ids for {len(expected)} layers")
        for number, (diff_id, wanted) in enumerate(zip(diff_ids, expected, strict=False)):
            if wanted is not None and diff_id != wanted:
                self.report.fault(
                    where, f"config rootfs.diff_ids[{number}] is {diff_id!r}, but layer {number}'s DiffID is {wanted}"
                )

    def _chain(self, where: str, infos: list[BlobInfo | None]) -> None:
        for number, info in enumerate(infos):
            if info is None:
                continue
            parent = info.parent_uuid.upper()
            if number == 0:
                if parent != NULL_UUID:
                    self.report.fault(where, f"layer 0 (the bottom) has parent uuid {parent}; it should have none")
                continue
            below = infos[number - 1]
            if below is None:
                continue
            if parent == below.uuid.upper():
                continue
            if parent == NULL_UUID and number == 1 and below.uuid.upper() == BASELAYER_UUID:
                continue  # the layer on the baselayer starts the chain
            self.report.fault(
                where, f"layer {number} has parent uuid {parent}, but layer {number - 1} below it is {below.uuid}"
            )

    # -- the file system ------------------------------------------------------------------------

    def close(self) -> None:
        if self._helper is not None:
            self._helper.shutdown(cancel_futures=True)

    def _filesystem(self, where: str, layers: list[Descriptor], source: ImagePlan | None) -> None:
        # The source tree and the file system check run in helper processes while this one reads the image.
        building = self._model(source) if source is not None else None
        checking = self._pool().submit(_check_filesystem, self.layout.root, layers, dict(self.checkers))
        self._checked_by = ""
        try:
            with open_layers(self.layout, layers) as disk:
                try:
                    fs = open_image_fs(disk.read, disk.virtual_size)
                    actual = image_tree(fs, contents=building is not None)
                except (TreeError, FormatError) as exc:
                    self.report.fault(where, f"file system: {exc}")
                    actual = None
        except FormatError as exc:
            self.report.fault(where, str(exc))
            return
        fstype, result = checking.result()
        checker = CHECKERS[fstype]
        if result is None:
            self.unchecked.add(fstype)
        elif result.clean:
            self._checked_by = checker.command
        else:
            said = "; ".join(result.lines)
            shown = " ".join((checker.command, *checker.options))
            self.report.fault(where, f"{shown} exits {result.exit_code}: {said}")
        expected = self._built(building) if building is not None else None
        if expected is not None and actual is not None:
            self._compare(where, expected, actual)

    def _compare(self, where: str, expected: Tree, actual: Tree) -> None:
        expected = {path: node for path, node in expected.items() if path}  # the root's own metadata is mkfs's
        inside_lost_found = LOST_FOUND + b"/"
        keep_lost_found = LOST_FOUND in expected
        actual = {
            path: node
            for path, node in actual.items()
            if path and (keep_lost_found or not (path == LOST_FOUND or path.startswith(inside_lost_found)))
        }
        listed = 0
        for path, problem in differences(expected, actual):
            listed += 1
            if listed <= MAX_LISTED:
                self.report.fault(where, f"{display(path)}: {problem}")
        if listed > MAX_LISTED:
            self.report.fault(where, f"and {listed - MAX_LISTED} more paths differ from the source")

    # -- the source -----------------------------------------------------------------------------

    def _source_images(self, source: Source, tag: str) -> list[ImagePlan] | None:
        source_tag = source.tag or tag
        try:
            return plan(source.layout, Selection(tags=(source_tag,))).images()
        except LayoutError as exc:
            self.report.fault(exc.where, f"source {source.layout.root}:{source_tag}: {exc.problem}")
            return None

    def _pair(self, image: FoundImage, sources: list[ImagePlan]) -> ImagePlan | None:
        if image.platform is not None:
            wanted = image.platform.normalized()
            same = [s for s in sources if s.platform.normalized() == wanted]
            if len(same) == 1:
                return same[0]
        if len(sources) == 1:
            return sources[0]
        where = f"{self.layout.root}:{image.tag}"
        self.report.fault(where, f"no single source image has its platform {image.platform} to compare with")
        return None

    def _source_uuids(self, where: str, infos: list[BlobInfo | None], source: ImagePlan) -> None:
        base = len(infos) - len(source.layers)
        if base not in (0, 1):
            self.report.fault(where, f"has {len(infos)} layers for the source's {len(source.layers)}")
            return
        for layer in source.layers:
            info = infos[base + layer.index]
            if info is None:
                continue
            parent = (layer.parent_uuid or NULL_UUID).upper()
            if info.uuid.upper() != layer.uuid.upper():
                self.report.fault(
                    where,
                    f"layer {base + layer.index} has uuid {info.uuid}; source layer {layer.index}'s chain ID "
                    f"{layer.chain_id} gives {layer.uuid.upper()}",
                )
            elif info.parent_uuid.upper() != parent:
                self.report.fault(where, f"layer {base + layer.index} has parent uuid {info.parent_uuid}, not {parent}")

    def _model(self, source: ImagePlan) -> "Future[_Model]":
        """The source image's tree, built once (in a helper process: the caller reads the converted image)."""
        assert self.source is not None
        digest = source.descriptor.digest
        if digest not in self._models:
            self._models[digest] = self._pool().submit(_source_model, self.source.layout.root, source)
        return self._models[digest]

    def _pool(self) -> ProcessPoolExecutor:
        if self._helper is None:
            self._helper = ProcessPoolExecutor(
                HELPERS, mp_context=get_context("fork"), initializer=die_with_parent, initargs=(os.getpid(),)
            )
        return self._helper

    def _built(self, building: "Future[_Model]") -> Tree | None:
        tree, fault = building.result()
        if fault is not None and fault not in self._said:
            self._said.add(fault)
            self.report.fault(*fault)
        return tree


_Model = tuple[Tree | None, tuple[str, str] | None]  # the tree, or None and the fault that stopped it


def _check_filesystem(
    layout_root: Path, layers: list[Descriptor], checkers: dict[str, str | None]
) -> tuple[str, FsckResult | None]:
    """The type of the image's file system, and its checker's verdict (None if the checker is absent)."""
    fstype = "ext4"
    try:
        with open_layers(Layout(layout_root), layers) as disk:
            fstype = "erofs" if fs_type_at(disk.read) == "erofs" else "ext4"
            tool = checkers.get(fstype)
            return fstype, fsck(disk, tool, fstype) if tool is not None else None
    except FormatError as exc:  # the reader meets it too, and reports it
        return fstype, FsckResult(8, [f"the layers cannot be read: {exc}"])


def _source_model(layout_root: Path, source: ImagePlan) -> _Model:
    """The tree the source image's layers make (the layer rules on an in-memory tree)."""
    model = SourceTree()
    layout = Layout(layout_root)
    for layer in source.layers:
        label = f"source layer {layer.index} ({layer.descriptor.digest})"
        try:
            with open_uncompressed(layout, layer.descriptor, layer.diff_id) as stream:
                model.apply(stream, label)
        except (LayoutError, LayerError) as exc:
            return None, (f"source manifest {source.descriptor.digest}", str(exc))
    return model.tree(), None
