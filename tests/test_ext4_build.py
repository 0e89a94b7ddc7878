"""Building layer blobs as a user does: the same input gives the same bytes, a full disk and a bad tar fail
with a LayerError that names the layer and the entry (never a bare traceback, never a hang), and what
fails leaves no output behind (obdlayout.atomic.atomic_output around build_layer)."""

import json
import multiprocessing
import os
import re
import signal
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from fixtures.make_layers import BadLayer, LayerWriter, make_bad_layers, write_fill_layer
from obdlayout.atomic import atomic_output
from obdlayout.convert.native import build_layer
from obdlayout.formats.commit import BlobOptions
from obdlayout.layers.errors import LayerError

from .ext4tree import read_tree
from .ocimodel import Model, ModelError, differences, read_tar
from .shared import assert_fsck_clean, fixture_layers, memo, require_tool, write_raw_image

MKFS_VSIZE = 4 << 30
PLAIN = BlobOptions(compression=None, tar=False)
DEADLINE = 120  # seconds: a bad tar must fail long before this


class Hang(BaseException):
    """Raised by the alarm; a BaseException so that no `except Exception` in the code under test eats it."""


@contextmanager
def deadline(seconds: int) -> Iterator[None]:
    def ring(signum: int, frame: object) -> None:
        raise Hang(f"no result within {seconds} s")

    previous = signal.signal(signal.SIGALRM, ring)
    signal.alarm(seconds)
    try:
        yield
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, previous)


def _build(out: Path, tar: Path, lowers: list[Path], options: BlobOptions, name: str | None = None) -> Path:
    with out.open("w+b") as sink, tar.open("rb") as layer:
        build_layer(sink, layer, lowers=lowers, vsize=MKFS_VSIZE, layer_name=name or tar.name, options=options)
    return out


def _cmp(a: Path, b: Path) -> None:
    result = subprocess.run(["cmp", str(a), str(b)], capture_output=True, text=True)
    assert result.returncode == 0, f"{a.name} and {b.name} differ: {result.stdout}{result.stderr}"


# -- determinism ------------------------------------------------------------------------------------


@pytest.mark.parametrize("image", ["rules", "big"])
def test_the_same_layer_gives_the_same_bytes(
    image: str, tmp_path: Path, tmp_path_factory: pytest.TempPathFactory
) -> None:
    """Every layer of the image, on the same lowers: built twice with one compression worker and once
    with two, the blobs (LZ4 ZFile in a tar wrapper, the defaults) are byte-identical."""
    require_tool("cmp")
    tars = fixture_layers(tmp_path_factory)[image]
    lowers: list[Path] = []
    for number, tar in enumerate(tars, start=1):
        first = _build(tmp_path / f"l{number}-a.blob", tar, lowers, BlobOptions(jobs=1))
        second = _build(tmp_path / f"l{number}-b.blob", tar, lowers, BlobOptions(jobs=1))
        parallel = _build(tmp_path / f"l{number}-c.blob", tar, lowers, BlobOptions(jobs=2))
        _cmp(first, second)
        _cmp(first, parallel)
        second.unlink()
        parallel.unlink()
        lowers.append(first)
    # And the default-format stack holds the image the layers describe.
    raw = write_raw_image(lowers, tmp_path / "disk.raw")
    assert_fsck_clean(raw)
    if image == "rules":
        model = Model()
        for tar in tars:
            model.apply(tar)
        diff = differences(model.tree(), read_tree(raw, tmp_path).tree)
        assert not diff, "\n".join(diff)
    raw.unlink()


_BUILD_SCRIPT = """
import sys
from obdlayout.convert.native import build_layer
from obdlayout.formats.commit import BlobOptions
out, tar, *lowers = sys.argv[1:]
with open(out, "w+b") as sink, open(tar, "rb") as layer:
    build_layer(sink, layer, lowers=lowers, vsize=4 << 30, layer_name="layer", options=BlobOptions())
"""


def test_blobs_do_not_depend_on_the_process(tmp_path: Path, tmp_path_factory: pytest.TempPathFactory) -> None:
    """Separate processes with different hash seeds (set and dict orders of bytes keys change) agree."""
    tars = fixture_layers(tmp_path_factory)["rules"]
    lowers: list[str] = []
    for number, tar in enumerate(tars, start=1):
        outs = []
        for seed in ("1", "2"):
            out = tmp_path / f"l{number}-seed{seed}.blob"
            env = {**os.environ, "PYTHONHASHSEED": seed}
            subprocess.run(
                [sys.executable, "-c", _BUILD_SCRIPT, str(out), str(tar), *lowers],
                check=True,
                env=env,
                cwd=Path(__file__).resolve().parent.parent,
                timeout=DEADLINE,
            )
            outs.append(out)
        _cmp(*outs)
        lowers.append(str(outs[0]))


