"""The ext4 writer against what the real overlaybd tools made from the same layer tars (../shared/data).

`img.after-layerN.fsinfo.txt` lists, directory by directory, the image the real tools built after each
layer (`debugfs ls -l`). Our layers, on the real tools' lower layer or on our own mkfs, must give the
same tree: names, types, modes, owners, sizes and link counts (inode numbers may differ, but which
names share an inode may not).
"""

import hashlib
import re
import stat
from dataclasses import dataclass
from pathlib import Path

import pytest

from obdlayout.convert.native import build_layer
from obdlayout.formats.commit import BlobOptions

from .ext4tree import Ext4Tree, read_tree
from .ocimodel import ROOT, Model, differences
from .shared import assert_fsck_clean, shared, write_raw_image

DEFAULT = BlobOptions()  # what a user gets: LZ4 ZFile in a tar wrapper
FILE_TYPES = {
    "dir": stat.S_IFDIR,
    "file": stat.S_IFREG,
    "symlink": stat.S_IFLNK,
    "chr": stat.S_IFCHR,
    "blk": stat.S_IFBLK,
    "fifo": stat.S_IFIFO,
}


@dataclass(frozen=True)
class Row:
    ino: int
    mode: int
    uid: int
    gid: int
    size: int
    name: str


def listing(fsinfo: str) -> dict[str, list[Row]]:
    """{directory: its `ls -l` rows without . and ..} from an fsinfo file."""
    sections = re.findall(r"^### ls -l (\S+)\n(.*?)(?=^###|\Z)", fsinfo, flags=re.M | re.S)
    out: dict[str, list[Row]] = {}
    for path, body in sections:
        rows = []
        for line in body.splitlines():
            m = re.match(r"\s*(\d+)\s+(\d+)\s+\((\d+)\)\s+(\d+)\s+(\d+)\s+(\d+)\s+\S+\s+\S+\s+(.*)$", line)
            if m and m.group(7) not in (".", ".."):
                ino, mode, _, uid, gid, size, name = m.groups()
                rows.append(Row(int(ino), int(mode, 8), int(uid), int(gid), int(size), name))
        out[path] = rows
    return out


def expected_links(sections: dict[str, list[Row]]) -> dict[str, int]:
    """Link counts the listing implies: directories it lists (2 + subdirectories), and every file
    (its names across the listed directories; the golden trees keep no file in an unlisted one)."""
    names_of: dict[int, int] = {}
    for rows in sections.values():
        for row in rows:
            names_of[row.ino] = names_of.get(row.ino, 0) + 1
    links: dict[str, int] = {}
    for directory, rows in sections.items():
        links[directory] = 2 + sum(1 for r in rows if stat.S_ISDIR(r.mode))
        for row in rows:
            if not stat.S_ISDIR(row.mode):
                links[_join(directory, row.name)] = names_of[row.ino]
    return links


def _join(directory: str, name: str) -> str:
    return directory.rstrip("/") + "/" + name


def compare_with_listing(ours: Ext4Tree, fsinfo: str) -> list[str]:
    sections = listing(fsinfo)
    assert len(sections) >= 6
    faults = []
    entries = ours.tree.entries
    for directory, rows in sections.items():
        want_names = {r.name for r in rows if _join(directory, r.name) != "/lost+found"}
        prefix = directory.rstrip("/").encode() + b"/"
        got_names = {
            p[len(prefix) :].decode()
            for p in entries
            if p.startswith(prefix) and p[len(prefix) :] and b"/" not in p[len(prefix) :]
        }
        if want_names != got_names:
            faults.append(f"{directory}: names {sorted(want_names)} expected, {sorted(got_names)} found")
        for row in rows:
            path = _join(directory, row.name)
            entry = entries.get(path.encode())
            if entry is None:
                continue  # lost+found, or reported above
            ino = ours.inodes[path.encode()]
            size = ours.sizes[ino]
            got = (FILE_TYPES[entry.kind], entry.mode, entry.uid, entry.gid, size)
            want = (stat.S_IFMT(row.mode), stat.S_IMODE(row.mode), row.uid, row.gid, row.size)
            if got != want:
                faults.append(f"{path}: (type, mode, uid, gid, size) {want} expected, {got} found")
    for path, links in expected_links(sections).items():
        entry = entries.get(path.encode())
        if entry is not None and entry.links != links:
            faults.append(f"{path}: {links} links expected, {entry.links} found")
    # Names that share an inode in the reference image share one in ours, and no others do.
    golden_groups: dict[int, set[str]] = {}
    for directory, rows in sections.items():
        for row in rows:
            golden_groups.setdefault(row.ino, set()).add(_join(directory, row.name))
    listed = {p for names in golden_groups.values() for p in names}
    want_groups = {frozenset(n) for n in golden_groups.values() if len(n) > 1}
    got_groups = {frozenset(p.decode() for p in g) for g in ours.tree.groups if {p.decode() for p in g} & listed}
    if want_groups != got_groups:
        faults.append(f"hard-link groups {want_groups} expected, {got_groups} found")
    digest = re.search(r"### cat /etc/hello.txt \| sha256\n([0-9a-f]{64})", fsinfo)
    assert digest is not None
    if entries[b"/etc/hello.txt"].sha256 != digest.group(1):
        faults.append("/etc/hello.txt has other contents than in the reference image")
    return faults


