"""Running the overlaybd tools (`overlaybd-create`, `overlaybd-apply`, `turboOCI-apply`, `overlaybd-commit`)
as the Go convertor runs them (convertor-spec.md §2.3, §2.7), and the two files they read: the image config
`config.json` (§2.6) and the service config.

The tools read their service config from /etc/overlaybd/overlaybd.json unless told otherwise; each layer gets
a private one in its directory of the work directory (`--service_config_path`), with logging to the tools'
output, no audit log, no downloads and the registry cache in that directory, so that a conversion reads and
writes no file outside DST and the work directory. (The apply tools still need /etc/overlaybd/overlaybd.json to
exist, unread: see DEFAULT_SERVICE_CONFIG.)
"""

import hashlib
import json
import os
import signal
import subprocess
from collections.abc import Mapping, Sequence
from functools import partial
from pathlib import Path
from typing import Any

from ..atomic import atomic_output
from ..formats.blob import StackLayer
from ..lifetime import die_with_parent
from ..oci.gojson import Field, Kind, Schema, marshal
from ..units import STREAM_CHUNK
from .errors import ConvertError

DEFAULT_TOOLS_DIR = Path("/opt/overlaybd/bin")
CREATE = "overlaybd-create"
APPLY = "overlaybd-apply"
TURBO_APPLY = "turboOCI-apply"
COMMIT = "overlaybd-commit"

# The files of a layer's directory, as the Go convertor names them (§2.3, §2.7).
WRITABLE_DATA = "writable_data"
WRITABLE_INDEX = "writable_index"
LAYER_TAR = "layer.tar"
IMAGE_CONFIG = "config.json"
SERVICE_CONFIG = "overlaybd.json"
TOOLS_LOG = "tools.log"  # what the tools printed, for a failure's message
CACHE_DIR = "cache"

IMAGE_CONFIG_MODE = 0o600  # as the Go convertor writes it (§2.3)
# The tools' own default service config. overlaybd-apply and turboOCI-apply (src/tools: CLI11's
# `check(ExistingFile)->default_val(...)`) check that it exists when they declare --service_config_path, before they
# read their command line, and abort (SIGABRT: the ValidationError is not caught) when it is missing, whatever
# --service_config_path says.
DEFAULT_SERVICE_CONFIG = "/etc/overlaybd/overlaybd.json"
_NO_DEFAULT_SERVICE_CONFIG = f"--service_config_path: File does not exist: {DEFAULT_SERVICE_CONFIG}"
OUTPUT_LINES = 8  # of a failed tool's output, in the error
OUTPUT_TAIL_BYTES = 4096

# pkg/types/types.go: OverlayBDBSConfig and its Lower and Upper (§2.6).
_LOWER: Schema = (
    Field("gzipIndex", Kind.STRING, omitempty=True),
    Field("file", Kind.STRING, omitempty=True),
    Field("digest", Kind.STRING, omitempty=True),
    Field("targetFile", Kind.STRING, omitempty=True),
    Field("targetDigest", Kind.STRING, omitempty=True),
    Field("size", Kind.INT, omitempty=True),
    Field("dir", Kind.STRING, omitempty=True),
)
_UPPER: Schema = (
    Field("index", Kind.STRING, omitempty=True),
    Field("data", Kind.STRING, omitempty=True),
    Field("target", Kind.STRING, omitempty=True),
    Field("gzipIndex", Kind.STRING, omitempty=True),
    Field("vsize", Kind.INT, omitempty=True),
)
_IMAGE_CONFIG: Schema = (
    Field("repoBlobUrl", Kind.STRING),
    Field("lowers", Kind.STRUCTS, schema=_LOWER),
    Field("upper", Kind.STRUCT, schema=_UPPER),
    Field("resultFile", Kind.STRING),
    Field("accelerationLayer", Kind.BOOL, omitempty=True),
    Field("recordTracePath", Kind.STRING, omitempty=True),
)


Argument = str | os.PathLike[str]


class ToolError(ConvertError):
    """An overlaybd tool is missing, cannot run, or failed."""


