"""The hardening findings, one test each (numbered as the issue numbers them), and the kill test: no process
or file left behind, one-line errors for bad input, DST unchanged on failure."""

import json
import os
import random
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from fixtures.make_layers import LayerWriter
from obdlayout.lifetime import part_prefix
from obdlayout.oci.mediatypes import OCI_CONFIG, OCI_MANIFEST

from .oci_layouts import LayoutBuilder, sha256
from .shared import fixture_layers, require_tool, session_gone, session_processes, shared
from .test_convert import run, snapshot, tagged
from .test_inspect_support import run as run_command
from .test_inspect_support import source_layout

Factory = pytest.TempPathFactory
ROOT = Path(__file__).resolve().parent.parent


def _convert(source: Path, out: Path, *options: str, code: int = 0) -> str:
    return run(source, out, *options, code=code)


def _one_line_error(output: str) -> str:
    """The one error line (progress lines aside); no traceback."""
    errors = [line for line in output.splitlines() if line.startswith("Error: ")]
    assert len(errors) == 1 and "Traceback" not in output, output
    return errors[0]


def _small(root: Path, tag: str = "app") -> Path:
    builder = LayoutBuilder(root)
    builder.tag(tag, builder.image([builder.layer({"etc/hostname": b"obd\n", "srv/a": b"a" * 5000})]))
    return builder.save()


def _blob_path(layout: Path, digest: str) -> Path:
    return layout / "blobs" / "sha256" / digest.removeprefix("sha256:")


# -- 1, and the kill test ------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def kill_source(tmp_path_factory: Factory) -> Path:
    """Several layers and enough data that compression workers and layer readers are at work when killed."""
    rng = random.Random(3)
    builder = LayoutBuilder(tmp_path_factory.mktemp("kill") / "src")
    tars = [tar.read_bytes() for tar in fixture_layers(tmp_path_factory)["rules"]]
    layers = [builder.layer_from_tar(tar) for tar in tars]
    layers.append(builder.layer({f"blob{i}": rng.randbytes(8 << 20) for i in range(4)}))
    builder.tag("app", builder.image(layers))
    return builder.save()


def test_killed_converts_leave_no_process_and_no_file_and_a_rerun_completes(tmp_path: Path, kill_source: Path) -> None:
    """SIGKILL of the convert process alone (its helpers are not signalled) at random moments, 20 times:
    every helper process ends with it (finding 1), DST is as it was or complete, and a rerun finishes and
    leaves no work directory and no temporary file (finding 2)."""
    out = tmp_path / "out"
    _convert(_small(tmp_path / "first"), out, "-i", "app", "-o", "first")
    before = snapshot(out)
    rng = random.Random(1)
    for attempt in range(20):
        proc = subprocess.Popen(
            [sys.executable, "-m", "obdlayout.cli", "convert", str(kill_source), str(out), "-q", "-j", "2"],
            start_new_session=True,
            cwd=ROOT,
        )
        time.sleep(rng.uniform(0.05, 2.0))
        proc.kill()
        proc.wait()
        assert session_gone(proc.pid), (
            f"kill {attempt}: processes of the convert survive: {session_processes(proc.pid)}"
        )
        now = snapshot(out)
        if now["index.json"] == before["index.json"]:
            continue  # killed before it tagged: the old tags still name whole images
        assert tagged(out, "app")["digest"] and tagged(out, "first")["digest"]
    _convert(kill_source, out, "-i", "app")
    assert run_command("verify", f"{out}:app").exit_code == 0
    assert not list(tmp_path.glob(".out.obdlayout-work-*")), "the work directory stays after a successful rerun"
    leftovers = [p for p in out.rglob("*") if p.name.endswith(".part")]
    assert not leftovers, leftovers


def test_temporary_files_of_a_killed_writer_are_removed_by_the_next(tmp_path: Path) -> None:
    """2: a kill while index.json (or a blob) is written leaves a .part file; the next convert removes it."""
    out = tmp_path / "out"
    _convert(_small(tmp_path / "src"), out, "-i", "app", "-o", "one")
    gone_pid = _a_dead_pid()
    stale = [
        out / f".index.json.{gone_pid}.k3j2h1.part",
        out / "blobs" / "sha256" / f".blob.{gone_pid}.a1b2c3.part",
    ]
    for path in stale:
        path.write_bytes(b"half written")
    alive = out / f"{part_prefix('index.json')}zz.part"  # this process's own: it is alive, so kept
    alive.write_bytes(b"in progress")
    _convert(_small(tmp_path / "src2", "app"), out, "-i", "app", "-o", "two")
    assert not any(path.exists() for path in stale)
    assert alive.exists()


def _a_dead_pid() -> int:
    proc = subprocess.Popen(["true"])
    proc.wait()
    return proc.pid


