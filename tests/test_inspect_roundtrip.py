"""extract --tar, re-imported as a one-layer image and converted again, gives the same tree."""

from pathlib import Path

import pytest

from obdlayout.inspect.fstree import image_tree
from obdlayout.inspect.image import open_filesystem, select_image
from obdlayout.inspect.tree import Tree, differences
from obdlayout.oci.layout import Layout

from .test_inspect_support import HELLO_WORLD_TAG, convert, golden_image, hello_world, rules_image, run, source_layout


def _tree(layout: Path, tag: str) -> Tree:
    opened = Layout(layout)
    with open_filesystem(opened, select_image(opened, tag, None)) as fs:
        return image_tree(fs)


@pytest.mark.parametrize("which", ["obdlayout-rules", "golden-mkfs-stack", "golden-hello-world"])
def test_tar_reimported_and_converted_again_gives_the_same_tree(
    which: str, tmp_path: Path, tmp_path_factory: pytest.TempPathFactory
) -> None:
    if which == "obdlayout-rules":
        layout, tag = rules_image(tmp_path_factory)[1], "rules"
    elif which == "golden-mkfs-stack":
        layout, tag = golden_image(tmp_path_factory)[1], "golden"
    else:
        layout, tag = hello_world(), HELLO_WORLD_TAG
    tar = tmp_path / "rootfs.tar"
    assert run("extract", f"{layout}:{tag}", "--tar", str(tar)).exit_code == 0
    reimported = source_layout(tmp_path / "reimported", [tar], "again")
    again = convert(reimported, "again", tmp_path / "again")
    # Everything but the root's own metadata (the tar leaves the root out, as applying a layer skips it).
    original, converted = _tree(layout, tag), _tree(again, "again")
    assert original.pop(b"") is not None and converted.pop(b"") is not None
    assert list(differences(original, converted)) == []
    # And the second conversion is right by its own source, checked independently of the first.
    check = run("verify", f"{again}:again", "--against", f"{reimported}:again")
    assert check.exit_code == 0, check.output
