"""The convert pipeline: source layout → plan → layer conversion → blobs → destination layout.

Images are converted in parallel worker processes (worker.py), the layers of one image in order, each on
the blobs of the layers below it, by the engine of each output format asked for (overlaybd, TurboOCI).
Finished layers wait in the work directory; only when every image is done do they enter the destination,
then the configs, manifests and indexes, and last `index.json` (atomically, under a lock): a failed or
killed convert leaves the destination as it was.

With the cache (cache/), a selected image already converted with the same options is written from it
without opening a layer, and layers come from it where they can; what this run makes goes into it.
"""

import hashlib
import json
import os
import time
from collections.abc import Mapping, Sequence
from contextlib import nullcontext, suppress
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from ..cache.cache import CACHE_OFF, Cache, CacheSettings, Heartbeat, new_owner
from ..cache.maintenance import trim
from ..errors import ObdlayoutError
from ..formats.commit import DEFAULT_BLOB, BlobOptions
from ..oci.digest import BlobRef
from ..oci.layout import Layout
from ..oci.mediatypes import REF_NAME
from ..oci.output import BuiltNode, OutputOptions, build, publish
from ..oci.plan import ConversionPlan, ImagePlan, RootPlan, Selection, iter_images, plan
from ..oci.writer import LayoutWriter, check_destination, check_tag
from .artefacts import ConvertedLayer
from .engine import LAYER_FORMAT, LayerEngine
from .errors import ConvertError
from .native import DEFAULT_BASELAYER, DEFAULT_VSIZE, Ext4Options, NativeExt4Engine
from .progress import Events, Message
from .tools import DEFAULT_TOOLS_DIR
from .tools_engines import ToolsOverlaybdEngine, ToolsTurboOciEngine
from .turbo import NativeTurboOciEngine
from .turbo_erofs import NativeTurboErofsEngine
from .workdir import WorkDir, default_work_dir
from .worker import Format, ImageJob, ImageReport, image_label, run_jobs

OVERLAYBD = "overlaybd"
TURBO_OCI = "turbo-oci"
EXT4 = "ext4"
EROFS = "erofs"
FSTYPES = (EXT4, EROFS)
FORMATS = (OVERLAYBD, TURBO_OCI)
NATIVE = "native"  # our own ext4 writer and blob formats
OVERLAYBD_TOOLS = "overlaybd-tools"  # the overlaybd tools, run as the Go convertor runs them
ENGINES = (NATIVE, OVERLAYBD_TOOLS)


@dataclass(frozen=True)
class ConvertOptions:
    mkfs: bool = True
    baselayer: Path = DEFAULT_BASELAYER
    vsize: int = DEFAULT_VSIZE
    fstype: str = EXT4  # of TurboOCI images
    blob: BlobOptions = DEFAULT_BLOB
    oci: bool = True
    referrer: bool = False
    concurrency: int = 4
    work_dir: Path | None = None
    reserve: bool = False
    dump_manifest: bool = False
    engine: str = NATIVE
    tools_dir: Path = DEFAULT_TOOLS_DIR
    sparse: bool = True  # the overlaybd tools' writable files (overlaybd-create -s)
    cache: CacheSettings | None = None  # None: no cache (--no-cache)


@dataclass
class OutputReport:
    tag: str
    format: str
    source: str
    digest: str
    media_type: str
    cached: bool = False  # written from the cache, no layer opened


@dataclass
class ConvertReport:
    outputs: list[OutputReport]
    images: list[ImageReport]
    warnings: list[str]
    seconds: float
    cache: dict[str, Any] | None = None  # where it is, and "on", or "off: why"

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def make_engine(name: str, options: ConvertOptions) -> LayerEngine:
    """The engine of an output format, from the options (the one place the engine is chosen); a ConvertError
    if it cannot run (a missing baselayer or tool)."""
    ext4 = Ext4Options(options.mkfs, options.baselayer, options.vsize, options.blob)
    if options.engine == OVERLAYBD_TOOLS:
        keep = options.reserve
        if name == TURBO_OCI:
            return ToolsTurboOciEngine(ext4, options.tools_dir, keep_files=keep)
        return ToolsOverlaybdEngine(ext4, options.tools_dir, sparse=options.sparse, keep_files=keep)
    if name == TURBO_OCI:
        return NativeTurboErofsEngine(ext4) if options.fstype == EROFS else NativeTurboOciEngine(ext4)
    return NativeExt4Engine(ext4)


