"""The plan stage: selection, tree walking, platform filtering, dropped entries and refused layers."""

from pathlib import Path

import pytest

from obdlayout.oci.descriptor import Descriptor, Platform
from obdlayout.oci.digest import chain_id_to_uuid
from obdlayout.oci.errors import LayoutError
from obdlayout.oci.layout import Layout
from obdlayout.oci.mediatypes import (
    DOCKER_MANIFEST_LIST,
    OCI_LAYER_GZIP,
    OCI_NONDIST_GZIP,
    REFERENCE_TYPE,
    Compression,
)
from obdlayout.oci.plan import ConversionPlan, ImagePlan, IndexPlan, Selection, plan
from obdlayout.oci.walk import is_attestation

from .oci_layouts import LayoutBuilder, platform
from .shared import shared

DOCKER_LIST_PLATFORMS = [
    "linux/amd64",
    "linux/arm/v5",
    "linux/arm/v7",
    "linux/arm64/v8",
    "linux/386",
    "linux/mips64le",
    "linux/ppc64le",
    "linux/riscv64",
    "linux/s390x",
]


def _hello(*tags: str, platforms: tuple[str, ...] = ()) -> ConversionPlan:
    return plan(Layout(shared("hello-world")), Selection(tags=tags, platforms=tuple(map(Platform.parse, platforms))))


def _e2e(*tags: str, platforms: tuple[str, ...] = ()) -> ConversionPlan:
    layout = Layout(shared("hello-world-e2e"))
    return plan(layout, Selection(tags=tags, platforms=tuple(map(Platform.parse, platforms))))


def _shape(node: ImagePlan | IndexPlan) -> object:
    """A tree as nested lists of platform strings."""
    if isinstance(node, ImagePlan):
        return str(node.platform)
    return [_shape(child) for child in node.children]


def test_docker_list_covers_all_nine_platforms() -> None:
    result = _hello("docker-list")
    root = result.roots[0]
    assert root.selected_by == "tag 'docker-list'"
    assert isinstance(root.node, IndexPlan)
    assert root.node.descriptor.media_type == DOCKER_MANIFEST_LIST
    assert _shape(root.node) == DOCKER_LIST_PLATFORMS
    images = result.images()
    assert len(images) == 9
    for image in images:
        assert len(image.layers) == 1
        layer = image.layers[0]
        assert layer.compression is Compression.GZIP
        assert layer.chain_id == layer.diff_id == image.config["rootfs"]["diff_ids"][0]
        assert (layer.uuid, layer.parent_uuid) == (chain_id_to_uuid(layer.diff_id), None)
    assert result.warnings == ()


def test_single_manifest_tag() -> None:
    image = _hello("amd64").roots[0].node
    assert isinstance(image, ImagePlan)
    assert image.descriptor.digest == "sha256:7e9b6e7ba2842c91cf49f3e214d04a7a496f8214356f41d81a6e6dcad11f11e3"
    assert image.config["architecture"] == "amd64"
    assert image.layers[0].uuid == "01bb4fce-3eb1-b56b-05ad-f99504dafd31"  # convertor-spec.md §2.3


def test_nested_index_keeps_its_nesting() -> None:
    result = _e2e("nested-index")
    root = result.roots[0].node
    assert isinstance(root, IndexPlan)
    assert _shape(root) == ["linux/386", ["linux/amd64", "linux/arm64/v8"]]
    inner = root.children[1]
    assert isinstance(inner, IndexPlan)
    assert inner.descriptor.digest == "sha256:a88a816b83f40e5d7b73eda36a450e1b07c5982840f13b0d2a1048adb98571c2"
    assert inner.descriptor.platform is None
    assert len(result.images()) == 3


def test_images_are_listed_once_across_roots() -> None:
    result = _e2e("nested-index", "multi-arch", "amd64")
    assert len(result.roots) == 3
    assert len(result.images()) == 9  # multi-arch holds every image of the other two


