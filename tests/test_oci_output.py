"""Building and publishing the converted documents, against the Go convertor's golden hello-world output."""

import json
from pathlib import Path
from typing import Any

import pytest

from obdlayout.oci import gojson
from obdlayout.oci.digest import BlobRef, ref_of
from obdlayout.oci.errors import LayoutError
from obdlayout.oci.layout import Layout
from obdlayout.oci.mediatypes import (
    ARTIFACT_TYPE_OVERLAYBD,
    DOCKER_CONFIG,
    DOCKER_LAYER_TAR,
    DOCKER_MANIFEST,
    DOCKER_MANIFEST_LIST,
    OCI_INDEX,
    OCI_MANIFEST,
    REF_NAME,
)
from obdlayout.oci.output import BuiltNode, OutputLayer, OutputOptions, build, overlaybd_layer, publish
from obdlayout.oci.plan import ConversionPlan, ImagePlan, IndexPlan, Selection, plan
from obdlayout.oci.writer import LayoutWriter

from .oci_layouts import LayoutBuilder, platform
from .shared import shared

GOLDEN_LAYER = BlobRef("sha256:022231c3f1af70e0cc42f0c3781eabf174cff608210585bf93fc83e16d33672d", 642560)
# convertor-spec.md §3.4: the keys image-spec's Image struct lacks, which the Go convertor drops and we keep.
DOCKER_ONLY_TOP = {"container", "container_config", "docker_version"}
DOCKER_ONLY_CONFIG = {
    "AttachStderr",
    "AttachStdin",
    "AttachStdout",
    "Domainname",
    "Hostname",
    "Image",
    "OnBuild",
    "OpenStdin",
    "StdinOnce",
    "Tty",
}


def _fake_converted(result: ConversionPlan) -> dict[str, OutputLayer]:
    """A made-up overlaybd blob identity for every source layer chain."""
    return {
        layer.chain_id: overlaybd_layer(ref_of(f"overlaybd {layer.chain_id}".encode()))
        for image in result.images()
        for layer in image.layers
    }


def _docs(built: BuiltNode) -> list[Any]:
    return [gojson.parse(blob) for blob in built.blobs]


def _golden() -> tuple[Layout, bytes, bytes]:
    layout = Layout(shared("hello-world"))
    manifest_desc = layout.resolve_tag("amd64-converted")
    manifest = layout.read_blob(manifest_desc)
    config = layout.read_blob(layout.read_manifest(manifest_desc).config)
    return layout, manifest, config


def _build_amd64(options: OutputOptions) -> tuple[ImagePlan, BuiltNode]:
    layout, golden_manifest, _ = _golden()
    golden_layer = gojson.parse(golden_manifest)["layers"][0]
    layer_ref = BlobRef(golden_layer["digest"], golden_layer["size"])
    assert layer_ref == GOLDEN_LAYER
    image = plan(layout, Selection(tags=("amd64",))).roots[0].node
    assert isinstance(image, ImagePlan)
    return image, build(image, {image.layers[0].chain_id: overlaybd_layer(layer_ref)}, options)


def test_hello_world_amd64_matches_the_go_convertor_except_for_the_docker_keys_we_keep() -> None:
    _, golden_manifest, golden_config = _golden()
    _, built = _build_amd64(OutputOptions(oci=True))
    config_bytes, manifest_bytes = built.blobs
    ours, golden = gojson.parse(config_bytes), gojson.parse(golden_config)
    # Field by field: every key of Go's config, with Go's value; beyond them only Docker keys Go drops.
    for key, value in golden.items():
        if key == "config":
            assert {k: ours["config"][k] for k in value} == value
        else:
            assert ours[key] == value, key
    assert set(ours) - set(golden) == DOCKER_ONLY_TOP
    assert set(ours["config"]) - set(golden["config"]) == DOCKER_ONLY_CONFIG
    # Those keys set aside, the bytes are Go's: known fields in struct order, extras after them.
    known = {field.key for field in gojson.IMAGE}
    known_config = {field.key for field in gojson.IMAGE_CONFIG}
    projected = {k: v for k, v in ours.items() if k in known}
    projected["config"] = {k: v for k, v in ours["config"].items() if k in known_config}
    assert gojson.marshal(projected, gojson.IMAGE) == golden_config
    # The manifest differs from Go's only in the config descriptor, which names our (larger) config.
    manifest = gojson.parse(manifest_bytes)
    golden_config_descriptor = gojson.parse(golden_manifest)["config"]
    ours_ref = ref_of(config_bytes)
    assert manifest["config"] == {**golden_config_descriptor, "digest": ours_ref.digest, "size": ours_ref.size}
    manifest["config"] = golden_config_descriptor
    assert gojson.marshal(manifest, gojson.MANIFEST) == golden_manifest
    # The descriptor to tag keeps the source entry's platform.
    assert built.descriptor.platform is not None and str(built.descriptor.platform) == "linux/amd64"
    assert built.descriptor.ref == ref_of(manifest_bytes)
    assert built.layers == (GOLDEN_LAYER,)


