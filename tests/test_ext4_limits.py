"""The ext4 writer at the edges of ext4 and of its own input: link-count limits, running out of inodes,
file systems of awkward sizes, and inputs whose size must not make the work grow faster than linearly."""

import cProfile
import io
import pstats
import re
import tarfile
from pathlib import Path

import pytest

from fixtures.make_layers import LayerWriter
from obdlayout.convert.native import build_layer
from obdlayout.ext4.errors import Ext4Error
from obdlayout.formats.commit import BlobOptions
from obdlayout.layers.errors import LayerError

from .ext4tree import read_tree, run_debugfs
from .shared import assert_fsck_clean, write_raw_image
from .test_ext4_build import DEADLINE, deadline

PLAIN = BlobOptions(compression=None, tar=False)
MKFS_VSIZE = 4 << 30
EXT4_LINK_MAX = 65000
MKFS_DEADLINE = 20  # an empty file system of any size takes well under a second


def _build(tmp_path: Path, tar: Path, vsize: int = MKFS_VSIZE, name: str = "layer", seconds: int = DEADLINE) -> Path:
    out = tmp_path / "layer.blob"
    with deadline(seconds), out.open("w+b") as sink, tar.open("rb") as layer:
        build_layer(sink, layer, vsize=vsize, layer_name=name, options=PLAIN)
    return out


def _links(raw: Path, path: str, tmp_path: Path) -> int:
    ((_, out),) = run_debugfs(raw, [f"stat {path}"], tmp_path)
    found = re.search(rb"Links: (\d+)", out)
    assert found is not None, out[:300]
    return int(found.group(1))


@pytest.mark.parametrize(("subdirectories", "links"), [(EXT4_LINK_MAX - 2, EXT4_LINK_MAX)])
def test_a_directory_at_the_link_limit_counts_its_links(tmp_path: Path, subdirectories: int, links: int) -> None:
    """dir_nlink: a directory whose count would pass 65000 stores 1; one that reaches 65000 exactly
    (64998 subdirectories) stores 65000, as the kernel keeps it and e2fsck wants it."""
    w = LayerWriter(tmp_path / "dirs.tar")
    w.add("d/", tarfile.DIRTYPE)
    for i in range(subdirectories):
        w.add(f"d/{i}/", tarfile.DIRTYPE)
    raw = write_raw_image([_build(tmp_path, w.close())], tmp_path / "disk.raw")
    assert _links(raw, "/d", tmp_path) == links
    assert_fsck_clean(raw)


def test_a_file_takes_65000_names_and_not_one_more(tmp_path: Path) -> None:
    w = LayerWriter(tmp_path / "links.tar")
    w.add("f", data=b"many names\n")
    for i in range(1, EXT4_LINK_MAX):
        w.add(f"l{i}", tarfile.LNKTYPE, linkname="f")
    full = w.close()
    raw = write_raw_image([_build(tmp_path, full)], tmp_path / "disk.raw")
    assert _links(raw, "/f", tmp_path) == EXT4_LINK_MAX
    assert_fsck_clean(raw)
    w = LayerWriter(tmp_path / "too-many.tar")
    w.add("f", data=b"many names\n")
    for i in range(1, EXT4_LINK_MAX + 1):
        w.add(f"l{i}", tarfile.LNKTYPE, linkname="f")
    with pytest.raises(LayerError, match=f"l{EXT4_LINK_MAX}"):
        _build(tmp_path, w.close(), name="sha256:links")


def test_running_out_of_inodes_names_layer_entry_and_a_size_that_fits(tmp_path: Path) -> None:
    """16 MiB hold 1024 inodes (one per 16 KiB): 1100 empty files do not fit."""
    w = LayerWriter(tmp_path / "many.tar")
    for i in range(1100):
        w.add(f"f{i:04d}")
    with pytest.raises(LayerError) as caught:
        _build(tmp_path, w.close(), vsize=16 << 20, name="sha256:inodes")
    message = str(caught.value)
    assert "sha256:inodes" in message and "inode" in message, message
    assert re.search(r"entry 'f\d{4}'", message), message
    suggested = re.search(r"at least (\d+) GiB", message)
    assert suggested is not None and int(suggested.group(1)) << 30 >= 1100 * 16384, message


