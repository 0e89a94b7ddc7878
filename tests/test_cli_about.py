"""What a user meets first: `--version` (what made an image), shell completion, readable progress lines."""

import os
import re
import subprocess
import sys
from pathlib import Path

from fixtures.sample_layout import build
from obdlayout.units import human_rate, human_size

from .shared import require_tool
from .test_inspect_support import run

BIN = Path(sys.executable).parent


def test_version_names_the_formats_and_the_libraries_that_decide_bytes() -> None:
    result = run("--version")
    assert result.exit_code == 0
    lines = result.stdout.splitlines()
    assert lines[0] == "obdlayout 0.1.0"
    assert "overlaybd layers 0.1.0" in lines[1] and "TurboOCI layers 0.1.0-turbo.ociv1" in lines[1]
    assert re.search(r"lz4 \d+\.\d+", lines[2]) and re.search(r"zstandard \d+\.\d+", lines[2]), lines[2]
    assert re.search(r"zlib \d+\.\d+", lines[2]), lines[2]


def _complete(words: list[str]) -> list[str]:
    """What bash offers after sourcing `obdlayout completion bash`, for the line `words` (the last word being
    completed)."""
    require_tool("bash")
    script = (
        "source <(obdlayout completion bash)\n"
        f"COMP_WORDS=({' '.join(words)}); COMP_CWORD={len(words) - 1}\n"
        "_obdlayout_completion obdlayout\n"
        'printf "%s\\n" "${COMPREPLY[@]}"\n'
    )
    env = {**os.environ, "PATH": f"{BIN}{os.pathsep}{os.environ['PATH']}"}
    done = subprocess.run(["bash", "-c", script], capture_output=True, text=True, env=env, timeout=60)
    assert done.returncode == 0, done.stderr
    return done.stdout.split()


def test_bash_completes_commands_options_and_tags(tmp_path: Path) -> None:
    assert _complete(["obdlayout", "conv"]) == ["convert"]
    assert "--turbo-oci" in _complete(["obdlayout", "convert", "--tur"])
    source = tmp_path / "src"
    build(source, "demo")
    assert _complete(["obdlayout", "convert", str(source), "out", "-i", "de"]) == ["demo"]


def test_progress_lines_use_human_units_and_no_meaningless_rates(tmp_path: Path) -> None:
    source = tmp_path / "src"
    build(source, "demo")
    result = run("convert", str(source), str(tmp_path / "out"), "-v")
    assert result.exit_code == 0, result.output
    converted = [line for line in result.stderr.splitlines() if line.startswith("converted")]
    assert len(converted) == 2
    for line in converted:
        assert re.search(r"\d+(\.\d)? (B|KiB|MiB) of tar", line), line
        assert "MB/s" not in line and "0.0 MB" not in line and "/s" not in line, line  # too fast for a rate
    assert human_size(1536) == "1.5 KiB" and human_size(512) == "512 B" and human_size(3 << 30) == "3.0 GiB"
    assert human_rate(10 << 20, 2.0) == "5.0 MiB/s" and human_rate(10 << 20, 0.01) is None
