"""Reading layouts (real ones from ../shared/data and broken ones made here) and writing them safely."""

import json
import multiprocessing
import os
import shutil
from pathlib import Path

import pytest

from obdlayout.oci.descriptor import Descriptor
from obdlayout.oci.digest import BlobRef, digest_bytes, encoded, ref_of
from obdlayout.oci.errors import LayoutError
from obdlayout.oci.layout import Layout
from obdlayout.oci.mediatypes import DOCKER_MANIFEST_LIST, OCI_INDEX, OCI_MANIFEST, REF_NAME
from obdlayout.oci.writer import LayoutWriter

from .oci_layouts import LayoutBuilder
from .shared import shared

AMD64 = "sha256:7e9b6e7ba2842c91cf49f3e214d04a7a496f8214356f41d81a6e6dcad11f11e3"
NESTED_INNER = "sha256:a88a816b83f40e5d7b73eda36a450e1b07c5982840f13b0d2a1048adb98571c2"


def _small_layout(tmp_path: Path) -> tuple[LayoutBuilder, dict[str, object]]:
    builder = LayoutBuilder(tmp_path / "src")
    image = builder.image([builder.layer({"etc/hello": b"hi\n"})])
    builder.tag("v1", image)
    builder.save()
    return builder, image


# Reading


def test_hello_world_tags_and_documents() -> None:
    layout = Layout(shared("hello-world"))
    assert layout.tags() == ["amd64-converted", "arm64", "docker-list", "amd64"]
    amd64 = layout.resolve_tag("amd64")
    assert (amd64.digest, amd64.size) == (AMD64, 525)
    manifest = layout.read_manifest(amd64)
    assert manifest.config.size == 1470
    assert [layer.size for layer in manifest.layers] == [2457]
    assert len(layout.read_index(layout.resolve_tag("docker-list")).manifests) == 9


def test_resolve_digest_finds_entries_inside_nested_indexes() -> None:
    layout = Layout(shared("hello-world-e2e"))
    inner = layout.resolve_digest(NESTED_INNER)
    assert inner.media_type == DOCKER_MANIFEST_LIST
    arm64 = layout.resolve_digest("sha256:efebf0f7aee69450f99deafe11121afa720abed733943e50581a9dc7540689c8")
    assert arm64.annotations[REF_NAME] == "arm64"  # index.json's own entries come first
    with pytest.raises(LayoutError, match=r"index\.json: sha256:0{64} is neither an entry"):
        layout.resolve_digest("sha256:" + "0" * 64)


def test_unknown_tag_names_the_tag_and_the_known_ones(tmp_path: Path) -> None:
    builder, _ = _small_layout(tmp_path)
    with pytest.raises(LayoutError, match=r"index\.json: no entry is tagged 'v2' \(tags: 'v1'\)"):
        Layout(builder.root).resolve_tag("v2")


def test_layout_files_missing_or_malformed(tmp_path: Path) -> None:
    builder, _ = _small_layout(tmp_path)
    root = builder.root
    (root / "index.json").write_text('{"schemaVersion":2,"manifests":[')
    with pytest.raises(LayoutError, match=r"index\.json: malformed JSON"):
        Layout(root)
    (root / "index.json").write_text('{"schemaVersion":2,"manifests":[{"mediaType":"x","digest":"sha256:1","size":1}]}')
    with pytest.raises(LayoutError, match=r"index\.json: manifests\[0\]: digest 'sha256:1' is malformed"):
        Layout(root)
    (root / "index.json").write_text('{"schemaVersion":1,"manifests":[]}')
    with pytest.raises(LayoutError, match=r"index\.json: schemaVersion is 1"):
        Layout(root)
    (root / "index.json").unlink()
    with pytest.raises(LayoutError, match=r"index\.json: missing"):
        Layout(root)
    (root / "oci-layout").write_text('{"imageLayoutVersion":"2.0.0"}')
    with pytest.raises(LayoutError, match=r"oci-layout: imageLayoutVersion is '2.0.0'"):
        Layout(root)
    (root / "oci-layout").unlink()
    with pytest.raises(LayoutError, match=r"oci-layout: missing: this directory is not an OCI image layout"):
        Layout(root)


def test_missing_blob_names_its_path_and_digest(tmp_path: Path) -> None:
    builder, image = _small_layout(tmp_path)
    path = builder.blob_path(str(image["digest"]))
    path.unlink()
    layout = Layout(builder.root)
    with pytest.raises(LayoutError, match=rf"{path}: blob {image['digest']} is missing"):
        layout.read_manifest(layout.resolve_tag("v1"))


def test_digest_mismatch_names_path_expected_and_actual(tmp_path: Path) -> None:
    builder, image = _small_layout(tmp_path)
    path = builder.blob_path(str(image["digest"]))
    data = bytearray(path.read_bytes())
    data[-2] ^= 0x01
    path.write_bytes(bytes(data))
    layout = Layout(builder.root)
    with pytest.raises(LayoutError) as caught:
        layout.read_manifest(layout.resolve_tag("v1"))
    message = str(caught.value)
    assert message.startswith(f"{path}: digest mismatch: expected {image['digest']}, content is ")
    assert message.endswith(digest_bytes(bytes(data)))


