"""Converting images' layers, in worker processes: each image's layers bottom first, each layer in every
output format, each on that format's results for the layers below.

A layer is taken, in this order, from the work directory (this destination's earlier runs), from the cache
(any run, any machine sharing it; cache/cache.py), or else converted: claimed in the cache first, so that
converters sharing the cache convert it once, and stored there after. With several formats to make, the
layer is decompressed once, into the work directory, and every engine reads it there (`_spooled`). With one
engine reading entries, the process decompressing the next layer is started as soon as the one decompressing
this layer is done (`_read_ahead`): the core it frees is busy again while this layer's last entries are
applied and its blob is finished.
"""

import hashlib
import os
import shutil
import time
from collections.abc import Iterator, Sequence
from concurrent.futures import ProcessPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, field
from functools import partial
from multiprocessing import get_context
from pathlib import Path

from ..cache.cache import Cache, CacheSettings
from ..errors import ObdlayoutError
from ..formats.gzindex import GzipIndexBuilder
from ..lifetime import die_with_parent
from ..oci.digest import encoded
from ..oci.layers import EntriesAhead, open_uncompressed
from ..oci.layout import Layout
from ..oci.mediatypes import Compression
from ..oci.plan import ImagePlan, LayerPlan
from ..units import STREAM_CHUNK
from .artefacts import ConvertedLayer, SourceLayer, Spool
from .engine import LayerEngine, layer_key
from .errors import ConvertError
from .progress import Events, LayerFinished, LayerStarted, Message, ThrottledProgress
from .workdir import WorkDir

CONVERTED, REUSED, CACHED = "converted", "reused", "cached"  # where a layer came from (LayerReport.origin)


@dataclass
class LayerReport:
    index: int
    source_digest: str
    source_size: int
    digest: str
    size: int
    tar_bytes: int
    seconds: float
    reused: bool  # not converted by this run: from the work directory or the cache
    cached: bool = False  # from the cache


@dataclass
class ImageReport:
    manifest: str
    platform: str
    format: str
    layers: list[LayerReport] = field(default_factory=list)


@dataclass(frozen=True)
class Format:
    """One output format of the run: its engine and the layer put below every image (--no-mkfs)."""

    name: str
    engine: LayerEngine
    base: ConvertedLayer | None


@dataclass(frozen=True)
class ImageJob:
    source: Path
    image: ImagePlan
    label: str
    formats: tuple[Format, ...]
    work: Path
    cache: CacheSettings | None
    owner: str  # the run's, in cache claims and pins


@dataclass(frozen=True)
class ImageResult:
    reports: tuple[ImageReport, ...]  # one per format
    layers: tuple[dict[str, ConvertedLayer], ...]  # per format: by chain ID
    cache_problem: str | None  # why the cache went off in this worker, if it did


_events: Events | None = None


def _set_events(events: Events) -> None:
    global _events
    _events = events


def _start_worker(events: Events, parent: int) -> None:
    """In each image worker process: the events to send, and an end to it if the convert is killed."""
    _set_events(events)
    die_with_parent(parent)


def image_label(image: ImagePlan) -> str:
    platform = str(image.platform)
    return f"{platform} {encoded(image.descriptor.digest)[:12]}" if platform else encoded(image.descriptor.digest)[:12]


def run_jobs(jobs: list[ImageJob], concurrency: int, events: Events) -> list[ImageResult]:
    if concurrency <= 1 or len(jobs) <= 1:
        _set_events(events)
        return [_convert_image(job) for job in jobs]
    # fork: the workers inherit the event queue; each runs its own ZFile compression pool.
    with ProcessPoolExecutor(
        min(concurrency, len(jobs)),
        mp_context=get_context("fork"),
        initializer=_start_worker,
        initargs=(events, os.getpid()),
    ) as pool:
        return list(pool.map(_convert_image, jobs))


def _convert_image(job: ImageJob) -> ImageResult:
    events = _events
    assert events is not None
    layout = Layout(job.source)
    cache = None
    if job.cache is not None:
        cache = Cache(job.cache, job.owner, lambda text: events.send(Message(text, warning=True)))
    image = _Image(job, events, WorkDir(job.work, keep=True), layout, cache)
    try:
        for layer in job.image.layers:
            image.convert(layer)
    finally:
        image.close()
        if cache is not None:
            cache.close()
    return ImageResult(image.reports, image.converted, cache.problem if cache else None)


def blob_chain(below: str, blob_digest: str) -> str:
    """The chain of source blob digests up to a layer (as chain IDs chain DiffIDs)."""
    return hashlib.sha256(f"{below} {blob_digest}".encode()).hexdigest()


