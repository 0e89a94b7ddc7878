"""One root error: every error obdlayout reports is an ObdlayoutError saying `where: problem`, survives the
trip from a worker process, and a fault is blamed on what has it (a corrupt lower is not a corrupt tar)."""

import io
import pickle
import struct
import tarfile
from pathlib import Path

import pytest

from obdlayout.convert.errors import ConvertError
from obdlayout.convert.native import build_layer
from obdlayout.errors import ObdlayoutError
from obdlayout.ext4.errors import CorruptFilesystem, Ext4Error, NoSpace, UnsupportedFilesystem
from obdlayout.formats.commit import BlobOptions
from obdlayout.formats.errors import FormatError
from obdlayout.inspect.errors import InspectError
from obdlayout.layers.errors import EntryError, LayerError, RuleError, TreeError
from obdlayout.layers.paths import NotADirectory, ResolveError, SymlinkLoop
from obdlayout.oci.errors import LayoutError
from obdlayout.tar.ustar import TarFormatError

from .shared import pack_raw_image_file, write_raw_image

PLAIN = BlobOptions(compression=None, tar=False)
VSIZE = 64 << 20

PLACED = [LayoutError, FormatError, InspectError, LayerError, ConvertError]
UNPLACED: list[type[ObdlayoutError]] = [Ext4Error, CorruptFilesystem, UnsupportedFilesystem, NoSpace, EntryError]
UNPLACED += [RuleError, TreeError, ResolveError, NotADirectory, SymlinkLoop, TarFormatError]


@pytest.mark.parametrize("kind", PLACED, ids=lambda k: k.__name__)
def test_errors_with_a_place_say_where_then_what(kind: type[ObdlayoutError]) -> None:
    error = kind("some/file", "is broken")
    assert isinstance(error, ObdlayoutError)
    assert str(error) == "some/file: is broken"
    again = pickle.loads(pickle.dumps(error))
    assert type(again) is kind and (again.where, again.problem, str(again)) == ("some/file", "is broken", str(error))


@pytest.mark.parametrize("kind", UNPLACED, ids=lambda k: k.__name__)
def test_errors_raised_without_a_place_leave_it_to_the_caller(kind: type[ObdlayoutError]) -> None:
    error = kind("is broken")  # type: ignore[call-arg]  # their constructors take the problem alone
    assert isinstance(error, ObdlayoutError) and isinstance(error, EntryError | TarFormatError)
    assert (error.where, error.problem, str(error)) == ("", "is broken", "is broken")
    again = pickle.loads(pickle.dumps(error))
    assert type(again) is kind and str(again) == "is broken"


def _tar(*names: str) -> io.BytesIO:
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w", format=tarfile.PAX_FORMAT) as archive:
        for name in names:
            info = tarfile.TarInfo(name)
            info.type = tarfile.DIRTYPE if name.endswith("/") else tarfile.REGTYPE
            archive.addfile(info)
    out.seek(0)
    return out


def _root_directory_pointing_outside_the_disk(tmp_path: Path) -> Path:
    """A lower whose root directory's one extent points far beyond the virtual disk (ext4 disk layout:
    group descriptor table in block 1, inode table at bg_inode_table, extents in i_block)."""
    base = tmp_path / "base.blob"
    with base.open("w+b") as sink:
        build_layer(sink, _tar("a/"), vsize=VSIZE, options=PLAIN)
    raw = write_raw_image([base], tmp_path / "base.raw")
    with raw.open("r+b") as disk:
        disk.seek(1024 + 0x58)
        (inode_size,) = struct.unpack("<H", disk.read(2))
        disk.seek(4096 + 0x08)
        (table_lo,) = struct.unpack("<I", disk.read(4))
        root = table_lo * 4096 + 1 * inode_size  # inode 2
        disk.seek(root + 0x28)
        magic, entries, _, depth = struct.unpack("<HHHH", disk.read(8))
        assert (magic, entries, depth) == (0xF30A, 1, 0)
        disk.seek(root + 0x28 + 12 + 6)  # first extent: ee_block, ee_len, then ee_start_hi, ee_start_lo
        disk.write(struct.pack("<HI", 0, 0x7FFF_0000))
    return pack_raw_image_file(raw, tmp_path / "corrupt.blob", VSIZE)


def test_a_corrupt_lower_is_named_as_such_not_as_a_corrupt_tar(tmp_path: Path) -> None:
    lower = _root_directory_pointing_outside_the_disk(tmp_path)
    with pytest.raises(LayerError) as caught, (tmp_path / "top.blob").open("w+b") as sink:
        build_layer(sink, _tar("a/x"), lowers=[lower], layer_name="sha256:top", options=PLAIN)
    message = str(caught.value)
    assert message.startswith("sha256:top: entry 'a/x': ") and "lies outside the" in message, message
    assert "tar stream" not in message


def test_a_broken_tar_is_named_as_such(tmp_path: Path) -> None:
    broken = io.BytesIO(_tar("a/", "a/x").getvalue()[:700])  # cut inside the second header
    with pytest.raises(LayerError, match=r"^t: the tar stream is truncated or corrupt after entry 'a/'"):
        build_layer(io.BytesIO(), broken, vsize=VSIZE, layer_name="t", options=PLAIN)
