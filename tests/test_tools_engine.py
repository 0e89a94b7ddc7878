"""`convert --engine overlaybd-tools`: the overlaybd tools, run per layer as the Go convertor runs them.

Where the tools are absent (CI), stand-ins (standin_tools.py) check every command line and config.json
against the spec and build their outputs with the native writer, so a conversion through them must equal
the native engine's byte for byte; the expected command lines here are written from the spec
(convertor-spec.md §2.3, §2.5, §2.6, §2.7), not from the engine. Where the real tools are installed
(OVERLAYBD_TOOLS_DIR, default /opt/overlaybd/bin), the same image is converted by both engines: the native one
must pass `verify --against` its source, the tools' must differ from it in their known departures only, and
the members the tools refuse must fail the conversion cleanly.
"""

import hashlib
import json
import os
import re
import subprocess
import sys
import tarfile
import time
from dataclasses import dataclass
from pathlib import Path

import pytest
from click.testing import Result

from fixtures.make_layers import LayerWriter
from obdlayout import api
from obdlayout.oci.layout import Layout

from .oci_layouts import Json, LayoutBuilder
from .shared import fixture_layers, session_gone, session_processes, shared
from .standin_tools import CALLS_ENV, FAIL_ENV, TOOLS, calls, install
from .test_inspect_support import run

Factory = pytest.TempPathFactory
TOOLS_ENGINE = ("--engine", "overlaybd-tools")
COMPRESSIONS = ("gzip", "none", "gzip")
ROOT = Path(__file__).resolve().parent.parent  # the rules layers: TurboOCI indexes the gzip ones only


@dataclass(frozen=True)
class Source:
    layout: Path
    diff_ids: list[str]
    digests: list[str]


@dataclass(frozen=True)
class StandIns:
    directory: Path
    log: Path

    def calls(self) -> list[Json]:
        return calls(self.log)


@pytest.fixture
def standins(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> StandIns:
    log = tmp_path / "calls.jsonl"
    monkeypatch.setenv(CALLS_ENV, str(log))
    monkeypatch.delenv(FAIL_ENV, raising=False)
    return StandIns(install(tmp_path / "tools"), log)


def _source(root: Path, factory: Factory, image: str = "rules") -> Source:
    """A layout whose image "rules" has the layers of fixtures.make_layers `image`, compressed as COMPRESSIONS."""
    builder = LayoutBuilder(root)
    tars = fixture_layers(factory)[image]
    layers = [builder.layer_from_tar(tar.read_bytes(), c) for tar, c in zip(tars, COMPRESSIONS, strict=True)]
    builder.tag("rules", builder.image(layers))
    builder.save()
    return Source(root, [layer["_diff_id"] for layer in layers], [layer["digest"] for layer in layers])


def _uuids(diff_ids: list[str]) -> list[str]:
    """The layers' uuids: their chain IDs (image-spec identity.ChainID) cut 8-4-4-4-12 (§2.3)."""
    chains = [diff_ids[0]]
    for diff_id in diff_ids[1:]:
        chains.append("sha256:" + hashlib.sha256(f"{chains[-1]} {diff_id}".encode()).hexdigest())
    hexes = [chain.removeprefix("sha256:") for chain in chains]
    return [f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:32]}" for h in hexes]


def _with_tools(source: Source, out: Path, tools: Path, *options: str) -> Result:
    """`convert` of the rules image with the tools engine, whatever comes of it."""
    command = ("convert", str(source.layout), str(out), "-q", "-i", "rules", *options)
    return run(*command, *TOOLS_ENGINE, "--tools-dir", str(tools))


def _convert(source: Path, out: Path, *options: str) -> str:
    result = run("convert", str(source), str(out), "-q", "-j", "1", "-i", "rules", *options)
    assert result.exit_code == 0, result.output
    return result.output


def _tags(layout: Path) -> dict[str, str]:
    index = json.loads((layout / "index.json").read_text())
    return {e["annotations"]["org.opencontainers.image.ref.name"]: e["digest"] for e in index["manifests"]}


