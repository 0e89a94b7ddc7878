"""A hostile image cannot make `extract --dir`, `extract --tar` or `cat` touch anything outside the target.

The image holds absolute symlinks, symlinks that climb out of the root, symlinks to host paths with
files written through them (inside the image), and names a crafted ext4 may hold but no layer can
create: "../up" and a host path with its slashes. Those names are planted by a patch layer that
rewrites the root directory's block on top of a normal conversion.
"""

import hashlib
import io
import os
import tarfile
from contextlib import ExitStack
from pathlib import Path
from typing import NamedTuple

import pytest

from obdlayout.ext4.layout import BLOCK_SIZE, ROOT_INO
from obdlayout.ext4.reader import open_image
from obdlayout.formats.blob import Blob, open_stack
from obdlayout.formats.commit import BlobOptions, LayerBlobWriter
from obdlayout.inspect import extract_dir as extract_module
from obdlayout.inspect.errors import InspectError
from obdlayout.inspect.extract_dir import extract_dir
from obdlayout.inspect.image import open_filesystem, select_image
from obdlayout.oci.digest import digest_bytes
from obdlayout.oci.layout import Layout
from obdlayout.oci.mediatypes import OCI_LAYER_TAR, OVERLAYBD_BLOB_DIGEST, OVERLAYBD_BLOB_SIZE, OVERLAYBD_VERSION

from .oci_layouts import Json
from .test_inspect_support import convert, layer_blobs, rewrite_image, run, source_layout

PATCH_UUID = "0badf00d-0000-4000-8000-000000000001"


class Host:
    """What lives on the host beside the extraction target, and must stay as it is."""

    def __init__(self, root: Path) -> None:
        self.root = root
        root.mkdir()
        self.secret = root / "secret.txt"
        self.secret.write_bytes(b"host secret\n")
        self.directory = root / "hostdir"
        self.directory.mkdir()
        self.victim = root / "victim-written-through-a-name"

    def snapshot(self) -> dict[str, str]:
        found = {}
        for path in sorted(self.root.rglob("*")):
            if "out" in path.relative_to(self.root).parts[:1]:
                continue
            found[str(path)] = hashlib.sha256(path.read_bytes()).hexdigest() if path.is_file() else "dir"
        return found


class _Entry(NamedTuple):
    name: str
    kind: bytes = tarfile.REGTYPE
    data: bytes = b""
    link: str = ""
    uid: int = 0


def _tar(entries: list[_Entry]) -> bytes:
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for name, kind, data, link, uid in entries:
            info = tarfile.TarInfo(name)
            info.type, info.linkname, info.size, info.uid, info.mtime = kind, link, len(data), uid, 1_700_000_000
            info.mode = 0o755 if kind in (tarfile.DIRTYPE, tarfile.SYMTYPE) else 0o644
            tar.addfile(info, io.BytesIO(data) if data else None)
    return out.getvalue()


def _hostile_tars(host: Host) -> list[bytes]:
    """Two layers: the second writes through the symlinks the first made."""
    first = [
        _Entry("etc/", tarfile.DIRTYPE),
        _Entry("etc/passwd", data=b"image passwd\n"),
        _Entry("abs", tarfile.SYMTYPE, link="/etc/passwd"),
        _Entry("hostabs", tarfile.SYMTYPE, link=str(host.secret)),
        _Entry("climb", tarfile.SYMTYPE, link="../" * 12 + str(host.secret).lstrip("/")),
        _Entry("hostdir", tarfile.SYMTYPE, link=str(host.directory)),
        _Entry("escape-dir", tarfile.SYMTYPE, link="../../../.."),
        _Entry("owned", data=b"not mine\n", uid=1000),
        # Names the patch layer turns into "../up" and the victim's absolute path.
        _Entry("..Xup", data=b"would climb\n"),
        _Entry("Z" * len(str(host.victim)), data=b"would land on the host\n"),
    ]
    second = [
        _Entry("hostdir/planted", data=b"planted through a symlink, inside the image\n"),
        _Entry("escape-dir/evil", data=b"evil\n"),
    ]
    return [_tar(first), _tar(second)]


def _patch_names(layout: Path, renames: dict[bytes, bytes], work: Path) -> None:
    """A layer on top whose only record is the root directory's block with names rewritten in place."""
    blobs = layer_blobs(layout, "hostile")
    with Blob(blobs[-1]) as top:
        below = top.info()
    with ExitStack() as stack:
        disk = open_stack(blobs, stack)
        fs = open_image(disk.read, disk.virtual_size)
        first = fs.block_mapping(fs.inode(ROOT_INO), "root").runs[0]
        block = bytearray(disk.read(first.physical * BLOCK_SIZE, BLOCK_SIZE))
        virtual_size = disk.virtual_size
    for old, new in renames.items():
        assert len(old) == len(new) and block.count(old) == 1
        block[block.index(old) : block.index(old) + len(old)] = new
    patch = work / "patch.blob"
    with patch.open("w+b") as out:
        writer = LayerBlobWriter(
            out, virtual_size=virtual_size, uuid=PATCH_UUID, parent_uuid=below.uuid, options=BlobOptions()
        )
        writer.lsmt.write_data(first.physical * BLOCK_SIZE, bytes(block))
        writer.close()
    data = patch.read_bytes()
    digest = digest_bytes(data)
    (layout / "blobs" / "sha256" / digest[7:]).write_bytes(data)
    notes = {OVERLAYBD_BLOB_DIGEST: digest, OVERLAYBD_BLOB_SIZE: str(len(data)), OVERLAYBD_VERSION: "0.1.0"}

    def manifest_edit(manifest: Json) -> None:
        manifest["layers"].append(
            {"mediaType": OCI_LAYER_TAR, "digest": digest, "size": len(data), "annotations": notes}
        )

    def config_edit(config: Json) -> None:
        config["rootfs"]["diff_ids"].append(digest)

    rewrite_image(layout, "hostile", manifest_edit, config_edit)


