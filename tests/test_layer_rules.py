"""The OCI layer rules (obdlayout/layers/) against the independent model (tests/ocimodel.py).

The rules drive two file systems: the in-memory tree behind `verify --against` (inspect/source.py) and our
ext4 writer. For random sequences of layers, drawn from a few names so that entries collide, shadow,
delete and link to each other across layers, all three must agree: either each refuses the layers, or
each gives the same tree (kinds, modes, owners, times, contents, link targets, devices, xattrs and
hard-link groups). The ext4 image is read back by our reader and judged by the real e2fsck.
"""

import dataclasses
import io
import stat
import tarfile
from collections import Counter
from contextlib import ExitStack
from pathlib import Path
from tempfile import TemporaryDirectory

import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from obdlayout.convert.native import build_layer
from obdlayout.convert.turbo_erofs import build_erofs_layer
from obdlayout.erofs.reader import ErofsImage
from obdlayout.ext4.reader import open_image
from obdlayout.formats.blob import StackLayer, open_layers, open_stack, write_raw
from obdlayout.formats.commit import BlobOptions
from obdlayout.inspect.fstree import image_tree
from obdlayout.inspect.source import SourceTree
from obdlayout.inspect.tree import Node, link_groups
from obdlayout.layers.errors import LayerError

from .ocimodel import Entry, Model, ModelError, Tree, canonical_xattr, differences
from .shared import assert_erofs_clean, assert_fsck_clean, fixture_layers, write_raw_image

VSIZE = 64 << 20
PLAIN = BlobOptions(compression=None, tar=False)
KIND_NAMES = {
    stat.S_IFREG: "file",
    stat.S_IFDIR: "dir",
    stat.S_IFLNK: "symlink",
    stat.S_IFCHR: "chr",
    stat.S_IFBLK: "blk",
    stat.S_IFIFO: "fifo",
}
REFUSED = "refused"
LOST_FOUND = b"lost+found"

# -- random layers ----------------------------------------------------------------------------------

NAMES = ["a", "b", "c"]
paths = st.lists(st.sampled_from(NAMES), min_size=1, max_size=3).map("/".join)
link_targets = st.sampled_from(["a", "b", "../a", "/b", "a/c", "/a/b/c", ".", "b/../c", "missing", "c"])
owners = st.sampled_from([0, 1000, 65534, 100_000])
modes = st.sampled_from([0o755, 0o644, 0o700, 0o4755, 0o1777])
times = st.integers(0, 2_000_000_000)
xattr_sets = st.sampled_from([{}, {}, {"user.k": "v"}, {"user.k": "w", "trusted.t": "1"}])


@st.composite
def entries(draw: st.DrawFn) -> tarfile.TarInfo | tuple[tarfile.TarInfo, bytes]:
    kind = draw(st.sampled_from(["dir", "dir", "file", "file", "symlink", "hardlink", "whiteout", "opaque", "node"]))
    path = draw(paths)
    if kind == "whiteout":
        directory, _, name = path.rpartition("/")
        return tarfile.TarInfo(f"{directory}/.wh.{name}" if directory else f".wh.{name}")
    if kind == "opaque":
        return tarfile.TarInfo(f"{path}/.wh..wh..opq")
    info = tarfile.TarInfo(path)
    info.mode = draw(modes)
    info.uid, info.gid = draw(owners), draw(owners)
    info.mtime = draw(times)
    info.pax_headers = {f"SCHILY.xattr.{k}": v for k, v in draw(xattr_sets).items()}
    if kind == "dir":
        info.type = tarfile.DIRTYPE
    elif kind == "symlink":
        info.type, info.linkname = tarfile.SYMTYPE, draw(link_targets)
    elif kind == "hardlink":
        info.type, info.linkname = tarfile.LNKTYPE, draw(paths)
    elif kind == "node":
        info.type = draw(st.sampled_from([tarfile.FIFOTYPE, tarfile.CHRTYPE, tarfile.BLKTYPE]))
        info.devmajor, info.devminor = draw(st.integers(0, 300)), draw(st.integers(0, 70_000))
    else:
        data = draw(st.sampled_from([b"", b"one", b"two\n" * 1500]))
        info.size = len(data)
        return info, data
    return info


layers = st.lists(st.lists(entries(), min_size=1, max_size=14), min_size=1, max_size=4)


def _write_tar(path: Path, members: list[tarfile.TarInfo | tuple[tarfile.TarInfo, bytes]]) -> Path:
    with tarfile.open(path, "w", format=tarfile.PAX_FORMAT) as archive:
        for member in members:
            info, data = member if isinstance(member, tuple) else (member, None)
            archive.addfile(info, io.BytesIO(data) if data is not None else None)
    return path


# -- the three outcomes -------------------------------------------------------------------------------


def _without_dir_links(tree: Tree) -> Tree:
    """A directory's link count is 2 + its subdirectories in every one of them; our memory tree has no
    lost+found below the root, so it is left out of the comparison (e2fsck checks it on the image)."""
    entries = {
        path: dataclasses.replace(entry, links=0) if entry.kind == "dir" else entry
        for path, entry in tree.entries.items()
    }
    return Tree(entries, tree.groups)


