"""The one walk over indexes (oci/walk.py) and what uses it: the plan, the read side, digest lookup.

A layout whose indexes name the same child index over and over has exponentially many paths but few
blobs: every index must be read once, and the plan, the output and the image listing stay linear."""

from pathlib import Path

import pytest

from obdlayout.inspect.image import find_images
from obdlayout.oci.descriptor import Descriptor
from obdlayout.oci.documents import Index
from obdlayout.oci.errors import LayoutError
from obdlayout.oci.layout import Layout
from obdlayout.oci.output import OutputOptions, build, overlaybd_layer
from obdlayout.oci.plan import Selection, plan
from obdlayout.oci.walk import MAX_INDEX_DEPTH, IndexWalker

from .oci_layouts import LayoutBuilder, platform

FAN_OUT = 16


def _fan_out_layout(root: Path, depth: int) -> Path:
    """One image below `depth` levels of indexes, each naming the level below FAN_OUT times: FAN_OUT**depth
    paths to the image, depth + 1 documents."""
    builder = LayoutBuilder(root)
    node = builder.image([builder.layer({"f": b"x"})])
    for _ in range(depth):
        node = builder.index([node] * FAN_OUT)
    builder.tag("deep", node)
    return builder.save()


class _CountingLayout(Layout):
    def __init__(self, root: Path) -> None:
        super().__init__(root)
        self.index_reads: list[str] = []

    def read_index(self, descriptor: Descriptor) -> Index:
        self.index_reads.append(descriptor.digest)
        return super().read_index(descriptor)


def test_each_index_is_read_once_and_the_plan_stays_small(tmp_path: Path) -> None:
    depth = 8  # 16**8 = 4 billion paths to the one image
    layout = _CountingLayout(_fan_out_layout(tmp_path, depth))
    conversion = plan(layout, Selection(tags=("deep",)))
    assert sorted(layout.index_reads) == sorted(set(layout.index_reads)) and len(layout.index_reads) == depth
    (image,) = conversion.images()
    converted = {image.layers[0].chain_id: overlaybd_layer(image.layers[0].descriptor.ref)}
    built = build(conversion.roots[0].node, converted, OutputOptions(oci=True))
    assert len(built.blobs) == 2 + depth  # config, manifest, one index per level: each written once
    assert built.blobs[-1].count(b'"digest"') == FAN_OUT  # the top index still names its child 16 times


def test_the_read_side_lists_the_image_once(tmp_path: Path) -> None:
    layout = _CountingLayout(_fan_out_layout(tmp_path, 8))
    (found,) = find_images(layout, "deep")
    assert len(found.parents) == 8
    assert len(layout.index_reads) == 8


def test_digest_lookup_finds_the_nearest_descriptor(tmp_path: Path) -> None:
    builder = LayoutBuilder(tmp_path)
    image = builder.image([builder.layer({"f": b"x"})])
    inner = builder.index([{**image, **platform("linux", "arm64")}])
    builder.tag("list", builder.index([inner, {**image, **platform("linux", "amd64")}]))
    layout = Layout(builder.save())
    found = layout.resolve_digest(image["digest"])
    assert str(found.platform) == "linux/amd64"  # one level down, not two
    assert [d.digest for d in layout.walk()].count(image["digest"]) == 1


def test_indexes_nested_too_deep_are_refused(tmp_path: Path) -> None:
    builder = LayoutBuilder(tmp_path)
    node = builder.image([builder.layer({"f": b"x"})])
    for _ in range(MAX_INDEX_DEPTH + 1):
        node = builder.index([node])
    builder.tag("deep", node)
    layout = Layout(builder.save())
    with pytest.raises(LayoutError, match=f"more than {MAX_INDEX_DEPTH} levels"):
        plan(layout, Selection(tags=("deep",)))
    with pytest.raises(LayoutError, match=f"more than {MAX_INDEX_DEPTH} levels"):
        find_images(layout, "deep")


def test_attestations_are_skipped_and_told_once(tmp_path: Path) -> None:
    builder = LayoutBuilder(tmp_path)
    image = builder.image([builder.layer({"f": b"x"})])
    attestation = {**builder.image([]), "annotations": {"vnd.docker.reference.type": "attestation-manifest"}}
    index = builder.index([image, attestation])
    builder.tag("list", builder.index([index, index]))
    layout = Layout(builder.save())
    told: list[str] = []
    walker = IndexWalker(layout.read_index, on_skip=lambda _, entry: told.append(entry.digest))
    visited = [visit.descriptor.digest for visit in walker.walk(layout.index.manifests)]
    assert attestation["digest"] not in visited and image["digest"] in visited
    assert told == [attestation["digest"]]