class OverlaybdTools:
    """The overlaybd tools in one directory, checked before any work starts."""

    def __init__(self, directory: Path, names: Sequence[str]) -> None:
        self.directory = directory.absolute()
        self.names = tuple(names)
        for name in self.names:
            path = self.directory / name
            if not path.is_file():
                raise ToolError(
                    str(path),
                    f"{name} is missing: install overlaybd's tools there, or pass --tools-dir, or use --engine native",
                )
            if not os.access(path, os.X_OK):
                raise ToolError(str(path), f"{name} is not executable")

    def identity(self) -> dict[str, str]:
        """Each tool's sha256: another build of the tools may write other bytes."""
        digests = {}
        for name in self.names:
            sha = hashlib.sha256()
            with (self.directory / name).open("rb") as tool:
                while chunk := tool.read(STREAM_CHUNK):
                    sha.update(chunk)
            digests[name] = sha.hexdigest()
        return digests

    def run(self, name: str, args: Sequence[Argument], layer_dir: Path, where: str) -> None:
        """Run tool `name` with `args`, its output appended to the layer's log; a ToolError naming the layer
        (`where`), the tool, its exit status and its last lines of output if it fails."""
        argv = [str(self.directory / name), *map(str, args)]
        log_path = layer_dir / TOOLS_LOG
        with log_path.open("ab") as log:
            start = log.tell()
            try:
                # die_with_parent: a killed convert takes the tool with it.
                status = subprocess.run(
                    argv,
                    stdin=subprocess.DEVNULL,
                    stdout=log,
                    stderr=subprocess.STDOUT,
                    preexec_fn=partial(die_with_parent, os.getpid()),
                ).returncode
            except OSError as exc:
                raise ToolError(where, f"{name} could not be started: {exc.strerror}") from None
        if status != 0:
            how = f"was killed by {signal.Signals(-status).name}" if status < 0 else f"exited with status {status}"
            lines = _last_lines(log_path, start)
            shown = ", with no output" if not lines else "; its last output:\n" + "\n".join(f"  {x}" for x in lines)
            raise ToolError(where, f"{name} {how}{_explained(name, lines)}{shown}")


def _last_lines(log_path: Path, start: int) -> list[str]:
    with log_path.open("rb") as log:
        end = log.seek(0, os.SEEK_END)
        log.seek(max(start, end - OUTPUT_TAIL_BYTES))
        text = log.read().decode("utf-8", "replace")
    return [line.rstrip() for line in text.splitlines() if line.strip()][-OUTPUT_LINES:]


def _explained(name: str, lines: Sequence[str]) -> str:
    """What a failure the tools' output does not make clear means, and what to do; "" for any other."""
    if any(_NO_DEFAULT_SERVICE_CONFIG in line for line in lines):
        return (
            f" because {DEFAULT_SERVICE_CONFIG} does not exist: this build of {name} needs that file to exist "
            "even though obdlayout gives it a service config of its own (--service_config_path), and aborts "
            "before reading its arguments without it. Create it (overlaybd's install puts one there; an empty "
            "file will do, as it is not read)"
        )
    return ""


def write_service_config(layer_dir: Path) -> Path:
    """The private service config of the tools run in `layer_dir` (see the module's docstring)."""
    config = {
        "registryFsVersion": "v2",
        "logPath": "",
        "logLevel": 1,
        "cacheConfig": {"cacheType": "file", "cacheDir": str(layer_dir / CACHE_DIR), "cacheSizeGB": 4},
        "gzipCacheConfig": {"enable": False},
        "credentialConfig": {"mode": "file", "path": ""},
        "ioEngine": 0,
        "download": {"enable": False},
        "enableAudit": False,
    }
    path = layer_dir / SERVICE_CONFIG
    path.write_text(json.dumps(config, indent=2) + "\n")
    return path


def lower_entry(layer: StackLayer, target_digest: str | None) -> dict[str, Any]:
    """A layer of the stack as config.json names it (§2.6): its blob, and for a warp layer the original layer
    blob and its digest, and the gzip index if it has one."""
    entry: dict[str, Any] = {"file": os.fspath(layer.blob)}
    if layer.target is not None:
        entry["targetFile"] = os.fspath(layer.target)
        entry["targetDigest"] = target_digest or ""
    if layer.gzip_index is not None:
        entry["gzipIndex"] = os.fspath(layer.gzip_index)
    return entry


def write_image_config(layer_dir: Path, lowers: Sequence[Mapping[str, Any]], upper: Mapping[str, Any]) -> Path:
    """`config.json` in `layer_dir`, as the Go convertor writes it: Go's JSON of its struct, mode 0600."""
    config = {"repoBlobUrl": "", "lowers": list(lowers), "upper": dict(upper), "resultFile": ""}
    path = layer_dir / IMAGE_CONFIG
    with atomic_output(path, IMAGE_CONFIG_MODE) as out:
        out.write(marshal(config, _IMAGE_CONFIG))
    return path
