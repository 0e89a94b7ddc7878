"""Reading an image keeps memory flat: file contents are streamed, never held whole."""

import hashlib
import io
import random
import tarfile
import tracemalloc
from collections.abc import Callable
from pathlib import Path
from typing import Any

from obdlayout.inspect.extract import extract_tar
from obdlayout.inspect.fstree import image_tree
from obdlayout.inspect.image import open_filesystem, select_image
from obdlayout.inspect.listing import cat
from obdlayout.inspect.source import SourceTree
from obdlayout.oci.layout import Layout

from .test_inspect_support import convert, source_layout

SIZE = 48 << 20  # far more than any buffer the read side may hold
LIMIT = 8 << 20


class _Pseudo(io.RawIOBase):
    """SIZE reproducible bytes, made as they are read."""

    def __init__(self) -> None:
        self.rng = random.Random(7)
        self.left = SIZE

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        take = min(len(buffer), self.left, 1 << 20)
        buffer[:take] = self.rng.randbytes(take)
        self.left -= take
        return take


def _peak(action: Callable[[], object]) -> int:
    """The most memory Python objects took while `action` ran."""
    tracemalloc.start()
    try:
        action()
        return tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


def test_a_large_file_streams_through_cat_extract_and_verify_models(tmp_path: Path) -> None:
    tar = tmp_path / "big.tar"
    with tarfile.open(tar, "w", format=tarfile.PAX_FORMAT) as archive:
        info = tarfile.TarInfo("big.bin")
        info.size = SIZE
        archive.addfile(info, io.BufferedReader(_Pseudo()))
    layout = convert(source_layout(tmp_path / "src", [tar], "big"), "big", tmp_path / "out")
    expected = hashlib.sha256()
    source = _Pseudo()
    while chunk := source.read(1 << 20):
        expected.update(chunk)
    opened = Layout(layout)
    with open_filesystem(opened, select_image(opened, "big", None)) as fs:
        digest = hashlib.sha256()

        def read_all() -> None:
            for chunk in cat(fs, b"/big.bin"):
                digest.update(chunk)

        assert _peak(read_all) < LIMIT
        assert digest.hexdigest() == expected.hexdigest()
        with (tmp_path / "out.tar").open("wb") as sink:
            assert _peak(lambda: extract_tar(fs, sink)) < LIMIT
        assert _peak(lambda: image_tree(fs)) < LIMIT

    def model() -> None:
        with tar.open("rb") as stream:
            SourceTree().apply(stream, "big")

    assert _peak(model) < LIMIT
