"""The yardsticks of the ext4 tests, checked themselves: the fixture tars say what they claim (read back by
Python's tarfile and extracted by GNU tar, the format's origin), and the model (tests/ocimodel.py) reads
them as those do and applies the OCI layer rules as the spec words them."""

import hashlib
import io
import math
import os
import shutil
import subprocess
import sys
import tarfile
from dataclasses import replace
from pathlib import Path

import pytest

from fixtures.make_layers import IMAGES, LayerWriter

from .ext4tree import read_mounted
from .ocimodel import Entry, Model, ModelError, Tree, differences, pax_time, read_tar
from .shared import fixture_layers

TARS = [
    pytest.param(image, number, id=f"{image}-layer{number}")
    for image, fills in IMAGES.items()
    for number in range(1, len(fills) + 1)
]


def _tarfile_digest(tar: tarfile.TarFile, member: tarfile.TarInfo) -> str:
    digest = hashlib.sha256()
    data = tar.extractfile(member)
    assert data is not None
    while chunk := data.read(1 << 20):
        digest.update(chunk)
    return digest.hexdigest()


@pytest.mark.parametrize(("image", "number"), TARS)
def test_the_model_reads_tars_as_tarfile_does(
    image: str, number: int, tmp_path_factory: pytest.TempPathFactory
) -> None:
    path = fixture_layers(tmp_path_factory)[image][number - 1]
    ours = list(read_tar(path))
    with tarfile.open(path, encoding="utf-8", errors="surrogateescape") as tar:
        theirs = tar.getmembers()
        assert len(ours) == len(theirs)
        for mine, info in zip(ours, theirs, strict=True):
            name = info.name.encode("utf-8", "surrogateescape")
            assert mine.name.rstrip(b"/") == name, (mine.name, name)
            kind = {tarfile.AREGTYPE: b"0", tarfile.CONTTYPE: b"0", tarfile.GNUTYPE_SPARSE: b"0"}.get(
                info.type, info.type
            )
            assert {b"\0": b"0", b"7": b"0", b"S": b"0"}.get(mine.kind, mine.kind) == kind, name
            assert (mine.mode, mine.uid, mine.gid) == (info.mode, info.uid, info.gid), name
            assert mine.mtime[0] == math.floor(info.mtime), name
            assert mine.linkname == info.linkname.encode("utf-8", "surrogateescape"), name
            if info.ischr() or info.isblk():
                assert (mine.devmajor, mine.devminor) == (info.devmajor, info.devminor), name
            xattrs = {
                key[len("SCHILY.xattr.") :]: value.encode("utf-8", "surrogateescape")
                for key, value in info.pax_headers.items()
                if key.startswith("SCHILY.xattr.")
            }
            assert mine.xattrs == xattrs, name
            if info.isreg():
                assert mine.size == info.size, name
                assert mine.sha256 == _tarfile_digest(tar, info), name


def _without_directory_times(tree: Tree) -> Tree:
    return Tree(
        {p: replace(e, mtime=(0, 0)) if e.kind == "dir" else e for p, e in tree.entries.items() if p != b"/"},
        set(tree.groups),
    )


def _gnu_tar_or_skip() -> str:
    tar = shutil.which("tar")
    if tar is None or b"GNU tar" not in subprocess.run([tar, "--version"], capture_output=True).stdout:
        pytest.skip("GNU tar is not installed")
    if os.geteuid() != 0:
        pytest.skip("extracting owners, devices and trusted.* xattrs needs root")
    return tar


# GNU tar extracts symlinks as placeholders until the end (it never writes through a link it made):
# members that go through a symlink of the same layer are left out of this comparison.
GNU_TAR_EXCLUDED = {"slowlnk/via-slow-same-layer": b"/real/via-slow-same-layer", "hl-via-slow": b"/hl-via-slow"}


