"""`obdlayout convert` as a user runs it: against the Go convertor's golden output, skopeo, and bad input."""

import hashlib
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from obdlayout.cli.main import cli
from obdlayout.oci.descriptor import Descriptor
from obdlayout.oci.layers import EntriesAhead
from obdlayout.oci.layout import Layout

from .ext4tree import read_tree
from .oci_layouts import LayoutBuilder, platform
from .ocimodel import ROOT, Model, differences
from .shared import assert_fsck_clean, fixture_layers, shared, write_raw_image

OVERLAYBD_DIGEST = "containerd.io/snapshot/overlaybd/blob-digest"
OVERLAYBD_SIZE = "containerd.io/snapshot/overlaybd/blob-size"
OVERLAYBD_VERSION = "containerd.io/snapshot/overlaybd/version"


def run(*args: str | Path, code: int = 0) -> str:
    result = CliRunner().invoke(cli, ["convert", *map(str, args), "-j", "1"])
    assert result.exit_code == code, result.output
    assert "Traceback" not in result.output
    return result.output


def blob(layout: Path, digest: str) -> bytes:
    return (layout / "blobs" / "sha256" / digest.removeprefix("sha256:")).read_bytes()


def load(layout: Path, digest: str) -> Any:
    return json.loads(blob(layout, digest))


def tagged(layout: Path, tag: str) -> dict[str, Any]:
    index = json.loads((layout / "index.json").read_text())
    (entry,) = [
        m for m in index["manifests"] if m.get("annotations", {}).get("org.opencontainers.image.ref.name") == tag
    ]
    return dict(entry)


