"""The convert pipeline: source layout → plan → layer conversion → blobs → destination layout.

Images are converted in parallel worker processes (up to the concurrency limit), the layers of one
image in order, each on the blobs of the layers below it. Finished layers wait in the work
directory; only when every image is done do they enter the destination, then the configs,
manifests and indexes, and last `index.json` (atomically, under a lock): a failed or killed
convert leaves the destination as it was.
"""

import hashlib
import json
import os
import time
from collections.abc import Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict, dataclass, field
from multiprocessing import get_context
from pathlib import Path

from .. import __version__
from ..ext4.apply import LayerError
from ..ext4.errors import Ext4Error
from ..formats.commit import BlobOptions
from ..formats.errors import FormatError
from ..formats.tarwrap import write_go_wrapped
from ..oci.digest import BlobRef, encoded
from ..oci.errors import LayoutError
from ..oci.layers import open_uncompressed
from ..oci.layout import Layout
from ..oci.output import BuiltNode, OutputOptions, build, publish
from ..oci.plan import ImagePlan, Selection, plan
from ..oci.writer import LayoutWriter
from .layer import DEFAULT_VSIZE, build_layer
from .progress import Events, LayerFinished, LayerStarted, Message
from .workdir import WorkDir, default_work_dir

DEFAULT_BASELAYER = Path("/opt/overlaybd/baselayers/ext4_64")
DEFAULT_OPTIONS = BlobOptions()
# Part of every layer's cache key: change it when the bytes written for the same input change.
LAYER_FORMAT = f"obdlayout/{__version__}/1"


class ConvertError(Exception):
    """A conversion failed; the message names the image, the layer and the fault."""


@dataclass(frozen=True)
class ConvertOptions:
    mkfs: bool = True
    baselayer: Path = DEFAULT_BASELAYER
    vsize: int = DEFAULT_VSIZE
    blob: BlobOptions = DEFAULT_OPTIONS
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
    options: ConvertOptions
    work: Path
    baselayer: Path | None  # the bottom lower with --no-mkfs
    baselayer_digest: str | None


def layer_key(chain_id: str, options: ConvertOptions, baselayer_digest: str | None) -> str:
    """Everything that decides a layer's bytes: the whole chain below it and the output options."""
    identity = {
        "format": LAYER_FORMAT,
        "chain": chain_id,
        "base": baselayer_digest if not options.mkfs else None,
        "vsize": options.vsize if options.mkfs else None,
        "compression": options.blob.compression.name if options.blob.compression else None,
        "block_size": options.blob.block_size,
        "tar": options.blob.tar,
    }
    return hashlib.sha256(json.dumps(identity, sort_keys=True).encode()).hexdigest()[:32]


_events: Events | None = None


def _set_events(events: Events) -> None:
    global _events
    _events = events


def _convert_image(job: _ImageJob) -> ImageReport:
    """One image's layers, bottom first (in a worker process)."""
    events = _events
    assert events is not None
    work = WorkDir(job.work, keep=True)
    layout = Layout(job.source)
    image = job.image
    report = ImageReport(image.descriptor.digest, str(image.platform))
    lowers: list[Path] = [job.baselayer] if job.baselayer else []
    count = len(image.layers)
    for layer in image.layers:
        key = layer_key(layer.chain_id, job.options, job.baselayer_digest)
        where = f"{job.label}, layer {layer.index} ({layer.descriptor.digest})"
        label = f"{job.label} layer {layer.index + 1}/{count}"
        start = time.perf_counter()
        ref = work.lookup(key)
        tar_bytes = 0
        if ref is None:
            events.send(LayerStarted(key, label))
            progress = events.progress_callback(key)
            try:
                with (
                    open_uncompressed(layout, layer.descriptor, layer.diff_id, progress) as tar,
                    work.new_layer(key) as out,
                ):
                    result = build_layer(
                        out,
                        tar,
                        lowers=lowers,
                        layer_name=where,
                        vsize=job.options.vsize,
                        uuid=layer.uuid,
                        parent_uuid=layer.parent_uuid,
                        options=job.options.blob,
                    )
            except (LayerError, LayoutError, FormatError, Ext4Error, OSError, ValueError) as exc:
                raise ConvertError(str(exc) if where in str(exc) else f"{where}: {exc}") from None
            for warning in result.apply.warnings:
                events.send(Message(warning, warning=True))
            tar_bytes = progress.total
            ref = work.lookup(key)
            assert ref is not None
        seconds = time.perf_counter() - start
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
        lowers.append(work.layer_path(key))
    return report