@pytest.mark.parametrize(
    ("image", "members"), [("rules", []), ("big", ["big/sparse", "big/sparse-head-hole", "big/sparse-pax"])]
)
def test_gnu_tar_extracts_what_the_model_reads(
    image: str, members: list[str], tmp_path: Path, tmp_path_factory: pytest.TempPathFactory
) -> None:
    """The first layer extracted by GNU tar (as root, with every xattr): the same tree as the model's,
    sparse files included, but for directory times (GNU tar stamps the parents it makes with "now")."""
    tar = _gnu_tar_or_skip()
    layer = fixture_layers(tmp_path_factory)[image][0]
    out = tmp_path / "x"
    out.mkdir()
    excluded = [f"--exclude={name}" for name in GNU_TAR_EXCLUDED]
    command = [tar, "-xpf", str(layer), "-C", str(out), "--xattrs", "--xattrs-include=*", "--numeric-owner", *excluded]
    command += members
    done = subprocess.run(command, capture_output=True, text=True, stdin=subprocess.DEVNULL, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    try:
        extracted, _ = read_mounted(out)
    except OSError as exc:
        pytest.skip(f"this file system cannot hold what the tar has: {exc}")
    model = Model()
    model.apply(layer)
    expected = model.tree()
    gone = set(GNU_TAR_EXCLUDED.values())
    expected = Tree(
        {p: e for p, e in expected.entries.items() if p not in gone}, {g for g in expected.groups if not g & gone}
    )
    if members:
        wanted = {b"/" + m.encode() for m in members}
        expected = Tree({p: e for p, e in expected.entries.items() if p in wanted}, set())
        extracted = Tree({p: e for p, e in extracted.entries.items() if p in wanted}, set())
    diff = differences(_without_directory_times(expected), _without_directory_times(extracted))
    assert not diff, "\n".join(diff)


def test_make_layers_runs_as_a_script(tmp_path: Path) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "fixtures.make_layers", str(tmp_path)],
        cwd=Path(__file__).resolve().parent.parent,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr
    listed = [line.split("\t") for line in done.stdout.splitlines()]
    paths = [Path(fields[1]) for fields in listed]
    assert {fields[0] for fields in listed} >= {*IMAGES, "bad", "fill"}
    assert all(path.is_file() for path in paths)
    assert (tmp_path / "big" / "layer1.tar").stat().st_size > 200_000_000


# -- the model's rules, one by one, on tiny layers ----------------------------------------------------


def _layer(tmp_path: Path, name: str, *entries: tuple[str, bytes, dict[str, object]]) -> Path:
    w = LayerWriter(tmp_path / name)
    for path, kind, options in entries:
        w.add(path, kind, **options)  # type: ignore[arg-type]
    return w.close()


def _tree(tmp_path: Path, *layers: list[tuple[str, bytes, dict[str, object]]]) -> dict[bytes, Entry]:
    model = Model()
    for number, entries in enumerate(layers):
        model.apply(_layer(tmp_path, f"l{number}.tar", *entries))
    return model.tree().entries


F, D, L, S = tarfile.REGTYPE, tarfile.DIRTYPE, tarfile.LNKTYPE, tarfile.SYMTYPE


def test_model_whiteouts_spare_what_the_same_layer_made(tmp_path: Path) -> None:
    tree = _tree(
        tmp_path,
        [("a", F, {"data": b"lower"}), ("b", F, {})],
        [("a", F, {"data": b"upper"}), (".wh.a", F, {}), (".wh.b", F, {})],
    )
    assert b"/a" in tree and b"/b" not in tree


def test_model_opaque_hides_lower_children_at_every_depth(tmp_path: Path) -> None:
    tree = _tree(
        tmp_path,
        [("o/", D, {}), ("o/x/", D, {}), ("o/x/old", F, {}), ("o/gone", F, {})],
        [("o/x/", D, {}), ("o/.wh..wh..opq", F, {}), ("o/x/new", F, {})],
    )
    assert {p for p in tree if p.startswith(b"/o")} == {b"/o", b"/o/x", b"/o/x/new"}


def test_model_resolves_parents_inside_the_image(tmp_path: Path) -> None:
    tree = _tree(
        tmp_path,
        [("real/", D, {}), ("up", S, {"linkname": "../../.."}), ("abs", S, {"linkname": "/real"})],
        [("up/real/one", F, {}), ("abs/two", F, {}), ("../../three", F, {})],
    )
    assert {b"/real/one", b"/real/two", b"/three"} <= tree.keys()