def _layer_dirs(made: list[Json], apply_tool: str) -> list[str]:
    """Each layer's directory (from the data file its overlaybd-create was given), once the calls are checked
    to be create, apply, commit for each of the three layers, in order."""
    assert [call["tool"] for call in made] == ["overlaybd-create", apply_tool, "overlaybd-commit"] * 3
    dirs = [os.path.dirname(call["argv"][0]) for call in made[::3]]
    assert len(set(dirs)) == len(dirs), dirs
    return dirs


def _stored(layer_dir: str) -> str:
    """Where a layer's directory is once the layer is made: a layer is built in `.KEY.RANDOM.part`, renamed
    `KEY` when done (work directory), and the layers above name its files there."""
    parent, name = os.path.split(layer_dir)
    assert name.startswith(".") and name.endswith(".part"), name
    return os.path.join(parent, name.split(".")[1])


def _go_config(lowers: list[str], upper: str) -> str:
    return f'{{"repoBlobUrl":"","lowers":[{",".join(lowers)}],"upper":{upper},"resultFile":""}}'


def _check_service_config(call: Json, layer_dir: str) -> None:
    """A private --service_config_path, last, in the layer's directory (the tools' default is /etc)."""
    assert call["argv"][-2] == "--service_config_path"
    assert call["argv"][-1].startswith(layer_dir + "/")


def _both_engines(
    source: Source, out: Path, standins: StandIns, output: str, *options: str, tools_only: tuple[str, ...] = ()
) -> list[Json]:
    """Convert with the stand-ins (tagged "tools") and the native engine ("native"); the two must be the same
    image (so the same manifest digest). Returns the stand-ins' calls."""
    engine = (*TOOLS_ENGINE, "--tools-dir", str(standins.directory))
    _convert(source.layout, out, output, "tools", *options, *tools_only, *engine)
    made = standins.calls()
    _convert(source.layout, out, output, "native", *options)
    tags = _tags(out)
    assert tags["tools"] == tags["native"]
    return made


# -- the overlaybd engine (§2.3) ----------------------------------------------------------------------------


def test_overlaybd_layers_are_made_by_the_go_command_lines(
    tmp_path: Path, tmp_path_factory: Factory, standins: StandIns
) -> None:
    source = _source(tmp_path / "src", tmp_path_factory)
    out = tmp_path / "out"
    made = _both_engines(source, out, standins, "-o", "--vsize", "8")
    dirs, uuids = _layer_dirs(made, "overlaybd-apply"), _uuids(source.diff_ids)
    for i, layer in enumerate(dirs):
        create, apply, commit = made[3 * i : 3 * i + 3]
        data, index = f"{layer}/writable_data", f"{layer}/writable_index"
        # §2.5: --vsize for the mkfs layer 0, then 0 (inherit); -s unless --disable-sparse; --mkfs on layer 0.
        assert create["argv"] == [data, index, "8" if i == 0 else "0", "-s", *(["--mkfs"] if i == 0 else [])]
        assert apply["argv"][:2] == [f"{layer}/layer.tar", f"{layer}/config.json"] and len(apply["argv"]) == 4
        _check_service_config(apply, layer)
        lowers = [f'{{"file":"{_stored(below)}/overlaybd.commit"}}' for below in dirs[:i]]
        assert apply["config"] == _go_config(lowers, f'{{"index":"{index}","data":"{data}"}}')
        parent = ["--parent-uuid", uuids[i - 1]] if i else []
        assert commit["argv"] == [data, index, f"{layer}/overlaybd.commit", "-z", "-t", "--uuid", uuids[i], *parent]
    verified = run("verify", f"{out}:tools", "--against", f"{source.layout}:rules")
    assert verified.exit_code == 0, verified.output


