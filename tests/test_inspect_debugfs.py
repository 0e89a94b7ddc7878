"""`ls -lR`, `cat`, `extract --tar` and `extract --dir` agree with the real debugfs on the same image.

Three images: one converted by obdlayout from layers that hold every entry kind and layer rule, the Go
convertor's golden hello-world, and the real overlaybd tools' two-layer mkfs stack. debugfs reads the
merged raw disk (tests/ext4tree.py); the extracted tar is read back by an independent tar reader and
applied by the independent model of the layer rules (tests/ocimodel.py), so that neither side of each
comparison runs obdlayout's readers.
"""

import hashlib
import os
import re
import stat
from collections.abc import Callable
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path

import pytest

from obdlayout.inspect.image import open_filesystem, select_image
from obdlayout.inspect.listing import cat, shown
from obdlayout.oci.layout import Layout

from .ext4tree import Ext4Tree, read_mounted, read_tree
from .ocimodel import LOST_FOUND, ROOT, Tree, differences, model_of
from .shared import memo
from .test_inspect_support import HELLO_WORLD_TAG, golden_image, hello_world, raw_image, rules_image, run

KIND_BITS = {
    "dir": stat.S_IFDIR,
    "file": stat.S_IFREG,
    "symlink": stat.S_IFLNK,
    "chr": stat.S_IFCHR,
    "blk": stat.S_IFBLK,
    "fifo": stat.S_IFIFO,
    "sock": stat.S_IFSOCK,
}
# ls -l: mode, links, uid, gid, size or "major, minor", date, time.fraction, name [-> target]
LONG_LINE = re.compile(r"^(\S{10}) +(\d+) +(\d+) +(\d+) +(\d+|\d+, \d+) (\S+ \d\d:\d\d:\d\d)\.(\d{9}) (.*)$")

Image = tuple[Path, str, Ext4Tree]  # layout, tag, what debugfs reads on its merged disk


def _rules(factory: pytest.TempPathFactory) -> tuple[Path, str]:
    return rules_image(factory)[1], "rules"


def _golden(factory: pytest.TempPathFactory) -> tuple[Path, str]:
    return golden_image(factory)[1], "golden"


def _hello(_: pytest.TempPathFactory) -> tuple[Path, str]:
    return hello_world(), HELLO_WORLD_TAG


SOURCES: dict[str, Callable[[pytest.TempPathFactory], tuple[Path, str]]] = {
    "obdlayout-rules": _rules,
    "golden-hello-world": _hello,
    "golden-mkfs-stack": _golden,
}


