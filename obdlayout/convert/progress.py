"""What a convert tells the person running it: bars on a terminal, plain lines elsewhere, or nothing.

Layers are converted in worker processes; they send events through a queue, and one thread of the
main process shows them, so output from parallel conversions never interleaves mid-line.
"""

import sys
import threading
import time
from dataclasses import dataclass
from multiprocessing import get_context
from multiprocessing.queues import SimpleQueue
from typing import TextIO

from ..units import human_rate, human_size

PROGRESS_INTERVAL = 0.25  # seconds between byte-count events of one layer


@dataclass(frozen=True)
class LayerStarted:
    key: str
    label: str


@dataclass(frozen=True)
class LayerProgress:
    key: str
    done: int  # uncompressed tar bytes applied


@dataclass(frozen=True)
class LayerFinished:
    key: str
    label: str
    tar_bytes: int
    blob_bytes: int
    seconds: float
    reused: bool
    cached: bool = False


@dataclass(frozen=True)
class Message:
    text: str
    warning: bool = False


Event = LayerStarted | LayerProgress | LayerFinished | Message


class Events:
    """The sending side, usable from any process forked after it was made. Events nobody will show (the
    Python API's) are dropped as they are sent: a queue nobody reads would fill and block the senders."""

    def __init__(self, shown: bool = True) -> None:
        self._queue: SimpleQueue[Event | None] | None = get_context("fork").SimpleQueue() if shown else None

    def send(self, event: Event) -> None:
        if self._queue is not None:
            self._queue.put(event)

    def progress_callback(self, key: str) -> "ThrottledProgress":
        return ThrottledProgress(self, key)

    def receive(self) -> Event | None:
        assert self._queue is not None, "events that are not shown cannot be received"
        return self._queue.get()

    def close(self) -> None:
        if self._queue is not None:
            self._queue.put(None)


class ThrottledProgress:
    """Called with the bytes done so far; passes a few of the calls on as events."""

    def __init__(self, events: Events, key: str) -> None:
        self._events = events
        self._key = key
        self._last = 0.0
        self.total = 0

    def __call__(self, done: int) -> None:
        self.total = done
        now = time.monotonic()
        if now - self._last >= PROGRESS_INTERVAL:
            self._last = now
            self._events.send(LayerProgress(self._key, done))


class Display:
    """Shows events until the sending side closes. `mode`: "bars", "lines" or "quiet"."""

    def __init__(self, events: Events, mode: str, stream: TextIO | None = None) -> None:
        self._events = events
        self._mode = mode
        self._stream = stream or sys.stderr  # looked up now: a caller may have replaced sys.stderr
        self._thread = threading.Thread(target=self._run, name="progress", daemon=True)

    def __enter__(self) -> "Display":
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._events.close()
        self._thread.join()

    def _run(self) -> None:
        if self._mode == "bars":
            from .bars import show_bars  # rich adds 70 ms to a convert's start: loaded only to show bars

            show_bars(self._events, self._stream)
            return
        while (event := self._events.receive()) is not None:
            line = event_line(event)
            if line and (self._mode == "lines" or (isinstance(event, Message) and event.warning)):
                print(line, file=self._stream, flush=True)


def event_line(event: Event) -> str:
    """What a line of output says of `event` (empty for byte counts)."""
    if isinstance(event, LayerStarted):
        return f"converting {event.label}"
    if isinstance(event, LayerFinished):
        if event.cached:
            return f"cached     {event.label}: from the cache ({human_size(event.blob_bytes)} written)"
        if event.reused:
            return f"reused     {event.label}: converted by an earlier run ({human_size(event.blob_bytes)} written)"
        rate = human_rate(event.tar_bytes, event.seconds)
        took = f"{event.seconds:.1f} s" + (f", {rate}" if rate else "")
        written = human_size(event.blob_bytes)
        return f"converted  {event.label}: {human_size(event.tar_bytes)} of tar ({took}), {written} written"
    if isinstance(event, Message):
        return f"warning: {event.text}" if event.warning else event.text
    return ""