def test_without_mkfs_the_baselayer_is_the_first_lower_and_layer_0_is_64_gib(
    tmp_path: Path, tmp_path_factory: Factory, standins: StandIns
) -> None:
    baselayer = shared("baselayer", "ext4_64")
    source = _source(tmp_path / "src", tmp_path_factory)
    out = tmp_path / "out"
    no_mkfs = ("--no-mkfs", "--baselayer", str(baselayer), "--vsize", "8")
    made = _both_engines(source, out, standins, "-o", *no_mkfs, tools_only=("--disable-sparse",))
    dirs = _layer_dirs(made, "overlaybd-apply")
    for i, layer in enumerate(dirs):
        create, apply = made[3 * i], made[3 * i + 1]
        # §2.5: 64 (--vsize ignored) for layer 0, never --mkfs; --disable-sparse drops -s.
        assert create["argv"] == [f"{layer}/writable_data", f"{layer}/writable_index", "64" if i == 0 else "0"]
        lowers = [f'{{"file":"{baselayer.absolute()}"}}'] + [
            f'{{"file":"{_stored(d)}/overlaybd.commit"}}' for d in dirs[:i]
        ]
        upper = f'{{"index":"{layer}/writable_index","data":"{layer}/writable_data"}}'
        assert apply["config"] == _go_config(lowers, upper)


def test_non_default_zfile_options_reach_overlaybd_commit(
    tmp_path: Path, tmp_path_factory: Factory, standins: StandIns
) -> None:
    source = _source(tmp_path / "src", tmp_path_factory)
    out = tmp_path / "out"
    zfile = ("--algorithm", "zstd", "--bs", "16", "--vsize", "8")
    made = _both_engines(source, out, standins, "-o", *zfile)
    commits = [call["argv"] for call in made if call["tool"] == "overlaybd-commit"]
    assert all(argv[-4:] == ["--algorithm", "zstd", "--bs", "16"] for argv in commits), commits


# -- the TurboOCI engine (§2.7) -----------------------------------------------------------------------------


def test_turbo_oci_layers_are_made_by_the_go_command_lines(
    tmp_path: Path, tmp_path_factory: Factory, standins: StandIns
) -> None:
    source = _source(tmp_path / "src", tmp_path_factory)
    out = tmp_path / "out"
    made = _both_engines(source, out, standins, "--turbo-oci", "--vsize", "8")
    dirs = _layer_dirs(made, "turboOCI-apply")
    blobs = Layout(source.layout)
    for i, layer in enumerate(dirs):
        create, apply, commit = made[3 * i : 3 * i + 3]
        data, index, tar = f"{layer}/writable_data", f"{layer}/writable_index", f"{layer}/layer.tar"
        # §2.5: --vsize for every layer with mkfs; -s always; --mkfs on layer 0 only.
        assert create["argv"] == [data, index, "-s", "8", "--turboOCI", *(["--mkfs"] if i == 0 else [])]
        assert apply["argv"][:4] == [tar, f"{layer}/config.json", "--gz_index_path", f"{layer}/gzip.meta"]
        assert len(apply["argv"]) == 6
        _check_service_config(apply, layer)
        lowers = []
        for j, below in enumerate(dirs[:i]):
            stored = _stored(below)
            gz = f'"gzipIndex":"{stored}/gzip.meta",' if COMPRESSIONS[j] == "gzip" else ""
            target = blobs.blob_path(source.digests[j]).resolve()
            lowers.append(
                f'{{{gz}"file":"{stored}/ext4.fs.meta","targetFile":"{target}","targetDigest":"{source.digests[j]}"}}'
            )
        assert apply["config"] == _go_config(lowers, f'{{"index":"{index}","data":"{data}","target":"{tar}"}}')
        assert commit["argv"] == [data, index, f"{layer}/overlaybd.commit", "-z", "--fastoci"]
    assert run("verify", f"{out}:tools", "--against", f"{source.layout}:rules").exit_code == 0


def test_both_formats_in_one_run_equal_the_native_engines(
    tmp_path: Path, tmp_path_factory: Factory, standins: StandIns
) -> None:
    source = _source(tmp_path / "src", tmp_path_factory)
    tools, native = tmp_path / "tools", tmp_path / "native"
    both = ("--overlaybd", "o", "--turbo-oci", "t", "--vsize", "8")
    _convert(source.layout, tools, *both, *TOOLS_ENGINE, "--tools-dir", str(standins.directory))
    _convert(source.layout, native, *both)
    assert _tags(tools) == _tags(native)
    assert len(standins.calls()) == 2 * 3 * 3