@pytest.fixture(params=list(SOURCES), scope="module")
def image(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Image:
    def make() -> Image:
        layout, tag = SOURCES[request.param](tmp_path_factory)
        where = tmp_path_factory.mktemp("debugfs")
        raw = raw_image(layout, tag, where / "disk.raw")
        tree = read_tree(raw, where)
        raw.unlink()
        return layout, tag, tree

    return memo(("inspect-debugfs", request.param), make)


def _parse_ls(output: str) -> dict[str, tuple[str, ...]]:
    """`ls -lR` output as {shown path: (mode, links, uid, gid, size, seconds, nanoseconds, target)}."""
    found: dict[str, tuple[str, ...]] = {}
    directory = None
    for line in output.splitlines():
        if line.endswith(":") and line.startswith("/"):
            directory = line[:-1].rstrip("/")
            continue
        if not line:
            continue
        match = LONG_LINE.match(line)
        assert match is not None and directory is not None, line
        mode, links, uid, gid, size, when, fraction, rest = match.groups()
        name, _, target = rest.partition(" -> ") if mode.startswith("l") else (rest, "", "")
        seconds = int(datetime.strptime(when, "%Y-%m-%d %H:%M:%S").replace(tzinfo=UTC).timestamp())
        found[f"{directory}/{name}"] = (mode, links, uid, gid, size, str(seconds), str(int(fraction)), target)
    return found


def _expected_ls(tree: Ext4Tree) -> dict[str, tuple[str, ...]]:
    expected: dict[str, tuple[str, ...]] = {}
    for path, entry in tree.tree.entries.items():
        if path == ROOT:
            continue
        size = str(tree.sizes[tree.inodes[path]]) if entry.rdev is None else f"{entry.rdev[0]}, {entry.rdev[1]}"
        expected[shown(path)] = (
            stat.filemode(KIND_BITS[entry.kind] | entry.mode),
            str(entry.links),
            str(entry.uid),
            str(entry.gid),
            size,
            str(entry.mtime[0]),
            str(entry.mtime[1]),
            shown(entry.target) if entry.target is not None else "",
        )
    return expected


def test_ls_lR_agrees_with_debugfs(image: Image) -> None:
    layout, tag, tree = image
    result = run("ls", "-lR", f"{layout}:{tag}", "/")
    assert result.exit_code == 0, result.output
    listed = _parse_ls(result.stdout)
    # debugfs's reading leaves lost+found out (it is mkfs's, no layer's).
    listed = {p: v for p, v in listed.items() if p != "/lost+found" and not p.startswith("/lost+found/")}
    expected = _expected_ls(tree)
    assert listed.keys() == expected.keys()
    wrong = {path: (listed[path], expected[path]) for path in expected if listed[path] != expected[path]}
    assert not wrong


def test_plain_ls_names_match_ls_l(image: Image) -> None:
    layout, tag, tree = image
    plain = run("ls", f"{layout}:{tag}")
    names = {path for path in tree.tree.entries if path != ROOT and path.count(b"/") == 1}
    assert set(plain.stdout.splitlines()) - {"lost+found"} == {shown(p[1:]) for p in names}


def test_cat_agrees_with_debugfs(image: Image) -> None:
    layout, tag, tree = image
    files = {path: entry.sha256 for path, entry in tree.tree.entries.items() if entry.kind == "file"}
    assert files
    opened = Layout(layout)
    with open_filesystem(opened, select_image(opened, tag, None)) as fs:
        for path, sha256 in files.items():
            digest = hashlib.sha256()
            for chunk in cat(fs, path):
                digest.update(chunk)
            assert digest.hexdigest() == sha256, path
    # The command itself, on the largest file and on a file named through a symlink to it, if any.
    largest = max(files, key=lambda p: tree.tree.entries[p].size)
    result = run("cat", f"{layout}:{tag}", largest.decode("utf-8", "surrogateescape"))
    assert result.exit_code == 0
    assert hashlib.sha256(result.stdout_bytes).hexdigest() == files[largest]


def test_extract_tar_agrees_with_debugfs(image: Image, tmp_path: Path) -> None:
    layout, tag, tree = image
    tar = tmp_path / "rootfs.tar"
    result = run("extract", f"{layout}:{tag}", "--tar", str(tar))
    assert result.exit_code == 0, result.output
    # The tar as a layer on an empty root, by the independent model of the rules: the image's tree.
    extracted = model_of([tar]).tree()
    extracted.entries = {p: e for p, e in extracted.entries.items() if not p.startswith(LOST_FOUND)}
    extracted.groups = {g for g in extracted.groups if not any(p.startswith(LOST_FOUND) for p in g)}
    assert differences(tree.tree, extracted) == []


def test_extract_tar_to_stdout_is_the_same_stream(image: Image, tmp_path: Path) -> None:
    layout, tag, _ = image
    tar = tmp_path / "rootfs.tar"
    assert run("extract", f"{layout}:{tag}", "--tar", str(tar)).exit_code == 0
    streamed = run("extract", f"{layout}:{tag}", "--tar", "-")
    assert streamed.exit_code == 0
    assert streamed.stdout_bytes == tar.read_bytes()
    assert "entries" in streamed.stderr


def _without_directory_links(tree: Tree) -> Tree:
    """Directory link counts follow the host file system's rules (btrfs says 1), not the image's."""
    return Tree(
        {p: replace(e, links=0) if e.kind == "dir" else e for p, e in tree.entries.items()},
        tree.groups,
    )


def test_extract_dir_as_root_agrees_with_debugfs(image: Image, tmp_path: Path) -> None:
    if os.geteuid() != 0:
        pytest.skip("owners and device nodes are kept only when run as root")
    try:
        os.setxattr(tmp_path, "trusted.probe", b"1")
    except OSError:
        pytest.skip(f"{tmp_path} cannot hold trusted.* xattrs")
    layout, tag, tree = image
    out = tmp_path / "rootfs"
    result = run("extract", f"{layout}:{tag}", "--dir", str(out))
    assert result.exit_code == 0, result.output
    assert "warning" not in result.stderr
    extracted, _ = read_mounted(out)  # lstat, readlink, getxattr and read: what the host now holds
    assert differences(_without_directory_links(tree.tree), _without_directory_links(extracted)) == []
