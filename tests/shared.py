"""Access to ../shared/data (real artefacts of the overlaybd tools) and to the real e2fsprogs."""

import shutil
import subprocess
from pathlib import Path

import pytest

SHARED_DATA = Path(__file__).resolve().parent.parent.parent / "shared" / "data"
GOLDEN = SHARED_DATA / "overlaybd-golden"
BASELAYER = SHARED_DATA / "baselayer" / "ext4_64"


def shared(*parts: str) -> Path:
    """A path under ../shared/data; the test is skipped, saying why, when it is absent."""
    path = SHARED_DATA.joinpath(*parts)
    if not path.exists():
        pytest.skip(f"reference data {path} is absent (../shared/data is not beside this checkout)")
    return path


def require_tool(name: str) -> str:
    found = shutil.which(name) or shutil.which(name, path="/usr/sbin:/sbin")
    if found is None:
        pytest.skip(f"{name} is not installed (make test installs e2fsprogs)")
    return found


def e2fsck(image: Path) -> subprocess.CompletedProcess[str]:
    """The real `e2fsck -fn`: exit 0 means the file system is clean."""
    return subprocess.run([require_tool("e2fsck"), "-fn", str(image)], capture_output=True, text=True)


def debugfs(image: Path, request: str) -> str:
    result = subprocess.run([require_tool("debugfs"), "-R", request, str(image)], capture_output=True, check=True)
    return result.stdout.decode("utf-8", "surrogateescape")