def test_a_rerun_reuses_the_layers_the_same_tools_made(
    tmp_path: Path, tmp_path_factory: Factory, standins: StandIns
) -> None:
    source = _source(tmp_path / "src", tmp_path_factory)
    options = ("-o", "t", "--vsize", "8", "--dir", str(tmp_path / "work"), "--reserve", *TOOLS_ENGINE)
    _convert(source.layout, tmp_path / "a", *options, "--tools-dir", str(standins.directory))
    assert len(standins.calls()) == 9
    _convert(source.layout, tmp_path / "b", *options, "--tools-dir", str(standins.directory))
    assert len(standins.calls()) == 9  # nothing ran again
    other = install(tmp_path / "other-tools")
    with (other / "overlaybd-commit").open("a") as script:
        script.write("# another build of the tool\n")
    _convert(source.layout, tmp_path / "c", *options, "--tools-dir", str(other))
    assert len(standins.calls()) == 18  # other tools: converted again
    assert _tags(tmp_path / "c") == _tags(tmp_path / "a")


# -- failures -----------------------------------------------------------------------------------------------


def _dst_state(path: Path) -> dict[str, bytes] | None:
    if not path.exists():
        return None
    return {str(p.relative_to(path)): p.read_bytes() for p in sorted(path.rglob("*")) if p.is_file()}


@pytest.mark.parametrize(
    ("failing", "how"),
    [("overlaybd-apply", "exited with status 3"), ("overlaybd-commit:kill", "was killed by SIGKILL")],
)
def test_a_failing_tool_is_named_with_its_status_and_output_and_dst_is_untouched(
    tmp_path: Path,
    tmp_path_factory: Factory,
    standins: StandIns,
    monkeypatch: pytest.MonkeyPatch,
    failing: str,
    how: str,
) -> None:
    source = _source(tmp_path / "src", tmp_path_factory)
    out = tmp_path / "out"
    _convert(source.layout, out, "-o", "before")
    before = _dst_state(out)
    monkeypatch.setenv(FAIL_ENV, failing)
    result = _with_tools(source, out, standins.directory, "-o", "after")
    assert result.exit_code == 1
    tool = failing.split(":")[0]
    assert f"layer 0 ({source.digests[0]})" in result.stderr
    assert f"{tool} {how}" in result.stderr
    assert "photon: something went wrong" in result.stderr and f"{tool}: failed to extract" in result.stderr
    assert "/etc/overlaybd" not in result.stderr  # the explanation below is for its own failure only
    assert _dst_state(out) == before


# What overlaybd-apply and turboOCI-apply print, and then abort, when /etc/overlaybd/overlaybd.json is missing.
_ABORT_FOR_WANT_OF_ETC_CONFIG = """#!/bin/sh
echo "terminate called after throwing an instance of 'CLI::ValidationError'" >&2
echo "  what():  --service_config_path: File does not exist: /etc/overlaybd/overlaybd.json" >&2
kill -ABRT $$
"""


@pytest.mark.parametrize(("output", "apply"), [("-o", "overlaybd-apply"), ("--turbo-oci", "turboOCI-apply")])
def test_an_apply_tool_aborting_for_want_of_etc_overlaybd_json_is_explained(
    tmp_path: Path, tmp_path_factory: Factory, standins: StandIns, output: str, apply: str
) -> None:
    """Builds of the apply tools check that their default service config exists before they read their command
    line, so they abort without /etc/overlaybd/overlaybd.json although obdlayout passes its own config: the error
    must say that this file is what is missing, not leave the user puzzled by a config that was given."""
    source = _source(tmp_path / "src", tmp_path_factory)
    out = tmp_path / "out"
    _convert(source.layout, out, "-o", "before")
    before = _dst_state(out)
    (standins.directory / apply).write_text(_ABORT_FOR_WANT_OF_ETC_CONFIG)
    result = _with_tools(source, out, standins.directory, output, "after")
    assert result.exit_code == 1
    first = result.stderr.splitlines()[0]
    assert f"layer 0 ({source.digests[0]}): {apply} was killed by SIGABRT" in first
    assert "because /etc/overlaybd/overlaybd.json does not exist" in first
    assert "even though obdlayout gives it a service config of its own (--service_config_path)" in first
    assert "Create it (overlaybd's install puts one there; an empty file will do" in first
    assert "what():  --service_config_path: File does not exist: /etc/overlaybd/overlaybd.json" in result.stderr
    assert [call["tool"] for call in standins.calls()] == ["overlaybd-create"]  # the apply script logs nothing
    assert _dst_state(out) == before