def test_model_directory_over_directory_keeps_children(tmp_path: Path) -> None:
    tree = _tree(
        tmp_path,
        [("d/", D, {"mode": 0o700}), ("d/child", F, {})],
        [("d/", D, {"mode": 0o751, "uid": 9})],
    )
    assert b"/d/child" in tree and (tree[b"/d"].mode, tree[b"/d"].uid) == (0o751, 9)


def test_model_hard_links_share_one_node_whatever_their_header_says(tmp_path: Path) -> None:
    tree = _tree(
        tmp_path,
        [("f", F, {"data": b"x", "mode": 0o600})],
        [("g", L, {"linkname": "f", "mode": 0o777, "uid": 5}), ("h", L, {"linkname": "./g"})],
    )
    assert tree[b"/f"] == tree[b"/g"] == tree[b"/h"]
    assert (tree[b"/f"].links, tree[b"/f"].mode, tree[b"/f"].uid) == (3, 0o600, 0)


def test_model_refuses_what_cannot_be(tmp_path: Path) -> None:
    with pytest.raises(ModelError, match="does not exist"):
        _tree(tmp_path, [("g", L, {"linkname": "missing"})])
    with pytest.raises(ModelError, match="not a directory"):
        _tree(tmp_path, [("f", F, {}), ("f/x", F, {})])


def test_pax_times_are_floored_to_the_nanosecond() -> None:
    assert pax_time(b"10413792000.123456789") == (10_413_792_000, 123_456_789)
    assert pax_time(b"-86400.5") == (-86_401, 500_000_000)
    assert pax_time(b"1700000000.1234567891") == (1_700_000_000, 123_456_789)
    assert pax_time(b"7") == (7, 0)


def test_the_model_reader_is_strict(tmp_path: Path) -> None:
    data = io.BytesIO()
    with tarfile.open(fileobj=data, mode="w", format=tarfile.PAX_FORMAT) as tar:
        info = tarfile.TarInfo("f")
        info.size = 3000
        tar.addfile(info, io.BytesIO(bytes(3000)))
    cut = tmp_path / "cut.tar"
    cut.write_bytes(data.getvalue()[:2000])
    with pytest.raises(ModelError):
        list(read_tar(cut))


def test_the_model_sees_what_the_fixtures_promise(tmp_path_factory: pytest.TempPathFactory) -> None:
    """Guard against a fixture or model change that silently drops a case the tests above rely on."""
    rules = Model()
    for tar in fixture_layers(tmp_path_factory)["rules"][:1]:
        rules.apply(tar)
    tree: Tree = rules.tree()
    kinds = {e.kind for e in tree.entries.values()}
    assert kinds == {"dir", "file", "symlink", "chr", "blk", "fifo"}
    assert tree.entries[b"/dev/big"].rdev == (300, 70000)
    assert tree.entries[b"/files/setuid"].mode == 0o4755
    assert tree.entries[b"/setgid.d"].mode == 0o2775 and tree.entries[b"/sticky.d"].mode == 0o1777
    assert tree.entries[b"/ids/pax-uid"].uid == 4_000_000_000
    assert tree.entries[b"/ids/base256"].uid == 3_000_000
    assert tree.entries[b"/times/y2300"].mtime == (10_413_792_000, 123_456_789)
    assert tree.entries[b"/times/negative"].mtime == (-86_401, 500_000_000)
    assert len(tree.entries[b"/links/long300"].target or b"") == 300
    assert len(dict(tree.entries[b"/xattr/big"].xattrs)["user.big"]) == 3000
    assert b"/names/caf\xe9" in tree.entries
    assert any(len(p) > 300 for p in tree.entries)
    assert tree.entries[b"/files/multi.bin"].links == 4
    big = Model()
    big.apply(fixture_layers(tmp_path_factory)["big"][0])
    assert big.node(b"/big/blob200").size == 200_000_123
    assert len(big.node(b"/big/dir20k").children) == 20_000
    sparse = big.node(b"/big/sparse")
    assert sparse.regions and len(sparse.regions) == 6
