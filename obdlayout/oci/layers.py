"""A source layer as its uncompressed tar stream, checked end to end.

The compression is sniffed from the first bytes, not taken from the media type, as containerd's
DecompressStream does (ecosystem.md §1.6, §6.1): Docker's plain `…rootfs.diff.tar` type may in fact be
compressed. The blob's digest and, when given, the config's DiffID are both checked: when the block ends,
whatever the reader left unread is read, so a consumer that stops at the tar's end-of-archive still gets
every check.
"""

import fcntl
import hashlib
import io
import os
import pickle
import queue
import select
import signal
import threading
import zlib
from collections import deque
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from functools import partial
from pathlib import Path
from typing import Any, BinaryIO, NoReturn, Protocol, cast

import zstandard
from isal import igzip_threaded, isal_zlib

from ..inflate import BlockInflater, Boundary, InflateError
from ..lifetime import die_with_parent
from ..tar.reader import EntryCursor, TarReader
from ..tar.relay import RelayedEntries, relay_entries
from ..tar.ring import RING_BYTES, Ring
from ..units import STREAM_CHUNK
from .descriptor import Descriptor
from .digest import PREFIX
from .errors import LayoutError
from .layout import Layout
from .mediatypes import Compression

GZIP_MAGIC = b"\x1f\x8b"
ZSTD_MAGIC = b"\x28\xb5\x2f\xfd"
# RFC 8878 §3.1.2: a skippable frame's magic is 0x184D2A50-0x184D2A5F, little-endian; zstd:chunked and
# eStargz-zstd layers may start with one (ecosystem.md §1.7).
ZSTD_SKIPPABLE_TAIL = b"\x2a\x4d\x18"
SNIFF_BYTES = 4
READ_AHEAD_CHUNKS = 64
_F_SETPIPE_SZ = 1031  # fcntl.F_SETPIPE_SZ, named by Python only from 3.10 on some platforms
# isal's stubs declare IsalError as an instance, not a class.
_DECOMPRESS_ERRORS = (
    OSError,
    EOFError,
    zlib.error,
    cast(type[Exception], isal_zlib.IsalError),
    zstandard.ZstdError,
    InflateError,
)


def sniff(head: bytes) -> Compression:
    """The compression of a stream whose first bytes are `head`."""
    if head.startswith(GZIP_MAGIC):
        return Compression.GZIP
    if head.startswith(ZSTD_MAGIC) or (len(head) >= 4 and 0x50 <= head[0] <= 0x5F and head[1:4] == ZSTD_SKIPPABLE_TAIL):
        return Compression.ZSTD
    return Compression.NONE


class BlockObserver(Protocol):
    """Told a gzip layer's output and its deflate block boundaries as it is decompressed (a gzip index
    builder, formats/gzindex.py)."""

    def observe_output(self, data: bytes) -> None: ...

    def boundary(self, at: Boundary) -> None: ...

    def finish(self, compressed_size: int) -> None:
        """The whole stream was seen (`compressed_size` bytes of gzip): save what was made of it."""
        ...


class _BlockGunzip(io.RawIOBase):
    """A single-member gzip stream decompressed by zlib stopping at every deflate block boundary, each told to
    `observer` with the output, so that a gzip index is built in the pass that decompresses the layer."""

    def __init__(self, raw: BinaryIO, where: str, observer: BlockObserver) -> None:
        super().__init__()
        self._raw = raw
        self._where = where
        self._observer = observer
        self._inflater = BlockInflater(where)
        self._chunks: deque[bytes] = deque()
        self._eof = False

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        while not self._chunks:
            if self._eof:
                return 0
            self._fill()
        view = memoryview(buffer).cast("B")
        chunk = self._chunks[0]
        take = min(len(view), len(chunk))
        view[:take] = chunk[:take]
        if take == len(chunk):
            self._chunks.popleft()
        else:
            self._chunks[0] = chunk[take:]
        return take

    def _fill(self) -> None:
        data = self._raw.read(STREAM_CHUNK)
        inflater = self._inflater
        if not data:
            if not inflater.finished:
                raise LayoutError(self._where, "the gzip stream is truncated")
            self._eof = True
            return
        for event in inflater.feed(data):
            if isinstance(event, Boundary):
                self._observer.boundary(event)
            else:
                self._observer.observe_output(event)
                self._chunks.append(event)
        if inflater.trailing:
            raise LayoutError(
                self._where,
                "data follows the first gzip member; overlaybd's gzip index covers one member only "
                "(recompress the layer as a single gzip stream)",
            )

    def close(self) -> None:
        self._inflater.close()
        super().close()