def _image_label(image: ImagePlan) -> str:
    platform = str(image.platform)
    return f"{platform} {encoded(image.descriptor.digest)[:12]}" if platform else encoded(image.descriptor.digest)[:12]


def _run_jobs(jobs: list[_ImageJob], concurrency: int, events: Events) -> list[ImageReport]:
    if concurrency <= 1 or len(jobs) <= 1:
        _set_events(events)
        return [_convert_image(job) for job in jobs]
    # fork: the workers inherit the event queue; each runs its own ZFile compression pool.
    with ProcessPoolExecutor(
        min(concurrency, len(jobs)), mp_context=get_context("fork"), initializer=_set_events, initargs=(events,)
    ) as pool:
        return list(pool.map(_convert_image, jobs))


def _wrap_baselayer(path: Path, work: WorkDir) -> tuple[Path, BlobRef]:
    """The baselayer as the Go convertor publishes it (tar-wrapped, §2.4), kept in the work directory."""
    try:
        size = path.stat().st_size
        with path.open("rb") as source:
            digest = hashlib.file_digest(source, "sha256").hexdigest()
            key = f"baselayer-{digest[:32]}"
            ref = work.lookup(key)
            if ref is None:
                source.seek(0)
                with work.new_layer(key) as out:
                    write_go_wrapped(source, size, out)
                ref = work.lookup(key)
    except OSError as exc:
        raise ConvertError(f"{path}: cannot read the baselayer: {exc.strerror}") from None
    assert ref is not None
    return work.layer_path(key), ref


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
    for warning in conversion.warnings:
        events.send(Message(warning, warning=True))
    keep = options.reserve or options.dump_manifest
    with WorkDir(options.work_dir or default_work_dir(destination), keep) as work:
        base_path: Path | None = None
        base_ref: BlobRef | None = None
        if not options.mkfs:
            base_path, base_ref = _wrap_baselayer(options.baselayer, work)
        jobs = [
            _ImageJob(
                source,
                image,
                _image_label(image),
                options,
                work.path,
                options.baselayer if base_ref else None,
                base_ref.digest if base_ref else None,
            )
            for image in conversion.images()
        ]
        reports = _run_jobs(jobs, options.concurrency, events)
        converted: dict[str, BlobRef] = {}
        blob_files: dict[str, tuple[Path, BlobRef]] = {}
        for job, report in zip(jobs, reports, strict=True):
            for layer, layer_report in zip(job.image.layers, report.layers, strict=True):
                ref = BlobRef(layer_report.digest, layer_report.size)
                converted[layer.chain_id] = ref
                key = layer_key(layer.chain_id, options, job.baselayer_digest)
                blob_files[ref.digest] = (work.layer_path(key), ref)
        if base_path is not None and base_ref is not None:
            blob_files[base_ref.digest] = (base_path, base_ref)
        output_options = OutputOptions(oci=options.oci, referrer=options.referrer, base_layer=base_ref)
        built: dict[str, BuiltNode] = {
            tag: build(root.node, converted, output_options)
            for root, tag in zip(conversion.roots, output_tags, strict=True)
        }
        if options.dump_manifest:
            _dump(work, built)
        writer = LayoutWriter(destination)
        for path, ref in blob_files.values():
            writer.add_file(path, ref)
        publish(writer, built)
    outputs = [
        OutputReport(tag, root.node.descriptor.digest, node.descriptor.digest, node.descriptor.media_type)
        for (tag, node), root in zip(built.items(), conversion.roots, strict=True)
    ]
    return ConvertReport(outputs, reports, list(conversion.warnings), round(time.perf_counter() - start, 3))


def _dump(work: WorkDir, built: dict[str, BuiltNode]) -> None:
    """--dump-manifest: every config, manifest and index written, by digest, in the work directory."""
    for tag, node in built.items():
        for data in node.blobs:
            digest = hashlib.sha256(data).hexdigest()
            work.dump(os.path.join(tag, f"{digest}.json"), data)
