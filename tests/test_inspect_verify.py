"""`obdlayout verify`: passes correct conversions, catches each planted fault, and reports all of them at once."""

import io
import stat
import tarfile
from collections.abc import Callable
from pathlib import Path

import pytest

from obdlayout.convert.native import build_layer
from obdlayout.formats.blob import Blob
from obdlayout.formats.commit import BlobOptions
from obdlayout.formats.tarwrap import PAX_PAYLOAD_OFFSET
from obdlayout.formats.zfile_layout import HT_SIZE
from obdlayout.inspect.source import SourceTree
from obdlayout.inspect.tree import link_groups
from obdlayout.layers.paths import clean_path
from obdlayout.oci.digest import digest_bytes
from obdlayout.oci.mediatypes import OVERLAYBD_BLOB_DIGEST, OVERLAYBD_BLOB_SIZE

from .oci_layouts import Json
from .shared import fixture_layers, shared
from .test_inspect_support import (
    HELLO_WORLD_TAG,
    convert,
    copy_layout,
    golden_image,
    hello_world,
    layer_blobs,
    rewrite_image,
    rules_image,
    rules_tars,
    run,
    source_layout,
)

Factory = pytest.TempPathFactory


def _faults(stderr: str) -> list[str]:
    return [line for line in stderr.splitlines() if line.startswith("FAULT")]


def test_our_conversion_passes_against_its_source(tmp_path_factory: Factory) -> None:
    source, converted = rules_image(tmp_path_factory)
    result = run("verify", f"{converted}:rules", "--against", str(source))
    assert result.exit_code == 0, result.output
    assert "e2fsck clean" in result.stdout and "tree equal to the source's" in result.stdout
    assert result.stdout.rstrip().endswith("all checks passed")


@pytest.mark.parametrize("image", ["whiteout-missing-parent", "opaque-readd-dir"])
def test_the_rules_cases_the_source_model_once_got_wrong_pass(
    image: str, tmp_path: Path, tmp_path_factory: Factory
) -> None:
    """A whiteout below directories that do not exist (the parents are made, as containerd makes them), and
    an opaque directory whose layer re-adds a subdirectory (what the lowers had below it stays hidden):
    `verify --against` compares with the same rules the writer follows, so a correct image passes."""
    tars = fixture_layers(tmp_path_factory)[image]
    source = source_layout(tmp_path / "src", tars, image)
    converted = convert(source, image, tmp_path / "out")
    result = run("verify", f"{converted}:{image}", "--against", str(source))
    assert result.exit_code == 0, result.output
    assert "tree equal to the source's" in result.stdout


def test_every_tag_is_checked_without_one(tmp_path_factory: Factory) -> None:
    _, converted = rules_image(tmp_path_factory)
    result = run("verify", str(converted))
    assert result.exit_code == 0, result.output
    assert result.stdout.count("\nok ") + result.stdout.startswith("ok ") == 1


def test_the_real_tools_stack_passes_against_its_layer_tars(tmp_path_factory: Factory) -> None:
    source, converted = golden_image(tmp_path_factory)
    result = run("verify", f"{converted}:golden", "--against", f"{source}:golden")
    assert result.exit_code == 0, result.output


def test_golden_hello_world_is_reported_for_its_lost_found_only(tmp_path_factory: Factory) -> None:
    layout = hello_world()
    result = run("verify", f"{layout}:{HELLO_WORLD_TAG}", "--against", f"{layout}:amd64")
    assert result.exit_code == 1
    # The Go tools' lost+found carries an htree index flag that e2fsck rejects: said, not hidden.
    faults = _faults(result.stderr)
    assert len(faults) == 1, result.output
    assert "e2fsck -fn exits 4" in faults[0] and "HTREE directory inode 11" in faults[0]


def test_without_a_tag_unconverted_images_are_skipped_and_said_so() -> None:
    result = run("verify", str(hello_world()))
    assert result.exit_code == 1
    assert len(_faults(result.stderr)) == 1  # the golden image's lost+found, as above
    skipped = [
        line
        for line in result.stdout.splitlines()
        if line.endswith("not a converted image (no overlaybd layer), skipped")
    ]
    assert len(skipped) == 11  # amd64, arm64 and the nine platforms of docker-list


# -- planted faults ---------------------------------------------------------------------------------


def _top_blob(layout: Path) -> Path:
    return layer_blobs(layout, "rules")[-1]


