"""Compile the conversion's hot modules with mypyc, in place (`make compiled`).

The same sources run interpreted where nothing is compiled (a plain `pip install`); compiled, the process
that applies a layer's entries needs about a third less CPU on the bench image (mypy --strict types are what
mypyc compiles from). obdlayout/compiled.py decides at import which of the two runs: only a build recorded
in obdlayout/compiled.json from the unchanged sources. Nothing is rebuilt while that record is current.

Usage: python scripts/compile.py [--force]
"""

import json
import os
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PACKAGE = ROOT / "obdlayout"
BUILD_DIR = ROOT / "build" / "compiled"

sys.path.insert(0, str(ROOT))
os.environ["OBDLAYOUT_INTERPRETED"] = "1"  # importing the package must not need the build this replaces
from obdlayout.atomic import atomic_output  # noqa: E402
from obdlayout.compiled import MANIFEST, build_is_current, extension_files, recorded_build, source_digest  # noqa: E402

# The per-entry paths of a conversion (ext4, layer rules, tar parsing and relay, LSMT/ZFile writing), TurboOCI
# and EROFS writing, and the readers behind verify and extract. Left out: formats/commit.py and formats/blob.py,
# whose frozen dataclasses go to other processes by pickle (mypyc's unpickling assigns their fields, which a
# frozen dataclass refuses), and the packages' __init__ and errors modules, which do no work. mypyc copies the
# values of Final names into the code that uses them: only these modules may declare any (tests/test_compiled.py).
MODULES = [
    *(f"ext4/{name}.py" for name in ("alloc", "checksum", "device", "dirs", "extents", "fs", "layout", "mkfs")),
    *(f"ext4/{name}.py" for name in ("placement", "reader", "xattr")),
    *(f"layers/{name}.py" for name in ("paths", "rules", "tree")),
    *(f"tar/{name}.py" for name in ("reader", "relay", "ring", "ustar")),
    *(f"formats/{name}.py" for name in ("crc", "gzindex", "lsmt_layout", "lsmt_reader", "lsmt_writer", "source")),
    *(f"formats/{name}.py" for name in ("stack", "tarwrap", "turbo_archive", "zfile_layout", "zfile_pool")),
    *(f"formats/{name}.py" for name in ("zfile_reader", "zfile_writer")),
    *(f"erofs/{name}.py" for name in ("layout", "reader", "writer")),
]


def _up_to_date() -> bool:
    return build_is_current(str(PACKAGE)) and set(recorded_build(str(PACKAGE))[0]) == set(MODULES)


def _digests() -> dict[str, str]:
    return {module: source_digest(str(PACKAGE / module)) for module in MODULES}


def main() -> None:
    if "--force" not in sys.argv[1:] and _up_to_date():
        print("compiled modules are up to date")
        return
    from mypyc.build import mypycify
    from setuptools import Distribution

    manifest = PACKAGE / MANIFEST
    manifest.unlink(missing_ok=True)  # no record of a build until this one has finished
    for stale in extension_files(str(PACKAGE)):  # of modules since dropped or renamed, too
        (PACKAGE / stale).unlink()
    sources = _digests()
    os.chdir(ROOT)  # mypyc names modules by their paths, build_ext --inplace writes beside them
    extensions = mypycify(
        [f"--cache-dir={BUILD_DIR / 'mypy-cache'}", *(f"obdlayout/{module}" for module in MODULES)],
        opt_level="3",
        debug_level="0",
        group_name="obdlayout.compiled",  # the shared library goes into the package: obdlayout/compiled__mypyc
        target_dir=str(BUILD_DIR),
    )
    # A Distribution of its own: setup() would read pyproject.toml, which an old setuptools cannot parse.
    dist = Distribution({"name": "obdlayout-compiled", "ext_modules": extensions})
    dist.script_name = "scripts/compile.py"
    dist.script_args = ["-q", "build_ext", "--inplace", "--build-temp", str(BUILD_DIR)]
    dist.parse_command_line()
    dist.run_commands()
    if _digests() != sources:
        sys.exit("compile.py: a source changed while it was being compiled; run it again")
    record = {"sources": sources, "extensions": sorted(extension_files(str(PACKAGE)))}
    with atomic_output(manifest) as out:
        out.write(json.dumps(record, indent=1, sort_keys=True).encode() + b"\n")
    print(f"compiled {len(MODULES)} modules")


if __name__ == "__main__":
    main()
