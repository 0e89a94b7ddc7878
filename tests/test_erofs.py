"""TurboOCI with EROFS (`--fstype erofs`): every fixture image converted, checked by Debian's fsck.erofs at
each layer of the stack, mounted by the kernel, and compared with the independent model (ocimodel.py);
what a layer on lower EROFS layers must patch in place; determinism; the read side; refused options."""

import dataclasses
import struct
import subprocess
import tarfile
from pathlib import Path

import pytest

from fixtures.make_layers import MTIME, LayerWriter
from obdlayout.erofs.errors import CorruptErofs
from obdlayout.erofs.layout import BLOCK_SIZE, ROOT_NID, SLOT_SIZE, SUPERBLOCK, SUPERBLOCK_OFFSET
from obdlayout.erofs.reader import ErofsImage
from obdlayout.formats.blob import write_raw
from obdlayout.formats.turbo_archive import TurboArchive
from obdlayout.inspect.image import open_layers
from obdlayout.oci.layout import Layout

from .ext4tree import MountUnavailable, mounted, read_mounted
from .oci_layouts import LayoutBuilder
from .ocimodel import Model, Tree, differences
from .shared import assert_erofs_clean, fixture_layers, memo, require_tool
from .test_inspect_support import run

Factory = pytest.TempPathFactory
ERO = ("--turbo-oci", "t", "--fstype", "erofs", "--vsize", "1")


def _source(root: Path, tars: list[Path], compression: str) -> Path:
    builder = LayoutBuilder(root)
    builder.tag("src", builder.image([builder.layer_from_tar(tar.read_bytes(), compression) for tar in tars]))
    return builder.save()


def _convert(source: Path, out: Path, *options: str) -> None:
    result = run("convert", str(source), str(out), "-q", "-j", "1", "-i", "src", *options)
    assert result.exit_code == 0, result.output


def _converted(image: str, factory: Factory) -> tuple[Path, Path]:
    def make() -> tuple[Path, Path]:
        where = factory.mktemp(f"erofs-{image}")
        # The 200 MB image as plain tar layers (TurboOCI maps them as they are), the others gzip-compressed.
        source = _source(where / "src", fixture_layers(factory)[image], "none" if image == "big" else "gzip")
        _convert(source, where / "out", *ERO)
        return source, where / "out"

    return memo(("erofs", image), make)


def _disk(layout: Path, raw: Path, layers: int | None = None) -> Path:
    """The raw disk of the converted image's bottom `layers` layers (all by default)."""
    opened = Layout(layout)
    manifest = opened.read_manifest(opened.resolve_tag("t"))
    with open_layers(opened, list(manifest.layers)[:layers]) as disk, raw.open("w+b") as out:
        write_raw(disk, out)
    return raw


def _kernel_tree(raw: Path, tmp_path: Path) -> Tree:
    try:
        with mounted(raw, tmp_path, fstype="erofs") as point:
            return read_mounted(point)[0]
    except MountUnavailable as exc:
        pytest.skip(f"no EROFS loop mount here: {exc}")


def _model(tars: list[Path]) -> Tree:
    model = Model()
    for tar in tars:
        model.apply(tar)
    tree = model.tree()
    # The model starts from mkfs's ext4 root, whose lost+found (left out of its tree) counts as a link.
    root = tree.entries[b"/"]
    tree.entries[b"/"] = dataclasses.replace(root, links=root.links - 1)
    return tree


@pytest.mark.parametrize("image", ["rules", "opaque-readd-dir", "whiteout-missing-parent", "big"])
def test_every_stack_is_fsck_clean_and_the_image_mounts_with_the_models_tree(
    image: str, tmp_path: Path, tmp_path_factory: Factory
) -> None:
    require_tool("fsck.erofs")
    source, out = _converted(image, tmp_path_factory)
    tars = fixture_layers(tmp_path_factory)[image]
    for layers in range(1, len(tars)):
        assert_erofs_clean(_disk(out, tmp_path / f"lower{layers}.raw", layers))
        (tmp_path / f"lower{layers}.raw").unlink()
    raw = _disk(out, tmp_path / "disk.raw")
    assert_erofs_clean(raw)
    diff = differences(_model(tars), _kernel_tree(raw, tmp_path))
    assert not diff, "\n".join(diff)
    verified = run("verify", f"{out}:t", "--against", f"{source}:src")
    assert verified.exit_code == 0, verified.output
    assert "fsck.erofs clean" in verified.stdout and "tree equal to the source's" in verified.stdout