def test_a_killed_convert_takes_the_running_tool_with_it(
    tmp_path: Path, tmp_path_factory: Factory, standins: StandIns
) -> None:
    source = _source(tmp_path / "src", tmp_path_factory)
    out = tmp_path / "out"
    command = [sys.executable, "-m", "obdlayout.cli", "convert", str(source.layout), str(out), "-q", "-i", "rules"]
    env = {**os.environ, FAIL_ENV: "overlaybd-apply:hang"}
    tools = [*TOOLS_ENGINE, "--tools-dir", str(standins.directory)]
    proc = subprocess.Popen([*command, *tools], start_new_session=True, cwd=ROOT, env=env)
    deadline = time.monotonic() + 60
    while not any(call["tool"] == "overlaybd-apply" for call in standins.calls()):
        assert proc.poll() is None and time.monotonic() < deadline, "overlaybd-apply was never run"
        time.sleep(0.05)
    proc.kill()
    proc.wait()
    assert session_gone(proc.pid), f"still running: {session_processes(proc.pid)}"
    assert not out.exists()


@pytest.mark.parametrize("broken", ["missing", "not executable"])
def test_a_missing_or_unusable_tool_is_reported_before_any_work(
    tmp_path: Path, tmp_path_factory: Factory, standins: StandIns, broken: str
) -> None:
    source = _source(tmp_path / "src", tmp_path_factory)
    commit = standins.directory / "overlaybd-commit"
    if broken == "missing":
        commit.unlink()
    else:
        commit.chmod(0o644)
    out = tmp_path / "out"
    for engine_options in (("-o", "t"), ("--turbo-oci", "t")):
        result = _with_tools(source, out, standins.directory, *engine_options)
        assert result.exit_code == 1
        assert f"{commit}: overlaybd-commit is {broken}" in result.stderr
    assert standins.calls() == []
    assert not out.exists()


def test_turbo_oci_needs_turbo_apply_only(
    tmp_path: Path, tmp_path_factory: Factory, monkeypatch: pytest.MonkeyPatch
) -> None:
    log = tmp_path / "calls.jsonl"
    monkeypatch.setenv(CALLS_ENV, str(log))
    tools = install(tmp_path / "tools", tuple(t for t in TOOLS if t != "overlaybd-apply"))
    source = _source(tmp_path / "src", tmp_path_factory)
    assert _with_tools(source, tmp_path / "out", tools, "--turbo-oci", "t").exit_code == 0
    result = _with_tools(source, tmp_path / "out2", tools)
    assert result.exit_code == 1 and "overlaybd-apply is missing" in result.stderr


@pytest.mark.parametrize("option", [("--tools-dir", "/opt"), ("--disable-sparse",)])
def test_tools_options_need_the_tools_engine(tmp_path: Path, option: tuple[str, ...]) -> None:
    result = run("convert", str(tmp_path / "src"), str(tmp_path / "out"), *option)
    assert result.exit_code == 2
    assert "overlaybd-tools" in result.stderr


# -- the real tools ------------------------------------------------------------------------------------------


def _real_tools() -> Path:
    configured = os.environ.get("OVERLAYBD_TOOLS_DIR")
    directory = Path(configured) if configured else Path("/opt/overlaybd/bin")
    if not all((directory / tool).is_file() for tool in TOOLS):
        pytest.skip(f"the overlaybd tools are not installed in {directory} (set OVERLAYBD_TOOLS_DIR)")
    return directory