def sniff_blob(layout: Layout, layer: Descriptor) -> Compression:
    """The compression a layer blob's first bytes show (its digest is checked when it is read whole)."""
    with layout.open_blob(layer) as blob:
        return sniff(blob.read(SNIFF_BYTES))


class _DiffIdReader(io.RawIOBase):
    """The uncompressed bytes; at their end the DiffID must be `expected` (if given: only then are they hashed)."""

    def __init__(
        self,
        inner: Any,
        where: str,
        compression: Compression,
        expected: str | None,
    ) -> None:
        super().__init__()
        self._inner = inner
        self._where = where
        self._compression = compression
        self._expected = expected
        self._hasher = hashlib.sha256() if expected is not None else None

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        view = memoryview(buffer).cast("B")
        try:
            got: int = self._inner.readinto(view)
        except _DECOMPRESS_ERRORS as exc:
            raise LayoutError(self._where, f"cannot decompress the {self._compression.value} layer: {exc}") from None
        if self._hasher is None:
            return got
        if got:
            self._hasher.update(view[:got])
        elif len(view) and (diff_id := PREFIX + self._hasher.hexdigest()) != self._expected:
            raise LayoutError(
                self._where, f"uncompressed layer has DiffID {diff_id}, its image config says {self._expected}"
            )
        return got