# -- 3-7: bad input is refused with one line, before DST is touched --------------------------------------


def _nested(depth: int) -> bytes:
    return b"[" * depth + b"]" * depth


def _nested_source(root: Path, where: str) -> Path:
    """A layout whose `where` (index.json, the manifest or the config) is 200 000 levels of nested arrays."""
    builder = LayoutBuilder(root)
    nested = _nested(200_000)
    if where == "manifest":
        builder.tag("app", builder.blob(nested, OCI_MANIFEST))
        return builder.save()
    layer = builder.layer({"f": b"x"})
    layer_descriptor = {k: v for k, v in layer.items() if not k.startswith("_")}
    config = (
        builder.blob(nested, OCI_CONFIG)
        if where == "config"
        else builder.json_blob(
            {"architecture": "amd64", "os": "linux", "rootfs": {"type": "layers", "diff_ids": [layer["_diff_id"]]}},
            OCI_CONFIG,
        )
    )
    manifest = {"schemaVersion": 2, "mediaType": OCI_MANIFEST, "config": config, "layers": [layer_descriptor]}
    builder.tag("app", builder.json_blob(manifest, OCI_MANIFEST))
    saved = builder.save()
    if where == "index.json":
        (saved / "index.json").write_bytes(nested)
    return saved


@pytest.mark.parametrize("where", ["index.json", "manifest", "config", "destination index.json"])
def test_deeply_nested_json_is_refused_in_one_line(where: str, tmp_path: Path) -> None:
    """3: 200 000 levels of nesting in any document: an error naming it, from convert and the read commands."""
    out = tmp_path / "out"
    if where == "destination index.json":
        source = _small(tmp_path / "src")
        _convert(source, out, "-i", "app", "-o", "old")
        (out / "index.json").write_bytes(_nested(200_000))
    else:
        source = _nested_source(tmp_path / "src", where)
    before = snapshot(out) if out.exists() else None
    line = _one_line_error(_convert(source, out, "-i", "app", "-o", "new", code=1))
    assert "nested more than 64 levels" in line
    assert (snapshot(out) if out.exists() else None) == before
    if where != "destination index.json":
        for command in (["inspect", str(source)], ["ls", f"{source}:app"], ["verify", f"{source}:app"]):
            result = run_command(*command)
            assert result.exit_code == 1 and "Traceback" not in result.output, result.output
            assert "nested more than 64 levels" in result.output


def test_index_fan_out_is_walked_once_by_convert_and_the_read_commands(tmp_path: Path) -> None:
    """4: an index of 16 entries naming the same child index, 8 levels deep (16^8 paths, a 5 KB layout)."""
    builder = LayoutBuilder(tmp_path / "src")
    node = builder.image([builder.layer({"f": b"x"})])
    for _ in range(8):
        node = builder.index([node] * 16)
    builder.tag("deep", node)
    source = builder.save()
    out = tmp_path / "out"
    started = time.monotonic()
    _convert(source, out, "-i", "deep")
    for command in (["inspect", f"{out}:deep"], ["ls", f"{out}:deep", "/"], ["verify", f"{out}:deep"]):
        assert run_command(*command).exit_code == 0
    assert time.monotonic() - started < 120  # an exponential walk would not end at all


def test_a_malformed_digest_selection_is_a_usage_error(tmp_path: Path) -> None:
    """5: `-g sha256:xyz`."""
    output = _convert(_small(tmp_path / "src"), tmp_path / "out", "-g", "sha256:xyz", "-o", "x", code=2)
    assert "sha256:xyz" in output and "malformed" in output
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("tag", ["bad tag!", "../../etc/x"])
def test_an_invalid_output_tag_is_refused_before_any_work(tag: str, tmp_path: Path) -> None:
    """6: refused at once, DST not even created (it was a traceback after the whole conversion)."""
    output = _convert(_small(tmp_path / "src"), tmp_path / "out", "-i", "app", "-o", tag, code=2)
    assert tag in output and "ref.name" in output
    assert not (tmp_path / "out").exists() and not list(tmp_path.glob(".out.obdlayout-work-*"))


def test_a_diff_id_of_another_algorithm_is_refused_naming_the_config(tmp_path: Path) -> None:
    """7: `sha512:…` in rootfs.diff_ids: chain IDs and layer uuids are made of sha256 DiffIDs."""
    builder = LayoutBuilder(tmp_path / "src")
    layer = builder.layer({"f": b"x"})
    layer["_diff_id"] = "sha512:" + "ab" * 64
    builder.tag("app", builder.image([layer]))
    line = _one_line_error(_convert(builder.save(), tmp_path / "out", "-i", "app", code=1))
    assert "rootfs.diff_ids[0]" in line and "sha256" in line


