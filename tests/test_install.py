"""Installing as a user does: the wheel, into a fresh virtual environment outside the checkout, gives a
working `obdlayout`: a missing dependency or package file fails here, not on a user's machine."""

import json
import os
import subprocess
import sys
from pathlib import Path

from fixtures.sample_layout import build

ROOT = Path(__file__).resolve().parent.parent
INSTALL_TIMEOUT = 900  # seconds: the dependencies may come from the package index


def _run(command: list[str], cwd: Path) -> subprocess.CompletedProcess[str]:
    env = {key: value for key, value in os.environ.items() if key not in ("PYTHONPATH", "VIRTUAL_ENV")}
    done = subprocess.run(command, cwd=cwd, env=env, capture_output=True, text=True, timeout=INSTALL_TIMEOUT)
    assert done.returncode == 0, f"{' '.join(command)}:\n{done.stdout[-3000:]}{done.stderr[-3000:]}"
    return done


def test_the_wheel_installs_into_a_fresh_venv_and_converts(tmp_path: Path) -> None:
    dist = tmp_path / "dist"
    _run([sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w", str(dist), str(ROOT)], tmp_path)
    (wheel,) = dist.glob("obdlayout-*.whl")
    venv = tmp_path / "venv"
    _run([sys.executable, "-m", "venv", str(venv)], tmp_path)
    _run([str(venv / "bin" / "pip"), "install", "-q", str(wheel)], tmp_path)
    obdlayout = str(venv / "bin" / "obdlayout")
    version = _run([obdlayout, "--version"], tmp_path).stdout
    assert version.startswith("obdlayout 0.1.0\n") and "TurboOCI layers 0.1.0-turbo.ociv1" in version
    source = tmp_path / "src"
    build(source, "demo")
    _run([obdlayout, "convert", str(source), str(tmp_path / "out"), "-q", "--vsize", "1"], tmp_path)
    index = json.loads((tmp_path / "out" / "index.json").read_text())
    assert [e["annotations"]["org.opencontainers.image.ref.name"] for e in index["manifests"]] == ["demo"]
    listing = _run([obdlayout, "ls", f"{tmp_path / 'out'}:demo", "/srv/www"], tmp_path).stdout
    assert "index.html" in listing.split()
    api = "import obdlayout; print(obdlayout.open_image(__import__('sys').argv[1], 'demo').read('/srv/www/index.html'))"
    assert _run([str(venv / "bin" / "python"), "-c", api, str(tmp_path / "out")], tmp_path).stdout.startswith("b'")