class _Image:
    """One image being converted: its layers' stacks per format, and its reports."""

    def __init__(self, job: ImageJob, events: Events, work: WorkDir, layout: Layout, cache: Cache | None) -> None:
        self.job, self.events, self.work, self.layout, self.cache = job, events, work, layout, cache
        formats = job.formats
        self.reports = tuple(ImageReport(job.image.descriptor.digest, str(job.image.platform), f.name) for f in formats)
        self.stacks: list[list[ConvertedLayer]] = [[f.base] if f.base else [] for f in formats]
        self.converted: tuple[dict[str, ConvertedLayer], ...] = tuple({} for _ in formats)
        self._blobs = ""
        self._ahead: EntriesAhead | None = None  # the next layer's entries, started early

    def close(self) -> None:
        if self._ahead is not None:
            self._ahead.close()
            self._ahead = None

    def _source_blob(self, digest: str) -> Path:
        return self.layout.blob_path(digest).absolute()

    def convert(self, layer: LayerPlan) -> None:
        job, formats = self.job, self.job.formats
        self._blobs = blob_chain(self._blobs, layer.descriptor.digest)
        keys = [layer_key(f.engine, layer.chain_id, self._blobs) for f in formats]
        where = f"{job.label}, layer {layer.index} ({layer.descriptor.digest})"
        label = f"{job.label} layer {layer.index + 1}/{len(job.image.layers)}"
        start = time.perf_counter()
        done: list[ConvertedLayer | None] = [self.work.lookup(key) for key in keys]
        origins = [REUSED if found else CONVERTED for found in done]
        if self.cache is not None:
            for i, key in enumerate(keys):
                if done[i] is None:
                    done[i] = self.cache.await_layer(key, self._source_blob, partial(self._waiting, label))
                    origins[i] = CACHED if done[i] is not None else CONVERTED
        missing = [i for i, found in enumerate(done) if found is None]
        tar_bytes = 0
        ahead, self._ahead = self._ahead, None
        try:
            if missing:
                try:
                    tar_bytes = self._make(layer, keys, missing, done, where, label, ahead)
                finally:
                    if self.cache is not None:
                        for i in missing:
                            self.cache.release(keys[i])
        finally:
            if ahead is not None:
                ahead.close()  # unless the layer's conversion took it
        seconds = time.perf_counter() - start
        finished = [_known(found) for found in done]
        blob_bytes = sum(found.output.ref.size for found in finished)
        cached = all(origin == CACHED for origin in origins)
        self.events.send(LayerFinished(keys[0], label, tar_bytes, blob_bytes, seconds, not missing, cached))
        for i, found in enumerate(finished):
            ref = found.output.ref
            converted_here = origins[i] == CONVERTED
            self.reports[i].layers.append(
                LayerReport(
                    layer.index, layer.descriptor.digest, layer.descriptor.size, ref.digest, ref.size,
                    tar_bytes if converted_here else 0, round(seconds, 3), not converted_here, origins[i] == CACHED,
                )
            )  # fmt: skip
            self.converted[i][layer.chain_id] = found
            self.stacks[i].append(found)

    def _read_ahead(self, layer: LayerPlan) -> None:
        """Start the entries of the layer above `layer`, if one engine will convert it by reading them."""
        layers, formats = self.job.image.layers, self.job.formats
        if layer.index + 1 >= len(layers) or len(formats) != 1 or not formats[0].engine.reads_entries:
            return
        above = layers[layer.index + 1]
        key = layer_key(formats[0].engine, above.chain_id, blob_chain(self._blobs, above.descriptor.digest))
        if self.work.lookup(key) is None:
            self._ahead = EntriesAhead(self.layout, above.descriptor, above.diff_id)

    def _waiting(self, label: str) -> None:
        self.events.send(Message(f"{label}: another converter is making this layer; waiting for it"))

    def _make(
        self, layer: LayerPlan, keys: list[str], missing: list[int], done: list[ConvertedLayer | None], where: str,
        label: str, ahead: EntriesAhead | None,
    ) -> int:  # fmt: skip
        """Convert the layer in the formats `missing`, into the work directory (and the cache); the tar bytes."""
        formats, work = self.job.formats, self.work
        self.events.send(LayerStarted(keys[missing[0]], label))
        progress = self.events.progress_callback(keys[missing[0]])
        try:
            engines = [formats[i].engine for i in missing]
            with _spooled(self.layout, layer, where, work, progress, engines) as spool:
                when_read = partial(self._read_ahead, layer) if spool is None else None
                source = SourceLayer(self.layout, layer, where, progress, spool, ahead, when_read)
                for i in missing:
                    convert = partial(formats[i].engine.convert, source, tuple(self.stacks[i]))
                    made = work.build(keys[i], convert)
                    done[i] = made
                    if self.cache is not None:
                        self.cache.store_layer(keys[i], layer.chain_id, made, work.layer_dir(keys[i]))
        except ObdlayoutError as exc:
            raise ConvertError("" if where in str(exc) else where, str(exc)) from None
        except OSError as exc:  # writing the work directory (the source is read as LayoutError)
            raise ConvertError(where, f"{exc.filename or self.job.work}: {exc.strerror}") from None
        for i in missing:
            for warning in dict.fromkeys(_known(done[i]).warnings):
                self.events.send(Message(warning, warning=True))
        return progress.total


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