# Where the real tools write otherwise than the OCI layer rules say (and the native engine writes) in the rules image
# they accept, fixtures.make_layers "rules-plain-parents": path -> what `verify --against` finds different there.
# The causes, in overlaybd's src/overlaybd/tar (libtar.cpp, libtar.h, header.cpp):
_LINK_TARGET, _MODE, _OWNER, _MTIME = "link target", "mode", "owner", "mtime"
REAL_TOOLS_DEPARTURES: dict[str, tuple[str, ...]] = {
    # get_linkname() cleans a symbolic link's target as it cleans member names (clean_name): `.` and `x/..` go,
    # and so does a trailing slash.
    "/chain": (_LINK_TARGET,),  # lnk/../abslnk -> abslnk
    "/slowlnk": (_LINK_TARGET,),  # /./././.../real -> /real
    "/links/long300": (_LINK_TARGET,),
    "/links/long300-gnu": (_LINK_TARGET,),
    # set_file_perms() runs for a hard link too: its header's mode (0644 here) is chmod()ed onto the shared inode.
    "/dev/null": (_MODE,),
    "/dev/null-too": (_MODE,),
    "/files/exact.bin": (_MODE,),
    "/other/hard-gnu": (_MODE,),
    "/repl/a": (_MODE,),
    # uid and gid are read with sscanf("%o") only: a base-256 number leaves them uninitialised (garbage, from one
    # run to the next), and PAX uid and gid records are ignored.
    "/ids/base256": (_OWNER,),
    "/ids/base256-max": (_OWNER,),
    "/ids/dir": (_OWNER,),
    "/ids/pax-uid": (_OWNER,),
    # PAX mtime records are ignored, so is a base-256 mtime (0), and get_mtime() is an int: 2**31 becomes -2**31.
    "/times/base256": (_MTIME,),
    "/times/dir": (_MTIME,),
    "/times/fifo": (_MTIME,),
    "/times/half": (_MTIME,),
    "/times/negative": (_MTIME,),
    "/times/sym": (_MTIME,),
    "/times/ten-digits": (_MTIME,),
    "/times/y2038": (_MTIME,),
    "/times/y2300": (_MTIME,),
}
_WHAT_DIFFERS = re.compile(r"link target|hard links|\w+")  # "mode 0666 expected, found 0644" -> "mode"


def _faults(output: str, image: str) -> dict[str, tuple[str, ...]]:
    """`verify`'s faults: those of a path of `image` (LAYOUT:TAG) as path -> what differs, any other kept whole."""
    found: dict[str, tuple[str, ...]] = {}
    for line in output.splitlines():
        tree_fault = line.removeprefix(f"FAULT {image} (linux/amd64): /")
        if tree_fault == line:
            found[line] = ()
            continue
        path, _, problems = tree_fault.partition(": ")
        found["/" + path] = tuple(m.group() if (m := _WHAT_DIFFERS.match(p)) else p for p in problems.split("; "))
    return found


@pytest.mark.parametrize("output", ["-o", "--turbo-oci"])
def test_the_real_tools_and_the_native_engine_give_the_same_trees_but_for_the_tools_departures(
    tmp_path: Path, tmp_path_factory: Factory, output: str
) -> None:
    """Every entry kind and layer rule of the rules image, less the members the tools refuse (next test): both
    engines' images are sound, and their trees differ from the source's in the tools' known departures only
    (REAL_TOOLS_DEPARTURES; one that goes, or a new one, fails the test)."""
    tools = _real_tools()
    source = _source(tmp_path / "src", tmp_path_factory, "rules-plain-parents")
    out = tmp_path / "out"
    _convert(source.layout, out, output, "tools", *TOOLS_ENGINE, "--tools-dir", str(tools))
    _convert(source.layout, out, output, "native")
    native = run("verify", f"{out}:native", "--against", f"{source.layout}:rules")
    assert native.exit_code == 0, native.output
    verified = run("verify", f"{out}:tools", "--against", f"{source.layout}:rules")
    assert verified.exit_code == 1
    faults = verified.stderr.removesuffix(f"{len(REAL_TOOLS_DEPARTURES)} fault(s) found\n")
    assert _faults(faults, f"{out}:tools") == REAL_TOOLS_DEPARTURES, verified.output
    opened = Layout(out)
    for layer in opened.read_manifest(opened.resolve_tag("tools")).layers:
        result = run("blob", "verify", str(opened.blob_path(layer.digest)))
        assert result.exit_code == 0, result.output


