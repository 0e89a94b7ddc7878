"""Benchmark inputs, built from real files on this machine (never downloaded) and cached in bench-out/."""

import os
import subprocess
import sys
import tarfile
from collections.abc import Callable
from pathlib import Path

OUT = Path(__file__).resolve().parent.parent / "bench-out"
BIG_FILES_BYTES = 600 << 20
BIG_FILE_MIN = 50 << 20


def python_tree() -> Path:
    """The running Python installation (interpreter, stdlib, site-packages): a realistic layer."""
    return Path(sys.base_prefix).resolve()


def large_files(limit: int = BIG_FILES_BYTES, smallest: int = BIG_FILE_MIN) -> list[Path]:
    """The largest regular files (of at least `smallest` bytes) under /usr and the Python installation, up to
    `limit` bytes in all."""
    found: list[tuple[int, str]] = []
    for root in sorted({"/usr", str(python_tree()), sys.prefix}):
        for directory, _, names in os.walk(root):
            for name in names:
                path = os.path.join(directory, name)
                try:
                    stat = os.lstat(path)
                except OSError:
                    continue
                if stat.st_size >= smallest and os.path.isfile(path) and not os.path.islink(path):
                    found.append((stat.st_size, path))
    chosen: list[Path] = []
    total = 0
    for size, path in sorted(found, key=lambda item: (-item[0], item[1])):
        if total + size > limit:
            continue
        chosen.append(Path(path))
        total += size
    return chosen


def _made_once(name: str, fill: Callable[[tarfile.TarFile], None]) -> Path:
    """bench-out/NAME.tar, a PAX tar `fill` writes the first time (under a temporary name), reused after."""
    OUT.mkdir(exist_ok=True)
    target = OUT / f"{name}.tar"
    if target.exists():
        return target
    partial = target.with_suffix(".tar.part")
    with tarfile.open(partial, "w", format=tarfile.PAX_FORMAT) as tar:
        fill(tar)
    partial.rename(target)
    return target


def tar_of(name: str, paths: list[Path], base: Path | None = None) -> Path:
    """A plain PAX tar of `paths` (directories recursively), made once and reused."""

    def fill(tar: tarfile.TarFile) -> None:
        for path in paths:
            tar.add(path, arcname=str(path.relative_to(base)) if base else str(path).lstrip("/"))

    return _made_once(name, fill)


def derived_tar(name: str, source: Path, rename: Callable[[tarfile.TarInfo], str | None]) -> Path:
    """A PAX tar of `source`'s members, each under the name `rename` gives it (None leaves it out, and a hard link
    to a member left out goes too), made once and reused."""

    def fill(out: tarfile.TarFile) -> None:
        kept: dict[str, str] = {}
        with tarfile.open(source) as tar:
            for member in tar:
                new = rename(member)
                if new is None or (member.islnk() and member.linkname not in kept):
                    continue
                kept[member.name] = new
                if member.islnk():
                    member.linkname = kept[member.linkname]
                member.name = new
                out.addfile(member, tar.extractfile(member) if member.isreg() else None)

    return _made_once(name, fill)


_PEAK_RSS_PROBE = (
    "import resource, subprocess, sys; "
    "code = subprocess.run(sys.argv[1:]).returncode; "
    "usage = resource.getrusage(resource.RUSAGE_CHILDREN); "
    "print(usage.ru_maxrss, usage.ru_utime + usage.ru_stime); sys.exit(code)"
)


def run_measured(command: list[str]) -> tuple[str, float, float]:
    """Run `command`; its output, its peak RSS in MB (of it or its largest descendant) and the CPU seconds
    (user + system) of it and all its descendants.

    Through a small intermediate Python: a child forked straight from this (large) process would
    count this process's memory in its peak until it execs.
    """
    done = subprocess.run([sys.executable, "-c", _PEAK_RSS_PROBE, *command], capture_output=True, text=True)
    if done.returncode:
        raise RuntimeError(f"{' '.join(command)} failed:\n{done.stderr}")
    *output, last = done.stdout.rstrip("\n").split("\n")
    peak_kib, cpu = last.split()
    return "\n".join(output), int(peak_kib) / 1024, float(cpu)