# -- 8, 9: sizes past what ext4 holds -------------------------------------------------------------------


@pytest.mark.parametrize(
    ("realsize", "regions"),
    [
        pytest.param(1 << 50, [((1 << 50) - 512, 512)], id="region-at-2^50-512"),
        pytest.param(1 << 50, [(0, 512)], id="real-size-2^50"),
    ],
)
def test_a_sparse_file_larger_than_ext4_holds_is_refused(
    realsize: int, regions: list[tuple[int, int]], tmp_path: Path
) -> None:
    """8, 9: refused naming the entry, as a huge plain file already is (they were a struct.error, and an image
    e2fsck rejects)."""
    writer = LayerWriter(tmp_path / "sparse.tar")
    writer.add("before", data=b"x")
    writer.pax_sparse_1_0(b"huge", realsize, regions, seed=1)
    source = source_layout(tmp_path / "src", [writer.close()], "app")
    line = _one_line_error(_convert(source, tmp_path / "out", "-i", "app", code=1))
    assert "'huge'" in line and "16 TiB" in line
    assert not (tmp_path / "out").exists()


# -- 10, 11: a full disk -------------------------------------------------------------------------------


@contextmanager
def _small_disk(where: Path, size: str) -> Iterator[Path]:
    """A tmpfs of `size` mounted at `where`; the test is skipped where this machine cannot mount one."""
    where.mkdir()
    if os.geteuid() != 0:
        pytest.skip("mounting a small tmpfs needs root")
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(where)], capture_output=True)
    if done.returncode:
        pytest.skip(f"cannot mount a tmpfs here: {done.stderr.decode().strip()}")
    try:
        yield where
    finally:
        subprocess.run(["umount", "-l", str(where)], check=False)


def _big_source(root: Path) -> Path:
    rng = random.Random(9)
    builder = LayoutBuilder(root)
    builder.tag("app", builder.image([builder.layer({f"r{i}": rng.randbytes(10 << 20) for i in range(4)})]))
    return builder.save()


@pytest.mark.parametrize("jobs", ["1", "2"])
def test_a_full_disk_is_named_as_such(jobs: str, tmp_path: Path) -> None:
    """10: DST and the work directory on a full disk: the disk is named, not the input blamed, no traceback
    (with compression workers it was `BufferError: cannot close exported pointers exist`)."""
    source = _big_source(tmp_path / "src")
    with _small_disk(tmp_path / "disk", "8M") as disk:
        result = run_command("convert", str(source), str(disk / "out"), "-i", "app", "-q", "-j", jobs)
        assert result.exit_code == 1, result.output
        line = _one_line_error(result.output)
        assert "No space left on device" in line and str(disk) in line and "truncated or corrupt" not in line
        assert not (disk / "out").exists() and not list(disk.iterdir())


def test_a_full_destination_while_publishing_is_named_and_dst_unchanged(tmp_path: Path) -> None:
    """11: the work directory elsewhere, DST on a full disk: DST keeps no new blob, the message names DST."""
    source = _big_source(tmp_path / "src")
    with _small_disk(tmp_path / "disk", "20M") as disk:
        out = disk / "out"
        _convert(_small(tmp_path / "small"), out, "-i", "app", "-o", "old")
        before = snapshot(out)
        result = run_command("convert", str(source), str(out), "-i", "app", "-d", str(tmp_path / "work"), "-q")
        assert result.exit_code == 1, result.output
        line = _one_line_error(result.output)
        assert str(out) in line and "No space left on device" in line
        assert snapshot(out) == before


# -- 12, 13: DST's own files are checked first, and never followed -------------------------------------------


def test_a_malformed_destination_index_is_found_before_any_work(tmp_path: Path) -> None:
    """12: found at once, not after blobs were written into DST."""
    out = tmp_path / "out"
    _convert(_small(tmp_path / "old"), out, "-i", "app", "-o", "old")
    (out / "index.json").write_text('{"schemaVersion": 2, "manifests": 7}')
    before = snapshot(out)
    line = _one_line_error(_convert(_big_source(tmp_path / "src"), out, "-i", "app", "-o", "new", code=1))
    assert str(out / "index.json") in line
    assert snapshot(out) == before
    assert not list(tmp_path.glob(".out.obdlayout-work-*"))