def snapshot(layout: Path) -> dict[str, str]:
    """Every file of a layout with its content hash."""
    return {
        str(p.relative_to(layout)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(layout.rglob("*"))
        if p.is_file()
    }


def test_hello_world_matches_the_go_convertor(tmp_path: Path) -> None:
    source = shared("hello-world")
    out = tmp_path / "out"
    run(source, out, "-i", "amd64", "--oci")
    ours = load(out, tagged(out, "amd64")["digest"])
    golden_desc = tagged(source, "amd64-converted")
    golden = load(source, golden_desc["digest"])
    # Same manifest but for the layer blob itself and the config it names (see the config check).
    assert ours.keys() == golden.keys()
    assert {k: v for k, v in ours.items() if k not in ("layers", "config")} == {
        k: v for k, v in golden.items() if k not in ("layers", "config")
    }
    assert ours["config"]["mediaType"] == golden["config"]["mediaType"]
    (layer,) = ours["layers"]
    (golden_layer,) = golden["layers"]
    assert layer["mediaType"] == golden_layer["mediaType"] == "application/vnd.oci.image.layer.v1.tar"
    assert layer["annotations"] == {
        OVERLAYBD_DIGEST: layer["digest"],
        OVERLAYBD_SIZE: str(layer["size"]),
        OVERLAYBD_VERSION: golden_layer["annotations"][OVERLAYBD_VERSION],
    }
    assert layer["annotations"].keys() == golden_layer["annotations"].keys()
    layer_bytes = blob(out, layer["digest"])
    assert (len(layer_bytes), "sha256:" + hashlib.sha256(layer_bytes).hexdigest()) == (layer["size"], layer["digest"])
    # The config: every field of Go's equal, diff_ids naming our layer; the extra keys are the source's own
    # Docker keys, which Go drops and we keep.
    config = load(out, ours["config"]["digest"])
    golden_config = load(source, golden["config"]["digest"])
    source_config = load(source, load(source, tagged(source, "amd64")["digest"])["config"]["digest"])
    assert config["rootfs"] == {"type": "layers", "diff_ids": [layer["digest"]]}
    for key, value in golden_config.items():
        if key == "rootfs":
            continue
        if isinstance(value, dict):
            assert {k: config[key][k] for k in value} == value, key
        else:
            assert config[key] == value, key
    assert {k: v for k, v in config.items() if k not in golden_config} == {
        k: v for k, v in source_config.items() if k not in golden_config
    }
    # Go's serialization: our config re-marshals to the golden bytes once the kept keys are dropped.
    assert tagged(out, "amd64")["platform"] == {"architecture": "amd64", "os": "linux"}


def test_docker_list_converts_all_nine_platforms_into_one_index(tmp_path: Path) -> None:
    source = shared("hello-world")
    out = tmp_path / "out"
    run(source, out, "-i", "docker-list", "--concurrency-limit", "3")
    entry = tagged(out, "docker-list")
    index = load(out, entry["digest"])
    source_index = load(source, tagged(source, "docker-list")["digest"])
    assert len(index["manifests"]) == len(source_index["manifests"]) == 9
    for ours, theirs in zip(index["manifests"], source_index["manifests"], strict=True):
        assert ours["platform"] == theirs["platform"]
        manifest = load(out, ours["digest"])
        assert [layer["annotations"][OVERLAYBD_DIGEST] for layer in manifest["layers"]] == [
            layer["digest"] for layer in manifest["layers"]
        ]


def test_nested_index_stays_nested_and_referrer_adds_subject(tmp_path: Path) -> None:
    source = shared("..", "data", "hello-world-e2e")
    out = tmp_path / "out"
    run(source, out, "-i", "nested-index", "--referrer")
    top_desc = tagged(out, "nested-index")
    top = load(out, top_desc["digest"])
    source_top_desc = tagged(source, "nested-index")
    assert top["subject"] == {k: source_top_desc[k] for k in ("mediaType", "digest", "size")}
    assert top["artifactType"] == "application/vnd.containerd.overlaybd.native.v1+json"
    kinds = [m["mediaType"] for m in top["manifests"]]
    assert any("index" in kind for kind in kinds) and any("manifest" in kind for kind in kinds)
    for child in top["manifests"]:
        document = load(out, child["digest"])
        assert document["artifactType"] == "application/vnd.containerd.overlaybd.native.v1+json"
        assert document["subject"]["mediaType"] in ("application/vnd.oci.image.index.v1+json",
                                                    "application/vnd.oci.image.manifest.v1+json",
                                                    "application/vnd.docker.distribution.manifest.list.v2+json",
                                                    "application/vnd.docker.distribution.manifest.v2+json")  # fmt: skip


def _skopeo() -> str:
    found = shutil.which("skopeo")
    if found is None:
        pytest.skip("skopeo is not installed (make test installs it)")
    return found


def test_skopeo_reads_and_copies_the_output(tmp_path: Path) -> None:
    skopeo = _skopeo()
    source = shared("hello-world")
    out = tmp_path / "out"
    run(source, out, "-i", "docker-list", "-i", "amd64")
    for tag in ("docker-list", "amd64"):
        raw = subprocess.run([skopeo, "inspect", "--raw", f"oci:{out}:{tag}"], capture_output=True, check=True)
        assert "sha256:" + hashlib.sha256(raw.stdout).hexdigest() == tagged(out, tag)["digest"]
        copy = tmp_path / "copy"
        subprocess.run(
            [skopeo, "copy", "--all", "--preserve-digests", f"oci:{out}:{tag}", f"oci:{copy}:{tag}"],
            capture_output=True,
            check=True,
        )
        assert tagged(copy, tag)["digest"] == tagged(out, tag)["digest"]
        manifests = [tagged(out, tag)["digest"]]
        if "index" in tagged(out, tag)["mediaType"]:
            manifests = [m["digest"] for m in load(out, manifests[0])["manifests"]]
        for digest in manifests:
            for layer in load(out, digest)["layers"]:
                assert blob(copy, layer["digest"]) == blob(out, layer["digest"])


def _small_source(root: Path, tag: str = "app", files: dict[str, bytes] | None = None) -> Path:
    builder = LayoutBuilder(root)
    layers = [
        builder.layer({"etc/hostname": b"obd\n", "usr/bin/tool": b"#!/bin/sh\n" * 100}),
        builder.layer(files or {"srv/data.txt": b"hello\n" * 1000}, compression="zstd"),
    ]
    builder.tag(tag, builder.image(layers, descriptor_extra=platform("linux", "amd64")))
    return builder.save()


def test_each_layer_above_the_first_is_started_ahead_and_taken_over(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """With one engine reading entries, each layer's decompressing process starts while the layer below is being
    applied, and that layer's conversion takes it over; the output is the one a second run makes."""
    builder = LayoutBuilder(tmp_path / "src")
    contents = [{f"d{n}/f{i}": bytes([n]) * (i * 997) for i in range(40)} for n in range(3)]
    layers = [builder.layer(files) for files in contents]
    builder.tag("app", builder.image(layers, descriptor_extra=platform("linux", "amd64")))
    source = builder.save()
    started: list[str] = []
    taken: list[str] = []

    start, take = EntriesAhead.__init__, EntriesAhead.take

    def recorded_start(self: EntriesAhead, layout: Layout, layer: Descriptor, diff_id: str | None = None) -> None:
        start(self, layout, layer, diff_id)
        started.append(layer.digest)

    def recorded_take(self: EntriesAhead) -> Any:
        got = take(self)
        if got is not None:
            taken.append(self.layer.digest)
        return got

    monkeypatch.setattr(EntriesAhead, "__init__", recorded_start)
    monkeypatch.setattr(EntriesAhead, "take", recorded_take)
    run(source, tmp_path / "out", "-i", "app", "-o", "obd")
    assert started == taken == [str(layer["digest"]) for layer in layers[1:]]
    monkeypatch.undo()
    run(source, tmp_path / "again", "-i", "app", "-o", "obd")
    assert tagged(tmp_path / "out", "obd") == tagged(tmp_path / "again", "obd")


def test_in_place_conversion_keeps_the_other_tags(tmp_path: Path) -> None:
    layout = _small_source(tmp_path / "layout")
    before = tagged(layout, "app")
    run(layout, layout, "-i", "app", "-o", "app-obd")
    assert tagged(layout, "app") == before
    converted = load(layout, tagged(layout, "app-obd")["digest"])
    assert len(converted["layers"]) == 2
    run(layout, layout, "-i", "app", "-o", "app-obd")  # again: the tag is replaced, never duplicated
    index = json.loads((layout / "index.json").read_text())
    names = [m["annotations"]["org.opencontainers.image.ref.name"] for m in index["manifests"]]
    assert sorted(names) == ["app", "app-obd"]
    run(layout, layout, "-i", "app", code=2)  # in place without --output-tag


def test_no_mkfs_puts_the_go_wrapped_baselayer_first(tmp_path: Path) -> None:
    baselayer = shared("baselayer", "ext4_64")
    source = _small_source(tmp_path / "src")
    out = tmp_path / "out"
    run(source, out, "--no-mkfs", "--baselayer", baselayer)
    manifest = load(out, tagged(out, "app")["digest"])
    assert len(manifest["layers"]) == 3
    assert manifest["layers"][0]["digest"] == (
        "sha256:a8b5fca80efae55088290f3da8110d7742de55c2a378d5ab53226a483f390e21"
    )
    config = load(out, manifest["config"]["digest"])
    assert config["rootfs"]["diff_ids"] == [layer["digest"] for layer in manifest["layers"]]


def test_two_concurrent_converts_into_one_layout_keep_both(tmp_path: Path) -> None:
    first = _small_source(tmp_path / "a", "one")
    second = _small_source(tmp_path / "b", "two", {"other.txt": b"x"})
    out = tmp_path / "out"
    procs = [
        subprocess.Popen([sys.executable, "-m", "obdlayout.cli", "convert", str(src), str(out), "-q", "-j", "1"])
        for src in (first, second)
    ]
    assert [p.wait(timeout=120) for p in procs] == [0, 0]
    assert tagged(out, "one")["digest"] and tagged(out, "two")["digest"]
    assert not list(tmp_path.glob(".out.obdlayout-work-*"))


def test_a_killed_convert_leaves_a_readable_layout_and_a_rerun_finishes(tmp_path: Path) -> None:
    source = shared("hello-world")
    out = tmp_path / "out"
    run(source, out, "-i", "amd64")  # a layout that already holds one image
    before = snapshot(out)
    for delay in (0.2, 0.5, 1.0, 1.5):
        proc = subprocess.Popen(
            [sys.executable, "-m", "obdlayout.cli", "convert", str(source), str(out), "-i", "docker-list", "-q"],
            start_new_session=True,
        )
        time.sleep(delay)
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
        index = json.loads((out / "index.json").read_text())
        for entry in index["manifests"]:
            assert (out / "blobs" / "sha256" / entry["digest"].removeprefix("sha256:")).is_file()
        if "docker-list" not in [m["annotations"]["org.opencontainers.image.ref.name"] for m in index["manifests"]]:
            assert snapshot(out)["index.json"] == before["index.json"]
    run(source, out, "-i", "docker-list")
    assert len(load(out, tagged(out, "docker-list")["digest"])["manifests"]) == 9
    assert tagged(out, "amd64")["digest"]
    if shutil.which("skopeo"):
        subprocess.run(["skopeo", "inspect", "--raw", f"oci:{out}:docker-list"], capture_output=True, check=True)


def _break(layout: Path, how: str) -> str:
    """Damage a copy of a small source layout; returns what the error must name."""
    index = json.loads((layout / "index.json").read_text())
    manifest_path = layout / "blobs" / "sha256" / index["manifests"][0]["digest"].removeprefix("sha256:")
    manifest = json.loads(manifest_path.read_text())
    layer = layout / "blobs" / "sha256" / manifest["layers"][0]["digest"].removeprefix("sha256:")
    if how == "missing blob":
        layer.unlink()
        return "missing"
    if how == "digest mismatch":
        data = bytearray(layer.read_bytes())
        data[-9] ^= 0xFF
        layer.write_bytes(bytes(data))
        return "digest mismatch"
    if how == "truncated layer":
        layer.write_bytes(layer.read_bytes()[:-20])
        return "truncated"
    if how == "malformed index.json":
        (layout / "index.json").write_text('{"schemaVersion": 2, "manifests": [')
        return "index.json"
    if how == "encrypted layer":
        builder = LayoutBuilder(layout)
        enc = builder.layer({"a": b"b"}, media_type="application/vnd.oci.image.layer.v1.tar+gzip+encrypted")
        builder.tag("app", builder.image([enc]))
        builder.save()
        return "encrypted"
    raise AssertionError(how)


@pytest.mark.parametrize(
    "how", ["missing blob", "digest mismatch", "truncated layer", "malformed index.json", "encrypted layer"]
)
def test_bad_input_fails_by_name_and_leaves_dst_untouched(tmp_path: Path, how: str) -> None:
    source = _small_source(tmp_path / "src")
    expected = _break(source, how)
    out = tmp_path / "out"
    shutil.copytree(_small_source(tmp_path / "good", "keep"), out)
    before = snapshot(out)
    output = run(source, out, code=1)
    assert expected in output
    assert snapshot(out) == before
    assert not list(tmp_path.glob(".out.obdlayout-work-*"))


def test_unknown_tag_is_named(tmp_path: Path) -> None:
    source = _small_source(tmp_path / "src")
    output = run(source, tmp_path / "out", "-i", "nope", code=1)
    assert "nope" in output
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize(
    ("flags", "expected"),
    [
        (("--db-str=u:p@tcp(h:1)/d",), "is for the db type 'mysql'"),
        (("--db-type=mysql",), "needs --db-str"),
        (("--db-type=mysql", "--db-str=nonsense"), "not a MySQL DSN"),
        (("--no-cache", "--cache-dir=x"), "the cache is off"),
    ],
)
def test_cache_flags_that_do_not_fit_are_refused(tmp_path: Path, flags: tuple[str, ...], expected: str) -> None:
    output = run(tmp_path, tmp_path / "out", *flags, code=2)
    assert expected in output


@pytest.mark.parametrize(
    ("flags", "expected"),
    [
        (("--no-upload",), "are for registries"),
        (("--plain",), "are for registries"),
        (("-u", "a:b"), "are for registries"),
        (("--repository=h.io/x",), "give no SRC or DST"),
    ],
)
def test_registry_flags_need_a_registry(tmp_path: Path, flags: tuple[str, ...], expected: str) -> None:
    output = run(tmp_path, tmp_path / "out", *flags, code=2)
    assert expected in output


def test_json_summary_names_digests_and_layers(tmp_path: Path) -> None:
    source = _small_source(tmp_path / "src")
    output = run(source, tmp_path / "out", "--json", "-q")
    report = json.loads(output)
    (image,) = report["images"]
    assert [layer["index"] for layer in image["layers"]] == [0, 1]
    assert report["outputs"][0]["tag"] == "app"
    assert report["outputs"][0]["digest"] == tagged(tmp_path / "out", "app")["digest"]


def test_output_modes_lines_and_quiet(tmp_path: Path) -> None:
    source = _small_source(tmp_path / "src")
    lines = subprocess.run(
        [sys.executable, "-m", "obdlayout.cli", "convert", str(source), str(tmp_path / "a"), "-j", "1"],
        capture_output=True, text=True, check=True,
    )  # fmt: skip
    assert lines.stdout == ""
    assert lines.stderr.count("converted  linux/amd64") == 2 and "app = sha256:" in lines.stderr
    quiet = subprocess.run(
        [sys.executable, "-m", "obdlayout.cli", "convert", str(source), str(tmp_path / "b"), "-q", "-j", "1"],
        capture_output=True, text=True, check=True,
    )  # fmt: skip
    assert (quiet.stdout, quiet.stderr) == ("", "")


def test_work_dir_reserve_and_dump_manifest(tmp_path: Path) -> None:
    source = _small_source(tmp_path / "src")
    work = tmp_path / "work"
    out = tmp_path / "out"
    run(source, out, "-d", work, "--dump-manifest")
    dumped = {p.name for p in (work / "dump" / "app").iterdir()}
    manifest_digest = tagged(out, "app")["digest"]
    config_digest = load(out, manifest_digest)["config"]["digest"]
    assert dumped == {
        f"{manifest_digest.removeprefix('sha256:')}.json",
        f"{config_digest.removeprefix('sha256:')}.json",
    }
    assert len(list((work / "layers").glob("*/layer.json"))) == 2  # one stored layer per source layer
    run(source, tmp_path / "out2", "-d", work)  # the kept layers are reused: same output
    assert tagged(tmp_path / "out2", "app")["digest"] == manifest_digest
    assert not work.exists()


def test_platform_filter_and_digest_selection(tmp_path: Path) -> None:
    source = shared("hello-world")
    out = tmp_path / "out"
    run(source, out, "-i", "docker-list", "--platform", "linux/arm64", "--platform", "linux/arm/v7")
    index = load(out, tagged(out, "docker-list")["digest"])
    assert sorted((m["platform"]["architecture"], m["platform"].get("variant")) for m in index["manifests"]) == [
        ("arm", "v7"),
        ("arm64", "v8"),
    ]
    digest = tagged(source, "amd64")["digest"]
    run(source, out, "-g", digest, code=2)  # a digest selection needs an output tag
    run(source, out, "-g", digest, "-o", "by-digest")
    assert len(load(out, tagged(out, "by-digest")["digest"])["layers"]) == 1


def _layout_of_tars(root: Path, tars: list[Path], tag: str) -> Path:
    builder = LayoutBuilder(root)
    compressions = ["gzip", "zstd", "none"]
    layers = [builder.layer_from_tar(tar.read_bytes(), compressions[i % 3]) for i, tar in enumerate(tars)]
    builder.tag(tag, builder.image(layers, descriptor_extra=platform("linux", "amd64")))
    return builder.save()


@pytest.mark.parametrize("mkfs", [True, False], ids=["mkfs", "baselayer"])
def test_converted_rules_image_is_fsck_clean_and_holds_the_source_tree(
    tmp_path: Path, tmp_path_factory: pytest.TempPathFactory, mkfs: bool
) -> None:
    """Every entry kind and layer rule (fixtures.make_layers "rules"), through gzip, zstd and plain layers."""
    tars = fixture_layers(tmp_path_factory)["rules"]
    source = _layout_of_tars(tmp_path / "src", tars, "rules")
    out = tmp_path / "out"
    options = ["--vsize", "1"] if mkfs else ["--no-mkfs", "--baselayer", str(shared("baselayer", "ext4_64"))]
    run(source, out, *options)
    manifest = load(out, tagged(out, "rules")["digest"])
    blobs = [out / "blobs" / "sha256" / layer["digest"].removeprefix("sha256:") for layer in manifest["layers"]]
    image = write_raw_image(blobs, tmp_path / "disk.raw")
    assert_fsck_clean(image)
    seen = read_tree(image, tmp_path).tree
    model = Model() if mkfs else Model.from_root_entry(seen.entries[ROOT])
    for tar in tars:
        model.apply(tar)
    diff = differences(model.tree(), seen)
    assert not diff, "\n".join(diff)
