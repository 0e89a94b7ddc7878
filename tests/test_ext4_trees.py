"""The ext4 writer layer by layer: after every layer of every fixture image, the merged disk is fsck-clean
and holds exactly the tree the OCI layer rules give (tests/ocimodel.py), read back by the real debugfs
and, where this machine can loop-mount, by the kernel.

Each image is built twice: on a fresh file system of our mkfs (first layer without lowers) and on the
real overlaybd baselayer (../shared/data/baselayer/ext4_64, mke2fs-made, journal and uninit_bg).
Layers are stacked as a user stacks them: every layer's blob is built on all the blobs below it.
"""

from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from fixtures.make_layers import IMAGES
from obdlayout.convert.native import build_layer
from obdlayout.formats.commit import BlobOptions

from .ext4tree import INODE_FLAG_EXTENTS, Ext4Tree, MountUnavailable, mounted, read_mounted, read_tree
from .ocimodel import ROOT, Entry, Model, differences
from .shared import BASELAYER, fixture_layers, fsck, memo, shared, write_raw_image

# The images with every rule; the ones that isolate a single debatable rule live in test_ext4_semantics.
TREE_IMAGES = ("rules", "big")
BASES = ("mkfs", "baselayer")
MKFS_VSIZE = 4 << 30  # 32 groups, two flex groups: room for the 200 MB file and 20 000 inodes
PLAIN = BlobOptions(compression=None, tar=False)

CASES = [
    pytest.param(image, number, base, id=f"{image}-layer{number}-{base}")
    for image in TREE_IMAGES
    for base in BASES
    for number in range(1, len(IMAGES[image]) + 1)
]


@dataclass
class Built:
    """One image after one layer: its raw disk, e2fsck's verdict, the tree debugfs reads, the model's."""

    raw: Path
    fsck_code: int
    fsck_report: str
    model: Model
    _tree: Ext4Tree | None = field(default=None, repr=False)

    @property
    def tree(self) -> Ext4Tree:
        if self._tree is None:
            self._tree = read_tree(self.raw, self.raw.parent)
        return self._tree


def _base_blobs(base: str) -> list[Path]:
    return [shared("baselayer", "ext4_64")] if base == "baselayer" else []


def _base_model(base: str, tmp_path_factory: pytest.TempPathFactory) -> Model:
    """An empty file system as our mkfs makes it, or with the attributes of the baselayer's root."""
    if base == "mkfs":
        return Model()

    def root_of_baselayer() -> Entry:
        where = tmp_path_factory.mktemp("baselayer")
        raw = write_raw_image([BASELAYER], where / "baselayer.raw")
        root = read_tree(raw, where).tree.entries[ROOT]
        raw.unlink()
        return root

    return Model.from_root_entry(memo("baselayer-root", root_of_baselayer))


def _blobs(image: str, base: str, tmp_path_factory: pytest.TempPathFactory) -> list[Path]:
    """Every layer's blob of `image` on `base`, bottom first (built once per session)."""

    def build() -> list[Path]:
        tars = fixture_layers(tmp_path_factory)[image]
        where = tmp_path_factory.mktemp(f"{image}-{base}")
        blobs = _base_blobs(base)
        for number, tar in enumerate(tars, start=1):
            out = where / f"layer{number}.blob"
            with out.open("w+b") as sink, tar.open("rb") as layer:
                build_layer(
                    sink, layer, lowers=list(blobs), vsize=MKFS_VSIZE, layer_name=f"{image}/{tar.name}", options=PLAIN
                )
            blobs.append(out)
        return blobs[len(_base_blobs(base)) :]

    return memo(("blobs", image, base), build)


def built(image: str, number: int, base: str, tmp_path_factory: pytest.TempPathFactory) -> Built:
    def make() -> Built:
        blobs = _base_blobs(base) + _blobs(image, base, tmp_path_factory)[:number]
        where = tmp_path_factory.mktemp(f"{image}-{base}-after-{number}")
        raw = write_raw_image(blobs, where / "disk.raw")
        _RAWS.append(raw)
        check = fsck(raw)
        model = _base_model(base, tmp_path_factory)
        for tar in fixture_layers(tmp_path_factory)[image][:number]:
            model.apply(tar)
        return Built(raw, check.returncode, check.stdout + check.stderr, model)

    return memo(("built", image, number, base), make)


_RAWS: list[Path] = []


@pytest.fixture(scope="session", autouse=True)
def _drop_raw_images() -> Iterator[None]:
    """The raw disks are sparse but hold real data (the 200 MB file): gone at the end of the session."""
    yield
    for raw in _RAWS:
        raw.unlink(missing_ok=True)


