"""Building layers on the real tools' layers, on the baselayer and on our own mkfs: fsck-clean and small."""

from contextlib import ExitStack
from pathlib import Path

import pytest

from obdlayout.convert.native import build_layer
from obdlayout.formats.blob import open_stack, write_raw
from obdlayout.formats.commit import BlobOptions

from .shared import e2fsck, shared

SERIAL = BlobOptions(jobs=1)


def _build(out: Path, tar: Path, lowers: list[Path]) -> Path:
    with out.open("w+b") as sink, tar.open("rb") as layer:
        build_layer(sink, layer, lowers=lowers, layer_name=tar.name, options=SERIAL)
    return out


def _fsck_clean(tmp_path: Path, blobs: list[Path]) -> str:
    image = tmp_path / "disk.raw"
    with ExitStack() as stack, image.open("w+b") as out:
        write_raw(open_stack(blobs, stack), out)
    check = e2fsck(image)
    assert check.returncode == 0, check.stdout + check.stderr
    image.unlink()
    return check.stdout


@pytest.mark.parametrize("bottom", ["mkfs", "baselayer", "golden-layer0"])
def test_layers_on_each_kind_of_lower_are_fsck_clean(tmp_path: Path, bottom: str) -> None:
    golden = shared("overlaybd-golden")
    tars = [golden / "layers/layer1.tar", golden / "layers/layer2.tar"]
    blobs: list[Path] = []
    if bottom == "baselayer":
        blobs.append(shared("baselayer", "ext4_64"))
    elif bottom == "golden-layer0":
        blobs.append(golden / "mkfs/layer0/overlaybd.commit")
        tars = tars[1:]
    for number, tar in enumerate(tars):
        blobs.append(_build(tmp_path / f"layer{number}.blob", tar, list(blobs)))
        _fsck_clean(tmp_path, blobs)


def test_a_small_layer_gives_a_small_blob(tmp_path: Path) -> None:
    golden = shared("overlaybd-golden")
    lower = golden / "mkfs/layer0/overlaybd.commit"
    blob = _build(tmp_path / "layer2.blob", golden / "layers/layer2.tar", [lower])
    # The reference tools' blob for this 10 KiB layer is 661 KB: they rewrite every group's bitmaps.
    assert blob.stat().st_size < 16 * 1024
    summary = _fsck_clean(tmp_path, [lower, blob])
    # Same counts as the reference image after layer 2 (img.after-layer2.fsinfo.txt).
    assert "28/4194304 files (0.0% non-contiguous), 266305/16777216 blocks" in summary