class _ChildStream(io.RawIOBase):
    """What `produce(sink)` writes, run in a forked child process, read here through a pipe.

    Decompressing and hashing a layer take about as long as applying it; in a thread of this process they
    would contend with the consumer (the ext4 writer, Python code) for the GIL and mostly take turns, so they
    run in a process of their own, on another core. An error in the child is raised at the read that finds
    the stream's end. The child dies with its reader: its next write to the closed pipe fails, and Linux's
    parent-death signal ends it if it was waiting elsewhere.

    With `read_ahead`, a thread empties the pipe ahead of the reader (a stream of all the layer's bytes);
    without, the reader reads the pipe itself: for a stream of small frames, which the pipe holds enough of,
    a thread would only contend with the reader for the GIL.
    """

    def __init__(
        self, produce: Callable[[BinaryIO], None], progress: Callable[[int], None] | None, read_ahead: bool = True
    ) -> None:
        super().__init__()
        data_read, data_write = os.pipe()
        status_read, status_write = os.pipe()
        _widen_pipe(data_write)
        parent = os.getpid()
        pid = os.fork()
        if pid == 0:  # pragma: no cover - the child; its effects are tested through the parent
            os.close(data_read)
            os.close(status_read)
            _run_child(produce, data_write, status_write, parent)
        os.close(data_write)
        os.close(status_write)
        self._pid = pid
        self._fd = data_read
        self._status = status_read
        self._progress = progress
        self._total = 0
        self._ended = False
        self._chunks: queue.Queue[bytes] = queue.Queue(READ_AHEAD_CHUNKS)
        self._chunk = b""
        self._pos = 0
        self._stop = threading.Event()
        self._drainer: threading.Thread | None = None
        self._next_chunk: Callable[[], bytes] = partial(os.read, data_read, STREAM_CHUNK)
        if read_ahead:
            self._drainer = threading.Thread(target=self._drain, name="layer-pipe", daemon=True)
            self._drainer.start()
            self._next_chunk = self._chunks.get

    def _drain(self) -> None:
        """Empty the pipe as fast as the child fills it, up to READ_AHEAD_CHUNKS ahead of the consumer: the
        two take turns being the slower (many small files, then a large one), and the buffer lets each run on."""
        while not self._stop.is_set():
            chunk = os.read(self._fd, STREAM_CHUNK)
            while not self._stop.is_set():
                try:
                    self._chunks.put(chunk, timeout=0.1)
                    break
                except queue.Full:
                    continue
            if not chunk:
                return

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        if self._pos >= len(self._chunk):
            if self._ended:
                return 0
            self._chunk, self._pos = self._next_chunk(), 0
            if not self._chunk:
                self._ended = True
                self._reap()
                return 0
        view = memoryview(buffer).cast("B")
        take = min(len(view), len(self._chunk) - self._pos)
        view[:take] = self._chunk[self._pos : self._pos + take]
        self._pos += take
        self._total += take
        if self._progress is not None:
            self._progress(self._total)
        return take

    def produced(self) -> bool:
        """Whether the child has finished (it reports, then exits): what it wrote may still be unread."""
        poller = select.poll()  # not select(): it fails on descriptors numbered 1024 and up
        poller.register(self._status, select.POLLIN)
        return bool(poller.poll(0))

    def _reap(self) -> None:
        """Wait for the child; raise what it reported."""
        report = b""
        while chunk := os.read(self._status, 1 << 16):
            report += chunk
        os.waitpid(self._pid, 0)
        self._pid = 0
        error = pickle.loads(report) if report else LayoutError("", "the process reading the layer died")
        if error is not None:
            raise error

    def close(self) -> None:
        if not self.closed:
            self._stop.set()
            if self._pid:  # its end of the pipe closes with it, which ends the drainer's read
                os.kill(self._pid, signal.SIGKILL)
                os.waitpid(self._pid, 0)
                self._pid = 0
            if self._drainer is not None:
                self._drainer.join()
            os.close(self._fd)
            os.close(self._status)
        super().close()


def _widen_pipe(fd: int) -> None:
    """A pipe of STREAM_CHUNK bytes: fewer, larger writes and reads (Linux F_SETPIPE_SZ; best effort)."""
    with suppress(OSError):
        fcntl.fcntl(fd, _F_SETPIPE_SZ, STREAM_CHUNK)


def _run_child(produce: Callable[[BinaryIO], None], data: int, status: int, parent: int) -> NoReturn:
    """In the child: produce into the pipe, report None or the error, and exit without running anything of
    the parent's (no atexit handlers, no buffered output of its own flushed twice)."""
    error: BaseException | None = None
    try:
        die_with_parent(parent)
        with open(data, "wb", buffering=0) as sink:
            produce(sink)
    except BrokenPipeError:
        os._exit(0)  # the reader stopped reading: it wants nothing more
    except BaseException as exc:
        error = exc
    try:
        report = pickle.dumps(error)
    except Exception:
        report = pickle.dumps(LayoutError("", str(error)))
    try:
        os.write(status, report)
    finally:
        os._exit(0)


TarConsumer = Callable[[io.RawIOBase, BinaryIO], None]  # (the uncompressed tar, the pipe to the parent)


def _copy_tar(tar: io.RawIOBase, sink: BinaryIO) -> None:
    while chunk := tar.read(STREAM_CHUNK):
        sink.write(chunk)


def _read_through(tar: io.RawIOBase, sink: BinaryIO) -> None:
    """Pass nothing on: for a child that only decompresses (a gzip index's blocks are told to its observer)."""
    while tar.read(STREAM_CHUNK):
        pass


