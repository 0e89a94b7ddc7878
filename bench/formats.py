"""Throughput of the blob formats on data taken from this machine.

Inputs are built here, never downloaded: "typical binary data" is the Python installation's own files
(shared libraries, bytecode, sources) concatenated; "incompressible" is seeded pseudo-random bytes.
"""

import random
import sys
import time
from collections.abc import Callable
from contextlib import ExitStack
from pathlib import Path

from obdlayout.formats.blob import open_stack
from obdlayout.formats.commit import BlobOptions, LayerBlobWriter
from obdlayout.formats.zfile_layout import Algorithm
from obdlayout.formats.zfile_writer import ZFileWriter, default_jobs

from .inputs import OUT

MB = 1_000_000
INPUT_BYTES = 256 << 20
CHUNK = 1 << 20


def python_tree_bytes(limit: int) -> bytes:
    """Files of the running Python installation, in a fixed order, up to `limit` bytes."""
    parts: list[bytes] = []
    total = 0
    roots = sorted({Path(sys.base_prefix) / "lib", Path(sys.base_prefix) / "bin", Path(sys.prefix) / "lib"})
    for root in roots:
        for path in sorted(root.rglob("*")):
            if total >= limit:
                return b"".join(parts)[:limit]
            if path.is_file() and not path.is_symlink():
                data = path.read_bytes()
                parts.append(data)
                total += len(data)
    data = b"".join(parts)
    return (data * (limit // max(len(data), 1) + 1))[:limit]


def timed(action: Callable[[], object]) -> float:
    start = time.perf_counter()
    action()
    return time.perf_counter() - start


def compress_rate(data: bytes, algorithm: Algorithm, jobs: int) -> tuple[float, float]:
    """MB/s of input, and the compressed/original ratio."""
    path = OUT / "zfile.bin"
    with path.open("w+b") as sink:
        writer = ZFileWriter(sink, algorithm=algorithm, jobs=jobs)

        def run() -> None:
            view = memoryview(data)
            for start in range(0, len(data), CHUNK):
                writer.write(view[start : start + CHUNK])
            writer.close()

        seconds = timed(run)
        ratio = sink.tell() / len(data)
    path.unlink()
    return len(data) / seconds / MB, ratio


def stack_read_rates(data: bytes) -> dict[str, float]:
    """A two-layer LZ4 stack: the lower holds `data`, the upper rewrites every 8th MiB."""
    paths = []
    for number in range(2):
        path = OUT / f"layer{number}.blob"
        with path.open("w+b") as out:
            blob = LayerBlobWriter(
                out,
                virtual_size=len(data),
                uuid=None,
                parent_uuid=None,
                options=BlobOptions(Algorithm.LZ4, jobs=default_jobs()),
            )
            step = CHUNK if number == 0 else 8 * CHUNK
            for start in range(0, len(data), step):
                blob.lsmt.write_data(start, data[start : start + CHUNK])
            blob.close()
        paths.append(path)
    rng = random.Random(1)
    offsets = [rng.randrange(len(data) // 4096) * 4096 for _ in range(100_000)]
    with ExitStack() as stack:
        disk = open_stack(paths, stack)
        random_seconds = timed(lambda: [disk.read(o, 4096) for o in offsets])
        sequential_seconds = timed(lambda: [disk.read(o, 4 << 20) for o in range(0, len(data), 4 << 20)])
    for path in paths:
        path.unlink()
    return {
        "random_4k_reads_per_s": len(offsets) / random_seconds,
        "sequential_read_mb_per_s": len(data) / sequential_seconds / MB,
    }


def run() -> dict[str, object]:
    OUT.mkdir(exist_ok=True)
    jobs = default_jobs()
    typical = python_tree_bytes(INPUT_BYTES)
    rng = random.Random(0)
    incompressible = b"".join(rng.randbytes(CHUNK) for _ in range(INPUT_BYTES // CHUNK))
    results: dict[str, object] = {"cores": jobs, "input_mb": INPUT_BYTES / MB}
    print(f"obdlayout bench: {jobs} cores, {INPUT_BYTES / MB:.0f} MB inputs")
    for algorithm in (Algorithm.LZ4, Algorithm.ZSTD):
        for label, data in (("typical", typical), ("incompressible", incompressible)):
            for workers in sorted({1, jobs}):
                rate, ratio = compress_rate(data, algorithm, workers)
                key = f"zfile_{algorithm.name.lower()}_4k_{label}_{workers}_jobs"
                results[key] = {"mb_per_s": round(rate, 1), "ratio": round(ratio, 3)}
                print(
                    f"  ZFile {algorithm.name:4} 4 KiB {label:14} {workers} job(s): {rate:8.1f} MB/s  ratio {ratio:.3f}"
                )
    reads = stack_read_rates(typical)
    results["lsmt_stack"] = {k: round(v, 1) for k, v in reads.items()}
    print(f"  LSMT stack (2 layers, LZ4): {reads['random_4k_reads_per_s']:,.0f} random 4 KiB reads/s, "
          f"{reads['sequential_read_mb_per_s']:.0f} MB/s sequential 4 MiB reads")  # fmt: skip
    return results