@pytest.fixture
def hostile(tmp_path: Path) -> tuple[str, Host]:
    host = Host(tmp_path / "host")
    work = tmp_path / "work"
    work.mkdir()
    tars = [work / "layer1.tar", work / "layer2.tar"]
    for tar, data in zip(tars, _hostile_tars(host), strict=True):
        tar.write_bytes(data)
    source = source_layout(work / "src", tars, "hostile")
    layout = convert(source, "hostile", work / "out")
    victim = str(host.victim).encode()
    _patch_names(layout, {b"..Xup": b"../up", b"Z" * len(victim): victim}, work)
    return f"{layout}:hostile", host


def test_the_planted_names_are_there(hostile: tuple[str, Host]) -> None:
    target, host = hostile
    listed = run("ls", target).stdout.splitlines()
    assert "../up" in listed and str(host.victim) in listed


def test_extract_dir_stays_inside_its_target(hostile: tuple[str, Host]) -> None:
    target, host = hostile
    before = host.snapshot()
    out = host.root / "out"
    result = run("extract", target, "--dir", str(out))
    assert result.exit_code == 0, result.output
    assert "skipped: a name that could escape the root: 2 entries" in result.stderr
    assert host.snapshot() == before
    assert not host.victim.exists() and not (host.root / "up").exists()
    # Symlinks are recreated verbatim and never followed; what the image wrote through them stays inside.
    assert os.readlink(out / "abs") == "/etc/passwd"
    assert os.readlink(out / "hostdir") == str(host.directory)
    inside = out / str(host.directory).lstrip("/") / "planted"
    assert inside.read_bytes().startswith(b"planted through a symlink")
    assert (out / "evil").read_bytes() == b"evil\n"
    assert (out / "etc" / "passwd").read_bytes() == b"image passwd\n"
    assert not [p for p in host.root.iterdir() if p.name.endswith(".part")]


def test_extract_dir_refuses_a_target_in_use(hostile: tuple[str, Host]) -> None:
    target, host = hostile
    link = host.root / "out"
    link.symlink_to(host.directory)
    result = run("extract", target, "--dir", str(link))
    assert result.exit_code == 1 and "exists and is not an empty directory" in result.stderr
    assert list(host.directory.iterdir()) == []


def test_extract_tar_holds_no_name_that_climbs(hostile: tuple[str, Host], tmp_path: Path) -> None:
    target, host = hostile
    tar = tmp_path / "rootfs.tar"
    result = run("extract", target, "--tar", str(tar))
    assert result.exit_code == 0
    assert "a name that could escape the root: 2 entries" in result.stderr
    with tarfile.open(tar) as archive:
        names = archive.getnames()
    assert names and not [n for n in names if n.startswith("/") or ".." in n.split("/")]
    assert str(host.victim).lstrip("/") not in names


def test_cat_resolves_inside_the_image_only(hostile: tuple[str, Host]) -> None:
    target, _ = hostile
    assert run("cat", target, "/abs").stdout_bytes == b"image passwd\n"
    assert run("cat", target, "/../../../etc/passwd").stdout_bytes == b"image passwd\n"
    for path in ("/hostabs", "/climb"):
        result = run("cat", target, path)
        assert result.exit_code == 1 and "does not exist" in result.stderr
        assert b"host secret" not in result.stdout_bytes
    planted = run("cat", target, "/hostdir/planted")
    assert planted.stdout_bytes.startswith(b"planted through a symlink")


def test_without_root_owners_are_reported_not_faked(hostile: tuple[str, Host]) -> None:
    target, host = hostile
    layout, tag = target.rsplit(":", 1)
    opened = Layout(layout)
    with open_filesystem(opened, select_image(opened, tag, None)) as fs:
        report = extract_dir(fs, host.root / "out", privileged=False)
    assert any(line.startswith("owner not kept") for line in report.lines())
    assert (host.root / "out" / "owned").stat().st_uid == os.geteuid()


def test_a_failed_extraction_leaves_nothing_behind(hostile: tuple[str, Host], monkeypatch: pytest.MonkeyPatch) -> None:
    target, host = hostile
    layout, tag = target.rsplit(":", 1)

    def broken(*_: object) -> None:
        raise OSError(5, "Input/output error")

    monkeypatch.setattr(extract_module._DirWriter, "_write_file", broken)
    opened = Layout(layout)
    with open_filesystem(opened, select_image(opened, tag, None)) as fs, pytest.raises(OSError):
        extract_dir(fs, host.root / "out")
    assert sorted(p.name for p in host.root.iterdir()) == ["hostdir", "secret.txt"]
    with pytest.raises(InspectError):
        (host.root / "out").mkdir()
        (host.root / "out" / "x").touch()
        with open_filesystem(opened, select_image(opened, tag, None)) as fs:
            extract_dir(fs, host.root / "out")