def _relay_tar(ring: Ring) -> TarConsumer:
    def relay(tar: io.RawIOBase, sink: BinaryIO) -> None:
        reader = TarReader(io.BufferedReader(tar, STREAM_CHUNK))
        relay_entries(reader, sink, ring)
        reader.drain()

    return relay


def _producer(
    layout: Layout, layer: Descriptor, diff_id: str | None, gzip_observer: BlockObserver | None, consume: TarConsumer
) -> Callable[[BinaryIO], None]:
    """What the child process runs: decompress the layer, check it, and give its tar to `consume`."""
    where = str(layout.blob_path(layer.digest))

    def produce(sink: BinaryIO) -> None:
        with layout.open_blob(layer) as blob:
            raw = io.BufferedReader(blob, STREAM_CHUNK)
            compression = sniff(raw.peek(SNIFF_BYTES)[:SNIFF_BYTES])
            inner: Any = raw
            if compression is Compression.GZIP and gzip_observer is not None:
                inner = _BlockGunzip(raw, where, gzip_observer)
            elif compression is Compression.GZIP:
                # ISA-L inflates faster than zlib (1.7 times on the bench layers), and in a thread of its own,
                # free of the GIL, beside the tar parsing and hashing of this process. Its open is untyped.
                inner = igzip_threaded.open(raw, "rb", threads=1)  # type: ignore[no-untyped-call]
            elif compression is Compression.ZSTD:
                inner = zstandard.ZstdDecompressor().stream_reader(raw, read_across_frames=True)
            tar = _DiffIdReader(inner, where, compression, diff_id)
            consume(tar, sink)
            while tar.read(STREAM_CHUNK):  # the DiffID covers the whole tar
                pass
            while raw.read(STREAM_CHUNK):  # the digest covers the whole blob
                pass
            if gzip_observer is not None and compression is Compression.GZIP:
                gzip_observer.finish(layer.size)

    return produce


@contextmanager
def open_uncompressed(
    layout: Layout,
    layer: Descriptor,
    diff_id: str | None = None,
    progress: Callable[[int], None] | None = None,
    gzip_observer: BlockObserver | None = None,
) -> Iterator[BinaryIO]:
    """The layer's tar, uncompressed; LayoutError on a bad blob digest or size, bad compressed data, or (if
    `diff_id` is given) a DiffID that is not the config's. `progress` is told the uncompressed bytes so far.
    A gzip layer is decompressed by zlib block by block when `gzip_observer` is given (see _BlockGunzip; it is
    told everything in the child process that decompresses, and its `finish` saves what it made), else by
    ISA-L, faster. Decompression and checks run in a child process (_ChildStream)."""
    child = _ChildStream(_producer(layout, layer, diff_id, gzip_observer, _copy_tar), progress)
    try:
        stream = io.BufferedReader(child, STREAM_CHUNK)
        yield stream
        while stream.read(STREAM_CHUNK):  # the checks are made at the end of the stream
            pass
    finally:
        child.close()


class EntriesAhead:
    """A layer's relayed entries started before they are wanted: its child process decompresses, checks and
    parses the layer into its ring (and the pipe) while the layer below is still being applied, then waits for
    the reader. `open_entries` takes them over; if it never does, `close` ends the child."""

    def __init__(
        self, layout: Layout, layer: Descriptor, diff_id: str | None = None, ring_bytes: int = RING_BYTES
    ) -> None:
        self.layer = layer
        self.diff_id = diff_id
        self._ring, child = _start_layer_relay(layout, layer, diff_id, ring_bytes)
        self._child: _ChildStream | None = child

    def take(self) -> tuple[Ring, _ChildStream] | None:
        """The ring and the child, once (None after)."""
        child, self._child = self._child, None
        return None if child is None else (self._ring, child)

    def close(self) -> None:
        """End the child and free the ring, unless they were taken."""
        if self._child is not None:
            self._child.close()
            self._child = None
            self._ring.close()