def convert(
    source: Path,
    destination: Path,
    selection: Selection,
    output_tags: Mapping[str, Sequence[str]],
    options: ConvertOptions,
    events: Events,
) -> ConvertReport:
    """Convert what `selection` names in `source` into `destination`. `output_tags` maps each output format
    (OVERLAYBD, TURBO_OCI) to make to its tags, root i of the selection being tagged `tags[i]`."""
    start = time.perf_counter()
    layout = Layout(source)
    conversion = plan(layout, selection)
    if not output_tags or any(name not in FORMATS for name in output_tags):
        raise ValueError(f"output formats must be some of {', '.join(FORMATS)}")
    if options.engine not in ENGINES:
        raise ValueError(f"the engine must be one of {', '.join(ENGINES)}")
    if any(len(tags) != len(conversion.roots) for tags in output_tags.values()):
        raise ValueError("one output tag per selected image is needed")
    for tags in output_tags.values():
        for tag in tags:
            try:
                check_tag(tag)
            except ValueError as exc:
                raise ConvertError("output tag", str(exc)) from None
    check_destination(destination)
    engines = {name: make_engine(name, options) for name in output_tags}
    warnings = list(conversion.warnings)
    for warning in warnings:
        events.send(Message(warning, warning=True))

    def warn(text: str) -> None:
        warnings.append(text)
        events.send(Message(text, warning=True))

    cache = Cache(options.cache, new_owner(), warn) if options.cache else None
    if cache is not None:
        cache.check()
    keep = options.reserve or options.dump_manifest
    try:
        with WorkDir(options.work_dir or default_work_dir(destination), keep) as work, _heartbeat(cache):
            formats = tuple(Format(name, engine, engine.base_layer(work)) for name, engine in engines.items())
            run = _Run(layout, conversion, selection, formats, options, cache)
            jobs = [
                ImageJob(
                    source, image, image_label(image), formats, work.path,
                    options.cache if cache is not None and cache.on else None, cache.owner if cache else "",
                )
                for image in run.images_to_convert()
            ]  # fmt: skip
            results = run_jobs(jobs, options.concurrency, events)
            for result in results:
                if result.cache_problem and cache is not None and cache.on:
                    cache.problem = result.cache_problem  # the worker told the user; the report says it too
                    warnings.append(f"{CACHE_OFF}: {result.cache_problem}")
            built = run.outputs([result.layers for result in results], output_tags)
            if options.dump_manifest:
                _dump(work, {tag: node for tag, (_, node) in built.items()})
            _publish(destination, run.blob_files, {tag: node for tag, (_, node) in built.items()})
            run.store_outputs(built, output_tags)
    finally:
        if cache is not None:
            cache.end()
            if cache.on and options.cache and options.cache.max_size is not None:
                trim(options.cache, options.cache.max_size)
    sources = {tag: root for tags in output_tags.values() for root, tag in zip(conversion.roots, tags, strict=True)}
    outputs_report = [
        OutputReport(
            tag, name, sources[tag].node.descriptor.digest, node.descriptor.digest, node.descriptor.media_type,
            tag in run.cached_tags,
        )
        for tag, (name, node) in built.items()
    ]  # fmt: skip
    reports = [report for result in results for report in result.reports]
    cache_report = None
    if options.cache is not None and cache is not None:
        cache_report = {"location": options.cache.describe(), "status": "on" if cache.on else f"off: {cache.problem}"}
    seconds = round(time.perf_counter() - start, 3)
    return ConvertReport(outputs_report, reports, warnings, seconds, cache_report)


def _heartbeat(cache: Cache | None) -> Heartbeat | nullcontext[None]:
    return Heartbeat(cache) if cache is not None else nullcontext()


