"""The `obdlayout blob` commands as a user runs them."""

import json
import shutil
import subprocess
import sys
from pathlib import Path

from click.testing import CliRunner

from obdlayout.cli.main import cli
from obdlayout.formats.blob import Blob

from .shared import e2fsck, require_tool, shared

FIXTURES = Path(__file__).resolve().parent.parent / "fixtures"


def run(*args: str) -> str:
    result = CliRunner().invoke(cli, list(args))
    assert result.exit_code == 0, result.output
    return result.output


def test_info_json_describes_a_golden_blob() -> None:
    path = shared("overlaybd-golden", "mkfs", "layer1", "overlaybd.commit")
    (info,) = json.loads(run("blob", "info", "--json", str(path)))
    assert info["wrapping"] == "tar+pax"
    assert info["compression"] == "lz4" and info["block_size"] == 4096
    assert info["uuid"] == "01D4FECA-E826-4D7A-5AB7-26ED4E61D065"
    assert info["parent_uuid"] == "D0C2A979-A603-CD1B-4C54-CDE764294CCD"
    assert info["virtual_size"] == 64 << 30
    assert info["records"] == 514
    assert info["file_size"] == path.stat().st_size


def test_unpack_gives_the_same_lsmt_from_every_wrapping(tmp_path: Path) -> None:
    directory = shared("overlaybd-golden", "mkfs", "layer0")
    outputs = []
    for name in ("overlaybd.commit", "overlaybd.commit.z-notar", "overlaybd.commit.z-zstd"):
        out = tmp_path / f"{name}.lsmt"
        run("blob", "unpack", str(directory / name), str(out))
        outputs.append(out.read_bytes())
    assert outputs[0] == outputs[1] == outputs[2]
    assert outputs[0][:8] == b"LSMT\x00\x01\x02\x00"
    with Blob(tmp_path / "overlaybd.commit.lsmt") as plain:
        assert plain.zfile is None and len(plain.layer.records) == 515


def test_pack_then_raw_round_trips_an_ext4_image(tmp_path: Path) -> None:
    mke2fs = require_tool("mke2fs")
    image = tmp_path / "fs.img"
    subprocess.run(
        [mke2fs, "-q", "-F", "-t", "ext4", "-d", str(FIXTURES / "sample-rootfs"), str(image), "32M"], check=True
    )
    blob = tmp_path / "layer.blob"
    run("blob", "pack", str(image), str(blob), "--algorithm", "zstd", "--bs", "16", "--uuid",
        "01d4feca-e826-4d7a-5ab7-26ed4e61d065")  # fmt: skip
    (info,) = json.loads(run("blob", "info", "--json", str(blob)))
    assert (info["compression"], info["block_size"], info["virtual_size"]) == ("zstd", 16384, 32 << 20)
    assert info["data_bytes"] < image.stat().st_size // 4  # zero blocks are left out
    run("blob", "verify", str(blob))
    back = tmp_path / "back.img"
    run("blob", "raw", str(back), str(blob))
    assert back.read_bytes() == image.read_bytes()
    assert e2fsck(back).returncode == 0


def test_pack_rejects_a_bad_uuid(tmp_path: Path) -> None:
    image = tmp_path / "img"
    image.write_bytes(bytes(4096))
    result = CliRunner().invoke(cli, ["blob", "pack", str(image), str(tmp_path / "o"), "--uuid", "xyz"])
    assert result.exit_code == 2 and "not a 36-character UUID" in result.output
    assert not (tmp_path / "o").exists()


def test_console_script_is_installed_and_helps() -> None:
    exe = shutil.which("obdlayout", path=str(Path(sys.executable).parent))
    assert exe is not None
    result = subprocess.run([exe, "blob", "--help"], capture_output=True, text=True, check=True)
    for command in ("info", "verify", "unpack", "raw", "pack"):
        assert command in result.stdout
