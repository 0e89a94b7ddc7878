"""The documented limits on hostile input (README, "Limits"): each exceeded gives a clear error naming the
input, never a crash or an unbounded allocation. Limits too large to reach in a test are lowered for it;
the mechanism under test is the same."""

import io
import json
import tarfile
from pathlib import Path

import pytest

from fixtures.make_layers import LayerWriter
from obdlayout.inspect.source import SourceTree
from obdlayout.layers import rules
from obdlayout.layers.errors import LayerError
from obdlayout.oci import walk
from obdlayout.oci.documents import MAX_INDEX_ENTRIES, MAX_LAYERS
from obdlayout.oci.errors import LayoutError
from obdlayout.oci.layout import JSON_BLOB_LIMIT, Layout
from obdlayout.oci.mediatypes import OCI_CONFIG, OCI_LAYER_TAR, OCI_MANIFEST
from obdlayout.oci.plan import Selection, plan
from obdlayout.tar import reader

from .oci_layouts import LayoutBuilder


def _tar(*members: tuple[tarfile.TarInfo, bytes]) -> io.BytesIO:
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w", format=tarfile.PAX_FORMAT) as archive:
        for info, data in members:
            info.size = len(data)
            archive.addfile(info, io.BytesIO(data))
    out.seek(0)
    return out


def _apply(stream: io.BytesIO) -> None:
    SourceTree().apply(stream, "sha256:layer")


def test_a_path_longer_than_path_max_is_refused_naming_the_entry() -> None:
    long_name = "/".join(["d"] * 2500)  # 4999 bytes
    with pytest.raises(LayerError, match=r"sha256:layer: entry 'd/d/d.*a path of 4999 bytes"):
        _apply(_tar((tarfile.TarInfo(long_name), b"x")))


def test_more_entries_than_a_layer_is_accepted_with(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(rules, "MAX_ENTRIES", 5)
    with pytest.raises(LayerError, match="more than 5 entries"):
        _apply(_tar(*[(tarfile.TarInfo(f"f{i}"), b"") for i in range(6)]))
    _apply(_tar(*[(tarfile.TarInfo(f"f{i}"), b"") for i in range(5)]))


def test_a_sparse_map_of_too_many_regions(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(reader, "MAX_SPARSE_REGIONS", 10)
    for kind in ("old-gnu", "pax-1.0"):
        writer = LayerWriter(tmp_path / f"{kind}.tar")
        regions = [(i * 8192, 512) for i in range(11)]
        if kind == "old-gnu":
            writer.old_gnu_sparse(b"sparse", 11 * 8192, regions, seed=1)
        else:
            writer.pax_sparse_1_0(b"sparse", 11 * 8192, regions, seed=1)
        with pytest.raises(LayerError, match=r"sparse map of 1[12] regions; at most 10"):
            _apply(io.BytesIO(writer.close().read_bytes()))


def _layout_with_index(root: Path, entries: int) -> Path:
    builder = LayoutBuilder(root)
    image = builder.image([builder.layer({"f": b"x"})])
    builder.tag("many", builder.index([image] * entries))
    return builder.save()


def test_an_index_of_too_many_entries(tmp_path: Path) -> None:
    layout = Layout(_layout_with_index(tmp_path / "src", MAX_INDEX_ENTRIES + 1))
    with pytest.raises(LayoutError, match=f"lists {MAX_INDEX_ENTRIES + 1} descriptors; at most {MAX_INDEX_ENTRIES}"):
        plan(layout, Selection(tags=("many",)))


def test_more_descriptors_than_a_walk_visits(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(walk, "MAX_DESCRIPTORS", 20)
    builder = LayoutBuilder(tmp_path / "src")
    images = [builder.image([builder.layer({f"f{i}": b"x"})]) for i in range(25)]
    builder.tag("wide", builder.index(images))
    layout = Layout(builder.save())
    with pytest.raises(LayoutError, match="more than 20 descriptors"):
        list(layout.walk())


def test_a_manifest_of_too_many_layers(tmp_path: Path) -> None:
    builder = LayoutBuilder(tmp_path / "src")
    layer = {k: v for k, v in builder.layer({"f": b"x"}, "none").items() if not k.startswith("_")}
    config = builder.json_blob({"rootfs": {"type": "layers", "diff_ids": []}}, OCI_CONFIG)
    manifest = {"schemaVersion": 2, "mediaType": OCI_MANIFEST, "config": config, "layers": [layer] * (MAX_LAYERS + 1)}
    builder.tag("tall", builder.json_blob(manifest, OCI_MANIFEST))
    layout = Layout(builder.save())
    assert layer["mediaType"] == OCI_LAYER_TAR
    with pytest.raises(LayoutError, match=f"layers lists {MAX_LAYERS + 1} descriptors"):
        plan(layout, Selection(tags=("tall",)))


def test_a_document_larger_than_the_json_limit(tmp_path: Path) -> None:
    builder = LayoutBuilder(tmp_path / "src")
    huge = json.dumps({"schemaVersion": 2, "pad": "x" * JSON_BLOB_LIMIT}).encode()
    builder.tag("huge", builder.blob(huge, OCI_MANIFEST))
    layout = Layout(builder.save())
    with pytest.raises(LayoutError, match=r"over the .*-byte limit"):
        plan(layout, Selection(tags=("huge",)))
