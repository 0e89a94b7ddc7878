"""Stand-ins for the overlaybd tools, for tests where the real ones are absent.

Each is a script (`install` writes them) that first appends its argv, and the config.json it is given, to the
calls log (`CALLS_ENV`), then refuses (exit 109, CLI11's code for a bad command line) anything but the exact
command lines the Go convertor gives the real tool (convertor-spec.md §2.3, §2.6, §2.7): argument order,
file names, the config's bytes, mode and key order (checked against this file's own Go-style encoder), and
files that must or must not exist. Then it does the tool's job with obdlayout's native writer:
- overlaybd-create: makes the two writable files, recording its arguments in writable_data;
- overlaybd-apply / turboOCI-apply: checks the layer and its lowers, records the apply (turboOCI-apply also
  writes the gzip index, by obdlayout's builder over zlib's block boundaries);
- overlaybd-commit: builds the layer blob from what was recorded (obdlayout.convert.native.build_layer).

`FAIL_ENV` names a tool to fail instead: it prints some lines and exits with status 3, or kills itself with
SIGKILL when the value ends in ":kill", or first sleeps when it ends in ":hang" (to be killed meanwhile).
"""

import gzip
import hashlib
import json
import os
import signal
import stat
import sys
import time
from pathlib import Path
from typing import Any, NoReturn

CALLS_ENV = "OBDLAYOUT_STANDIN_CALLS"
FAIL_ENV = "OBDLAYOUT_STANDIN_FAIL"
TOOLS = ("overlaybd-create", "overlaybd-apply", "turboOCI-apply", "overlaybd-commit")
BAD_COMMAND_LINE = 109
FAILED = 3
HANG_SECONDS = 120


def install(directory: Path, names: tuple[str, ...] = TOOLS) -> Path:
    """Write the stand-in scripts into `directory`, executable, running this interpreter."""
    directory.mkdir(parents=True, exist_ok=True)
    repo = Path(__file__).resolve().parent.parent
    for name in names:
        script = directory / name
        script.write_text(
            f"#!{sys.executable}\nimport sys\nsys.path[:0] = [{str(repo)!r}]\n"
            f"from tests.standin_tools import main\nmain({name!r})\n"
        )
        script.chmod(0o755)
    return directory


def calls(log: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in log.read_text().splitlines()] if log.exists() else []


def _refuse(why: str) -> NoReturn:
    print(f"stand-in: {why}", file=sys.stderr)
    sys.exit(BAD_COMMAND_LINE)


def _record(tool: str, argv: list[str]) -> None:
    entry: dict[str, Any] = {"tool": tool, "argv": argv, "pid": os.getpid()}
    if tool in ("overlaybd-apply", "turboOCI-apply") and len(argv) > 1 and os.path.isfile(argv[1]):
        entry["config"] = Path(argv[1]).read_text()
    with open(os.environ[CALLS_ENV], "a") as log:
        log.write(json.dumps(entry) + "\n")


def main(tool: str) -> None:
    argv = sys.argv[1:]
    _record(tool, argv)
    failing = os.environ.get(FAIL_ENV, "")
    if failing.split(":")[0] == tool:
        print(f"{tool}: starting")
        print("photon: something went wrong", file=sys.stderr)
        print(f"{tool}: failed to extract", flush=True)
        if failing.endswith(":kill"):
            os.kill(os.getpid(), signal.SIGKILL)
        if failing.endswith(":hang"):
            time.sleep(HANG_SECONDS)
        sys.exit(FAILED)
    {"overlaybd-create": _create, "overlaybd-apply": _apply, "turboOCI-apply": _apply, "overlaybd-commit": _commit}[
        tool
    ](argv)


# -- overlaybd-create ------------------------------------------------------------------------------------


def _create(argv: list[str]) -> None:
    """`DATA INDEX VSIZE [-s] [--mkfs]` (overlaybd engine) or `DATA INDEX -s VSIZE --turboOCI [--mkfs]` (turbo)."""
    if len(argv) < 3:
        _refuse("overlaybd-create needs DATA INDEX VSIZE")
    data, index, *rest = argv
    turbo = "--turboOCI" in rest
    if turbo:
        if rest[:1] != ["-s"] or rest[2:3] != ["--turboOCI"] or rest[3:] not in ([], ["--mkfs"]):
            _refuse(f"turbo create must be `-s VSIZE --turboOCI [--mkfs]`, not {rest}")
        vsize, sparse, mkfs = rest[1], True, rest[3:] == ["--mkfs"]
    else:
        vsize, flags = rest[0], rest[1:]
        if flags not in ([], ["-s"], ["--mkfs"], ["-s", "--mkfs"]):
            _refuse(f"create must be `VSIZE [-s] [--mkfs]`, not {rest}")
        sparse, mkfs = "-s" in flags, "--mkfs" in flags
    if not vsize.isdigit():
        _refuse(f"VSIZE {vsize!r} is not a number of GiB")
    layer_dir = _layer_dir(data, "writable_data")
    if index != str(layer_dir / "writable_index"):
        _refuse(f"the index {index} is not beside the data file")
    state = {"vsize_gib": int(vsize), "sparse": sparse, "mkfs": mkfs, "turbo": turbo, "applied": None}
    for path, content in ((data, json.dumps(state)), (index, "")):
        try:
            with open(path, "x") as out:  # O_EXCL, as the real tool
                out.write(content)
        except FileExistsError:
            _refuse(f"{path} exists")


