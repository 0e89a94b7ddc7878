"""Layers on lower file systems that other tools made: mke2fs -d with hashed (htree) directories from
e2fsck -D, and one the Linux kernel wrote through a loop mount (htree directories, xattr blocks shared
by several inodes, uninit_bg). The result must be fsck-clean and hold the lower tree changed by the
layer exactly as the OCI rules say; features this writer cannot keep consistent must be refused."""

import os
import subprocess
import tarfile
from pathlib import Path

import pytest

from fixtures.make_layers import LayerWriter
from obdlayout.convert.native import build_layer
from obdlayout.ext4.errors import Ext4Error
from obdlayout.formats.commit import BlobOptions
from obdlayout.layers.errors import LayerError

from .ext4tree import Ext4Tree, MountUnavailable, mounted, read_tree
from .ocimodel import Model, differences
from .shared import assert_fsck_clean, fixture_layers, pack_raw_image_file, require_tool, write_raw_image

PLAIN = BlobOptions(compression=None, tar=False)
IMAGE_SIZE = 128 << 20
HTREE = 0x1000  # EXT4_INDEX_FL
DIR_ENTRIES = 3000


def _mke2fs(image: Path, options: list[str], source: Path | None = None) -> Path:
    """A file system made by the real mke2fs (4 KiB blocks unless `options` say otherwise)."""
    block = [] if "-b" in options else ["-b", "4096"]
    populate = ["-d", str(source)] if source is not None else []
    command = [require_tool("mke2fs"), "-q", "-F", *options, *block, *populate, str(image), f"{IMAGE_SIZE >> 20}M"]
    subprocess.run(command, check=True, capture_output=True, timeout=120)
    return image


def _pack(image: Path, blob: Path) -> Path:
    return pack_raw_image_file(image, blob, IMAGE_SIZE)


def _upper_layer(path: Path) -> Path:
    """Changes to everything the lowers hold: the hashed directory, shared xattr blocks, hard links."""
    w = LayerWriter(path)
    for i in range(1, DIR_ENTRIES, 3):
        w.add(f"hdir/.wh.file-with-a-longish-name-{i:04d}")
    for i in range(400):
        w.add(f"hdir/added-{i:03d}", data=b"added\n" if i % 50 == 0 else b"")
    w.add("hdir/", tarfile.DIRTYPE, mode=0o750, uid=3)
    w.add("x/.wh.f0")
    w.add("x/f1", data=b"rewritten\n", xattrs={"user.small": b"s"})
    w.add("x/f2", tarfile.LNKTYPE, linkname="x/f3")
    w.add("x/f3-other-name", tarfile.LNKTYPE, linkname="x/f3")
    w.add("top.txt", data=b"top, rewritten\n")
    return w.close()


def _check(lower_image: Path, tmp_path: Path) -> Ext4Tree:
    assert_fsck_clean(lower_image)
    lower_tree = read_tree(lower_image, tmp_path)
    assert lower_tree.flags[lower_tree.inodes[b"/hdir"]] & HTREE, "the lower's big directory is not hashed"
    lower = _pack(lower_image, tmp_path / "lower.blob")
    tar = _upper_layer(tmp_path / "upper.tar")
    upper = tmp_path / "upper.blob"
    with upper.open("w+b") as sink, tar.open("rb") as layer:
        build_layer(sink, layer, lowers=[lower], layer_name="upper", options=PLAIN)
    raw = write_raw_image([lower, upper], tmp_path / "disk.raw")
    assert_fsck_clean(raw)
    model = Model.from_tree(lower_tree.tree)
    model.apply(tar)
    ours = read_tree(raw, tmp_path)
    diff = differences(model.tree(), ours.tree)
    assert not diff, "\n".join(diff)
    return ours


def _populate(root: Path) -> None:
    (root / "hdir").mkdir()
    for i in range(DIR_ENTRIES):
        (root / "hdir" / f"file-with-a-longish-name-{i:04d}").write_bytes(b"")
    (root / "x").mkdir()
    for i in range(4):
        f = root / "x" / f"f{i}"
        f.write_bytes(b"same xattrs\n")
        # Too large for the inode: the kernel shares one xattr block between identical sets.
        os.setxattr(f, "user.big", b"v" * 1000)
        os.setxattr(f, "user.big2", b"w" * 500)
    (root / "top.txt").write_bytes(b"top\n")
    os.link(root / "top.txt", root / "x" / "top-link")
    os.symlink("../top.txt", root / "x" / "sym")