@pytest.mark.parametrize(("cut", "problem"), [(-1, "truncated: blob is"), (+1, "blob is")])
def test_size_mismatch_on_opening(tmp_path: Path, cut: int, problem: str) -> None:
    builder, image = _small_layout(tmp_path)
    path = builder.blob_path(str(image["digest"]))
    data = path.read_bytes()
    path.write_bytes(data[:cut] if cut < 0 else data + b"\n")
    layout = Layout(builder.root)
    size = len(data) + cut
    with pytest.raises(LayoutError, match=rf"{path}: {problem} {size} bytes, its descriptor says {len(data)}"):
        layout.read_manifest(layout.resolve_tag("v1"))


def test_blob_cut_short_while_being_read(tmp_path: Path) -> None:
    builder, image = _small_layout(tmp_path)
    layout = Layout(builder.root)
    descriptor = layout.resolve_tag("v1")
    path = builder.blob_path(str(image["digest"]))
    with layout.open_blob(descriptor) as reader:
        first = reader.read(10)
        os.truncate(path, 20)
        with pytest.raises(LayoutError, match=rf"{path}: truncated: blob ended after 20 of {descriptor.size} bytes"):
            reader.readall()
    assert len(first) == 10


def test_blob_growing_while_being_read(tmp_path: Path) -> None:
    builder, image = _small_layout(tmp_path)
    layout = Layout(builder.root)
    descriptor = layout.resolve_tag("v1")
    path = builder.blob_path(str(image["digest"]))
    with layout.open_blob(descriptor) as reader:
        with path.open("ab") as grow:
            grow.write(b" ")
        with pytest.raises(LayoutError, match=rf"{path}: blob is longer than the {descriptor.size} bytes"):
            reader.readall()


def test_manifest_whose_own_media_type_disagrees_is_refused(tmp_path: Path) -> None:
    builder = LayoutBuilder(tmp_path / "src")
    image = builder.image([builder.layer({"a": b"a"})])
    builder.tag("v1", {**image, "mediaType": OCI_INDEX})
    builder.save()
    layout = Layout(builder.root)
    with pytest.raises(LayoutError, match=r"mediaType .* differs from the 'application/vnd\.oci\.image\.index\.v1"):
        layout.read_index(layout.resolve_tag("v1"))


def test_oversized_json_blob_is_not_read_whole(tmp_path: Path) -> None:
    builder, _ = _small_layout(tmp_path)
    layout = Layout(builder.root)
    huge = Descriptor.of(OCI_MANIFEST, BlobRef(digest_bytes(b"x"), 1 << 30))
    with pytest.raises(LayoutError, match="over the 16777216-byte limit"):
        layout.read_manifest(huge)


# Writing


def test_writer_creates_a_layout_and_stores_blobs_once(tmp_path: Path) -> None:
    root = tmp_path / "out"
    writer = LayoutWriter(root)
    assert (root / "oci-layout").read_bytes() == b'{"imageLayoutVersion":"1.0.0"}'
    ref = writer.put_bytes(b"hello")
    path = writer.blob_path(ref.digest)
    assert path.read_bytes() == b"hello"
    assert oct(path.stat().st_mode & 0o777) == "0o644"
    inode = path.stat().st_ino
    assert writer.put_bytes(b"hello") == ref
    assert path.stat().st_ino == inode  # already present with the right content: left alone
    path.write_bytes(b"jello")  # same size, wrong content: replaced
    writer.put_bytes(b"hello")
    assert path.read_bytes() == b"hello"
    assert sorted(p.name for p in path.parent.iterdir()) == [encoded(ref.digest)]
    writer.set_tags({"t": Descriptor.of(OCI_MANIFEST, ref)})
    assert Layout(root).resolve_tag("t").ref == ref


def test_writer_refuses_a_foreign_oci_layout_file(tmp_path: Path) -> None:
    (tmp_path / "oci-layout").write_text('{"imageLayoutVersion":"9"}')
    with pytest.raises(LayoutError, match="imageLayoutVersion is '9'"):
        LayoutWriter(tmp_path)


def test_new_blob_never_shows_a_partial_file_under_its_final_name(tmp_path: Path) -> None:
    writer = LayoutWriter(tmp_path)
    content = b"x" * 100_000
    final = writer.blob_path(digest_bytes(content))
    with writer.new_blob() as pending:
        pending.file.write(content[:50_000])
        assert not final.exists()
        pending.file.seek(0)  # writers may seek back to fill in headers
        pending.file.write(content[:10])
        pending.file.seek(50_000)
        pending.file.write(content[50_000:])
        assert not final.exists()
        with pytest.raises(RuntimeError, match="still being written"):
            _ = pending.ref
    assert pending.ref == ref_of(content)
    assert final.read_bytes() == content
    blobs = final.parent
    with pytest.raises(OSError, match="disk on fire"), writer.new_blob() as failing:
        failing.file.write(b"partial")
        raise OSError("disk on fire")
    assert sorted(p.name for p in blobs.iterdir()) == [final.name]  # neither the partial blob nor its temp file