def _layer_dir(path: str, name: str) -> Path:
    if not os.path.isabs(path) or os.path.basename(path) != name:
        _refuse(f"{path} is not an absolute path to {name}")
    return Path(path).parent


def _state(layer_dir: Path) -> dict[str, Any]:
    try:
        state: dict[str, Any] = json.loads((layer_dir / "writable_data").read_text())
    except (OSError, ValueError):
        _refuse(f"no writable layer made by overlaybd-create in {layer_dir}")
    return state


# -- overlaybd-apply, turboOCI-apply ---------------------------------------------------------------------


def _go_string(text: str) -> str:
    escaped = json.dumps(text, ensure_ascii=False)
    return escaped.replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026")


def _go_struct(obj: dict[str, Any], keys: tuple[str, ...], omitempty: bool) -> str:
    parts = []
    for key in keys:
        value = obj.get(key)
        if omitempty and value in (None, "", 0):
            continue
        parts.append(f'"{key}":' + (str(value) if isinstance(value, int) else _go_string(value or "")))
    return "{" + ",".join(parts) + "}"


LOWER_KEYS = ("gzipIndex", "file", "digest", "targetFile", "targetDigest", "size", "dir")
UPPER_KEYS = ("index", "data", "target", "gzipIndex", "vsize")


def go_config(config: dict[str, Any]) -> str:
    """pkg/types OverlayBDBSConfig as Go's json.Marshal writes it (§2.6)."""
    lowers = ",".join(_go_struct(lower, LOWER_KEYS, True) for lower in config["lowers"])
    upper = _go_struct(config["upper"], UPPER_KEYS, True)
    return (
        f'{{"repoBlobUrl":{_go_string(config["repoBlobUrl"])},"lowers":[{lowers}],"upper":{upper},'
        f'"resultFile":{_go_string(config["resultFile"])}}}'
    )


def _apply(argv: list[str]) -> None:
    """overlaybd-apply: `L/layer.tar L/config.json --service_config_path S`; turboOCI-apply:
    `L/layer.tar L/config.json --gz_index_path L/gzip.meta --service_config_path S`."""
    turbo = os.path.basename(sys.argv[0]) == "turboOCI-apply"
    if len(argv) != (6 if turbo else 4):
        _refuse(f"unexpected arguments {argv}")
    tar, config_path = argv[0], argv[1]
    layer_dir = _layer_dir(tar, "layer.tar")
    if config_path != str(layer_dir / "config.json"):
        _refuse(f"the config {config_path} is not the layer's config.json")
    options = argv[2:]
    gz_index = str(layer_dir / "gzip.meta")
    if turbo and options[:2] != ["--gz_index_path", gz_index]:
        _refuse(f"turboOCI-apply needs --gz_index_path {gz_index} first, not {options}")
    options = options[2:] if turbo else options
    if options[0] != "--service_config_path" or not options[1].startswith(str(layer_dir) + "/"):
        _refuse(f"a private --service_config_path in the layer's directory is needed, not {options}")
    service = json.loads(Path(options[1]).read_text())
    if service.get("enableAudit") is not False or service.get("logPath") != "":
        _refuse("the service config would write logs outside the work directory")
    if not str(service["cacheConfig"]["cacheDir"]).startswith(str(layer_dir)):
        _refuse("the service config's cache is outside the work directory")
    mode = stat.S_IMODE(os.stat(config_path).st_mode)
    if mode != 0o600:
        _refuse(f"config.json has mode {mode:o}, not 600")
    text = Path(config_path).read_text()
    config = json.loads(text)
    if text != go_config(config):
        _refuse(f"config.json is not what Go writes: {text}")
    upper = {"index": str(layer_dir / "writable_index"), "data": str(layer_dir / "writable_data")}
    if turbo:
        upper["target"] = tar
    if config["upper"] != upper:
        _refuse(f"the upper is {config['upper']}, not {upper}")
    state = _state(layer_dir)
    if state["turbo"] != turbo or state["applied"] is not None:
        _refuse("the writable layer was not created for this apply")
    if state["mkfs"] == bool(config["lowers"]):
        _refuse("--mkfs is for the bottom layer only, and one with no lowers needs it")
    _check_lowers(config["lowers"], turbo)
    with open(tar, "rb") as layer:
        head = layer.read(512)
    compressed = head[:2] == b"\x1f\x8b"
    if not turbo and (compressed or head[257:262] != b"ustar"):
        _refuse(f"{tar} is not an uncompressed tar")
    if turbo and compressed:
        _write_gzip_index(Path(tar), Path(gz_index))
    state["applied"] = {"tar": tar, "lowers": config["lowers"], "gzip": compressed}
    Path(upper["data"]).write_text(json.dumps(state))


