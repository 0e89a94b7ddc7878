"""Where the overlaybd convert of the bench image spends its time, stage by stage.

Run as its own process (`python -m bench.stages SRC DST OPTIONS...`): it wraps the main process's stages in
timers and converts as `obdlayout convert SRC DST OPTIONS...` does. Timers are wall seconds in the process that applies
the layers (the critical path); the helpers (the decompressing and tar-parsing children, the compression
workers) are reported by their CPU seconds, all together. Each layer blob's build is also reported with the CPU
of every process that worked on it: its helpers are all reaped before the build returns.

The stage timers wrap methods, which compiled modules call directly, past the wrapper: they are only set when
the package runs interpreted (OBDLAYOUT_INTERPRETED=1). The per-layer figures are measured either way.
"""

import functools
import json
import resource
import sys
import time
from collections.abc import Callable
from typing import Any

import obdlayout
from obdlayout.cli.main import cli
from obdlayout.convert import native, pipeline
from obdlayout.ext4 import device, fs, placement
from obdlayout.formats import commit, zfile_writer
from obdlayout.layers import rules
from obdlayout.oci import digest
from obdlayout.tar import relay

# (object, attribute, stage). An indented stage is part of the one above it. Waiting for the child's frames
# happens between entries and, for a file's data, inside the entry that reads it.
STAGES: list[tuple[Any, str, str]] = [
    (native, "build_layer", "build each layer blob"),
    (rules, "apply_layer", "  apply the tar entries"),
    (relay.RelayedEntries, "_receive", "    wait for the child's entry frames"),
    (rules._Rules, "entry", "    apply each entry (rules, ext4, file data)"),
    (placement.CopyData, "place", "      file data into the layer"),
    (zfile_writer.ZFileWriter, "_compress", "        hand batches to the compression workers"),
    (fs.Filesystem, "flush", "  ext4 metadata flush (inodes, directories, bitmaps)"),
    (device.BlockDevice, "commit", "  metadata blocks into the layer"),
    (commit.LayerBlobWriter, "close", "  LSMT index, ZFile index, tar wrapper"),
    (digest, "digest_file", "digest of each output blob"),
    (pipeline, "_publish", "publish into DST"),
]


def _cpu_seconds() -> float:
    own, helpers = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + helpers.ru_utime + helpers.ru_stime


def _per_layer(build: Callable[..., native.LayerResult], layers: list[dict[str, float]]) -> Callable[..., Any]:
    @functools.wraps(build)
    def measured(*args: Any, **kwargs: Any) -> native.LayerResult:
        start, cpu = time.perf_counter(), _cpu_seconds()
        result = build(*args, **kwargs)
        seconds = time.perf_counter() - start
        used = _cpu_seconds() - cpu
        stats = result.apply
        layers.append({
            "entries": stats.entries, "file_mb": round(stats.file_bytes / 1e6, 1), "seconds": round(seconds, 2),
            "cpu_percent": round(100 * used / seconds),
        })  # fmt: skip
        return result

    return measured


def _timed(function: Callable[..., Any], stage: str, seconds: dict[str, float]) -> Callable[..., Any]:
    @functools.wraps(function)
    def timed(*args: Any, **kwargs: Any) -> Any:
        start = time.perf_counter()
        try:
            return function(*args, **kwargs)
        finally:
            seconds[stage] += time.perf_counter() - start

    return timed


def measure(source: str, destination: str, options: list[str]) -> dict[str, object]:
    timed = not obdlayout.COMPILED
    seconds: dict[str, float] = dict.fromkeys((stage for _, _, stage in STAGES), 0.0)
    if timed:
        for owner, name, stage in STAGES:
            setattr(owner, name, _timed(getattr(owner, name), stage, seconds))
        # The engine module imported these names before they were wrapped: it is given the timed ones.
        setattr(native, "apply_layer", rules.apply_layer)  # noqa: B010
        setattr(native, "digest_file", digest.digest_file)  # noqa: B010
    layers: list[dict[str, float]] = []
    setattr(native, "build_layer", _per_layer(native.build_layer, layers))  # noqa: B010
    start = time.perf_counter()
    try:
        cli(["convert", source, destination, *options], prog_name="obdlayout")
    except SystemExit as exit:
        if exit.code:
            raise
    wall = time.perf_counter() - start
    own = resource.getrusage(resource.RUSAGE_SELF)
    helpers = resource.getrusage(resource.RUSAGE_CHILDREN)
    return {
        "wall_s": round(wall, 2),
        "stages_s": {stage: round(seconds[stage], 2) for _, _, stage in STAGES} if timed else {},
        "main_cpu_s": round(own.ru_utime + own.ru_stime, 2),
        "helpers_cpu_s": round(helpers.ru_utime + helpers.ru_stime, 2),
        "layers": layers,
    }


if __name__ == "__main__":
    print(json.dumps(measure(sys.argv[1], sys.argv[2], sys.argv[3:])))