def test_set_tags_replaces_the_same_tag_and_keeps_everything_else(tmp_path: Path) -> None:
    writer = LayoutWriter(tmp_path)
    (tmp_path / "index.json").write_text(
        json.dumps(
            {
                "schemaVersion": 2,
                "annotations": {"keep": "me"},
                "manifests": [
                    {"mediaType": OCI_MANIFEST, "digest": digest_bytes(b"a"), "size": 1},
                    {
                        "mediaType": OCI_MANIFEST,
                        "digest": digest_bytes(b"b"),
                        "size": 1,
                        "annotations": {REF_NAME: "t"},
                    },
                    {
                        "mediaType": OCI_MANIFEST,
                        "digest": digest_bytes(b"c"),
                        "size": 1,
                        "annotations": {REF_NAME: "t"},
                    },
                    {
                        "mediaType": OCI_MANIFEST,
                        "digest": digest_bytes(b"d"),
                        "size": 1,
                        "annotations": {REF_NAME: "u"},
                    },
                ],
            }
        )
    )
    new = Descriptor.of(OCI_MANIFEST, ref_of(b"e"), {"other": "x", REF_NAME: "old"})
    writer.set_tags({"t": new, "v": new})
    index = json.loads((tmp_path / "index.json").read_bytes())
    assert index["annotations"] == {"keep": "me"}
    assert [(m["digest"], m.get("annotations")) for m in index["manifests"]] == [
        (digest_bytes(b"a"), None),
        (digest_bytes(b"e"), {"other": "x", REF_NAME: "t"}),
        (digest_bytes(b"d"), {REF_NAME: "u"}),
        (digest_bytes(b"e"), {"other": "x", REF_NAME: "v"}),
    ]
    with pytest.raises(ValueError, match=r"not a valid org\.opencontainers\.image\.ref\.name"):
        writer.set_tags({"bad tag!": new})


def test_set_tags_leaves_a_malformed_index_json_alone(tmp_path: Path) -> None:
    writer = LayoutWriter(tmp_path)
    (tmp_path / "index.json").write_text("{not json")
    with pytest.raises(LayoutError, match=r"index\.json: malformed JSON"):
        writer.set_tags({"t": Descriptor.of(OCI_MANIFEST, ref_of(b"e"))})
    assert (tmp_path / "index.json").read_text() == "{not json"


ROUNDS = 150


def _tag_many(root: str, worker: int) -> None:
    writer = LayoutWriter(root)
    for i in range(ROUNDS):
        ref = writer.put_bytes(b"shared blob")  # both workers store the same blob at once
        own = Descriptor.of(OCI_MANIFEST, ref_of(f"{worker}-{i}".encode()))
        writer.set_tags({f"w{worker}-{i}": own, "shared": Descriptor.of(OCI_MANIFEST, ref)})


def test_two_concurrent_writers_lose_no_tag(tmp_path: Path) -> None:
    root = tmp_path / "out"
    LayoutWriter(root)
    context = multiprocessing.get_context("fork")
    workers = [context.Process(target=_tag_many, args=(str(root), w)) for w in range(2)]
    for worker in workers:
        worker.start()
    reads = 0
    while any(w.is_alive() for w in workers):
        if (root / "index.json").exists():
            Layout(root)  # index.json is replaced atomically: never seen half written
            reads += 1
    for worker in workers:
        worker.join()
        assert worker.exitcode == 0
    tags = Layout(root).tags()
    assert sorted(tags) == sorted(["shared"] + [f"w{w}-{i}" for w in range(2) for i in range(ROUNDS)])
    assert reads > 0
    assert _only_blob_is(root, b"shared blob")  # no temporary file left behind either


def _only_blob_is(root: Path, content: bytes) -> bool:
    blobs = root / "blobs" / "sha256"
    return [p.name for p in blobs.iterdir()] == [encoded(ref_of(content).digest)] and (
        blobs / encoded(ref_of(content).digest)
    ).read_bytes() == content


def test_reading_a_real_layout_does_not_write_to_it(tmp_path: Path) -> None:
    source = shared("hello-world-e2e")
    copy = tmp_path / "copy"
    shutil.copytree(source, copy)
    before = {p: p.stat().st_mtime_ns for p in copy.rglob("*")}
    layout = Layout(copy)
    for descriptor in layout.walk():
        layout.read_json(descriptor)
    assert {p: p.stat().st_mtime_ns for p in copy.rglob("*")} == before