# -- a full disk -------------------------------------------------------------------------------------


def test_a_full_file_system_names_the_layer_and_the_size_needed(tmp_path: Path) -> None:
    tar = write_fill_layer(tmp_path / "fill.tar")  # a 20 MB file
    out_dir = tmp_path / "out"
    out_dir.mkdir()
    layer_name = "sha256:4c3a2f1e0d9b8a7c6e5f4a3b2c1d0e9f"
    with (
        pytest.raises(LayerError) as caught,
        deadline(DEADLINE),
        atomic_output(out_dir / "layer.blob") as sink,
        tar.open("rb") as layer,
    ):
        build_layer(sink, layer, vsize=16 << 20, layer_name=layer_name, options=PLAIN)
    message = str(caught.value)
    assert layer_name in message
    assert "data/too-big.bin" in message
    needed = re.search(r"(\d+) MiB", message)
    assert needed is not None and int(needed.group(1)) >= 20_000_000 >> 20, message
    assert re.search(r"at least \d+ GiB", message), message
    assert list(out_dir.iterdir()) == []


def test_a_full_file_system_leaves_no_partial_blob_with_compression_workers(tmp_path: Path) -> None:
    tar = write_fill_layer(tmp_path / "fill.tar")
    out_dir = tmp_path / "out"
    out_dir.mkdir()
    with (
        pytest.raises(LayerError),
        deadline(DEADLINE),
        atomic_output(out_dir / "layer.blob") as sink,
        tar.open("rb") as layer,
    ):
        build_layer(sink, layer, vsize=16 << 20, layer_name="full", options=BlobOptions(jobs=2))
    assert list(out_dir.iterdir()) == []
    assert multiprocessing.active_children() == []


# -- bad tars ----------------------------------------------------------------------------------------


def _bad_layers(tmp_path_factory: pytest.TempPathFactory) -> dict[str, BadLayer]:
    return memo("bad-layers", lambda: make_bad_layers(tmp_path_factory.mktemp("bad")))


REFUSED = [
    "truncated-in-data.tar",
    "truncated-in-header.tar",
    "bad-checksum.tar",
    "corrupt-deflate.tar.gz",
    "corrupt-crc.tar.gz",
    "hardlink-missing.tar",
    "volume-header.tar",
    "multivolume.tar",
    "symlink-loop.tar",
    "parent-is-a-file.tar",
    "name-too-long.tar",
    "xattrs-too-big.tar",
    "device-major-4096.tar",
    "device-minor-2pow20.tar",
    "negative-size.tar",
    "pax-mtime-infinity.tar",
    "pax-mtime-exponent.tar",
]
# The same with compression workers running (they must be stopped, and no output left).
WITH_WORKERS = ["truncated-in-data.tar", "corrupt-deflate.tar.gz", "hardlink-missing.tar", "xattrs-too-big.tar"]
BAD_TAR_DEADLINE = 30  # each of these fails within a second when it fails as it should


# Bad tars are built in a child process: a hang inside C code (say, a huge number conversion) cannot be
# interrupted by a signal handler in this process, but a child can always be killed.
_CHILD = """
import gzip, json, multiprocessing, sys
from obdlayout.atomic import atomic_output
from obdlayout.convert.native import build_layer
from obdlayout.layers.errors import LayerError
from obdlayout.formats.commit import BlobOptions
path, compressed, target, layer_name, jobs = sys.argv[1:]
options = BlobOptions(jobs=int(jobs)) if int(jobs) > 1 else BlobOptions(compression=None, tar=False)
result = {}
try:
    with (gzip.GzipFile(path) if compressed == "1" else open(path, "rb")) as stream, atomic_output(target) as sink:
        build_layer(sink, stream, vsize=1 << 30, layer_name=layer_name, options=options)
    result = {"type": None, "message": ""}
except BaseException as exc:
    result = {"type": f"{type(exc).__module__}.{type(exc).__qualname__}", "message": str(exc)}
result["children"] = len(multiprocessing.active_children())
print(json.dumps(result))
"""


