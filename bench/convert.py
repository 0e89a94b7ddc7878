"""End-to-end `obdlayout convert` of a realistic multi-layer image, built from this machine's files: to an
overlaybd image, to a TurboOCI image, and to both in one run (without the cache); then the cache: its cost
on a cold convert, and a second image sharing the first's base layers.

The image: the Python installation split into three layers by top directory, plus a layer of large
binaries, each gzip-compressed (ISA-L) into an OCI layout, as `skopeo copy` would leave it. The second image
("bench-second") has the first's two lower layers and a small one of its own (the configuration files of
/etc), as an application image built on a shared base does.

The size sweep converts the same kinds of files in the same shares at three sizes, so that the costs per GB
and per 10 000 entries compare: "bench-small" keeps the first sixth of the first two layers' entries (in
archive order: whole directories, with their parents) and big files of a sixth of the third's size;
"bench-large" is the bench image's layers four times over, each copy under a directory of its own (twelve
layers of new files, as in a large image). "bench-overwrite" stacks the same layers four times at the same
paths, so that every layer above the third replaces every file below it: a different workload (removals in
lower layers), reported beside the sweep.
"""

import functools
import hashlib
import itertools
import json
import os
import shutil
import subprocess
import sys
import tarfile
import time
from pathlib import Path

from isal import igzip

from obdlayout.compiled import environment
from obdlayout.convert.tools import APPLY, COMMIT, CREATE, DEFAULT_TOOLS_DIR, TURBO_APPLY
from obdlayout.formats.turbo_archive import FS_META_NAMES
from obdlayout.formats.zfile_writer import default_jobs

from . import floor
from .inputs import OUT, derived_tar, large_files, python_tree, run_measured, tar_of

MB = 1_000_000
OCI_LAYER_GZIP = "application/vnd.oci.image.layer.v1.tar+gzip"


def _layer_tars() -> list[Path]:
    tree = python_tree()
    parts = sorted(p for p in tree.iterdir())
    lib = [p for p in parts if p.name == "lib"]
    rest = [p for p in parts if p.name != "lib"]
    lib_parts = sorted((tree / "lib").iterdir()) if lib else []
    site = [p for p in lib_parts if p.name.startswith("python")]
    other = [p for p in lib_parts if not p.name.startswith("python")]
    groups = {"image-base": rest + other, "image-stdlib": site, "image-large": None}
    tars = []
    for name, paths in groups.items():
        if paths is None:
            tars.append(tar_of(name, large_files(300 << 20)))
        elif paths:
            tars.append(tar_of(name, paths, tree.parent))
    return tars


SECOND = "bench-second"
SMALL, LARGE, OVERWRITE = "bench-small", "bench-large", "bench-overwrite"
SAMPLE_EVERY = 6
LARGE_COPIES = 4
SMALL_BIG_FILE_MIN = 4 << 20