def as_model_tree(tree: dict[bytes, Node]) -> Tree:
    """An inspect.tree.Tree (read from an image, or built in memory) in the model's form, lost+found left out."""
    kept = {path: node for path, node in tree.items() if path != LOST_FOUND and not path.startswith(LOST_FOUND + b"/")}
    groups = link_groups(kept)
    subdirs = Counter(path.rpartition(b"/")[0] for path, node in kept.items() if path and node.kind == stat.S_IFDIR)
    entries: dict[bytes, Entry] = {}
    for path, node in kept.items():
        kind = KIND_NAMES[node.kind]
        target = node.target if kind == "symlink" else None
        entries[b"/" + path] = Entry(
            kind=kind,
            mode=node.mode,
            uid=node.uid,
            gid=node.gid,
            mtime=node.mtime,
            links=2 + subdirs[path] if kind == "dir" else len(groups.get(path, (path,))),
            size=node.size if kind == "file" else len(target or b""),
            sha256=node.sha256 if kind == "file" else None,
            target=target,
            rdev=node.rdev if kind in ("chr", "blk") else None,
            xattrs=tuple(sorted((name, canonical_xattr(name, value)) for name, value in node.xattrs.items())),
        )
    return Tree(entries, {frozenset(b"/" + p for p in group) for group in groups.values()})


def model_outcome(tars: list[Path]) -> Tree | str:
    model = Model()
    try:
        for tar in tars:
            model.apply(tar)
    except ModelError:
        return REFUSED
    return _without_dir_links(model.tree())


def memory_outcome(tars: list[Path]) -> Tree | str:
    tree = SourceTree()
    try:
        for tar in tars:
            with tar.open("rb") as stream:
                tree.apply(stream, tar.name)
    except LayerError:
        return REFUSED
    return _without_dir_links(as_model_tree(tree.tree()))


def ext4_outcome(tars: list[Path], work: Path) -> Tree | str:
    blobs: list[Path] = []
    try:
        for number, tar in enumerate(tars):
            blob = work / f"layer{number}.blob"
            with blob.open("w+b") as sink, tar.open("rb") as stream:
                build_layer(sink, stream, lowers=list(blobs), vsize=VSIZE, layer_name=tar.name, options=PLAIN)
            blobs.append(blob)
    except LayerError:
        return REFUSED
    with ExitStack() as stack:
        disk = open_stack(blobs, stack)
        tree = image_tree(open_image(disk.read, disk.virtual_size))
    assert_fsck_clean(write_raw_image(blobs, work / "disk.raw"))
    return _without_dir_links(as_model_tree(tree))


def erofs_outcome(tars: list[Path], work: Path) -> Tree | str:
    """The layers as TurboOCI EROFS layers over the tars themselves, read back by our reader; fsck.erofs judges
    every stack."""
    layers: list[StackLayer] = []
    try:
        for number, tar in enumerate(tars):
            blob = work / f"erofs{number}.blob"
            with blob.open("w+b") as sink, tar.open("rb") as stream:
                build_erofs_layer(sink, stream, lowers=layers, vsize=VSIZE, layer_name=tar.name, options=PLAIN)
            layers.append(StackLayer(blob, tar))
            with ExitStack() as stack, (work / "erofs.raw").open("w+b") as out:
                write_raw(open_layers(layers, stack), out)
            assert_erofs_clean(work / "erofs.raw")
    except LayerError:
        return REFUSED
    with ExitStack() as stack:
        disk = open_layers(layers, stack)
        tree = image_tree(ErofsImage(disk.read, disk.virtual_size))
    return _without_dir_links(as_model_tree(tree))


def _agree(model: Tree | str, other: Tree | str, what: str) -> None:
    if isinstance(model, str) or isinstance(other, str):
        assert model == other, f"the model says {model if isinstance(model, str) else 'a tree'}, {what} says {other}"
        return
    diff = differences(model, other)
    assert not diff, f"{what} differs from the model:\n" + "\n".join(diff)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(layer_entries=layers)
def test_random_layers_give_the_models_tree_in_memory_in_ext4_and_in_erofs(
    layer_entries: list[list[tarfile.TarInfo | tuple[tarfile.TarInfo, bytes]]],
) -> None:
    with TemporaryDirectory() as tmp:
        work = Path(tmp)
        tars = [_write_tar(work / f"layer{n}.tar", members) for n, members in enumerate(layer_entries)]
        expected = model_outcome(tars)
        event(expected if isinstance(expected, str) else f"{len(expected.entries)} paths")
        _agree(expected, memory_outcome(tars), "the rules on the memory tree")
        _agree(expected, ext4_outcome(tars, work), "the rules on ext4")
        _agree(expected, erofs_outcome(tars, work), "the rules on EROFS")


# -- the cases that once told the two apart -----------------------------------------------------------


def test_fixture_images_agree_in_memory_with_the_model(tmp_path_factory: pytest.TempPathFactory) -> None:
    """Every fixture image: whiteouts below missing directories (the parents are made), opaque directories
    whose layer re-adds a subdirectory (the lower contents below it are hidden), and the all-rules image."""
    for image, tars in fixture_layers(tmp_path_factory).items():
        if image == "big":
            continue  # 200 MB of contents: the ext4 tests cover it; here only the rules matter
        _agree(model_outcome(tars), memory_outcome(tars), f"the rules on the memory tree, image {image!r}")
