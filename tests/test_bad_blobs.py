"""Damaged blobs get a clear error naming the file and the fault: never a traceback, never a hang."""

import struct
from collections.abc import Callable
from pathlib import Path

import pytest
from click.testing import CliRunner

from obdlayout.cli.main import cli
from obdlayout.formats.blob import Blob
from obdlayout.formats.commit import BlobOptions
from obdlayout.formats.errors import FormatError
from obdlayout.formats.zfile_layout import Algorithm, HeaderTrailer

from .blobs import PLAIN, Extent, write_blob

MiB = 1 << 20
EXTENTS = [Extent(0, 64, seed=1), Extent(200, 300, seed=2), Extent(600, 8, zeroed=True)]
ZFILE_ONLY = BlobOptions(Algorithm.LZ4, tar=False)


def _blob(tmp_path: Path, options: BlobOptions) -> Path:
    return write_blob(tmp_path / "layer.blob", EXTENTS, 2 * MiB, options)


def _patch(path: Path, offset: int, data: bytes) -> None:
    with path.open("r+b") as f:
        f.seek(offset)
        f.write(data)


def _truncate(path: Path, size: int) -> None:
    with path.open("r+b") as f:
        f.truncate(size)


def _lsmt_index_offset(path: Path) -> int:
    return int(struct.unpack_from("<Q", path.read_bytes()[-4096:], 32)[0])


def swap_first_records(path: Path) -> None:
    at = _lsmt_index_offset(path)
    records = path.read_bytes()[at : at + 32]
    _patch(path, at, records[16:] + records[:16])


def record_past_data(path: Path) -> None:
    at = _lsmt_index_offset(path)
    (hi,) = struct.unpack_from("<Q", path.read_bytes(), at + 8)
    _patch(path, at + 8, struct.pack("<Q", (hi & ~(2**55 - 1)) | 10**6))


def jump_table_past_eof(path: Path) -> None:
    head = HeaderTrailer.unpack(path.read_bytes()[:512])
    assert head is not None
    moved = HeaderTrailer(head.flags, 10**7, head.index_size, head.original_file_size, head.index_crc,
                          head.block_size, head.algo, head.verify)  # fmt: skip
    _patch(path, 0, moved.pack())


CASES: list[tuple[str, BlobOptions, Callable[[Path], None], str]] = [
    ("truncated tar", BlobOptions(), lambda p: _truncate(p, p.stat().st_size // 2), "truncated"),
    ("truncated zfile", ZFILE_ONLY, lambda p: _truncate(p, p.stat().st_size - 600), "past the trailer"),
    ("truncated lsmt", PLAIN, lambda p: _truncate(p, p.stat().st_size - 100), "trailer"),
    ("tiny file", PLAIN, lambda p: _truncate(p, 100), "too short"),
    ("wrong lsmt magic", PLAIN, lambda p: _patch(p, 0, b"NOTLSMT!"), "no LSMT magic"),
    ("corrupt block", ZFILE_ONLY, lambda p: _patch(p, 600, b"\xff\x00\xff"), "CRC mismatch"),
    ("corrupt zfile header", ZFILE_ONLY, lambda p: _patch(p, 400, b"\x01"), "header digest"),
    ("record outside the data", PLAIN, record_past_data, "outside the data area"),
    ("unsorted records", PLAIN, swap_first_records, "out of order"),
    ("jump table past eof", ZFILE_ONLY, jump_table_past_eof, "jump table .* past the trailer"),
]


@pytest.mark.parametrize(("options", "damage", "message"), [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_damage_is_reported_by_verify(
    tmp_path: Path, options: BlobOptions, damage: Callable[[Path], None], message: str
) -> None:
    path = _blob(tmp_path, options)
    damage(path)
    with pytest.raises(FormatError, match=message) as caught, Blob(path) as blob:
        blob.verify()
    assert caught.value.where.startswith(str(path))
    result = CliRunner().invoke(cli, ["blob", "verify", str(path)])
    assert result.exit_code == 1
    assert str(path) in result.output and "FAULT" in result.output
    assert "Traceback" not in result.output


@pytest.mark.parametrize("command", [["info"], ["unpack"], ["raw"]])
def test_cli_commands_fail_cleanly_on_a_damaged_blob(tmp_path: Path, command: list[str]) -> None:
    path = _blob(tmp_path, ZFILE_ONLY)
    _patch(path, 0, b"garbage!")
    out = tmp_path / "out"
    args = {"info": [str(path)], "unpack": [str(path), str(out)], "raw": [str(out), str(path)]}[command[0]]
    result = CliRunner().invoke(cli, ["blob", *command, *args])
    assert result.exit_code == 1
    assert f"{path}: no LSMT magic" in result.output
    assert "Traceback" not in result.output
    assert not out.exists()
    assert [p.name for p in tmp_path.iterdir()] == ["layer.blob"]  # nothing half-written left behind


def test_missing_file_and_random_bytes(tmp_path: Path) -> None:
    with pytest.raises(FormatError, match="cannot open"):
        Blob(tmp_path / "absent")
    noise = tmp_path / "noise"
    noise.write_bytes(bytes(range(256)) * 64)
    with pytest.raises(FormatError, match="no LSMT magic"):
        Blob(noise)


def test_verify_reports_every_file_and_fails_if_any_is_bad(tmp_path: Path) -> None:
    good = write_blob(tmp_path / "good", EXTENTS, 2 * MiB)
    bad = write_blob(tmp_path / "bad", EXTENTS, 2 * MiB, ZFILE_ONLY)
    _patch(bad, 600, b"\xff\x00\xff")
    result = CliRunner().invoke(cli, ["blob", "verify", str(bad), str(good)])
    assert result.exit_code == 1
    assert f"ok    {good}" in result.output
    assert f"FAULT {bad}" in result.output
