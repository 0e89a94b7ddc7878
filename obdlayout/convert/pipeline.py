"""The convert pipeline: source layout → plan → layer conversion → blobs → destination layout.

Images are converted in parallel worker processes (up to the concurrency limit), the layers of one
image in order, each on the blobs of the layers below it, by the engine of each output format asked for
(overlaybd, TurboOCI). When two formats are made in one run, each source layer is decompressed once,
into the work directory, and both engines read it there. Finished layers wait in the work directory;
only when every image is done do they enter the destination, then the configs, manifests and indexes,
and last `index.json` (atomically, under a lock): a failed or killed convert leaves the destination as
it was.
"""

import hashlib
import os
import shutil
import time
from collections.abc import Iterator, Mapping, Sequence
from concurrent.futures import ProcessPoolExecutor
from contextlib import contextmanager, suppress
from dataclasses import asdict, dataclass, field
from functools import partial
from multiprocessing import get_context
from pathlib import Path
from typing import Any

from ..errors import ObdlayoutError
from ..formats.commit import DEFAULT_BLOB, BlobOptions
from ..formats.gzindex import GzipIndexBuilder
from ..lifetime import die_with_parent
from ..oci.digest import BlobRef, encoded
from ..oci.layers import open_uncompressed
from ..oci.layout import Layout
from ..oci.mediatypes import Compression
from ..oci.output import BuiltNode, OutputOptions, build, publish
from ..oci.plan import ImagePlan, LayerPlan, Selection, plan
from ..oci.writer import LayoutWriter, check_destination, check_tag
from ..units import STREAM_CHUNK
from .artefacts import ConvertedLayer, SourceLayer, Spool
from .engine import LayerEngine, layer_key
from .errors import ConvertError
from .native import DEFAULT_BASELAYER, DEFAULT_VSIZE, Ext4Options, NativeExt4Engine
from .progress import Events, LayerFinished, LayerStarted, Message, ThrottledProgress
from .tools import DEFAULT_TOOLS_DIR
from .tools_engines import ToolsOverlaybdEngine, ToolsTurboOciEngine
from .turbo import NativeTurboOciEngine
from .workdir import WorkDir, default_work_dir

OVERLAYBD = "overlaybd"
TURBO_OCI = "turbo-oci"
FORMATS = (OVERLAYBD, TURBO_OCI)
NATIVE = "native"  # our own ext4 writer and blob formats
OVERLAYBD_TOOLS = "overlaybd-tools"  # the overlaybd tools, run as the Go convertor runs them
ENGINES = (NATIVE, OVERLAYBD_TOOLS)


@dataclass(frozen=True)
class ConvertOptions:
    mkfs: bool = True
    baselayer: Path = DEFAULT_BASELAYER
    vsize: int = DEFAULT_VSIZE
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


@dataclass
class LayerReport:
    index: int
    source_digest: str
    source_size: int
    digest: str
    size: int
    tar_bytes: int
    seconds: float
    reused: bool


@dataclass
class ImageReport:
    manifest: str
    platform: str
    format: str
    layers: list[LayerReport] = field(default_factory=list)


@dataclass
class OutputReport:
    tag: str
    format: str
    source: str
    digest: str
    media_type: str


@dataclass
class ConvertReport:
    outputs: list[OutputReport]
    images: list[ImageReport]
    warnings: list[str]
    seconds: float

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class _Format:
    """One output format of the run: its engine and the layer put below every image (--no-mkfs)."""

    name: str
    engine: LayerEngine
    base: ConvertedLayer | None


@dataclass(frozen=True)
class _ImageJob:
    source: Path
    image: ImagePlan
    label: str
    formats: tuple[_Format, ...]
    work: Path


@dataclass(frozen=True)
class _ImageResult:
    reports: tuple[ImageReport, ...]  # one per format
    layers: tuple[dict[str, ConvertedLayer], ...]  # per format: by chain ID