def _sampled(tar: Path) -> Path:
    """The first 1/SAMPLE_EVERY of `tar`'s entries. A tar made by tarfile.add lists a directory's entries
    after it, in name order: a prefix is whole directories with their parents, the same mix of directories,
    files and sizes (71 700 entries per GB against 72 200 in all, for the Python tree here)."""
    kept = -(-_entries(tar) // SAMPLE_EVERY)
    count = itertools.count()
    return derived_tar(f"{tar.stem}-sample", tar, lambda member: member.name if next(count) < kept else None)


def _relocated(tar: Path, copy: int) -> Path:
    return derived_tar(f"{tar.stem}-copy{copy}", tar, lambda member: f"copy{copy}/{member.name}")


def _size_images() -> dict[str, list[Path]]:
    """The images of the size sweep, each as its layer tars, bottom first."""
    bench = _layer_tars()
    *small_trees, big = bench
    small_big = large_files(big.stat().st_size // SAMPLE_EVERY, smallest=SMALL_BIG_FILE_MIN)
    return {
        SMALL: [*map(_sampled, small_trees), tar_of("image-large-sample", small_big)],
        "bench": bench,
        LARGE: [_relocated(tar, copy) for copy in range(1, LARGE_COPIES + 1) for tar in bench],
    }


def source_layout() -> Path:
    root = OUT / "convert-source"
    index = root / "index.json"
    if index.exists() and all(tag in index.read_text() for tag in (SECOND, SMALL, LARGE, OVERWRITE)):
        return root
    shutil.rmtree(root, ignore_errors=True)
    (root / "blobs" / "sha256").mkdir(parents=True)
    (root / "oci-layout").write_text('{"imageLayoutVersion":"1.0.0"}')
    layer = functools.cache(functools.partial(_layer, root))
    bench = [layer(tar) for tar in _layer_tars()]
    entries = [
        _image(root, bench, "bench"),
        _image(root, [*bench[:2], layer(tar_of("image-etc", [Path("/etc")]))], SECOND),
        *(_image(root, [layer(tar) for tar in tars], tag) for tag, tars in _size_images().items() if tag != "bench"),
        _image(root, bench * LARGE_COPIES, OVERWRITE),
    ]
    index.write_text(json.dumps({"schemaVersion": 2, "manifests": entries}))
    return root


@functools.cache
def _entries(tar: Path) -> int:
    with tarfile.open(tar) as opened:
        return sum(1 for _ in opened)


def _layer(root: Path, tar: Path) -> tuple[dict[str, object], str]:
    data = tar.read_bytes()
    return _blob(root, igzip.compress(data), OCI_LAYER_GZIP), "sha256:" + hashlib.sha256(data).hexdigest()


def _image(root: Path, layers: list[tuple[dict[str, object], str]], tag: str) -> dict[str, object]:
    diff_ids = [diff_id for _, diff_id in layers]
    config = {"architecture": "amd64", "os": "linux", "rootfs": {"type": "layers", "diff_ids": diff_ids}}
    manifest = {
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": _blob(root, json.dumps(config).encode(), "application/vnd.oci.image.config.v1+json"),
        "layers": [descriptor for descriptor, _ in layers],
    }
    entry = _blob(root, json.dumps(manifest).encode(), "application/vnd.oci.image.manifest.v1+json")
    entry["annotations"] = {"org.opencontainers.image.ref.name": tag}
    return entry


def _blob(root: Path, data: bytes, media_type: str) -> dict[str, object]:
    digest = hashlib.sha256(data).hexdigest()
    (root / "blobs" / "sha256" / digest).write_bytes(data)
    return {"mediaType": media_type, "digest": f"sha256:{digest}", "size": len(data)}


# What each run makes: the overlaybd image (the default), the TurboOCI image (ext4, then EROFS), and both
# in one run.
RUNS = {
    "overlaybd": ["-i", "bench", "-o", "bench-obd", "--no-cache"],
    "turbo-oci": ["-i", "bench", "--turbo-oci", "bench-turbo", "--no-cache"],
    "turbo-erofs": ["-i", "bench", "--turbo-oci", "bench-turbo", "--fstype", "erofs", "--no-cache"],
    "both": ["-i", "bench", "--overlaybd", "bench-obd", "--turbo-oci", "bench-turbo", "--no-cache"],
}


def _convert(source: Path, tar_bytes: int, name: str, options: list[str]) -> dict[str, float]:
    destination = OUT / "convert-output"
    shutil.rmtree(destination, ignore_errors=True)
    seconds, peak, cpu = _measured(["convert", str(source), str(destination), "-q", *options])
    source_blobs = {p.name for p in (source / "blobs" / "sha256").iterdir()}
    made = [p for p in (destination / "blobs" / "sha256").iterdir() if p.name not in source_blobs]
    result = {
        "seconds": round(seconds, 2),
        "tar_mb_per_s": round(tar_bytes / seconds / MB, 1),
        "peak_rss_mb": round(peak, 1),
        "cpu_percent": round(100 * cpu / seconds),  # user + system of every process, over the wall time
        "written_mb": round(sum(p.stat().st_size for p in made) / MB, 2),  # what the conversion added to DST
        "fs_meta_mb": round(_fs_meta_bytes(made) / MB, 2),  # of TurboOCI archives (the rest is gzip indexes)
    }
    print(
        f"  {name:11}: {seconds:.2f} s, {result['tar_mb_per_s']:.0f} MB/s of tar, {result['cpu_percent']} % CPU, "
        f"peak RSS {peak:.0f} MB (largest process), {result['written_mb']:.1f} MB written"
    )
    return result


def _measured(arguments: list[str]) -> tuple[float, float, float]:
    """Run `obdlayout ARGUMENTS...`: its wall seconds, peak RSS in MB and CPU seconds (every process's)."""
    start = time.perf_counter()
    _, peak, cpu = run_measured([sys.executable, "-m", "obdlayout.cli", *arguments])
    return time.perf_counter() - start, peak, cpu


def _fs_meta_bytes(blobs: list[Path]) -> int:
    """The fs meta members' sizes in the TurboOCI archives among `blobs`."""
    total = 0
    for blob in blobs:
        if not tarfile.is_tarfile(blob):
            continue
        with tarfile.open(blob) as archive:
            total += sum(m.size for m in archive.getmembers() if m.name in FS_META_NAMES)
    return total


def run() -> dict[str, object]:
    source = source_layout()
    manifest_digest = json.loads((source / "index.json").read_text())["manifests"][0]["digest"].split(":")[1]
    manifest = json.loads((source / "blobs" / "sha256" / manifest_digest).read_bytes())
    tar_bytes = sum(t.stat().st_size for t in _layer_tars())
    compressed = sum(layer["size"] for layer in manifest["layers"])
    result: dict[str, object] = {
        "layers": len(manifest["layers"]),
        "tar_mb": round(tar_bytes / MB, 1),
        "gzip_mb": round(compressed / MB, 1),
    }
    print(f"  convert {result['layers']} gzip layers, {tar_bytes / MB:.0f} MB tar ({compressed / MB:.0f} MB gzip):")
    runs: dict[str, dict[str, float]] = {}
    native: dict[str, float] = {}
    for name, options in RUNS.items():
        runs[name] = _convert(source, tar_bytes, name, options)
        if name == "overlaybd":  # its output is replaced by the next run's
            native = floor.run(source, "bench", OUT / "convert-output", "bench-obd", default_jobs())
            result["read_back"] = _read_back(source, OUT / "convert-output")
    result["native_floor"] = native
    result.update(runs)
    result["real_tools"] = tools = _real_tools(source, tar_bytes, runs)
    _floor_against_tools(native, tools)
    result["stages"] = _stages(source)
    result["sizes"] = _sizes(source, runs["overlaybd"])
    ext4, erofs = runs["turbo-oci"], runs["turbo-erofs"]
    print(
        f"  TurboOCI EROFS: {erofs['seconds'] / ext4['seconds']:.2f} x the ext4 time; fs meta "
        f"{erofs['fs_meta_mb']} MB, {erofs['fs_meta_mb'] / ext4['fs_meta_mb']:.2f} x ext4's {ext4['fs_meta_mb']} MB"
    )
    result["cache"] = _cache(source, tar_bytes, _convert(source, tar_bytes, "no-cache", RUNS["overlaybd"]))
    return result


def _real_tools(source: Path, tar_bytes: int, runs: dict[str, dict[str, float]]) -> dict[str, object]:
    """The same conversions by the real overlaybd tools (--engine overlaybd-tools, which runs them per layer as
    the Go convertor does), where they are installed; our time over theirs."""
    tools = Path(os.environ.get("OVERLAYBD_TOOLS_DIR", DEFAULT_TOOLS_DIR))
    if not all(os.access(tools / tool, os.X_OK) for tool in (CREATE, APPLY, COMMIT)):
        print(f"  the real overlaybd tools are not in {tools} (OVERLAYBD_TOOLS_DIR): no comparison with them")
        return {}
    result: dict[str, object] = {"tools_dir": str(tools)}
    engine = ["--engine", "overlaybd-tools", "--tools-dir", str(tools)]
    for name, tool in (("overlaybd", APPLY), ("turbo-oci", TURBO_APPLY)):
        if not os.access(tools / tool, os.X_OK):
            continue
        try:
            theirs = _convert(source, tar_bytes, f"{name} (real tools)", RUNS[name] + engine)
        except RuntimeError as failed:  # their build, or their refusal of a layer: reported, not fatal to the bench
            print(f"    {name}: the real tools failed: {str(failed)[-500:]}")
            result[name] = {"failed": str(failed)[-2000:]}
            continue
        ratio = runs[name]["seconds"] / theirs["seconds"]
        result[name] = {**theirs, "ours_over_theirs": round(ratio, 3)}
        print(f"    {name}: ours took {ratio:.2f} x the real tools' time")
    return result


def _read_back(source: Path, converted: Path) -> dict[str, dict[str, float]]:
    """`verify --against` the source and `extract --tar` of the converted bench image: time, CPU and memory."""
    image = f"{converted}:bench-obd"
    tar = OUT / "extracted.tar"
    commands = {
        "verify_against": ["verify", image, "--against", f"{source}:bench"],
        "extract_tar": ["extract", image, "--tar", str(tar)],
    }
    result = {}
    try:
        for name, command in commands.items():
            seconds, peak, cpu = _measured(command)
            percent = round(100 * cpu / seconds)
            result[name] = {"seconds": round(seconds, 2), "cpu_percent": percent, "peak_rss_mb": round(peak, 1)}
            print(f"  {command[0]} {command[2]:9}: {seconds:.2f} s, {percent} % CPU, peak RSS {peak:.0f} MB")
    finally:
        tar.unlink(missing_ok=True)
    return result


def _floor_against_tools(native: dict[str, float], tools: dict[str, object]) -> None:
    """The native floor as a share of the real tools' time: the least ratio any scheduling of this work allows."""
    theirs = tools.get("overlaybd")
    if isinstance(theirs, dict) and "seconds" in theirs:
        native["floor_over_real_tools"] = round(native["floor_s"] / theirs["seconds"], 3)
        print(f"    the native floor is {native['floor_over_real_tools']:.2f} x the real tools' time")


def _stages(source: Path) -> dict[str, object]:
    """The overlaybd convert again, twice (bench/stages.py): as it runs, for each layer's time and CPU, and
    interpreted, for its main process's stages (compiled code calls past the stage timers)."""
    result: dict[str, object] = {}
    for mode, interpreted in (("as run", False), ("interpreted", True)):
        destination = OUT / "convert-output"
        shutil.rmtree(destination, ignore_errors=True)
        command = [sys.executable, "-m", "bench.stages", str(source), str(destination), "-q", *RUNS["overlaybd"]]
        done = subprocess.run(command, capture_output=True, text=True, check=True, env=environment(interpreted))
        stages: dict[str, object] = json.loads(done.stdout.strip().splitlines()[-1])
        result[mode] = stages
        print(
            f"  overlaybd, {mode}: {stages['wall_s']} s; CPU s: main process {stages['main_cpu_s']}, "
            f"helper processes {stages['helpers_cpu_s']}"
        )
        layers: list[dict[str, float]] = stages["layers"]  # type: ignore[assignment]
        for number, layer in enumerate(layers, start=1):
            print(
                f"    layer {number}: {layer['entries']} entries, {layer['file_mb']} MB of file data: "
                f"{layer['seconds']} s, {layer['cpu_percent']} % CPU (all processes)"
            )
        timed: dict[str, float] = stages["stages_s"]  # type: ignore[assignment]
        if timed:
            print("    stages (wall s, main process):")
        for stage, seconds in timed.items():
            print(f"    {seconds:7.2f}  {stage}")
    return result


def _sizes(source: Path, bench: dict[str, float]) -> dict[str, object]:
    """The overlaybd convert at three sizes (and of the overwriting stack): seconds per GB of tar and per 10 000
    entries, and how far apart the three sizes' figures lie (the largest over the smallest, less one)."""
    images = {**_size_images(), OVERWRITE: _layer_tars() * LARGE_COPIES}
    out: dict[str, object] = {}
    sweep: list[tuple[float, float]] = []
    for tag, tars in images.items():
        size, entries = sum(tar.stat().st_size for tar in tars), sum(map(_entries, tars))
        run = bench if tag == "bench" else _convert(source, size, tag, ["-i", tag, "-o", f"{tag}-obd", "--no-cache"])
        per_gb, per_10k = run["seconds"] / (size / 1e9), run["seconds"] / (entries / 10_000)
        figures = {"tar_gb": round(size / 1e9, 2), "entries": entries, "s_per_gb": round(per_gb, 2)}
        out[tag] = {**run, **figures, "s_per_10k_entries": round(per_10k, 2)}
        print(f"  {tag:15}: {size / 1e9:.2f} GB, {entries} entries: {per_gb:.2f} s/GB, {per_10k:.2f} s per 10k entries")
        if tag != OVERWRITE:
            sweep.append((per_gb, per_10k))
    spread = {
        unit: round(max(values) / min(values) - 1, 3)
        for unit, values in (("s_per_gb", [gb for gb, _ in sweep]), ("s_per_10k_entries", [k for _, k in sweep]))
    }
    out["spread"] = spread
    print(
        f"  sweep spread: {spread['s_per_gb'] * 100:.0f} % per GB, {spread['s_per_10k_entries'] * 100:.0f} % per "
        f"10k entries (largest over smallest)"
    )
    return out


def _cache(source: Path, tar_bytes: int, without: dict[str, float]) -> dict[str, object]:
    """The cache's cost on a cold convert (an empty cache) next to --no-cache, and a second image whose base
    layers are in the cache next to the first image's cold convert."""
    cache = OUT / "convert-cache"
    shutil.rmtree(cache, ignore_errors=True)
    options = ["--cache-dir", str(cache)]
    cold = _convert(source, tar_bytes, "cache-cold", ["-i", "bench", "-o", "bench-obd", *options])
    second = _convert(source, tar_bytes, "2nd-image", ["-i", SECOND, "-o", "second-obd", *options])
    overhead = cold["seconds"] / without["seconds"] - 1
    ratio = second["seconds"] / cold["seconds"]
    print(f"  cache: {overhead * 100:+.1f} % on a cold convert; the second image in {ratio:.2f} x the first's time")
    shutil.rmtree(cache, ignore_errors=True)
    return {"cold": cold, "second_image": second, "cold_overhead": round(overhead, 3), "second_ratio": round(ratio, 3)}