def build_in_child(bad: BadLayer, target: Path, layer_name: str, jobs: int, timeout: float) -> dict[str, object]:
    """build_layer(bad tar) in a fresh interpreter; {"type": exception type or None, "message", "children"}."""
    compressed = "1" if bad.gzip else "0"
    command = [sys.executable, "-c", _CHILD, str(bad.path), compressed, str(target), layer_name, str(jobs)]
    try:
        done = subprocess.run(
            command, capture_output=True, text=True, timeout=timeout, cwd=Path(__file__).resolve().parent.parent
        )
    except subprocess.TimeoutExpired:
        pytest.fail(f"{bad.path.name}: no result within {timeout} s (a hang)")
    assert done.returncode == 0, done.stderr[-3000:]
    result: dict[str, object] = json.loads(done.stdout.strip().splitlines()[-1])
    return result


def _entry_names(bad: BadLayer) -> list[str]:
    plain = bad.path.with_name("text.tar") if bad.gzip else bad.path
    return [m.name.decode() for m in read_tar(plain)]


@pytest.mark.parametrize(
    ("name", "jobs"),
    [pytest.param(n, 1, id=f"{n}-plain") for n in REFUSED]
    + [pytest.param(n, 2, id=f"{n}-lz4-2-workers") for n in WITH_WORKERS],
)
def test_a_bad_tar_fails_with_a_layer_error_naming_layer_and_entry(
    name: str, jobs: int, tmp_path: Path, tmp_path_factory: pytest.TempPathFactory
) -> None:
    bad = _bad_layers(tmp_path_factory)[name]
    layer_name = f"sha256:{name}"
    target = tmp_path / "out" / "layer.blob"
    target.parent.mkdir()
    result = build_in_child(bad, target, layer_name, jobs, BAD_TAR_DEADLINE)
    message = str(result["message"])
    assert result["type"] == "obdlayout.layers.errors.LayerError", f"{result['type']}: {message}"
    assert layer_name in message
    if bad.entry:
        assert bad.entry in message, message
    else:
        assert any(entry in message for entry in _entry_names(bad)), message
    assert list(target.parent.iterdir()) == [], "a failed build left output behind"
    assert result["children"] == 0, "compression workers were left running"


def test_every_bad_tar_is_tested(tmp_path_factory: pytest.TempPathFactory) -> None:
    assert set(_bad_layers(tmp_path_factory)) == {*REFUSED, "hardlink-into-replaced-dir.tar"}


def test_a_hard_link_whose_target_its_own_replacement_deletes(
    tmp_path: Path, tmp_path_factory: pytest.TempPathFactory
) -> None:
    """`d/f`, then a hard link `d` -> `d/f`: replacing the directory `d` deletes the link's target.
    containerd refuses this (the link's source is gone); keeping the file is defensible too. What is
    not: an exception other than LayerError, or an image whose directory entry points at a freed inode."""
    bad = _bad_layers(tmp_path_factory)["hardlink-into-replaced-dir.tar"]
    out = tmp_path / "layer.blob"
    try:
        with deadline(DEADLINE):
            _build(out, bad.path, [], PLAIN, name="sha256:replaced")
    except LayerError as exc:
        assert "sha256:replaced" in str(exc) and "'d'" in str(exc)
        return
    raw = write_raw_image([out], tmp_path / "disk.raw")
    assert_fsck_clean(raw)
    entry = read_tree(raw, tmp_path).tree.entries[b"/d"]
    assert (entry.kind, entry.links) == ("file", 1)


@pytest.mark.parametrize("name", [n for n in REFUSED if not n.endswith(".gz") and n != "xattrs-too-big.tar"])
def test_the_model_refuses_the_bad_tars_too(name: str, tmp_path_factory: pytest.TempPathFactory) -> None:
    """The fixtures are bad for a reason the independent model sees as well (not by accident)."""
    with pytest.raises(ModelError):
        Model().apply(_bad_layers(tmp_path_factory)[name].path)


def test_xattrs_ext4_cannot_store_are_skipped_with_a_warning(tmp_path: Path) -> None:
    """A namespace ext4 has no index for (GNU tar's `gnu.*`, say) cannot be stored: the layer still
    converts, the other xattrs are kept, and the warnings name the layer and the attribute."""
    w = LayerWriter(tmp_path / "ns.tar")
    w.add("f", data=b"f\n", xattrs={"user.kept": b"1", "gnu.dropped": b"2"})
    tar = w.close()
    out = tmp_path / "layer.blob"
    with out.open("w+b") as sink, tar.open("rb") as layer:
        result = build_layer(sink, layer, vsize=1 << 30, layer_name="sha256:ns", options=PLAIN)
    assert any("sha256:ns" in warning and "gnu.dropped" in warning for warning in result.apply.warnings), (
        result.apply.warnings
    )
    raw = write_raw_image([out], tmp_path / "disk.raw")
    assert_fsck_clean(raw)
    assert read_tree(raw, tmp_path).tree.entries[b"/f"].xattrs == (("user.kept", b"1"),)