@pytest.mark.parametrize(
    ("filters", "shape"),
    [
        (("linux/arm",), ["linux/arm/v5", "linux/arm/v7"]),
        (("linux/arm/v7",), ["linux/arm/v7"]),
        (("linux/arm64",), ["linux/arm64/v8"]),
        (("linux/aarch64/v8",), ["linux/arm64/v8"]),
        (("linux/x86_64", "linux/s390x"), ["linux/amd64", "linux/s390x"]),
    ],
)
def test_platform_filter_on_a_list(filters: tuple[str, ...], shape: list[str]) -> None:
    assert _shape(_hello("docker-list", platforms=filters).roots[0].node) == shape


@pytest.mark.parametrize(
    ("want", "have", "selected"),
    [
        ("linux/arm/v7", "linux/arm", True),  # arm without a variant is v7
        ("linux/arm/v5", "linux/arm", False),
        ("linux/arm64", "linux/arm64/v8", True),
        ("linux/arm64/v8", "linux/arm64", True),
        ("linux/amd64", "linux/amd64/v3", True),
        ("linux/amd64/v3", "linux/amd64", False),
        ("linux/amd64", "windows/amd64", False),
        ("linux/386", "linux/i386", True),
    ],
)
def test_platform_matching(want: str, have: str, selected: bool) -> None:
    assert Platform.parse(want).matches(Platform.parse(have)) is selected


def test_platform_parse_refuses_other_forms() -> None:
    for bad in ["linux", "linux/", "/amd64", "linux/arm/v7/x"]:
        with pytest.raises(ValueError, match="os/arch"):
            Platform.parse(bad)


def test_platform_filter_reaches_into_nested_indexes_and_drops_emptied_ones() -> None:
    assert _shape(_e2e("nested-index", platforms=("linux/amd64",)).roots[0].node) == [["linux/amd64"]]
    assert _shape(_e2e("nested-index", platforms=("linux/386",)).roots[0].node) == ["linux/386"]


def test_platform_filter_on_a_manifest_without_descriptor_platform_uses_its_config() -> None:
    # hello-world-e2e's `amd64` entry carries no platform; the config says linux/amd64.
    assert _shape(_e2e("amd64", platforms=("linux/amd64",)).roots[0].node) == "linux/amd64"
    with pytest.raises(LayoutError, match=r"tag 'amd64': sha256:7e9b6e7b\w+ has nothing for platform linux/arm64"):
        _e2e("amd64", platforms=("linux/arm64",))


def test_platform_filter_matching_nothing() -> None:
    with pytest.raises(
        LayoutError, match=r"tag 'docker-list': sha256:\w+ has nothing for platform windows/amd64 or linux/m68k"
    ):
        _hello("docker-list", platforms=("windows/amd64", "linux/m68k"))


def test_selection_by_digest_of_a_nested_entry_keeps_its_platform() -> None:
    layout = Layout(shared("hello-world-e2e"))
    digest = "sha256:084c3bdd1271adc754e2c5f6ba7046f1a2c099597dbd9643592fa8eb99981402"
    result = plan(layout, Selection(digests=(digest,)))
    image = result.roots[0].node
    assert result.roots[0].selected_by == f"digest {digest}"
    assert isinstance(image, ImagePlan)
    assert str(image.platform) == "linux/arm/v5"


def test_nothing_selected(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="nothing selected"):
        plan(Layout(LayoutBuilder(tmp_path).save()), Selection())


def test_an_already_converted_image_is_refused() -> None:
    with pytest.raises(LayoutError, match=r"tag 'amd64-converted', manifest sha256:42caa56a\w+, layer 0: is already"):
        _hello("amd64-converted")


# Built layouts