def test_what_an_erofs_image_holds(tmp_path_factory: Factory) -> None:
    """Per layer the archive names its meta erofs.fs.meta (the snapshotter picks the file system by it), the
    meta is a warp layer whose disk starts with an EROFS superblock at byte 1024 and the root at nid 36."""
    _, out = _converted("rules", tmp_path_factory)
    layout = Layout(out)
    manifest = layout.read_manifest(layout.resolve_tag("t"))
    for layer in manifest.layers:
        archive = TurboArchive(layer.digest, layout.blob_path(layer.digest).read_bytes())
        assert archive.members == [".turbo.ociv1", "erofs.fs.meta", "gzip.meta"]
    with open_layers(layout, list(manifest.layers)) as disk:
        head = disk.read(SUPERBLOCK_OFFSET, SUPERBLOCK.size)
        magic, _, compat, blkszbits, _, root_nid = struct.unpack_from("<IIIBBH", head)
        assert (magic, compat, blkszbits, root_nid) == (0xE0F5E1E2, 0, 12, ROOT_NID)
        blocks = struct.unpack_from("<I", head, 36)[0]
        assert disk.virtual_size >= blocks * BLOCK_SIZE
    listed = run("inspect", f"{out}:t")
    assert listed.exit_code == 0 and "file system:   erofs" in listed.stdout


def test_converting_twice_gives_the_same_bytes(tmp_path: Path, tmp_path_factory: Factory) -> None:
    source, out = _converted("rules", tmp_path_factory)
    again = tmp_path / "again"
    _convert(source, again, *ERO)
    assert sorted(p.name for p in (again / "blobs" / "sha256").iterdir()) == sorted(
        p.name for p in (out / "blobs" / "sha256").iterdir()
    )


# -- what later layers change in the layers below ---------------------------------------------------


Entries = list[tuple[str, bytes, dict[str, object]]]


def _layers(tmp_path: Path, *fills: Entries) -> list[Path]:
    tars = []
    for number, entries in enumerate(fills):
        writer = LayerWriter(tmp_path / f"l{number}.tar")
        for path, kind, options in entries:
            writer.add(path, kind, **options)  # type: ignore[arg-type]
        tars.append(writer.close())
    return tars


def _check_stack(tars: list[Path], tmp_path: Path) -> Tree:
    """Convert, fsck every stack, mount the whole, compare with the model; the kernel's tree."""
    require_tool("fsck.erofs")
    source = _source(tmp_path / "src", tars, "gzip")
    out = tmp_path / "out"
    _convert(source, out, *ERO)
    for layers in range(1, len(tars) + 1):
        assert_erofs_clean(_disk(out, tmp_path / "disk.raw", layers))
    seen = _kernel_tree(tmp_path / "disk.raw", tmp_path)
    diff = differences(_model(tars), seen)
    assert not diff, "\n".join(diff)
    return seen


REG, DIR, SYM = tarfile.REGTYPE, tarfile.DIRTYPE, tarfile.SYMTYPE


def test_hard_links_to_lower_files_and_whiteouts_of_their_names_keep_link_counts(tmp_path: Path) -> None:
    tars = _layers(
        tmp_path,
        [("a/", DIR, {}), ("a/f", REG, {"data": b"shared\n"}), ("a/g", tarfile.LNKTYPE, {"linkname": "a/f"})],
        [("b/", DIR, {}), ("b/h", tarfile.LNKTYPE, {"linkname": "a/f"}), ("a/.wh.g", REG, {})],
        [("c", tarfile.LNKTYPE, {"linkname": "b/h"}), (".wh.b", REG, {})],
    )
    seen = _check_stack(tars, tmp_path)
    assert seen.entries[b"/a/f"].links == 2 and seen.groups == {frozenset({b"/a/f", b"/c"})}


def test_a_change_deep_down_renews_every_directory_above_and_patches_kept_subdirectories(tmp_path: Path) -> None:
    """d1/d2/d3 gets a file: d1, d2, d3 and the root are rewritten; the kept siblings (d1/k, d1/d2/k) still
    name their renewed parents in "..", which fsck.erofs checks. The lower d1's own metadata stays."""
    many: Entries = [(f"d1/k/{i:04d}-{'n' * 60}", REG, {"data": b""}) for i in range(200)]  # a multi-block directory
    tars = _layers(
        tmp_path,
        [
            ("d1/", DIR, {"mode": 0o750, "uid": 70000}),
            *many,
            ("d1/d2/k/x", REG, {"data": b"x"}),
            ("d1/d2/d3/", DIR, {}),
        ],
        [("d1/d2/d3/new", REG, {"data": b"new\n"}), ("top", SYM, {"linkname": "d1/d2/d3/new"})],
    )
    seen = _check_stack(tars, tmp_path)
    assert seen.entries[b"/d1"].mode == 0o750 and seen.entries[b"/d1"].uid == 70000


