"""The pieces of the read side on their own: pax writing, path resolution, the source model, tree
comparison, xattr and device decoding, names shown, targets parsed, and what `inspect` reports."""

import hashlib
import io
import json
import stat
import struct
import tarfile
from pathlib import Path

import pytest

from obdlayout.ext4.layout import Inode
from obdlayout.ext4.reader import device_numbers
from obdlayout.ext4.xattr import acl_from_disk, acl_to_disk
from obdlayout.inspect.image import parse_target
from obdlayout.inspect.listing import shown
from obdlayout.inspect.source import SourceTree
from obdlayout.inspect.tarwriter import Member, PaxTarWriter
from obdlayout.inspect.tree import Node, differences
from obdlayout.layers.paths import ResolveError, components, resolve
from obdlayout.tar.reader import DIRECTORY, HARDLINK, REGULAR, SYMLINK, TarReader
from obdlayout.tar.ustar import pax_record

from .test_inspect_support import HELLO_WORLD_TAG, hello_world, run

# -- pax tar writing --------------------------------------------------------------------------------


@pytest.mark.parametrize("size", [0, 1, 4, 5, 6, 93, 94, 95, 96, 990, 991, 992, 9990])
def test_pax_record_counts_its_own_length(size: int) -> None:
    record = pax_record(b"k", b"v" * size)
    length, _, rest = record.partition(b" ")
    assert int(length) == len(record) and rest == b"k=" + b"v" * size + b"\n"


def test_the_pax_writer_keeps_what_ustar_cannot(tmp_path: Path) -> None:
    long_name = b"d/" + b"n" * 150 + b"\xff"  # long and not UTF-8
    members = [
        Member(b"d/", DIRECTORY, 0o755, 0, 0, (1_700_000_000, 0)),
        Member(long_name, REGULAR, 0o4755, 4_000_000_000, 3_000_000, (-86_401, 500_000_000), size=5),
        Member(b"d/link", SYMLINK, 0o777, 0, 0, (10_413_792_000, 123_456_789), linkname=b"/" + b"t" * 200),
        Member(b"d/hard", HARDLINK, 0o4755, 0, 0, (0, 0), linkname=long_name),
        Member(b"d/x", REGULAR, 0o644, 0, 0, (1, 1), xattrs={"user.bin": bytes(range(256)), "security.x": b""}),
    ]
    out = io.BytesIO()
    writer = PaxTarWriter(out)
    for member in members:
        writer.add(member, [b"hello"] if member.name == long_name else ())
    writer.close()
    read = list(TarReader(io.BytesIO(out.getvalue())))
    assert [(e.name, e.type, e.mode, e.uid, e.gid, e.mtime, e.mtime_ns, e.linkname) for e in read] == [
        (m.name, m.type, m.mode, m.uid, m.gid, *m.mtime, m.linkname) for m in members
    ]
    assert read[-1].xattrs == members[-1].xattrs
    # The stdlib reads it too.
    with tarfile.open(fileobj=io.BytesIO(out.getvalue())) as archive:
        found = archive.getmembers()
    assert found[1].uid == 4_000_000_000 and found[1].size == 5 and found[2].linkname == "/" + "t" * 200


def test_the_pax_writer_refuses_data_of_the_wrong_size() -> None:
    with pytest.raises(ValueError, match="4 bytes of data for a 5-byte entry"):
        PaxTarWriter(io.BytesIO()).add(Member(b"f", REGULAR, 0o644, 0, 0, (0, 0), size=5), [b"four"])


# -- paths ------------------------------------------------------------------------------------------


class _Fake:
    """A tiny tree for paths.resolve: directories are dicts, symlinks bytes, files str."""

    def lookup(self, directory: object, name: bytes) -> object | None:
        return directory.get(name) if isinstance(directory, dict) else None

    def kind(self, node: object) -> int:
        return stat.S_IFDIR if isinstance(node, dict) else stat.S_IFLNK if isinstance(node, bytes) else stat.S_IFREG

    def symlink_target(self, node: object) -> bytes:
        assert isinstance(node, bytes)
        return node


ROOT: dict[bytes, object] = {
    b"etc": {b"passwd": "image passwd"},
    b"abs": b"/etc/passwd",
    b"up": b"../../../../etc",
    b"loop": b"loop",
    b"file": "plain",
}