def _attestation(builder: LayoutBuilder) -> dict[str, object]:
    statement = builder.blob(b'{"_type":"https://in-toto.io/Statement/v0.1"}', "application/vnd.in-toto+json")
    return builder.image(
        [{**statement, "_diff_id": statement["digest"]}],
        arch="unknown",
        os="unknown",
        descriptor_extra={
            **platform("unknown", "unknown"),
            "annotations": {REFERENCE_TYPE: "attestation-manifest", "vnd.docker.reference.digest": "sha256:x"},
        },
    )


def test_attestation_manifests_are_dropped_with_a_warning(tmp_path: Path) -> None:
    builder = LayoutBuilder(tmp_path)
    amd64 = builder.image([builder.layer({"a": b"1"})], descriptor_extra=platform("linux", "amd64"))
    attestation = _attestation(builder)
    builder.tag("multi", builder.index([amd64, attestation]))
    result = plan(Layout(builder.save()), Selection(tags=("multi",)))
    assert _shape(result.roots[0].node) == ["linux/amd64"]
    index_digest = result.roots[0].node.descriptor.digest
    assert result.warnings == (f"tag 'multi': dropped attestation manifest {attestation['digest']} of {index_digest}",)


def test_an_index_of_only_attestations_is_refused_saying_why(tmp_path: Path) -> None:
    builder = LayoutBuilder(tmp_path)
    builder.tag("only", builder.index([_attestation(builder)]))
    with pytest.raises(
        LayoutError, match=r"tag 'only': sha256:\w+ has nothing to convert \(tag 'only': dropped attestation"
    ):
        plan(Layout(builder.save()), Selection(tags=("only",)))


def test_unknown_platform_alone_is_not_an_attestation(tmp_path: Path) -> None:
    # The Go convertor's rule (convertor-spec.md §6): so such a manifest is planned, and its in-toto layer refused.
    builder = LayoutBuilder(tmp_path)
    descriptor = _attestation(builder)
    bare = {**descriptor, "annotations": {}}
    assert is_attestation(Descriptor.parse(descriptor))
    assert not is_attestation(Descriptor.parse(bare))
    builder.tag("odd", builder.index([bare]))
    with pytest.raises(LayoutError, match=r"layer 0: unsupported layer media type 'application/vnd\.in-toto\+json'"):
        plan(Layout(builder.save()), Selection(tags=("odd",)))


def test_encrypted_layer_is_refused_naming_tag_manifest_and_layer(tmp_path: Path) -> None:
    builder = LayoutBuilder(tmp_path)
    plain = builder.layer({"a": b"1"})
    encrypted = builder.layer({"b": b"2"}, media_type=OCI_LAYER_GZIP + "+encrypted")
    image = builder.image([plain, encrypted])
    builder.tag("secret", image)
    with pytest.raises(LayoutError) as caught:
        plan(Layout(builder.save()), Selection(tags=("secret",)))
    assert str(caught.value) == (
        f"{builder.blob_path(encrypted['digest'])}: tag 'secret', manifest {image['digest']}, layer 1: media type "
        f"'application/vnd.oci.image.layer.v1.tar+gzip+encrypted' is encrypted; decrypt the image first"
    )


def test_unknown_layer_media_type_is_refused(tmp_path: Path) -> None:
    builder = LayoutBuilder(tmp_path)
    image = builder.image([builder.layer({"a": b"1"}, media_type="application/x-squashfs")])
    builder.tag("odd", image)
    with pytest.raises(LayoutError, match=rf"manifest {image['digest']}, layer 0: unsupported layer media type"):
        plan(Layout(builder.save()), Selection(tags=("odd",)))


def test_config_with_too_few_diff_ids_is_refused(tmp_path: Path) -> None:
    # The case that made the Go convertor panic (convertor-spec.md §2.3).
    builder = LayoutBuilder(tmp_path)
    layers = [builder.layer({"a": b"1"}), builder.layer({"b": b"2"})]
    builder.tag("short", builder.image(layers, config_extra={"rootfs": {"type": "layers", "diff_ids": []}}))
    with pytest.raises(LayoutError, match="the config lists 0 diff_ids for 2 layers"):
        plan(Layout(builder.save()), Selection(tags=("short",)))