def _build(out: Path, tar: Path, lowers: list[Path], options: BlobOptions = DEFAULT) -> Path:
    with out.open("w+b") as sink, tar.open("rb") as layer:
        build_layer(sink, layer, lowers=lowers, layer_name=tar.name, options=options)
    return out


def _files_count(fsck_report: str) -> str:
    found = re.search(r"(\d+/\d+) files", fsck_report)
    assert found is not None, fsck_report
    return found.group(1)


def test_layer2_on_the_reference_layer0_gives_the_reference_tree(tmp_path: Path) -> None:
    golden = shared("overlaybd-golden")
    lower = golden / "mkfs/layer0/overlaybd.commit"
    blob = _build(tmp_path / "layer2.blob", golden / "layers/layer2.tar", [lower])
    raw = write_raw_image([lower, blob], tmp_path / "disk.raw")
    report = assert_fsck_clean(raw)
    fsinfo = (golden / "img.after-layer2.fsinfo.txt").read_text()
    assert _files_count(report) == _files_count(fsinfo)
    faults = compare_with_listing(read_tree(raw, tmp_path), fsinfo)
    assert not faults, "\n".join(faults)


def test_a_small_layer_gives_a_small_blob(tmp_path: Path) -> None:
    """Only the changed blocks are written: the reference tools' blob for this 10 KiB layer is 661 KB."""
    golden = shared("overlaybd-golden")
    lower = golden / "mkfs/layer0/overlaybd.commit"
    blob = _build(tmp_path / "layer2.blob", golden / "layers/layer2.tar", [lower])
    assert blob.stat().st_size < 64 * 1024
    assert (golden / "mkfs/layer1/overlaybd.commit").stat().st_size > 600_000


@pytest.mark.parametrize("layers", [1, 2])
def test_our_mkfs_stack_gives_the_reference_tree(tmp_path: Path, layers: int) -> None:
    """Both golden layers on our own mkfs (the default 64 GiB virtual size), as `convert` would do it."""
    golden = shared("overlaybd-golden")
    blobs: list[Path] = []
    for number in range(1, layers + 1):
        blobs.append(_build(tmp_path / f"layer{number}.blob", golden / f"layers/layer{number}.tar", list(blobs)))
    raw = write_raw_image(blobs, tmp_path / "disk.raw")
    report = assert_fsck_clean(raw)
    fsinfo = (golden / f"img.after-layer{layers}.fsinfo.txt").read_text()
    assert _files_count(report) == _files_count(fsinfo)
    ours = read_tree(raw, tmp_path)
    faults = compare_with_listing(ours, fsinfo)
    assert not faults, "\n".join(faults)
    model = Model()
    for number in range(1, layers + 1):
        model.apply(golden / f"layers/layer{number}.tar")
    diff = differences(model.tree(), ours.tree)
    assert not diff, "\n".join(diff)


def test_golden_layers_on_the_baselayer(tmp_path: Path) -> None:
    """layer1.tar then layer2.tar on the real baselayer (mke2fs-made: journal, uninit_bg, flex_bg 16)."""
    golden = shared("overlaybd-golden")
    base = shared("baselayer", "ext4_64")
    root = read_tree(write_raw_image([base], tmp_path / "base.raw"), tmp_path).tree.entries[ROOT]
    model = Model.from_root_entry(root)
    blobs = [base]
    for number in (1, 2):
        tar = golden / f"layers/layer{number}.tar"
        blobs.append(_build(tmp_path / f"layer{number}.blob", tar, list(blobs)))
        raw = write_raw_image(blobs, tmp_path / "disk.raw")
        assert_fsck_clean(raw)
        model.apply(tar)
        diff = differences(model.tree(), read_tree(raw, tmp_path).tree)
        assert not diff, f"after layer{number}.tar:\n" + "\n".join(diff)
    fsinfo = (golden / "img.after-layer2.fsinfo.txt").read_text()
    faults = compare_with_listing(read_tree(raw, tmp_path), fsinfo)
    assert not faults, "\n".join(faults)
    digest = hashlib.sha256((golden / "layers/layer2.tar").read_bytes()).hexdigest()
    assert digest.startswith("621ac30f")  # the diffID the data README names: the right tar was used