@pytest.mark.parametrize(
    ("path", "found"),
    [
        (b"/abs", "image passwd"),
        (b"up/passwd", "image passwd"),
        (b"/../../../etc/./passwd", "image passwd"),
        (b"etc/../etc/passwd", "image passwd"),
        (b"/", ROOT),
    ],
)
def test_paths_resolve_inside_the_root(path: bytes, found: object) -> None:
    assert resolve(_Fake(), ROOT, components(path)) == found


@pytest.mark.parametrize(
    ("path", "problem"),
    [
        (b"/nope", "/nope does not exist"),
        (b"/file/x", "/file is not a directory"),
        (b"/loop", "too many levels of symbolic links"),
    ],
)
def test_paths_that_lead_nowhere_say_where_they_stop(path: bytes, problem: str) -> None:
    with pytest.raises(ResolveError, match=problem):
        resolve(_Fake(), ROOT, components(path))


def test_the_last_symlink_is_kept_on_request() -> None:
    assert resolve(_Fake(), ROOT, components(b"/abs"), follow_last=False) == b"/etc/passwd"


# -- the source model -------------------------------------------------------------------------------


def _tar(*entries: tuple[str, bytes, bytes | str]) -> io.BytesIO:
    """Entries (name, type, data or link target)."""
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w", format=tarfile.PAX_FORMAT) as archive:
        for name, kind, payload in entries:
            info = tarfile.TarInfo(name)
            info.type = kind
            info.mode = 0o755 if kind == tarfile.DIRTYPE else 0o644
            if isinstance(payload, str):
                info.linkname = payload
                archive.addfile(info)
            else:
                info.size = len(payload)
                archive.addfile(info, io.BytesIO(payload))
    out.seek(0)
    return out


def _model(*layers: io.BytesIO) -> dict[bytes, Node]:
    tree = SourceTree()
    for number, layer in enumerate(layers):
        tree.apply(layer, f"layer {number}")
    return tree.tree()


REG, DIR, SYM, LNK = tarfile.REGTYPE, tarfile.DIRTYPE, tarfile.SYMTYPE, tarfile.LNKTYPE


def test_the_model_follows_the_layer_rules() -> None:
    lower = _tar(
        ("a/", DIR, b""),
        ("a/old", REG, b"old"),
        ("a/keep", REG, b"keep"),
        ("f", REG, b"first"),
        ("hl", LNK, "f"),
        ("s", SYM, "a"),
        ("gone", REG, b"x"),
    )
    upper = _tar(
        ("a/", DIR, b""),
        ("a/.wh..wh..opq", REG, b""),
        ("a/new", REG, b"new"),  # made after the marker, by this layer: it stays
        ("f", REG, b"second"),  # replaces the name; the hard link keeps the old contents
        ("s/through", REG, b"t"),  # through the symlink, inside the image: a/through
        (".wh.gone", REG, b""),
        ("f/.wh.x", REG, b""),  # a whiteout below a file deletes nothing
    )
    tree = _model(lower, upper)
    assert sorted(tree) == [b"", b"a", b"a/new", b"a/through", b"f", b"hl", b"s"]
    assert tree[b"hl"].sha256 == hashlib.sha256(b"first").hexdigest()
    assert tree[b"f"].sha256 == hashlib.sha256(b"second").hexdigest()
    assert tree[b"s"].mode == 0o777 and tree[b"s"].target == b"a"


def test_the_model_keeps_only_what_ext4_can_hold() -> None:
    out = io.BytesIO()
    acl = struct.pack("<IHHIHHI", 2, 0x01, 6, 0, 0x20, 4, 0)  # owner ids given as 0, not "undefined"
    with tarfile.open(fileobj=out, mode="w", format=tarfile.PAX_FORMAT) as archive:
        info = tarfile.TarInfo("f")
        info.pax_headers = {
            "SCHILY.xattr.user.a": "1",
            "SCHILY.xattr.gnu.nope": "2",
            "SCHILY.xattr.system.posix_acl_access": acl.decode("utf-8", "surrogateescape"),
        }
        archive.addfile(info)
    out.seek(0)
    xattrs = _model(out)[b"f"].xattrs
    assert set(xattrs) == {"user.a", "system.posix_acl_access"}
    assert xattrs["system.posix_acl_access"] == acl_from_disk(acl_to_disk(acl))