def test_a_layer_on_a_mke2fs_lower_with_hashed_directories(tmp_path: Path) -> None:
    source = tmp_path / "src"
    source.mkdir()
    try:
        _populate(source)
    except OSError as exc:
        pytest.skip(f"this file system takes no user xattrs: {exc}")
    image = tmp_path / "lower.img"
    _mke2fs(image, ["-t", "ext4", "-I", "256", "-O", "^metadata_csum"], source)
    subprocess.run([require_tool("e2fsck"), "-fyD", str(image)], capture_output=True, timeout=300)  # hash dirs
    _check(image, tmp_path)


def test_a_layer_on_a_lower_the_kernel_wrote(tmp_path: Path) -> None:
    image = tmp_path / "lower.img"
    _mke2fs(image, ["-t", "ext4", "-I", "256", "-O", "^metadata_csum,uninit_bg"])
    try:
        with mounted(image, tmp_path, writable=True) as point:
            _populate(point)
    except MountUnavailable as exc:
        pytest.skip(f"no loop mount here: {exc}")
    lower = read_tree(image, tmp_path)
    blocks = {lower.xattr_blocks[lower.inodes[b"/x/f%d" % i]] for i in range(4)}
    assert len(blocks) == 1 and 0 not in blocks, f"the kernel did not share one xattr block: {blocks}"
    ours = _check(image, tmp_path)
    # x/f0 (deleted) and x/f1 (rewritten) let go of the shared block; x/f2 and x/f3 are one inode now.
    assert ours.xattr_blocks[ours.inodes[b"/x/f3"]] in blocks


# mke2fs options of lowers this writer keeps consistent, the fixture "rules" layers applied on each.
KEPT = {
    "ext4-no-64bit": ["-t", "ext4", "-O", "^metadata_csum,^64bit"],
    "ext4-no-flex_bg": ["-t", "ext4", "-O", "^metadata_csum,^flex_bg"],
    "ext3": ["-t", "ext3"],
    "ext2": ["-t", "ext2"],
}
# Lowers it cannot keep consistent: refused with an error that says why.
REFUSED = {
    "metadata_csum": (["-t", "ext4", "-O", "metadata_csum"], "metadata_csum"),
    "bigalloc": (["-t", "ext4", "-O", "^metadata_csum,bigalloc"], "0x200"),
    "inline_data": (["-t", "ext4", "-O", "^metadata_csum,inline_data"], "0x8000"),
    "1k-blocks": (["-t", "ext4", "-b", "1024", "-O", "^metadata_csum"], "1024"),
}


@pytest.mark.parametrize("kind", KEPT)
def test_the_fixture_layers_on_lowers_of_other_feature_sets(
    kind: str, tmp_path: Path, tmp_path_factory: pytest.TempPathFactory
) -> None:
    """32-byte group descriptors, no flex_bg, ext3 (journal, block-mapped files), ext2: after every
    layer fsck-clean with the model's tree. New inodes are extent-mapped, so a lower without the
    extent feature must get it (or be refused): an inode with EXTENTS_FL on such a file system is
    corrupt to e2fsck and to the kernel."""
    image = _mke2fs(tmp_path / "lower.img", KEPT[kind])
    model = Model.from_tree(read_tree(image, tmp_path).tree)
    blobs = [_pack(image, tmp_path / "lower.blob")]
    for number, tar in enumerate(fixture_layers(tmp_path_factory)["rules"], start=1):
        out = tmp_path / f"layer{number}.blob"
        with out.open("w+b") as sink, tar.open("rb") as layer:
            build_layer(sink, layer, lowers=list(blobs), layer_name=tar.name, options=PLAIN)
        blobs.append(out)
        model.apply(tar)
        raw = write_raw_image(blobs, tmp_path / "disk.raw")
        assert_fsck_clean(raw)
        diff = differences(model.tree(), read_tree(raw, tmp_path).tree)
        assert not diff, f"after {tar.name}:\n" + "\n".join(diff)


@pytest.mark.parametrize("kind", REFUSED)
def test_a_lower_this_writer_cannot_keep_consistent_is_refused_clearly(kind: str, tmp_path: Path) -> None:
    options, reason = REFUSED[kind]
    lower = _pack(_mke2fs(tmp_path / "lower.img", options), tmp_path / "lower.blob")
    writer = LayerWriter(tmp_path / "l.tar")
    writer.add("f", data=b"f\n")
    tar = writer.close()
    with (
        pytest.raises((LayerError, Ext4Error)) as caught,
        (tmp_path / "out.blob").open("w+b") as sink,
        tar.open("rb") as layer,
    ):
        build_layer(sink, layer, lowers=[lower], layer_name="sha256:lower", options=PLAIN)
    assert reason in str(caught.value)
