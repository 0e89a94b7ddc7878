"""Layer application speed and memory: an uncompressed layer tar onto a fresh file system (mkfs)."""

import json
import sys
import time
from pathlib import Path

from obdlayout.convert.native import build_layer
from obdlayout.formats.commit import BlobOptions
from obdlayout.formats.zfile_writer import default_jobs

from .inputs import OUT, large_files, python_tree, run_measured, tar_of

MB = 1_000_000


def apply_once(tar: Path, jobs: int) -> dict[str, float]:
    """Run in a child process, so that its peak RSS is its own."""
    blob = OUT / "layer.blob"
    with blob.open("w+b") as out, tar.open("rb", buffering=1 << 20) as layer:
        start = time.perf_counter()
        result = build_layer(out, layer, layer_name=tar.name, options=BlobOptions(jobs=jobs))
        seconds = time.perf_counter() - start
    blob.unlink()
    size = tar.stat().st_size
    return {
        "tar_mb": size / MB,
        "entries": result.apply.entries,
        "files": result.apply.files,
        "seconds": round(seconds, 2),
        "tar_mb_per_s": round(size / seconds / MB, 1),
        "entries_per_s": round(result.apply.entries / seconds),
        "blob_mb": round(result.blob.size / MB, 1),
    }


def measure(name: str, tar: Path, jobs: int) -> dict[str, float]:
    output, peak, _ = run_measured([sys.executable, "-m", "bench.ext4", str(tar), str(jobs)])
    result: dict[str, float] = json.loads(output)
    result["peak_rss_mb"] = round(peak, 1)
    print(
        f"  apply {name:12} {result['tar_mb']:7.0f} MB, {result['entries']:6} entries, {jobs} job(s): "
        f"{result['seconds']:5.2f} s, {result['tar_mb_per_s']:6.1f} MB/s, {result['entries_per_s']:6} entries/s, "
        f"peak RSS {result['peak_rss_mb']:.0f} MB, blob {result['blob_mb']:.0f} MB"
    )
    return result


def run() -> dict[str, object]:
    tree = python_tree()
    inputs = {
        "python-tree": tar_of("python-tree", [tree], tree.parent),
        "large-files": tar_of("large-files", large_files()),
    }
    results: dict[str, object] = {}
    for name, tar in inputs.items():
        for jobs in sorted({1, default_jobs()}):
            results[f"apply_{name}_{jobs}_jobs"] = measure(name, tar, jobs)
    return results


if __name__ == "__main__":
    print(json.dumps(apply_once(Path(sys.argv[1]), int(sys.argv[2]))))
