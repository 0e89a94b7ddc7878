"""Whether the package's compiled modules run, or their sources.

`make compiled` (scripts/compile.py) compiles the modules on the conversion's hot paths with mypyc, from these
same sources, into extension modules beside them, and records each compiled source's digest in compiled.json.
Python prefers an extension module to the source beside it, which is right only while that source is the one
that was compiled: after an edit, the old build would run. So unless every recorded source is unchanged, and
OBDLAYOUT_INTERPRETED is not set, the package's modules are imported from their sources. The output is the
same bytes either way; the compiled modules are faster.

Stdlib only: this runs before any other module of the package is imported.
"""

import hashlib
import json
import os
import sys
from collections.abc import Sequence
from importlib.machinery import ModuleSpec
from importlib.util import spec_from_file_location
from types import ModuleType

PACKAGE_DIR = os.path.dirname(os.path.abspath(__file__))
MANIFEST = "compiled.json"  # {"sources": {path relative to the package: sha256 of the source compiled}}
INTERPRETED_VARIABLE = "OBDLAYOUT_INTERPRETED"


def source_digest(path: str) -> str:
    with open(path, "rb") as source:
        return hashlib.sha256(source.read()).hexdigest()


def recorded_sources(package_dir: str) -> dict[str, str]:
    """The manifest's sources and digests; empty when there is no readable manifest."""
    try:
        with open(os.path.join(package_dir, MANIFEST), encoding="utf-8") as manifest:
            sources = json.load(manifest)["sources"]
    except (OSError, ValueError, KeyError, TypeError):
        return {}
    if not isinstance(sources, dict) or not all(isinstance(v, str) for v in sources.values()):
        return {}
    return {str(path): digest for path, digest in sources.items()}


def build_is_current(package_dir: str) -> bool:
    """True when a build is recorded and every source it compiled is unchanged."""
    recorded = recorded_sources(package_dir)
    try:
        return bool(recorded) and all(
            source_digest(os.path.join(package_dir, path)) == digest for path, digest in recorded.items()
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
        return None  # a subpackage, or not ours: the usual finders


def choose(package: str) -> bool:
    """Called by the package's __init__ first: returns whether the compiled modules will run."""
    if not os.environ.get(INTERPRETED_VARIABLE) and build_is_current(PACKAGE_DIR):
        return True
    sys.meta_path.insert(0, _SourcesFirst(package))
    return False