def _check_lowers(lowers: list[dict[str, str]], turbo: bool) -> None:
    for lower in lowers:
        if not os.path.isfile(lower.get("file", "")):
            _refuse(f"lower {lower} has no file")
        if turbo and "targetFile" in lower:
            with open(lower["targetFile"], "rb") as target:
                digest = "sha256:" + hashlib.file_digest(target, "sha256").hexdigest()
            if digest != lower.get("targetDigest"):
                _refuse(f"lower {lower}: the target's digest is {digest}")
            if "gzipIndex" in lower and not os.path.isfile(lower["gzipIndex"]):
                _refuse(f"lower {lower}: no gzip index")
        elif set(lower) != {"file"}:
            _refuse(f"lower {lower} names more than its file")


def _write_gzip_index(tar: Path, out: Path) -> None:
    from obdlayout.formats.gzindex import GzipIndexBuilder
    from obdlayout.inflate import BlockInflater, Boundary

    builder = GzipIndexBuilder(out)
    inflater = BlockInflater(str(tar))
    with tar.open("rb") as layer:
        while data := layer.read(1 << 20):
            for event in inflater.feed(data):
                if isinstance(event, Boundary):
                    builder.boundary(event)
                else:
                    builder.observe_output(event)
    inflater.close()
    builder.finish(tar.stat().st_size)


# -- overlaybd-commit ------------------------------------------------------------------------------------


def _commit(argv: list[str]) -> None:
    """`DATA INDEX OUT -z -t --uuid U [--parent-uuid P] [--algorithm A] [--bs N]` (overlaybd engine) or
    `DATA INDEX OUT -z --fastoci [--algorithm A] [--bs N]` (turbo)."""
    if len(argv) < 5:
        _refuse("overlaybd-commit needs DATA INDEX OUT and options")
    data, index, out, *flags = argv
    layer_dir = _layer_dir(data, "writable_data")
    if index != str(layer_dir / "writable_index") or out != str(layer_dir / "overlaybd.commit"):
        _refuse(f"unexpected files {index} {out}")
    state = _state(layer_dir)
    if state["applied"] is None:
        _refuse("nothing was applied to the writable layer")
    uuid = parent = None
    if state["turbo"]:
        if flags[:2] != ["-z", "--fastoci"]:
            _refuse(f"a TurboOCI commit is `-z --fastoci`, not {flags}")
        flags = flags[2:]
    else:
        if flags[:3] != ["-z", "-t", "--uuid"] or len(flags) < 4:
            _refuse(f"an overlaybd commit starts `-z -t --uuid U`, not {flags}")
        uuid, flags = flags[3], flags[4:]
        if flags[:1] == ["--parent-uuid"]:
            parent, flags = flags[1], flags[2:]
    algorithm, block_kib = "lz4", 4
    if flags[:1] == ["--algorithm"]:
        algorithm, flags = flags[1], flags[2:]
    if flags[:1] == ["--bs"]:
        block_kib, flags = int(flags[1]), flags[2:]
    if flags or algorithm not in ("lz4", "zstd") or block_kib not in (4, 8, 16, 32, 64):
        _refuse(f"unexpected options {flags}, algorithm {algorithm}, block size {block_kib}")
    if os.path.exists(out):
        _refuse(f"{out} exists")  # the real tool opens it O_EXCL
    with open(out, "xb") as sink:
        _build(state, sink, uuid, parent, algorithm, block_kib)


def _build(state: dict[str, Any], sink: Any, uuid: str | None, parent: str | None, algorithm: str, kib: int) -> None:
    from obdlayout.convert.native import build_layer
    from obdlayout.ext4.placement import COPY_DATA, MAP_TO_TAR
    from obdlayout.formats.blob import StackLayer
    from obdlayout.formats.commit import BlobOptions
    from obdlayout.formats.zfile_layout import Algorithm

    applied = state["applied"]
    lowers = [StackLayer(lower["file"], lower.get("targetFile"), lower.get("gzipIndex")) for lower in applied["lowers"]]
    options = BlobOptions(Algorithm.named(algorithm), kib * 1024, tar=not state["turbo"])
    with open(applied["tar"], "rb") as raw, gzip.open(raw) if applied["gzip"] else raw as layer:
        build_layer(
            sink,
            layer,  # type: ignore[arg-type]
            lowers=lowers,
            vsize=state["vsize_gib"] << 30,
            uuid=uuid,
            parent_uuid=parent,
            options=options,
            placement=MAP_TO_TAR if state["turbo"] else COPY_DATA,
        )