def make_engine(name: str, options: ConvertOptions) -> LayerEngine:
    """The engine of an output format, from the options (the one place the engine is chosen); a ConvertError
    if it cannot run (a missing baselayer or tool)."""
    ext4 = Ext4Options(options.mkfs, options.baselayer, options.vsize, options.blob)
    if options.engine == OVERLAYBD_TOOLS:
        keep = options.reserve
        if name == TURBO_OCI:
            return ToolsTurboOciEngine(ext4, options.tools_dir, keep_files=keep)
        return ToolsOverlaybdEngine(ext4, options.tools_dir, sparse=options.sparse, keep_files=keep)
    return NativeTurboOciEngine(ext4) if name == TURBO_OCI else NativeExt4Engine(ext4)


_events: Events | None = None


def _set_events(events: Events) -> None:
    global _events
    _events = events


def _start_worker(events: Events) -> None:
    """In each image worker process: the events to send, and an end to it if the convert is killed."""
    _set_events(events)
    die_with_parent()


def _convert_image(job: _ImageJob) -> _ImageResult:
    """One image's layers, bottom first, in every format (in a worker process)."""
    events = _events
    assert events is not None
    work = WorkDir(job.work, keep=True)
    layout = Layout(job.source)
    image = job.image
    formats = job.formats
    reports = tuple(ImageReport(image.descriptor.digest, str(image.platform), f.name) for f in formats)
    stacks: list[list[ConvertedLayer]] = [[f.base] if f.base else [] for f in formats]
    converted: tuple[dict[str, ConvertedLayer], ...] = tuple({} for _ in formats)
    count = len(image.layers)
    for layer in image.layers:
        keys = [layer_key(f.engine, layer.chain_id) for f in formats]
        where = f"{job.label}, layer {layer.index} ({layer.descriptor.digest})"
        label = f"{job.label} layer {layer.index + 1}/{count}"
        start = time.perf_counter()
        done = [work.lookup(key) for key in keys]
        missing = [i for i, layer_done in enumerate(done) if layer_done is None]
        tar_bytes = 0
        if missing:
            events.send(LayerStarted(keys[missing[0]], label))
            progress = events.progress_callback(keys[missing[0]])
            try:
                with _spooled(layout, layer, where, work, progress, [formats[i].engine for i in missing]) as spool:
                    source = SourceLayer(layout, layer, where, progress, spool)
                    for i in missing:
                        convert = partial(formats[i].engine.convert, source, tuple(stacks[i]))
                        done[i] = work.build(keys[i], convert)
            except ObdlayoutError as exc:
                raise ConvertError("" if where in str(exc) else where, str(exc)) from None
            except OSError as exc:  # writing the work directory (the source is read as LayoutError)
                raise ConvertError(where, f"{exc.filename or job.work}: {exc.strerror}") from None
            for i in missing:
                for warning in dict.fromkeys(_known(done[i]).warnings):
                    events.send(Message(warning, warning=True))
            tar_bytes = progress.total
        seconds = time.perf_counter() - start
        finished = [_known(layer_done) for layer_done in done]
        blob_bytes = sum(layer_done.output.ref.size for layer_done in finished)
        events.send(LayerFinished(keys[0], label, tar_bytes, blob_bytes, seconds, reused=not missing))
        for i, layer_done in enumerate(finished):
            ref = layer_done.output.ref
            reused = i not in missing
            reports[i].layers.append(
                LayerReport(
                    layer.index,
                    layer.descriptor.digest,
                    layer.descriptor.size,
                    ref.digest,
                    ref.size,
                    0 if reused else tar_bytes,
                    round(seconds, 3),
                    reused,
                )
            )
            converted[i][layer.chain_id] = layer_done
            stacks[i].append(layer_done)
    return _ImageResult(reports, converted)


def _known(layer: ConvertedLayer | None) -> ConvertedLayer:
    assert layer is not None
    return layer