def test_docker_media_types_without_oci() -> None:
    _, built = _build_amd64(OutputOptions())
    config, manifest = _docs(built)
    assert manifest["mediaType"] == DOCKER_MANIFEST
    assert manifest["config"]["mediaType"] == DOCKER_CONFIG
    assert [layer["mediaType"] for layer in manifest["layers"]] == [DOCKER_LAYER_TAR]
    assert manifest["layers"][0]["annotations"]["containerd.io/snapshot/overlaybd/blob-size"] == "642560"
    assert config["rootfs"]["diff_ids"] == [GOLDEN_LAYER.digest]
    assert built.descriptor.media_type == DOCKER_MANIFEST


def _without(doc: dict[str, Any], *keys: str) -> dict[str, Any]:
    return {k: v for k, v in doc.items() if k not in keys}


def test_referrer_adds_exactly_subject_and_artifact_type_to_a_manifest() -> None:
    image, plain = _build_amd64(OutputOptions(oci=True))
    _, referred = _build_amd64(OutputOptions(referrer=True))  # forces --oci
    plain_config, plain_manifest = _docs(plain)
    config, manifest = _docs(referred)
    assert config == plain_config
    assert set(manifest) - set(plain_manifest) == {"subject", "artifactType"}
    assert _without(manifest, "subject", "artifactType") == plain_manifest
    assert manifest["artifactType"] == ARTIFACT_TYPE_OVERLAYBD
    assert manifest["subject"] == {
        "mediaType": DOCKER_MANIFEST,
        "digest": image.descriptor.digest,
        "size": 525,
    }


def _index_docs(built: BuiltNode) -> dict[str, Any]:
    """Every index among the built blobs, by digest."""
    return {ref_of(b).digest: gojson.parse(b) for b in built.blobs if b'"manifests":' in b}


def test_multi_arch_keeps_platforms_in_order_and_takes_oci_types() -> None:
    layout = Layout(shared("hello-world"))
    result = plan(layout, Selection(tags=("docker-list",)))
    root = result.roots[0].node
    assert isinstance(root, IndexPlan)
    oci = build(root, _fake_converted(result), OutputOptions(oci=True))
    index = gojson.parse(oci.blobs[-1])
    assert index["mediaType"] == OCI_INDEX
    assert oci.descriptor.media_type == OCI_INDEX
    source = layout.read_index(root.descriptor)
    assert [m["platform"] for m in index["manifests"]] == [d.fields["platform"] for d in source.manifests]
    assert {m["mediaType"] for m in index["manifests"]} == {OCI_MANIFEST}
    assert len(oci.blobs) == 2 * 9 + 1
    docker = build(root, _fake_converted(result), OutputOptions())
    assert gojson.parse(docker.blobs[-1])["mediaType"] == DOCKER_MANIFEST_LIST
    assert docker.descriptor.media_type == DOCKER_MANIFEST_LIST
    assert {m["mediaType"] for m in gojson.parse(docker.blobs[-1])["manifests"]} == {DOCKER_MANIFEST}


def test_referrer_on_a_nested_index_marks_every_level() -> None:
    layout = Layout(shared("hello-world-e2e"))
    result = plan(layout, Selection(tags=("nested-index",)))
    root = result.roots[0].node
    assert isinstance(root, IndexPlan)
    converted = _fake_converted(result)
    plain = build(root, converted, OutputOptions(oci=True))
    referred = build(root, converted, OutputOptions(referrer=True))
    plain_docs = [_without(doc, "manifests", "config") for doc in _docs(plain)]
    referred_docs = [_without(doc, "manifests", "config") for doc in _docs(referred)]
    sources = {image.descriptor.digest: image.descriptor for image in result.images()}
    sources.update(
        {root.descriptor.digest: root.descriptor, root.children[1].descriptor.digest: root.children[1].descriptor}
    )
    subjects = []
    for before, after in zip(plain_docs, referred_docs, strict=True):
        if "schemaVersion" not in before:  # a config
            assert after == before
            continue
        assert _without(after, "subject", "artifactType") == before
        assert after["artifactType"] == ARTIFACT_TYPE_OVERLAYBD
        subjects.append(after["subject"]["digest"])
        assert after["subject"] == sources[after["subject"]["digest"]].content()
    assert sorted(subjects) == sorted(sources)  # 3 manifests, 2 indexes
    # Child counts match the source's at both levels.
    indexes = list(_index_docs(referred).values())
    assert sorted(len(i["manifests"]) for i in indexes) == [2, 2]