@dataclass
class _Run:
    """What one convert makes of its plan: which images it must convert, its outputs (from the layers it
    converted, or from the cache), and the files DST must hold for them."""

    layout: Layout
    conversion: ConversionPlan
    selection: Selection
    formats: tuple[Format, ...]
    options: ConvertOptions
    cache: Cache | None
    blob_files: dict[str, tuple[Path, BlobRef]] = field(default_factory=dict)
    cached_tags: set[str] = field(default_factory=set)
    _hits: dict[tuple[int, int], BuiltNode] = field(default_factory=dict)  # (format, root) -> output
    _files: dict[tuple[int, int], list[tuple[Path, BlobRef]]] = field(default_factory=dict)  # what each needs

    def __post_init__(self) -> None:
        if self.cache is None:
            return
        for number, made in enumerate(self.formats):
            for index, root in enumerate(self.conversion.roots):
                found = self.cache.lookup_output(self._key(made, root), self._source_blob)
                if found is not None:
                    self._hits[number, index] = found[0]
                    self.blob_files.update(found[1])

    def _source_blob(self, digest: str) -> Path:
        return self.layout.blob_path(digest).absolute()

    def _key(self, made: Format, root: RootPlan) -> str:
        """Everything that decides the output of `root` in the format `made` (its tag aside)."""
        descriptor = dict(root.node.descriptor.fields)
        annotations = {k: v for k, v in dict(descriptor.get("annotations") or {}).items() if k != REF_NAME}
        identity = {
            "format": LAYER_FORMAT, "output": made.name, "engine": made.engine.identity(),
            "oci": self.options.oci, "referrer": self.options.referrer,
            "base": made.base.output.ref.digest if made.base else None,
            "platforms": [str(p) for p in self.selection.platforms],
            "source": {**descriptor, "annotations": annotations},
        }  # fmt: skip
        return hashlib.sha256(json.dumps(identity, sort_keys=True).encode()).hexdigest()[:32]

    def images_to_convert(self) -> list[ImagePlan]:
        """The images of the roots some output of which is not in the cache, once each."""
        wanted: dict[str, ImagePlan] = {}
        for index, root in enumerate(self.conversion.roots):
            if any((number, index) not in self._hits for number in range(len(self.formats))):
                wanted.update((image.descriptor.digest, image) for image in iter_images(root.node))
        return list(wanted.values())

    def outputs(
        self,
        converted_by_worker: Sequence[tuple[dict[str, ConvertedLayer], ...]],
        output_tags: Mapping[str, Sequence[str]],
    ) -> dict[str, tuple[str, BuiltNode]]:
        """Each output by tag, with its format; `layers` are the image workers' converted layers."""
        built: dict[str, tuple[str, BuiltNode]] = {}
        for number, made in enumerate(self.formats):
            converted = {chain: layer for result in converted_by_worker for chain, layer in result[number].items()}
            for layer in [*([made.base] if made.base else []), *converted.values()]:
                self.blob_files.update((ref.digest, (path, ref)) for path, ref in layer.blobs)
            output_options = OutputOptions(
                oci=self.options.oci,
                referrer=self.options.referrer,
                artifact_type=made.engine.artifact_type,
                base_layer=made.base.output if made.base else None,
            )
            outputs = {chain: layer.output for chain, layer in converted.items()}
            for index, (root, tag) in enumerate(zip(self.conversion.roots, output_tags[made.name], strict=True)):
                hit = self._hits.get((number, index))
                if hit is not None:
                    self.cached_tags.add(tag)
                    continue
                built[tag] = (made.name, build(root.node, outputs, output_options))
                image_layers = [converted[p.chain_id] for image in iter_images(root.node) for p in image.layers]
                needed = [*(made.base.blobs if made.base else ()), *(f for layer in image_layers for f in layer.blobs)]
                self._files[number, index] = list(dict.fromkeys(needed))
        for number, made in enumerate(self.formats):
            for index, tag in enumerate(output_tags[made.name]):
                if (number, index) in self._hits:
                    built[tag] = (made.name, self._hits[number, index])
        return built

    def store_outputs(
        self, built: Mapping[str, tuple[str, BuiltNode]], output_tags: Mapping[str, Sequence[str]]
    ) -> None:
        """Keep the outputs this run made in the cache."""
        if self.cache is None or not self.cache.on:
            return
        sources = {layer.descriptor.digest for image in self.conversion.images() for layer in image.layers}
        for number, made in enumerate(self.formats):
            for index, (root, tag) in enumerate(zip(self.conversion.roots, output_tags[made.name], strict=True)):
                if (number, index) not in self._hits:
                    key, files = self._key(made, root), self._files[number, index]
                    self.cache.store_output(key, root.node.descriptor.digest, built[tag][1], files, sources)


def _publish(destination: Path, blob_files: Mapping[str, tuple[Path, BlobRef]], built: dict[str, BuiltNode]) -> None:
    """Blobs, documents, then the tags: DST as it was if anything fails on the way."""
    writer = LayoutWriter(destination)
    try:
        for path, ref in blob_files.values():
            writer.add_file(path, ref)
        publish(writer, built)
    except BaseException as exc:
        with suppress(OSError, ObdlayoutError):
            writer.rollback()
        if isinstance(exc, OSError):
            raise ConvertError(str(destination), f"cannot write into it: {exc.strerror}") from None
        raise


def _dump(work: WorkDir, built: dict[str, BuiltNode]) -> None:
    """--dump-manifest: every config, manifest and index written, by digest, in the work directory."""
    for tag, node in built.items():
        for data in node.blobs:
            digest = hashlib.sha256(data).hexdigest()
            work.dump(os.path.join(tag, f"{digest}.json"), data)