def test_opaque_directories_and_replacements_across_layers(tmp_path: Path) -> None:
    tars = _layers(
        tmp_path,
        [("o/", DIR, {}), ("o/old", REG, {"data": b"old"}), ("o/sub/", DIR, {}), ("o/sub/deep", REG, {"data": b"d"})],
        [("o/.wh..wh..opq", REG, {}), ("o/sub/", DIR, {"mode": 0o700}), ("o/kept", REG, {"data": b"k"})],
        [("o/sub", REG, {"data": b"now a file"}), ("o/kept", SYM, {"linkname": "sub"}), ("o/", DIR, {"mtime": MTIME})],
    )
    _check_stack(tars, tmp_path)


def test_a_root_that_gains_entries_in_every_layer_stays_in_its_slot(tmp_path: Path) -> None:
    """The root's body grows past what fits beside its slot in block 4, so it moves to its own blocks."""
    fills: list[Entries] = [
        [(f"top{layer}-{i:03d}-{'r' * 40}", REG, {"data": b""}) for i in range(30)] for layer in range(3)
    ]
    tars = _layers(tmp_path, *fills)
    _check_stack(tars, tmp_path)


def test_xattrs_erofs_cannot_hold_are_left_out_with_a_warning_naming_the_entry(tmp_path: Path) -> None:
    tars = _layers(
        tmp_path,
        [
            ("odd", REG, {"data": b"x", "xattrs": {"gnu.weird": b"1", "user.fine": b"2"}}),
            ("opq/", DIR, {"xattrs": {"trusted.overlay.opaque": b"y"}}),
        ],
    )
    source = _source(tmp_path / "src", tars, "gzip")
    result = run("convert", str(source), str(tmp_path / "out"), "-i", "src", *ERO)
    assert result.exit_code == 0, result.output
    assert "'odd'" in result.output and "gnu.weird" in result.output
    assert "'opq/'" in result.output and "trusted.overlay.opaque" in result.output
    listed = run("ls", "-l", f"{tmp_path / 'out'}:t", "/")
    assert listed.exit_code == 0 and "odd" in listed.stdout


# -- options ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("options", "said"),
    [
        (["--fstype", "erofs"], "--turbo-oci"),
        (["--fstype", "erofs", "--turbo-oci", "t", "--no-mkfs"], "--no-mkfs"),
        (["--fstype", "erofs", "--turbo-oci", "t", "--engine", "overlaybd-tools"], "ext4 TurboOCI images only"),
    ],
)
def test_options_erofs_cannot_take_are_refused(
    options: list[str], said: str, tmp_path: Path, tmp_path_factory: Factory
) -> None:
    source, _ = _converted("whiteout-missing-parent", tmp_path_factory)
    result = run("convert", str(source), str(tmp_path / "out"), "-i", "src", *options)
    assert result.exit_code != 0 and said in result.output
    assert not (tmp_path / "out").exists()


# -- the reader on damaged images ------------------------------------------------------------------


def test_a_damaged_superblock_or_directory_is_named(tmp_path: Path, tmp_path_factory: Factory) -> None:
    _, out = _converted("whiteout-missing-parent", tmp_path_factory)
    image = bytearray(_disk(out, tmp_path / "disk.raw").read_bytes())
    reader = ErofsImage(lambda offset, length: bytes(image[offset : offset + length]), len(image))
    assert b"present" in reader.entries(reader.root)
    root_tail = ROOT_NID * SLOT_SIZE + 64 + 16384
    broken = bytearray(image)
    struct.pack_into("<H", broken, root_tail + 8, 0)  # the first dirent's name offset
    damaged = ErofsImage(lambda offset, length: bytes(broken[offset : offset + length]), len(broken))
    with pytest.raises(CorruptErofs, match="first name offset"):
        damaged.entries(damaged.root)
    broken = bytearray(image)
    struct.pack_into("<H", broken, SUPERBLOCK_OFFSET + 14, 99)  # the root nid, at no inode
    with pytest.raises(CorruptErofs, match=r"mode|not a directory"):
        ErofsImage(lambda offset, length: bytes(broken[offset : offset + length]), len(broken))


def test_fsck_erofs_is_a_real_judge(tmp_path: Path, tmp_path_factory: Factory) -> None:
    """The check the tests rely on finds a directory's entries out of order."""
    fsck = require_tool("fsck.erofs")
    _, out = _converted("rules", tmp_path_factory)
    raw = _disk(out, tmp_path / "disk.raw")
    assert subprocess.run([fsck, str(raw)], capture_output=True).returncode == 0
    image = bytearray(raw.read_bytes())
    second_name = ROOT_NID * SLOT_SIZE + 64 + 16384 + 12 + 8  # the root's second dirent's name offset
    struct.pack_into("<H", image, second_name, struct.unpack_from("<H", image, second_name)[0] + 1)
    raw.write_bytes(image)
    done = subprocess.run([fsck, str(raw)], capture_output=True, text=True)
    assert done.returncode != 0 and "nid 36" in done.stderr + done.stdout