def _flip_zfile_byte(layout: Path) -> str:
    blob = _top_blob(layout)
    data = bytearray(blob.read_bytes())
    data[PAX_PAYLOAD_OFFSET + HT_SIZE + 8] ^= 0xFF  # inside the first compressed block
    blob.write_bytes(bytes(data))
    return "CRC mismatch"


def _truncate(layout: Path) -> str:
    blob = _top_blob(layout)
    blob.write_bytes(blob.read_bytes()[: blob.stat().st_size // 2])
    return "truncated"


def _wrong_annotation(layout: Path) -> str:
    def edit(manifest: Json) -> None:
        manifest["layers"][1]["annotations"][OVERLAYBD_BLOB_DIGEST] = digest_bytes(b"another blob")

    rewrite_image(layout, "rules", manifest_edit=edit)
    return f"annotation {OVERLAYBD_BLOB_DIGEST} is 'sha256:"


def _wrong_diff_id(layout: Path) -> str:
    def edit(config: Json) -> None:
        config["rootfs"]["diff_ids"][0] = digest_bytes(b"another layer")

    rewrite_image(layout, "rules", config_edit=edit)
    return "rootfs.diff_ids[0] is 'sha256:"


PLANTED: dict[str, Callable[[Path], str]] = {
    "flipped-zfile-byte": _flip_zfile_byte,
    "truncated-blob": _truncate,
    "wrong-blob-digest-annotation": _wrong_annotation,
    "diff-id-mismatch": _wrong_diff_id,
}


@pytest.mark.parametrize("damage", list(PLANTED))
def test_each_planted_fault_is_caught(damage: str, tmp_path: Path, tmp_path_factory: Factory) -> None:
    _, converted = rules_image(tmp_path_factory)
    layout = copy_layout(converted, tmp_path / "copy")
    expected = PLANTED[damage](layout)
    result = run("verify", f"{layout}:rules")
    assert result.exit_code == 1
    assert any(expected in fault for fault in _faults(result.stderr)), result.output


def test_a_flipped_byte_fails_both_the_digest_and_the_crc(tmp_path: Path, tmp_path_factory: Factory) -> None:
    _, converted = rules_image(tmp_path_factory)
    layout = copy_layout(converted, tmp_path / "copy")
    _flip_zfile_byte(layout)
    faults = _faults(run("verify", f"{layout}:rules").stderr)
    assert any("digest mismatch" in f for f in faults) and any("CRC mismatch" in f for f in faults)
    assert all(str(_top_blob(layout)) in f for f in faults)


def test_every_fault_is_reported_not_only_the_first(tmp_path: Path, tmp_path_factory: Factory) -> None:
    _, converted = rules_image(tmp_path_factory)
    layout = copy_layout(converted, tmp_path / "copy")
    expected = [plant(layout) for plant in (_wrong_annotation, _wrong_diff_id, _truncate)]
    result = run("verify", f"{layout}:rules")
    faults = _faults(result.stderr)
    for text in expected:
        assert any(text in fault for fault in faults), (text, result.output)
    assert "file system was not checked" in result.stdout
    assert result.stderr.rstrip().endswith(f"{len(faults)} fault(s) found")


# -- a top layer whose tree differs from the source's ---------------------------------------------


def _source_files(tars: list[Path]) -> SourceTree:
    model = SourceTree()
    for tar in tars:
        with tar.open("rb") as stream:
            model.apply(stream, tar.name)
    return model


def _replace_top_layer(layout: Path, tar: Path, work: Path) -> None:
    """Convert `tar` in place of the image's top layer (same uuids), and re-point manifest and config at it."""
    blobs = layer_blobs(layout, "rules")
    with Blob(blobs[-1]) as old:
        info = old.info()
    built = work / "layer.blob"
    with built.open("w+b") as sink, tar.open("rb") as stream:
        build_layer(
            sink, stream, lowers=blobs[:-1], uuid=info.uuid, parent_uuid=info.parent_uuid, options=BlobOptions()
        )
    data = built.read_bytes()
    digest = digest_bytes(data)
    (layout / "blobs" / "sha256" / digest[7:]).write_bytes(data)

    def manifest_edit(manifest: Json) -> None:
        top = manifest["layers"][-1]
        top.update(digest=digest, size=len(data))
        top["annotations"].update({OVERLAYBD_BLOB_DIGEST: digest, OVERLAYBD_BLOB_SIZE: str(len(data))})

    def config_edit(config: Json) -> None:
        config["rootfs"]["diff_ids"][-1] = digest

    rewrite_image(layout, "rules", manifest_edit, config_edit)


def _append(tar: Path, out: Path, name: str, mode: int, data: bytes | None, directory: bool = False) -> Path:
    """`tar` with one more entry at its end."""
    out.write_bytes(tar.read_bytes())
    with tarfile.open(out, "a", format=tarfile.PAX_FORMAT) as archive:
        info = tarfile.TarInfo(name)
        info.mode, info.mtime = mode, 1_700_000_000
        if directory:
            info.type = tarfile.DIRTYPE
        info.size = len(data or b"")
        archive.addfile(info, None if data is None else io.BytesIO(data))
    return out


def test_tree_differences_are_listed_by_path(tmp_path: Path, tmp_path_factory: Factory) -> None:
    source, converted = rules_image(tmp_path_factory)
    tars = rules_tars(tmp_path_factory)
    tree = _source_files(tars).tree()
    top = tars[-1]
    # Paths the top layer does not touch (a whiteout spares what its own layer made), not hard-linked.
    with tarfile.open(top) as archive:
        names = [clean_path(m.name.encode("utf-8", "surrogateescape")) for m in archive]
    touched = {b"/".join(parts).replace(b".wh.", b"") for parts in names}
    linked = link_groups(tree)

    def untouched(path: bytes) -> bool:
        parts = path.split(b"/")
        return path not in linked and not any(b"/".join(parts[:n]) in touched for n in range(1, len(parts) + 1))

    files = sorted(p for p, n in tree.items() if n.sha256 and n.size and n.mode == 0o644 and untouched(p))
    directories = sorted(p for p, n in tree.items() if p and n.kind == stat.S_IFDIR and n.mode == 0o755)
    changed, gone, chmodded = files[0], files[1], directories[0]
    plants = [
        (
            _append(top, tmp_path / "a.tar", changed.decode(), 0o644, b"X" * tree[changed].size),
            changed,
            "contents differ",
        ),
        (_append(top, tmp_path / "b.tar", _whiteout(gone), 0o644, b""), gone, "missing from the image"),
        (_append(top, tmp_path / "c.tar", chmodded.decode(), 0o700, None, directory=True), chmodded, "mode 0755"),
    ]
    for number, (tar, path, problem) in enumerate(plants):
        layout = copy_layout(converted, tmp_path / f"copy{number}")
        _replace_top_layer(layout, tar, tmp_path)
        result = run("verify", f"{layout}:rules", "--against", f"{source}:rules")
        faults = _faults(result.stderr)
        assert result.exit_code == 1
        # Every other check passes: the one fault is the tree's, naming the path and what differs.
        assert len(faults) == 1, result.output
        assert f"/{path.decode()}: " in faults[0] and problem in faults[0], faults


def _whiteout(path: bytes) -> str:
    parent, _, name = path.decode().rpartition("/")
    return f"{parent}/.wh.{name}" if parent else f".wh.{name}"


def test_a_tag_that_names_nothing_and_a_bad_source_are_faults(tmp_path_factory: Factory) -> None:
    source, converted = rules_image(tmp_path_factory)
    missing = run("verify", f"{converted}:nope")
    assert missing.exit_code == 1 and "no entry is tagged 'nope'" in missing.stderr
    not_source = run("verify", f"{converted}:rules", "--against", f"{converted}:rules")
    assert not_source.exit_code == 1 and "already an overlaybd layer" in not_source.stderr
    not_layout = run("verify", str(source / "blobs"))
    assert not_layout.exit_code == 1 and "oci-layout" in not_layout.stderr


def test_without_e2fsck_it_says_so(tmp_path_factory: Factory, monkeypatch: pytest.MonkeyPatch) -> None:
    _, converted = rules_image(tmp_path_factory)
    monkeypatch.setattr("obdlayout.cli.inspect.find_e2fsck", lambda: None)
    result = run("verify", f"{converted}:rules")
    assert result.exit_code == 0, result.output
    assert "e2fsck is not installed" in result.stdout and "e2fsck clean" not in result.stdout


def test_a_conversion_on_the_baselayer_passes(tmp_path: Path, tmp_path_factory: Factory) -> None:
    source, _ = rules_image(tmp_path_factory)
    baselayer = shared("baselayer", "ext4_64")
    converted = convert(source, "rules", tmp_path / "out", "--no-mkfs", "--baselayer", str(baselayer))
    # The baselayer is below the uuid chain: the first converted layer names no parent.
    result = run("verify", f"{converted}:rules", "--against", str(source))
    assert result.exit_code == 0, result.output
    assert "4 layer(s)" in result.stdout
