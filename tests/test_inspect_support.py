"""Helpers shared by the test_inspect_* modules: converted images to look into. It holds no tests.

Images are converted with `obdlayout convert`; the real tools' blobs are put in a layout with the OCI
output module. Source layouts come from the stdlib-built LayoutBuilder of the OCI tests, layer tars
from fixtures.make_layers.
"""

import hashlib
import json
import os
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner, Result

from obdlayout.cli.main import cli
from obdlayout.oci.layout import Layout
from obdlayout.oci.mediatypes import OCI_LAYER_TAR, REF_NAME
from obdlayout.oci.output import OutputLayer, OutputOptions, build, overlaybd_layer, publish
from obdlayout.oci.plan import Selection, plan
from obdlayout.oci.writer import LayoutWriter

from .oci_layouts import Json, LayoutBuilder, sha256
from .shared import fixture_layers, memo, shared, write_raw_image


def run(*args: str) -> Result:
    """The obdlayout command, in process; stdout and stderr kept apart, bytes intact."""
    return CliRunner().invoke(cli, list(args), catch_exceptions=False)


def source_layout(root: Path, tars: list[Path], tag: str) -> Path:
    """A layout whose image `tag` has the given uncompressed layer tars."""
    builder = LayoutBuilder(root)
    layers: list[Json] = []
    for tar in tars:
        data = tar.read_bytes()
        layers.append({**builder.blob(data, OCI_LAYER_TAR), "_diff_id": sha256(data)})
    builder.tag(tag, builder.image(layers))
    return builder.save()


def convert(source: Path, tag: str, out: Path, *options: str) -> Path:
    """`obdlayout convert` of the image `tag`, on a 1 GiB disk (small, so that e2fsck and debugfs are quick)."""
    result = run("convert", str(source), str(out), "-i", tag, "--vsize", "1", "-q", "-j", "1", *options)
    assert result.exit_code == 0, result.output
    return out


def rules_tars(factory: pytest.TempPathFactory) -> list[Path]:
    """The layer tars that exercise every entry kind and layer rule (fixtures.make_layers)."""
    return fixture_layers(factory)["rules"]


def rules_image(factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """(source layout, converted layout) of the three-layer "rules" image, tag "rules" in both; made once."""

    def make() -> tuple[Path, Path]:
        base = factory.mktemp("rules-image")
        source = source_layout(base / "src", rules_tars(factory), "rules")
        return source, convert(source, "rules", base / "out")

    return memo("inspect-rules-image", make)


def golden_image(factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """(source layout of the golden layer tars, layout of the real tools' mkfs blobs for them), tag "golden"."""
    golden = shared("overlaybd-golden")

    def make() -> tuple[Path, Path]:
        base = factory.mktemp("golden-image")
        tars = [golden / "layers/layer1.tar", golden / "layers/layer2.tar"]
        source = source_layout(base / "src", tars, "golden")
        result = plan(Layout(source), Selection(tags=("golden",)))
        writer = LayoutWriter(base / "out")
        converted: dict[str, OutputLayer] = {}
        for layer, blob in zip(result.images()[0].layers, ["mkfs/layer0", "mkfs/layer1"], strict=True):
            with writer.new_blob() as pending, (golden / blob / "overlaybd.commit").open("rb") as data:
                shutil.copyfileobj(data, pending.file)
            converted[layer.chain_id] = overlaybd_layer(pending.ref)
        publish(writer, {"golden": build(result.roots[0].node, converted, OutputOptions(oci=True))})
        return source, base / "out"

    return memo("inspect-golden-image", make)


HELLO_WORLD_TAG = "amd64-converted"


def hello_world() -> Path:
    return shared("hello-world")


def layer_blobs(layout: Path, tag: str) -> list[Path]:
    """The layer blob files of a single-image tag, bottom first."""
    opened = Layout(layout)
    manifest = opened.read_manifest(opened.resolve_tag(tag))
    return [opened.blob_path(layer.digest) for layer in manifest.layers]


def raw_image(layout: Path, tag: str, out: Path) -> Path:
    """The merged disk of a tag as a sparse raw image, for debugfs."""
    return write_raw_image(layer_blobs(layout, tag), out)


# -- editing a layout by hand, as damage would -------------------------------------------------------


def _put(root: Path, data: bytes) -> dict[str, Any]:
    digest = "sha256:" + hashlib.sha256(data).hexdigest()
    (root / "blobs" / "sha256" / digest[7:]).write_bytes(data)
    return {"digest": digest, "size": len(data)}


def rewrite_image(
    root: Path,
    tag: str,
    manifest_edit: Callable[[Json], None] = lambda _: None,
    config_edit: Callable[[Json], None] = lambda _: None,
) -> None:
    """Edit the manifest and config of `tag` with the stdlib, re-digest them and re-point index.json."""
    index_path = root / "index.json"
    index = json.loads(index_path.read_text())
    entry = next(e for e in index["manifests"] if e.get("annotations", {}).get(REF_NAME) == tag)
    blobs = root / "blobs" / "sha256"
    manifest = json.loads((blobs / entry["digest"][7:]).read_bytes())
    config = json.loads((blobs / manifest["config"]["digest"][7:]).read_bytes())
    config_edit(config)
    manifest["config"].update(_put(root, json.dumps(config).encode()))
    manifest_edit(manifest)
    entry.update(_put(root, json.dumps(manifest).encode()))
    index_path.write_text(json.dumps(index))


def copy_layout(source: Path, target: Path) -> Path:
    shutil.copytree(source, target)
    for path in target.rglob("*"):  # blobs may be read-only (the shared data are)
        os.chmod(path, 0o755 if path.is_dir() else 0o644)
    return target