VSIZES = [
    pytest.param(8 << 20, id="8MiB-minimum"),
    pytest.param((128 << 20) + 3584, id="128MiB-plus-7-sectors"),
    pytest.param((1 << 30) + 255 * 4096, id="1GiB-plus-255-blocks"),
    pytest.param((2 << 30) + 256 * 4096, id="2GiB-plus-256-blocks"),
    pytest.param((2 << 30) + 490 * 4096, id="2GiB-plus-490-blocks"),
    pytest.param((64 << 30) + 300 * 4096, id="64GiB-plus-300-blocks"),
]


@pytest.mark.parametrize("vsize", VSIZES)
def test_mkfs_at_any_size_gives_a_clean_file_system_or_refuses(tmp_path: Path, vsize: int) -> None:
    """Last block groups of every shape: a flex group made of one short group must still hold its
    bitmaps and inode table (or the group must be dropped, as mke2fs does), never loop forever."""
    w = LayerWriter(tmp_path / "one.tar")
    w.add("etc/", tarfile.DIRTYPE)
    w.add("etc/hello", data=b"hello\n")
    try:
        blob = _build(tmp_path, w.close(), vsize=vsize, seconds=MKFS_DEADLINE)
    except (LayerError, Ext4Error, ValueError) as exc:
        pytest.fail(f"a {vsize}-byte disk holds a file system, but it was refused: {exc}")
    raw = write_raw_image([blob], tmp_path / "disk.raw")
    assert_fsck_clean(raw)
    assert b"/etc/hello" in read_tree(raw, tmp_path).tree.entries


def test_too_small_a_disk_is_refused() -> None:
    with deadline(DEADLINE), pytest.raises((LayerError, Ext4Error)):
        build_layer(io.BytesIO(), io.BytesIO(bytes(1024)), vsize=4 << 20, options=PLAIN)


def _sparse_tar(path: Path, regions: int) -> Path:
    w = LayerWriter(path)
    w.old_gnu_sparse(b"sparse", regions * 8192, [(i * 8192, 4096) for i in range(regions)], seed=regions)
    return w.close()


def _build_calls(tar: Path, tmp_path: Path) -> int:
    """Function calls (Python and built-in) made building a layer: a count of work that, unlike time, does
    not depend on what else the machine is doing."""
    profile = cProfile.Profile()
    profile.runcall(_build, tmp_path, tar)
    return pstats.Stats(profile).total_calls  # type: ignore[attr-defined, no-any-return]


def test_a_sparse_file_with_many_regions_is_applied_in_linear_work(tmp_path: Path) -> None:
    """A GNU sparse file's map can have hundreds of thousands of regions (a sparse database file);
    four times the regions must cost about four times the work, not sixteen."""
    small = _build_calls(_sparse_tar(tmp_path / "small.tar", 20_000), tmp_path)
    large = _build_calls(_sparse_tar(tmp_path / "large.tar", 80_000), tmp_path)
    assert large < 6 * small, f"20000 regions: {small} calls, 80000 regions: {large} calls"
    raw = write_raw_image([tmp_path / "layer.blob"], tmp_path / "disk.raw")
    assert_fsck_clean(raw)


EXT4_TIME_MIN = -(1 << 31)  # the kernel's s_time_min / s_time_max for ext4 with extra timestamp bits
EXT4_TIME_MAX = (1 << 34) - 1 - (1 << 31)  # 2446-05-10


@pytest.mark.parametrize(
    ("pax_mtime", "clamped"),
    [
        pytest.param(b"20000000000.5", (EXT4_TIME_MAX, 0), id="year-2603"),
        pytest.param(b"100000000000000000000", (EXT4_TIME_MAX, 0), id="1e20"),
        pytest.param(b"-3000000000", (EXT4_TIME_MIN, 0), id="year-1874"),
    ],
)
def test_times_beyond_ext4s_range_are_clamped_or_refused(
    tmp_path: Path, pax_mtime: bytes, clamped: tuple[int, int]
) -> None:
    """ext4 stores seconds from 1901-12-13 to 2446-05-10; the kernel clamps times outside (dropping the
    nanoseconds). Refusing the layer is fine too; storing another date is not."""
    w = LayerWriter(tmp_path / "times.tar")
    w.pax_raw(b"when", b"0", [(b"mtime", pax_mtime)], b"x\n")
    try:
        blob = _build(tmp_path, w.close(), name="sha256:times")
    except LayerError as exc:
        assert "when" in str(exc)
        return
    raw = write_raw_image([blob], tmp_path / "disk.raw")
    assert_fsck_clean(raw)
    assert read_tree(raw, tmp_path).tree.entries[b"/when"].mtime == clamped
