"""Whether the package's compiled modules run, or their sources.

`make compiled` (scripts/compile.py) compiles the modules on the conversion's hot paths with mypyc, from these
same sources, into extension modules beside them, and records each compiled source's digest and each
extension file it made in compiled.json. Python prefers an extension module to the source beside it, which is
right only while that source is the one that was compiled: after an edit, the old build would run. So unless
every recorded source is unchanged, the package holds exactly the recorded extension files (for this
interpreter), and OBDLAYOUT_INTERPRETED is unset (or 0), the package's modules are imported from their sources,
and an extension module without a source is not imported at all. The output is the same bytes either way; the
compiled modules are faster.

Stdlib only: this runs before any other module of the package is imported.
"""

import hashlib
import json
import os
import sys
from collections.abc import Sequence
from importlib.machinery import EXTENSION_SUFFIXES, ModuleSpec
from importlib.util import spec_from_file_location
from types import ModuleType

PACKAGE_DIR = os.path.dirname(os.path.abspath(__file__))
# {"sources": {path relative to the package: sha256 of the source compiled}, "extensions": [paths relative to it]}
MANIFEST = "compiled.json"
INTERPRETED_VARIABLE = "OBDLAYOUT_INTERPRETED"


def environment(interpreted: bool) -> dict[str, str]:
    """This process's environment for a child that must run the sources (`interpreted`) or the build if current."""
    env = {name: value for name, value in os.environ.items() if name != INTERPRETED_VARIABLE}
    if interpreted:
        env[INTERPRETED_VARIABLE] = "1"
    return env


def source_digest(path: str) -> str:
    with open(path, "rb") as source:
        return hashlib.sha256(source.read()).hexdigest()


def extension_files(package_dir: str) -> set[str]:
    """Every extension module file in the package for this interpreter, relative to it."""
    suffix = EXTENSION_SUFFIXES[0]
    return {
        os.path.relpath(os.path.join(directory, name), package_dir)
        for directory, _, names in os.walk(package_dir)
        for name in names
        if name.endswith(suffix)
    }


def recorded_build(package_dir: str) -> tuple[dict[str, str], set[str]]:
    """The manifest's sources with their digests, and its extension files; empty when it is missing or unreadable."""
    try:
        with open(os.path.join(package_dir, MANIFEST), encoding="utf-8") as manifest:
            record = json.load(manifest)
        sources, extensions = record["sources"], record["extensions"]
    except (OSError, ValueError, KeyError, TypeError):
        return {}, set()
    if not (isinstance(sources, dict) and all(isinstance(v, str) for v in sources.values())):
        return {}, set()
    if not (isinstance(extensions, list) and all(isinstance(v, str) for v in extensions)):
        return {}, set()
    return {str(path): digest for path, digest in sources.items()}, set(extensions)


def build_is_current(package_dir: str) -> bool:
    """True when a build is recorded, every source it compiled is unchanged, and the package holds exactly the
    extension files it made."""
    sources, extensions = recorded_build(package_dir)
    try:
        return (
            bool(sources)
            and extension_files(package_dir) == extensions
            and all(source_digest(os.path.join(package_dir, path)) == digest for path, digest in sources.items())
        )
    except OSError:
        return False


class _SourcesFirst:
    """Imports the package's modules from their `.py` files, passing over extension modules beside them. (A
    meta path finder by its find_spec alone: importlib.abc would cost every command a tenth of its import.)"""

    def __init__(self, package: str) -> None:
        self._prefix = package + "."

    def find_spec(
        self, fullname: str, path: Sequence[str] | None, target: ModuleType | None = None
    ) -> ModuleSpec | None:
        if path is None or not fullname.startswith(self._prefix):
            return None
        name = fullname.rpartition(".")[2]
        for directory in path:
            source = os.path.join(directory, name + ".py")
            if os.path.isfile(source):
                return spec_from_file_location(fullname, source)
            if os.path.isdir(os.path.join(directory, name)):
                return None  # a subpackage: the usual finders
        # Only an extension module, or nothing: a build of sources that are gone is not run.
        raise ModuleNotFoundError(f"No module named {fullname!r}", name=fullname)


def choose(package: str) -> bool:
    """Called by the package's __init__ first: returns whether the compiled modules will run."""
    if os.environ.get(INTERPRETED_VARIABLE, "0") == "0" and build_is_current(PACKAGE_DIR):
        return True
    sys.meta_path.insert(0, _SourcesFirst(package))
    return False