def test_nested_index_descriptor_keeps_platform_and_annotations(tmp_path: Path) -> None:
    builder = LayoutBuilder(tmp_path)
    amd64 = builder.image([builder.layer({"a": b"1"})], descriptor_extra=platform("linux", "amd64"))
    inner = builder.index([amd64], annotations={"note": "inner"}, **platform("linux", "amd64"))
    builder.tag("outer", builder.index([inner], document_extra={"annotations": {"outer": "yes"}}))
    result = plan(Layout(builder.save()), Selection(tags=("outer",)))
    built = build(result.roots[0].node, _fake_converted(result), OutputOptions(oci=True))
    outer = gojson.parse(built.blobs[-1])
    assert outer["annotations"] == {"outer": "yes"}
    (child,) = outer["manifests"]
    assert child["annotations"] == {"note": "inner"}
    assert child["platform"] == {"architecture": "amd64", "os": "linux"}
    assert child["mediaType"] == OCI_INDEX
    assert child["digest"] == ref_of(built.blobs[-2]).digest


def test_base_layer_goes_first_with_the_same_annotations() -> None:
    base = BlobRef("sha256:a8b5fca80efae55088290f3da8110d7742de55c2a378d5ab53226a483f390e21", 4739584)
    _, built = _build_amd64(OutputOptions(oci=True, base_layer=overlaybd_layer(base)))
    config, manifest = _docs(built)
    assert config["rootfs"]["diff_ids"] == [base.digest, GOLDEN_LAYER.digest]
    assert [(layer["digest"], layer["size"]) for layer in manifest["layers"]] == [
        (base.digest, base.size),
        (GOLDEN_LAYER.digest, GOLDEN_LAYER.size),
    ]
    assert manifest["layers"][0]["annotations"] == {
        "containerd.io/snapshot/overlaybd/blob-digest": base.digest,
        "containerd.io/snapshot/overlaybd/blob-size": str(base.size),
        "containerd.io/snapshot/overlaybd/version": "0.1.0",
    }
    assert len(config["history"]) == 2  # history is not changed (§2.4)
    assert built.layers == (base, GOLDEN_LAYER)


def test_a_layer_without_a_converted_blob_is_an_error() -> None:
    layout = Layout(shared("hello-world"))
    image = plan(layout, Selection(tags=("amd64",))).roots[0].node
    with pytest.raises(KeyError, match="layer 0: no converted blob given"):
        build(image, {}, OutputOptions())


def test_publish_writes_a_readable_layout_with_one_entry_per_tag(tmp_path: Path) -> None:
    source = Layout(shared("hello-world"))
    result = plan(source, Selection(tags=("docker-list", "amd64")))
    writer = LayoutWriter(tmp_path / "out")
    converted: dict[str, OutputLayer] = {}
    for image in result.images():
        for layer in image.layers:
            with writer.new_blob() as blob:
                blob.file.write(f"overlaybd blob of {layer.chain_id}".encode())
            converted[layer.chain_id] = overlaybd_layer(blob.ref)
    options = OutputOptions(oci=True)
    outputs = {
        "docker-list-obd": build(result.roots[0].node, converted, options),
        "amd64-obd": build(result.roots[1].node, converted, options),
    }
    with pytest.raises(LayoutError, match=r"layer blob sha256:\w+ is not in the layout"):
        publish(writer, {"broken": build(result.roots[1].node, {**converted, **_fake_converted(result)}, options)})
    publish(writer, outputs)
    publish(writer, outputs)  # idempotent: same entries, nothing duplicated
    out = Layout(tmp_path / "out")
    assert out.tags() == ["docker-list-obd", "amd64-obd"]
    multi = out.resolve_tag("docker-list-obd")
    assert multi.media_type == OCI_INDEX  # one tagged entry pointing to an index blob (skopeo's form)
    assert multi.annotations == {REF_NAME: "docker-list-obd"}
    single = out.resolve_tag("amd64-obd")
    assert single.annotations == {REF_NAME: "amd64-obd"}  # the source's ref.name is replaced
    assert str(single.platform) == "linux/amd64"
    for descriptor in out.walk():  # every document reads back and verifies
        manifest = out.read_manifest(descriptor) if descriptor.media_type == OCI_MANIFEST else None
        if manifest is not None:
            out.read_json(manifest.config)
            assert all(out.has_blob(layer) for layer in manifest.layers)
    assert json.loads((tmp_path / "out" / "index.json").read_bytes())["mediaType"] == OCI_INDEX
    with pytest.raises(LayoutError, match="is already an overlaybd layer"):
        plan(out, Selection(tags=("amd64-obd",)))