# Members the real tools refuse, in a layer over `lnk` -> `real/` (holding `f`) and the file `afile`: (id, name,
# type, link target, how the tool ends, what it says last).
_FAILED = "exited with status 255"  # UnTar::extract_all() returned -1
_REFUSED = [
    # UnTar::mkdir_hier lstat()s the parent and wants a directory: a symbolic link is not followed...
    ("under-a-symlinked-parent", "lnk/new", tarfile.REGTYPE, "", _FAILED, "filename lnk/new errno=20(Not a directory)"),
    # ... and a whiteout under a file is no exception (by containerd's rules it deletes nothing).
    ("whiteout-under-a-file", "afile/.wh.x", tarfile.REGTYPE, "", _FAILED, "afile/.wh.x errno=20(Not a directory)"),
    # link() resolves its target's path without following symbolic links either.
    ("hard-link-through-a-symlink", "hl", tarfile.LNKTYPE, "lnk/f", _FAILED, "linktgt lnk/f errno=2(No such file"),
    # clean_name keeps a relative name's leading `..`; the tool's sub-file-system refuses it, then the tool crashes.
    ("above-the-root", "../escape", tarfile.REGTYPE, "", "was killed by SIGSEGV", "tries to escape from base dir"),
]


@pytest.mark.parametrize("output", ["-o", "--turbo-oci"])
@pytest.mark.parametrize(
    ("member", "kind", "target", "how", "said"), [pytest.param(*case[1:], id=case[0]) for case in _REFUSED]
)
def test_a_member_the_real_tools_refuse_fails_the_layer_and_leaves_dst_untouched(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    output: str,
    member: str,
    kind: bytes,
    target: str,
    how: str,
    said: str,
) -> None:
    """Members that containerd's rules (and the native engine) take, which fixtures.make_layers "rules" has and
    "rules-plain-parents" leaves out: the tools fail the layer, and the error names that layer and the tool, with
    the tool's own words; DST is as it was."""
    tools = _real_tools()
    monkeypatch.chdir(tmp_path)  # where a crashing tool may leave its core file
    below, above = LayerWriter(tmp_path / "below.tar"), LayerWriter(tmp_path / "above.tar")
    below.add("real/", tarfile.DIRTYPE)
    below.add("real/f", data=b"f\n")
    below.add("lnk", tarfile.SYMTYPE, linkname="real", mode=0o777)
    below.add("afile", data=b"a file\n")
    above.add(member, kind, linkname=target)
    builder = LayoutBuilder(tmp_path / "src")
    layers = [builder.layer_from_tar(w.close().read_bytes(), "gzip") for w in (below, above)]
    builder.tag("rules", builder.image(layers))
    source = Source(builder.save(), [], [layer["digest"] for layer in layers])
    out = tmp_path / "out"
    _convert(source.layout, out, output, "before")  # the native engine takes it
    before = _dst_state(out)
    result = _with_tools(source, out, tools, output, "after")
    assert result.exit_code == 1
    tool = "overlaybd-apply" if output == "-o" else "turboOCI-apply"
    assert f"layer 1 ({source.digests[1]}): {tool} {how}" in result.stderr
    assert said in result.stderr
    assert _dst_state(out) == before


def test_the_api_takes_the_engine_and_refuses_unknown_ones(
    tmp_path: Path, tmp_path_factory: Factory, standins: StandIns
) -> None:
    source = _source(tmp_path / "src", tmp_path_factory)
    out = tmp_path / "out"
    with pytest.raises(api.OptionError, match="engine"):
        api.convert(source.layout, out, engine="docker")
    report = api.convert(source.layout, out, output_tag="t", engine="overlaybd-tools", tools_dir=standins.directory)
    assert [layer["reused"] for layer in report["images"][0]["layers"]] == [False] * 3
    assert len(standins.calls()) == 9