def test_differences_name_each_path_and_what_differs() -> None:
    def file(mode: int = 0o644, content: str = "a") -> Node:
        return Node(stat.S_IFREG, mode, 0, 0, (1, 0), size=1, sha256=content)

    shared = file()
    expected = {b"x": file(), b"y": file(), b"l1": shared, b"l2": shared, b"d": Node(stat.S_IFDIR, 0o755, 0, 0, (0, 0))}
    actual = {b"x": file(0o600), b"z": file(), b"l1": file(), b"l2": file(), b"d": file()}
    found = dict(differences(expected, actual))
    assert found[b"x"] == "mode 0644 expected, found 0600"
    assert found[b"y"] == "missing from the image"
    assert found[b"z"] == "not in the source: an extra regular file"
    assert found[b"l1"] == "hard links: expected /l1, /l2, found none"
    assert found[b"d"] == "expected a directory, found a regular file"


# -- decoding ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(("major", "minor"), [(1, 3), (8, 0), (300, 70000), (4095, 1048575), (0, 256)])
def test_device_numbers_decode_what_mknod_encodes(major: int, minor: int) -> None:
    inode = Inode(bytes(256))
    if major < 256 and minor < 256:
        inode.i_block = struct.pack("<I", major << 8 | minor)
    else:
        inode.i_block = struct.pack("<II", 0, (minor & 0xFF) | (major & 0xFFF) << 8 | (minor & ~0xFF) << 12)
    assert device_numbers(inode) == (major, minor)


def test_names_are_shown_on_one_line() -> None:
    assert shown(b"caf\xc3\xa9") == "caf\u00e9"
    assert shown(b"new\nline\x7f\xff\\") == "new\\x0aline\\x7f\\xff\\\\"


def test_targets_split_at_a_colon_after_the_layout(tmp_path: Path) -> None:
    layout = tmp_path / "with:colon"
    layout.mkdir()
    (layout / "oci-layout").write_text("{}")
    assert parse_target(f"{layout}:tag:with:colons").layout == layout
    assert parse_target(f"{layout}:tag:with:colons").tag == "tag:with:colons"
    assert parse_target(str(layout)).tag is None


# -- inspect ----------------------------------------------------------------------------------------


def test_inspect_reports_what_the_golden_image_is_made_of() -> None:
    result = run("inspect", f"{hello_world()}:{HELLO_WORLD_TAG}", "--json")
    assert result.exit_code == 0, result.output
    (image,) = json.loads(result.stdout)
    assert image["platform"] == "linux/amd64"
    assert image["manifest"]["digest"].startswith("sha256:42caa56a")
    assert image["config"]["digest"].startswith("sha256:b67b1f12")
    (layer,) = image["layers"]
    assert layer["size"] == 642_560
    blob = layer["blob"]
    assert (blob["wrapping"], blob["compression"], blob["block_size"]) == ("tar+pax", "lz4", 4096)
    assert blob["uuid"] == "01BB4FCE-3EB1-B56B-05AD-F99504DAFD31"
    # What e2fsck says of it: 12/4194304 files, 266276/16777216 blocks.
    fs = image["filesystem"]
    assert (fs["type"], fs["virtual_size"], fs["files"]) == ("ext4", 64 << 30, 12)
    assert fs["bytes_used"] == 266_276 * 4096


def test_inspect_text_shows_every_image_of_an_index_and_narrows_by_platform() -> None:
    every = run("inspect", f"{hello_world()}:docker-list")
    assert every.exit_code == 0 and every.stdout.count("tag 'docker-list'") == 9
    assert "not an overlaybd layer" in every.stdout
    one = run("inspect", f"{hello_world()}:docker-list", "--platform", "linux/arm64")
    assert one.stdout.count("tag 'docker-list'") == 1 and "(linux/arm64/v8)" in one.stdout
    bad = run("inspect", str(hello_world()), "--platform", "linux")
    assert bad.exit_code == 2 and "os/arch" in bad.stderr


def test_commands_name_the_problem_in_one_line() -> None:
    layout = hello_world()
    several = run("ls", f"{layout}:docker-list")
    assert several.exit_code == 1 and "choose one with --platform" in several.stderr
    untagged = run("cat", str(layout), "/hello")
    assert untagged.exit_code == 1 and "give LAYOUT:TAG" in untagged.stderr
    directory = run("cat", f"{layout}:{HELLO_WORLD_TAG}", "/lost+found")
    assert directory.exit_code == 1
    assert directory.stderr.strip().endswith("/lost+found is a directory, not a regular file")
    assert "Traceback" not in directory.output
    both = run("extract", f"{layout}:{HELLO_WORLD_TAG}")
    assert both.exit_code == 2 and "exactly one of --dir and --tar" in both.stderr