def _report(lines: list[str]) -> str:
    return "\n".join(lines)


@pytest.mark.parametrize(("image", "number", "base"), CASES)
def test_every_layer_leaves_an_fsck_clean_disk(
    image: str, number: int, base: str, tmp_path_factory: pytest.TempPathFactory
) -> None:
    state = built(image, number, base, tmp_path_factory)
    assert state.fsck_code == 0, f"e2fsck -fn exit {state.fsck_code}:\n{state.fsck_report[-6000:]}"


@pytest.mark.parametrize(("image", "number", "base"), CASES)
def test_debugfs_tree_equals_the_model(
    image: str, number: int, base: str, tmp_path_factory: pytest.TempPathFactory
) -> None:
    """Every path, type, permission bits, owner, size, contents, symlink target, device numbers, xattr,
    mtime to the nanosecond and link count, and which names share an inode."""
    state = built(image, number, base, tmp_path_factory)
    diff = differences(state.model.tree(), state.tree.tree)
    assert not diff, _report(diff)


@pytest.mark.parametrize(("image", "number", "base"), CASES)
def test_kernel_sees_the_model_tree(
    image: str, number: int, base: str, tmp_path_factory: pytest.TempPathFactory
) -> None:
    """The same through a read-only loop mount: the kernel's lstat, readlink, getxattr and read."""
    state = built(image, number, base, tmp_path_factory)
    if state.fsck_code != 0:
        pytest.skip("the disk is not fsck-clean: not mounting it")
    try:
        with mounted(state.raw, state.raw.parent) as point:
            seen, _ = read_mounted(point)
    except MountUnavailable as exc:
        pytest.skip(f"no loop mount here: {exc}")
    diff = differences(state.model.tree(), seen)
    assert not diff, _report(diff)


@pytest.mark.parametrize(("image", "number", "base"), CASES)
def test_layers_make_extent_mapped_inodes_with_equal_times(
    image: str, number: int, base: str, tmp_path_factory: pytest.TempPathFactory
) -> None:
    """Regular files, directories and slow symlinks are extent-mapped (TurboOCI needs fiemap, §6.2);
    atime = ctime = mtime, all from the tar (§6.4 step 5); directory sizes are whole blocks."""
    state = built(image, number, base, tmp_path_factory)
    tree = state.tree
    faults = []
    for path, entry in tree.tree.entries.items():
        ino = tree.inodes[path]
        fast_symlink = entry.kind == "symlink" and entry.size < 60
        if entry.kind in ("file", "dir", "symlink") and not fast_symlink and not tree.flags[ino] & INODE_FLAG_EXTENTS:
            faults.append(f"{path!r} (inode {ino}) is not extent-mapped: flags {tree.flags[ino]:#x}")
        if path != ROOT:
            atime, ctime, mtime = tree.times[ino]
            if not atime == ctime == mtime:
                faults.append(f"{path!r}: atime {atime}, ctime {ctime}, mtime {mtime} differ")
        if entry.kind == "dir" and (tree.sizes[ino] <= 0 or tree.sizes[ino] % 4096):
            faults.append(f"{path!r}: directory size {tree.sizes[ino]}")
    assert not faults, _report(faults)


def _region_blocks(regions: list[tuple[int, int]]) -> set[int]:
    return {block for offset, length in regions for block in range(offset // 4096, -(-(offset + length) // 4096))}


@pytest.mark.parametrize(("image", "number", "base"), [c for c in CASES if c.values[0] == "big"])
def test_sparse_files_keep_their_holes(
    image: str, number: int, base: str, tmp_path_factory: pytest.TempPathFactory
) -> None:
    """GNU sparse files (old 'S' headers, PAX 1.0): exactly the blocks their data touches are mapped."""
    state = built(image, number, base, tmp_path_factory)
    tree = state.tree
    checked = 0
    for path, node in state.model.walk():
        if node.regions is None:
            continue
        ino = tree.inodes[path]
        mapped = {logical + i for logical, _, length in tree.extents[ino] for i in range(length)}
        want = _region_blocks(node.regions)
        assert mapped == want, (
            f"{path!r}: mapped blocks {sorted(mapped - want)[:10]} extra, {sorted(want - mapped)[:10]} missing"
        )
        assert tree.blocks[ino] * 512 < tree.sizes[ino], f"{path!r} occupies as much as its size"
        checked += 1
    assert checked >= 2
