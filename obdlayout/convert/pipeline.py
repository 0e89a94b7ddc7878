"""The convert pipeline: source layout → plan → layer conversion → blobs → destination layout.

Images are converted in parallel worker processes (up to the concurrency limit), the layers of one
image in order, each on the blobs of the layers below it. Finished layers wait in the work
directory; only when every image is done do they enter the destination, then the configs,
manifests and indexes, and last `index.json` (atomically, under a lock): a failed or killed
convert leaves the destination as it was.
"""

import hashlib
import os
import time
from collections.abc import Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict, dataclass, field
from functools import partial
from multiprocessing import get_context
from pathlib import Path

from ..errors import ObdlayoutError
from ..formats.commit import DEFAULT_BLOB, BlobOptions
from ..oci.digest import BlobRef, encoded
from ..oci.layout import Layout
from ..oci.output import BuiltNode, OutputOptions, build, publish
from ..oci.plan import ImagePlan, Selection, plan
from ..oci.writer import LayoutWriter
from .artefacts import ConvertedLayer, SourceLayer
from .engine import LayerEngine, layer_key
from .errors import ConvertError
from .native import DEFAULT_BASELAYER, DEFAULT_VSIZE, NativeExt4Engine, NativeOptions
from .progress import Events, LayerFinished, LayerStarted, Message
from .workdir import WorkDir, default_work_dir


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
    layers: list[LayerReport] = field(default_factory=list)


@dataclass
class OutputReport:
    tag: str
    source: str
    digest: str
    media_type: str


@dataclass
class ConvertReport:
    outputs: list[OutputReport]
    images: list[ImageReport]
    warnings: list[str]
    seconds: float

    def as_dict(self) -> dict[str, object]:
        return asdict(self)


@dataclass(frozen=True)
class _ImageJob:
    source: Path
    image: ImagePlan
    label: str
    engine: LayerEngine
    base: ConvertedLayer | None  # below every image (--no-mkfs)
    work: Path


@dataclass(frozen=True)
class _ImageResult:
    report: ImageReport
    layers: dict[str, ConvertedLayer]  # by chain ID


def make_engine(options: ConvertOptions) -> LayerEngine:
    """The one engine of a run, from the options."""
    return NativeExt4Engine(NativeOptions(options.mkfs, options.baselayer, options.vsize, options.blob))


_events: Events | None = None


def _set_events(events: Events) -> None:
    global _events
    _events = events


def _convert_image(job: _ImageJob) -> _ImageResult:
    """One image's layers, bottom first (in a worker process)."""
    events = _events
    assert events is not None
    work = WorkDir(job.work, keep=True)
    layout = Layout(job.source)
    image = job.image
    report = ImageReport(image.descriptor.digest, str(image.platform))
    lowers: list[ConvertedLayer] = [job.base] if job.base else []
    converted: dict[str, ConvertedLayer] = {}
    count = len(image.layers)
    for layer in image.layers:
        key = layer_key(job.engine, layer.chain_id)
        where = f"{job.label}, layer {layer.index} ({layer.descriptor.digest})"
        label = f"{job.label} layer {layer.index + 1}/{count}"
        start = time.perf_counter()
        done = work.lookup(key)
        tar_bytes = 0
        if done is None:
            events.send(LayerStarted(key, label))
            progress = events.progress_callback(key)
            source = SourceLayer(layout, layer, where, progress)
            try:
                done = work.build(key, partial(job.engine.convert, source, tuple(lowers)))
            except ObdlayoutError as exc:
                raise ConvertError("" if where in str(exc) else where, str(exc)) from None
            except OSError as exc:
                raise ConvertError(where, f"{exc.filename or ''}: {exc.strerror}") from None
            for warning in done.warnings:
                events.send(Message(warning, warning=True))
            tar_bytes = progress.total
        seconds = time.perf_counter() - start
        ref = done.output.ref
        events.send(LayerFinished(key, label, tar_bytes, ref.size, seconds, reused=tar_bytes == 0))
        report.layers.append(
            LayerReport(
                layer.index,
                layer.descriptor.digest,
                layer.descriptor.size,
                ref.digest,
                ref.size,
                tar_bytes,
                round(seconds, 3),
                tar_bytes == 0,
            )
        )
        converted[layer.chain_id] = done
        lowers.append(done)
    return _ImageResult(report, converted)


def _image_label(image: ImagePlan) -> str:
    platform = str(image.platform)
    return f"{platform} {encoded(image.descriptor.digest)[:12]}" if platform else encoded(image.descriptor.digest)[:12]


def _run_jobs(jobs: list[_ImageJob], concurrency: int, events: Events) -> list[_ImageResult]:
    if concurrency <= 1 or len(jobs) <= 1:
        _set_events(events)
        return [_convert_image(job) for job in jobs]
    # fork: the workers inherit the event queue; each runs its own ZFile compression pool.
    with ProcessPoolExecutor(
        min(concurrency, len(jobs)), mp_context=get_context("fork"), initializer=_set_events, initargs=(events,)
    ) as pool:
        return list(pool.map(_convert_image, jobs))


def convert(
    source: Path,
    destination: Path,
    selection: Selection,
    output_tags: Sequence[str],
    options: ConvertOptions,
    events: Events,
) -> ConvertReport:
    """Convert what `selection` names in `source` into `destination`, tagging root i as `output_tags[i]`."""
    start = time.perf_counter()
    layout = Layout(source)
    conversion = plan(layout, selection)
    if len(output_tags) != len(conversion.roots):
        raise ValueError("one output tag per selected image is needed")
    engine = make_engine(options)
    for warning in conversion.warnings:
        events.send(Message(warning, warning=True))
    keep = options.reserve or options.dump_manifest
    with WorkDir(options.work_dir or default_work_dir(destination), keep) as work:
        base = engine.base_layer(work)
        jobs = [_ImageJob(source, image, _image_label(image), engine, base, work.path) for image in conversion.images()]
        results = _run_jobs(jobs, options.concurrency, events)
        converted = {chain: layer for result in results for chain, layer in result.layers.items()}
        blob_files: dict[str, tuple[Path, BlobRef]] = {}
        for layer in [*([base] if base else []), *converted.values()]:
            blob_files.update((ref.digest, (path, ref)) for path, ref in layer.blobs)
        output_options = OutputOptions(
            oci=options.oci,
            referrer=options.referrer,
            artifact_type=engine.artifact_type,
            base_layer=base.output if base else None,
        )
        outputs = {chain: layer.output for chain, layer in converted.items()}
        built: dict[str, BuiltNode] = {
            tag: build(root.node, outputs, output_options)
            for root, tag in zip(conversion.roots, output_tags, strict=True)
        }
        if options.dump_manifest:
            _dump(work, built)
        writer = LayoutWriter(destination)
        for path, ref in blob_files.values():
            writer.add_file(path, ref)
        publish(writer, built)
    reports = [result.report for result in results]
    outputs_report = [
        OutputReport(tag, root.node.descriptor.digest, node.descriptor.digest, node.descriptor.media_type)
        for (tag, node), root in zip(built.items(), conversion.roots, strict=True)
    ]
    return ConvertReport(outputs_report, reports, list(conversion.warnings), round(time.perf_counter() - start, 3))


def _dump(work: WorkDir, built: dict[str, BuiltNode]) -> None:
    """--dump-manifest: every config, manifest and index written, by digest, in the work directory."""
    for tag, node in built.items():
        for data in node.blobs:
            digest = hashlib.sha256(data).hexdigest()
            work.dump(os.path.join(tag, f"{digest}.json"), data)