@contextmanager
def open_entries(
    layout: Layout,
    layer: Descriptor,
    diff_id: str | None = None,
    progress: Callable[[int], None] | None = None,
    ring_bytes: int = RING_BYTES,
    ahead: EntriesAhead | None = None,
    when_read: Callable[[], None] | None = None,
    gzip_observer: BlockObserver | None = None,
) -> Iterator[EntryCursor]:
    """The layer's tar entries, parsed in the child process that decompresses it (tar/relay.py; its file data
    comes through a ring of `ring_bytes` of shared memory), with the checks of `open_uncompressed`;
    `progress` is told the tar bytes parsed so far. The child is `ahead`'s if it was started for this layer.
    `when_read` is called once the child has read the whole layer (its entries may still be unread here): the
    core it ran on is then free for the next layer's.

    With `gzip_observer`, a second child decompresses a gzip layer again, by zlib block by block for the
    observer (see open_uncompressed), beside the first: zlib inflates at about 40 % of ISA-L's speed, so in
    the one child it would slow the entries down. Its errors are raised at the end, after the entries'."""
    index = None
    if gzip_observer is not None:
        index = _ChildStream(_producer(layout, layer, None, gzip_observer, _read_through), None, read_ahead=False)
    try:
        started = ahead.take() if ahead is not None and (ahead.layer, ahead.diff_id) == (layer, diff_id) else None
        if started is None:
            started = _start_layer_relay(layout, layer, diff_id, ring_bytes)
        with _relayed(*started, progress, when_read) as entries:
            yield entries
        if index is not None:
            while index.read(STREAM_CHUNK):  # its error, if any, at the end of its (empty) stream
                pass
    finally:
        if index is not None:
            index.close()


@contextmanager
def open_tar_file_entries(path: Path, ring_bytes: int = RING_BYTES) -> Iterator[EntryCursor]:
    """The entries of the plain tar file `path` (a layer decompressed and checked before), parsed in a child
    process as `open_entries` parses a layer's."""

    def producer(consume: TarConsumer) -> Callable[[BinaryIO], None]:
        def produce(sink: BinaryIO) -> None:
            with path.open("rb", buffering=0) as tar:
                consume(tar, sink)

        return produce

    with _relayed(*_start_relay(producer, ring_bytes), None, None) as entries:
        yield entries


def _start_layer_relay(
    layout: Layout, layer: Descriptor, diff_id: str | None, ring_bytes: int
) -> tuple[Ring, _ChildStream]:
    """A ring, and a child process decompressing and checking the layer and relaying its entries through it."""
    return _start_relay(partial(_producer, layout, layer, diff_id, None), ring_bytes)


def _start_relay(
    producer: Callable[[TarConsumer], Callable[[BinaryIO], None]], ring_bytes: int
) -> tuple[Ring, _ChildStream]:
    """A ring, and a child process running `producer`'s function that relays the entries (their data through
    the ring)."""
    ring = Ring(ring_bytes)
    try:
        child = _ChildStream(producer(_relay_tar(ring)), None, read_ahead=False)
    except BaseException:
        ring.close()
        raise
    ring.forked()
    return ring, child


@contextmanager
def _relayed(
    ring: Ring, child: _ChildStream, progress: Callable[[int], None] | None, when_read: Callable[[], None] | None
) -> Iterator[EntryCursor]:
    """The entries `child` relays through its pipe and `ring`; both are closed at the end. `when_read` is
    called once: at the first frame after the child has finished, or else at the end."""
    pending = when_read

    def frame_received(parsed: int) -> None:
        nonlocal pending
        if progress is not None:
            progress(parsed)
        if pending is not None and child.produced():
            call, pending = pending, None
            call()

    try:
        try:
            entries = RelayedEntries(io.BufferedReader(child, STREAM_CHUNK), ring, frame_received)
            yield entries
            entries.drain()  # the checks are made at the end of the stream
        finally:
            child.close()
        if pending is not None:
            pending()
    finally:
        ring.close()