def test_config_go_could_not_read_is_refused_before_converting(tmp_path: Path) -> None:
    builder = LayoutBuilder(tmp_path)
    builder.tag("t", builder.image([builder.layer({"a": b"1"})], config_extra={"created": "yesterday"}))
    with pytest.raises(LayoutError, match="image config: created: time 'yesterday' is not RFC 3339"):
        plan(Layout(builder.save()), Selection(tags=("t",)))


def test_missing_layer_blob_is_refused_and_non_distributable_ones_name_their_urls(tmp_path: Path) -> None:
    builder = LayoutBuilder(tmp_path)
    foreign = {**builder.layer({"a": b"1"}, media_type=OCI_NONDIST_GZIP), "urls": ["https://example.com/l"]}
    builder.tag("t", builder.image([foreign]))
    builder.save()
    result = plan(Layout(builder.root), Selection(tags=("t",)))
    assert result.warnings[0].endswith(
        f"layer 0: non-distributable layer {foreign['digest']} becomes a distributable one"
    )
    builder.blob_path(foreign["digest"]).unlink()
    with pytest.raises(
        LayoutError, match=r"layer 0: blob .* is missing; it is non-distributable, its urls: https://ex"
    ):
        plan(Layout(builder.root), Selection(tags=("t",)))


def test_non_images_and_unknown_entries_are_dropped_from_an_index_but_refused_at_the_top(tmp_path: Path) -> None:
    builder = LayoutBuilder(tmp_path)
    image = builder.image([builder.layer({"a": b"1"})], descriptor_extra=platform("linux", "amd64"))
    artifact = builder.image([builder.layer({"b": b"2"})], config_media_type="application/vnd.example.sbom.v1+json")
    unknown = builder.blob(b"{}", "application/vnd.example.thing")
    builder.tag("mixed", builder.index([image, artifact, unknown]))
    builder.tag("artifact", artifact)
    builder.tag("thing", unknown)
    builder.save()
    result = plan(Layout(builder.root), Selection(tags=("mixed",)))
    assert _shape(result.roots[0].node) == ["linux/amd64"]
    assert len(result.warnings) == 2
    assert "not an image: its config has media type 'application/vnd.example.sbom.v1+json'" in result.warnings[0]
    assert "dropped index entry" in result.warnings[1]
    with pytest.raises(LayoutError, match=r"tag 'artifact', manifest sha256:\w+: not an image"):
        plan(Layout(builder.root), Selection(tags=("artifact",)))
    with pytest.raises(
        LayoutError, match=r"tag 'thing': sha256:\w+: media type 'application/vnd\.example\.thing' is neither"
    ):
        plan(Layout(builder.root), Selection(tags=("thing",)))


def test_schema1_manifests_are_refused(tmp_path: Path) -> None:
    builder = LayoutBuilder(tmp_path)
    builder.tag("old", builder.blob(b"{}", "application/vnd.docker.distribution.manifest.v1+prettyjws"))
    with pytest.raises(LayoutError, match="Docker schema 1 manifests are not supported"):
        plan(Layout(builder.save()), Selection(tags=("old",)))


def test_layers_keep_order_compression_and_chain(tmp_path: Path) -> None:
    builder = LayoutBuilder(tmp_path)
    layers = [
        builder.layer({"a": b"1"}, compression="zstd"),
        builder.layer({"b": b"2"}, compression="none"),
        builder.layer({"c": b"3"}),
    ]
    builder.tag("t", builder.image(layers))
    image = plan(Layout(builder.save()), Selection(tags=("t",))).images()[0]
    assert [layer.compression for layer in image.layers] == [Compression.ZSTD, Compression.NONE, Compression.GZIP]
    assert [layer.descriptor.digest for layer in image.layers] == [layer["digest"] for layer in layers]
    assert [layer.parent_uuid for layer in image.layers] == [None, image.layers[0].uuid, image.layers[1].uuid]
