"""Layer rules where a writer could reasonably go either way, each in its own two-layer image so that a
failure names exactly one rule. The expected behaviour is what the OCI image spec implies and what
containerd (both its overlayfs and its naive appliers) and overlaybd-apply do (overlaybd-formats.md §6.4).
"""

from pathlib import Path

import pytest

from obdlayout.convert.native import build_layer
from obdlayout.formats.commit import BlobOptions

from .ext4tree import read_tree
from .ocimodel import Model, differences
from .shared import assert_fsck_clean, fixture_layers, write_raw_image

PLAIN = BlobOptions(compression=None, tar=False)


def _apply_all(image: str, tmp_path: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Model]:
    tars = fixture_layers(tmp_path_factory)[image]
    blobs: list[Path] = []
    model = Model()
    for number, tar in enumerate(tars, start=1):
        out = tmp_path / f"layer{number}.blob"
        with out.open("w+b") as sink, tar.open("rb") as layer:
            build_layer(sink, layer, lowers=list(blobs), vsize=1 << 30, layer_name=tar.name, options=PLAIN)
        blobs.append(out)
        model.apply(tar)
    raw = write_raw_image(blobs, tmp_path / "disk.raw")
    assert_fsck_clean(raw)
    return raw, model


def test_an_opaque_directory_hides_lower_contents_of_a_re_added_subdirectory(
    tmp_path: Path, tmp_path_factory: pytest.TempPathFactory
) -> None:
    """Lower: opq/sub/old.txt, opq/lower.txt. Upper: `opq/sub/` (a directory entry), then
    `opq/.wh..wh..opq`, then `opq/sub/new.txt`.

    Everything the lower layers put below an opaque directory is hidden; `opq/sub` exists again because
    this layer has it, but as this layer's directory: overlayfs does not merge the lower `opq/sub` into
    it (its parent is opaque), and containerd's naive applier walks into re-added directories removing
    what this layer did not unpack. So `opq/sub/old.txt` must be gone."""
    raw, model = _apply_all("opaque-readd-dir", tmp_path, tmp_path_factory)
    entries = read_tree(raw, tmp_path).tree.entries
    assert b"/opq/lower.txt" not in entries
    assert b"/opq/sub/new.txt" in entries
    assert b"/opq/sub/old.txt" not in entries, "a lower file survived below an opaque directory"
    diff = differences(model.tree(), read_tree(raw, tmp_path).tree)
    assert not diff, "\n".join(diff)


def test_a_whiteout_below_missing_directories_creates_them(
    tmp_path: Path, tmp_path_factory: pytest.TempPathFactory
) -> None:
    """Upper: `nodir/sub/.wh.absent` and `nodir2/.wh..wh..opq`, neither directory existing below.

    Whiteouts delete nothing here, but the parents of every member are made first (0755 root:root):
    containerd's `mkparent` and overlaybd-apply's parent creation (§6.4 step 1) both run before the
    whiteout is looked at, and with the overlayfs snapshotter the directories exist in the upper layer.
    So `nodir/sub` and `nodir2` exist afterwards, as they would in a container."""
    raw, model = _apply_all("whiteout-missing-parent", tmp_path, tmp_path_factory)
    entries = read_tree(raw, tmp_path).tree.entries
    assert b"/present" in entries
    for path in (b"/nodir", b"/nodir/sub", b"/nodir2"):
        assert path in entries, f"{path!r} was not created"
        entry = entries[path]
        assert (entry.kind, entry.mode, entry.uid, entry.gid, entry.mtime) == ("dir", 0o755, 0, 0, (0, 0))
    diff = differences(model.tree(), read_tree(raw, tmp_path).tree)
    assert not diff, "\n".join(diff)