@contextmanager
def _spooled(
    layout: Layout,
    layer: LayerPlan,
    where: str,
    work: WorkDir,
    progress: ThrottledProgress,
    engines: Sequence[LayerEngine],
) -> Iterator[Spool | None]:
    """With several engines to run on a layer, its tar decompressed once into the work directory (with the gzip
    index, if an engine needs one, built in the same pass); with one, nothing: it reads the layer itself."""
    if len(engines) < 2:
        yield None
        return
    source = SourceLayer(layout, layer, where)
    indexed = any(engine.needs_gzip_index for engine in engines) and source.compression() is Compression.GZIP
    name = encoded(layer.descriptor.digest)
    with work.scratch(f"{name}.tar") as tar_path, work.scratch(f"{name}.gzip.meta") as index_path:
        gzip_index = GzipIndexBuilder(index_path) if indexed else None
        with (
            open_uncompressed(layout, layer.descriptor, layer.diff_id, progress, gzip_index) as stream,
            tar_path.open("wb") as out,
        ):
            shutil.copyfileobj(stream, out, STREAM_CHUNK)
        yield Spool(tar_path, index_path if indexed else None)


def _image_label(image: ImagePlan) -> str:
    platform = str(image.platform)
    return f"{platform} {encoded(image.descriptor.digest)[:12]}" if platform else encoded(image.descriptor.digest)[:12]


def _run_jobs(jobs: list[_ImageJob], concurrency: int, events: Events) -> list[_ImageResult]:
    if concurrency <= 1 or len(jobs) <= 1:
        _set_events(events)
        return [_convert_image(job) for job in jobs]
    # fork: the workers inherit the event queue; each runs its own ZFile compression pool.
    with ProcessPoolExecutor(
        min(concurrency, len(jobs)), mp_context=get_context("fork"), initializer=_start_worker, initargs=(events,)
    ) as pool:
        return list(pool.map(_convert_image, jobs))


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
    for warning in conversion.warnings:
        events.send(Message(warning, warning=True))
    keep = options.reserve or options.dump_manifest
    with WorkDir(options.work_dir or default_work_dir(destination), keep) as work:
        formats = tuple(_Format(name, engine, engine.base_layer(work)) for name, engine in engines.items())
        jobs = [_ImageJob(source, image, _image_label(image), formats, work.path) for image in conversion.images()]
        results = _run_jobs(jobs, options.concurrency, events)
        blob_files: dict[str, tuple[Path, BlobRef]] = {}
        built: dict[str, tuple[str, BuiltNode]] = {}  # tag -> (format, output)
        for number, made in enumerate(formats):
            converted = {chain: layer for result in results for chain, layer in result.layers[number].items()}
            for layer in [*([made.base] if made.base else []), *converted.values()]:
                blob_files.update((ref.digest, (path, ref)) for path, ref in layer.blobs)
            output_options = OutputOptions(
                oci=options.oci,
                referrer=options.referrer,
                artifact_type=made.engine.artifact_type,
                base_layer=made.base.output if made.base else None,
            )
            outputs = {chain: layer.output for chain, layer in converted.items()}
            for root, tag in zip(conversion.roots, output_tags[made.name], strict=True):
                built[tag] = (made.name, build(root.node, outputs, output_options))
        if options.dump_manifest:
            _dump(work, {tag: node for tag, (_, node) in built.items()})
        _publish(destination, blob_files, {tag: node for tag, (_, node) in built.items()})
    sources = {tag: root for tags in output_tags.values() for root, tag in zip(conversion.roots, tags, strict=True)}
    outputs_report = [
        OutputReport(tag, name, sources[tag].node.descriptor.digest, node.descriptor.digest, node.descriptor.media_type)
        for tag, (name, node) in built.items()
    ]
    reports = [report for result in results for report in result.reports]
    return ConvertReport(outputs_report, reports, list(conversion.warnings), round(time.perf_counter() - start, 3))


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