@pytest.mark.parametrize("name", ["index.json.lock", "index.json", "oci-layout", "blobs"])
def test_a_symlink_among_the_destinations_own_files_is_refused(name: str, tmp_path: Path) -> None:
    """13: a dangling symlink at DST/index.json.lock made convert create its target outside DST."""
    out = tmp_path / "out"
    _convert(_small(tmp_path / "old"), out, "-i", "app", "-o", "old")
    outside = tmp_path / "outside" / name
    outside.parent.mkdir()
    if (out / name).is_dir():
        shutil.move(str(out / name), outside)
    elif (out / name).exists():
        (out / name).rename(outside)
    (out / name).symlink_to(outside if name != "index.json.lock" else tmp_path / "outside" / "created-by-lock")
    line = _one_line_error(_convert(_small(tmp_path / "src"), out, "-i", "app", "-o", "new", code=1))
    assert "symlink" in line and str(out / name) in line
    assert not (tmp_path / "outside" / "created-by-lock").exists()


# -- 14: work-directory layers are checked before they are published --------------------------------------


def test_a_damaged_work_directory_layer_is_converted_again_not_published(tmp_path: Path) -> None:
    source = _small(tmp_path / "src")
    work = tmp_path / "work"
    _convert(source, tmp_path / "first", "-i", "app", "-d", str(work), "--reserve")
    (stored,) = work.glob("layers/*/overlaybd.commit")
    data = bytearray(stored.read_bytes())
    data[len(data) // 2] ^= 0x01
    stored.write_bytes(bytes(data))  # same size, other bytes
    out = tmp_path / "out"
    _convert(source, out, "-i", "app", "-d", str(work))
    for blob in (out / "blobs" / "sha256").iterdir():
        assert sha256(blob.read_bytes()) == "sha256:" + blob.name, f"{blob.name} is not what its name says"
    assert tagged(out, "app")["digest"] == tagged(tmp_path / "first", "app")["digest"]  # the same layer, rebuilt
    assert run_command("verify", f"{out}:app").exit_code == 0


# -- 15, 16: verify --against agrees with the converter ----------------------------------------------------


def test_verify_against_passes_a_whiteout_below_missing_directories(tmp_path: Path) -> None:
    """15: `nothere/.wh.ghost` creates `nothere` (as containerd does), in the image and in verify's model."""
    writer = LayerWriter(tmp_path / "layer.tar")
    writer.add("present", data=b"x")
    writer.add("nothere/.wh.ghost")
    source = source_layout(tmp_path / "src", [writer.close()], "app")
    out = tmp_path / "out"
    _convert(source, out, "-i", "app")
    result = run_command("verify", f"{out}:app", "--against", str(source))
    assert result.exit_code == 0, result.output


@pytest.mark.parametrize("mtime", [b"100000000000000000000", b"-100000000000000000000"])
def test_times_outside_ext4s_range_are_clamped_with_a_warning_and_verify_agrees(mtime: bytes, tmp_path: Path) -> None:
    """16: clamped silently, and then `verify --against` reported faults on the tool's own output."""
    writer = LayerWriter(tmp_path / "layer.tar")
    writer.pax_raw(b"when", b"0", [(b"mtime", mtime)], b"x\n")
    source = source_layout(tmp_path / "src", [writer.close()], "app")
    out = tmp_path / "out"
    output = _convert(source, out, "-i", "app", "-v")
    warnings = [line for line in output.splitlines() if line.startswith("warning:")]
    assert any("entry 'when'" in w and mtime.decode() in w and "range" in w for w in warnings), output
    result = run_command("verify", f"{out}:app", "--against", str(source))
    assert result.exit_code == 0, result.output


# -- 17: the tar wrapper's end ----------------------------------------------------------------------------


def test_a_non_zero_byte_in_the_end_of_archive_blocks_is_a_fault(tmp_path: Path) -> None:
    source = _small(tmp_path / "src")
    out = tmp_path / "out"
    _convert(source, out, "-i", "app")
    layer = json.loads(_blob_path(out, tagged(out, "app")["digest"]).read_text())["layers"][0]
    path = _blob_path(out, layer["digest"])
    data = bytearray(path.read_bytes())
    data[-100] = 0x41  # inside the two zero blocks that end the archive
    damaged = tmp_path / "damaged.blob"
    damaged.write_bytes(bytes(data))
    result = run_command("blob", "verify", str(damaged))
    assert result.exit_code == 1 and "end-of-archive" in result.stderr
    require_tool("tar")
    refused = subprocess.run(["tar", "-tf", str(damaged)], capture_output=True, text=True)
    assert refused.returncode != 0 or "ignoring" in refused.stderr.lower() or refused.stderr  # GNU tar objects too
    path.chmod(0o644)
    path.write_bytes(bytes(data))  # the same inside the layout: verify finds it (beside the digest mismatch)
    verified = run_command("verify", f"{out}:app")
    assert verified.exit_code == 1 and "end-of-archive" in verified.stderr
    shared_golden = shared("overlaybd-golden") / "mkfs/layer0/overlaybd.commit"
    assert run_command("blob", "verify", str(shared_golden)).exit_code == 0  # the real tools' blobs pass
