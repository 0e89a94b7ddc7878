"""Access to ../shared/data (real artefacts of the overlaybd tools) and to the real e2fsprogs."""

import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Callable
from contextlib import ExitStack
from pathlib import Path
from typing import TypeVar

import pytest

from fixtures.make_layers import make_layers
from obdlayout.formats.blob import open_stack, write_raw
from obdlayout.formats.commit import BlobOptions, LayerBlobWriter, pack_raw_image

T = TypeVar("T")
PLAIN_BLOB = BlobOptions(compression=None, tar=False)

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
        pytest.skip(f"{name} is not installed (make test installs it)")
    return found


def e2fsck(image: Path) -> subprocess.CompletedProcess[str]:
    """The real `e2fsck -fn`: exit 0 means the file system is clean."""
    return subprocess.run([require_tool("e2fsck"), "-fn", str(image)], capture_output=True, text=True)


def debugfs(image: Path, request: str) -> str:
    result = subprocess.run([require_tool("debugfs"), "-R", request, str(image)], capture_output=True, check=True)
    return result.stdout.decode("utf-8", "surrogateescape")


# -- added for the ext4 writer's tests ---------------------------------------------------------------

FSCK_TIMEOUT = 600  # seconds; a badly broken image can make e2fsck spin


def fsck(image: Path, timeout: float = FSCK_TIMEOUT) -> subprocess.CompletedProcess[str]:
    """`e2fsck -fn` with no terminal to ask and a time limit (a hang fails the test, naming the image)."""
    return _check(["e2fsck", "-fn"], image, timeout)


def _check(command: list[str], image: Path, timeout: float = FSCK_TIMEOUT) -> subprocess.CompletedProcess[str]:
    try:
        return subprocess.run(
            [require_tool(command[0]), *command[1:], str(image)],
            capture_output=True,
            text=True,
            stdin=subprocess.DEVNULL,
            timeout=timeout,
        )
    except subprocess.TimeoutExpired:
        pytest.fail(f"{' '.join(command)} {image} did not finish within {timeout} s")


def assert_erofs_clean(image: Path) -> None:
    """Debian's `fsck.erofs` (erofs-utils) exits 0: every inode, directory and data block read and checked."""
    check = _check(["fsck.erofs"], image)
    assert check.returncode == 0, f"fsck.erofs exit {check.returncode}:\n{check.stdout[-4000:]}{check.stderr[-4000:]}"


def assert_fsck_clean(image: Path) -> str:
    """e2fsck -fn exits 0; returns its report."""
    check = fsck(image)
    assert check.returncode == 0, f"e2fsck -fn exit {check.returncode}:\n{check.stdout[-6000:]}{check.stderr[-2000:]}"
    return check.stdout


_MEMO: dict[object, object] = {}


def memo(key: object, make: Callable[[], T]) -> T:
    """One value per test session for `key`, shared by every test module (session fixtures are per module)."""
    if key not in _MEMO:
        _MEMO[key] = make()
    return _MEMO[key]  # type: ignore[return-value]


def fixture_layers(tmp_path_factory: pytest.TempPathFactory) -> dict[str, list[Path]]:
    """The generated layer tars (fixtures.make_layers), written once per session."""
    return memo("fixture-layers", lambda: make_layers(tmp_path_factory.mktemp("layers")))


def pack_raw_image_file(image: Path, blob: Path, virtual_size: int) -> Path:
    """A raw disk image as a plain LSMT layer blob (no ZFile, no tar wrapper), as `blob pack` makes it."""
    with image.open("rb") as raw, blob.open("w+b") as out:
        writer = LayerBlobWriter(out, virtual_size=virtual_size, uuid=None, parent_uuid=None, options=PLAIN_BLOB)
        pack_raw_image(raw, writer)
        writer.close()
    return blob


def write_raw_image(blobs: list[Path], image: Path) -> Path:
    """The stack of `blobs` (bottom first) as a sparse raw disk image."""
    with ExitStack() as stack, image.open("w+b") as out:
        write_raw(open_stack(blobs, stack), out)
    return image


def _live_processes(field: int, value: int) -> list[int]:
    """Live (not zombie) processes whose /proc/PID/stat field `field` (counted after the command name) is `value`."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[field]) == value and fields[0] != "Z":
            found.append(int(entry.name))
    return found


def session_processes(session: int) -> list[int]:
    """Live (not zombie) processes of a session."""
    return _live_processes(3, session)


def child_processes(parent: int) -> list[int]:
    """Live (not zombie) children of a process."""
    return _live_processes(1, parent)


def session_gone(session: int, within: float = 5.0) -> bool:
    end = time.monotonic() + within
    while session_processes(session):
        if time.monotonic() > end:
            return False
        time.sleep(0.05)
    return True


def free_port() -> int:
    """A TCP port on 127.0.0.1 nobody listens on (for a server a test starts)."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


def await_server(
    process: subprocess.Popen[bytes], ready: Callable[[], bool], name: str, log: Path, timeout: float
) -> None:
    """Poll `ready` until the server answers; if it exits or `timeout` passes first, stop it and raise a
    RuntimeError with the end of its log."""
    deadline = time.monotonic() + timeout
    while not ready():
        if process.poll() is not None or time.monotonic() > deadline:
            stop_process(process, 10)
            raise RuntimeError(f"{name} did not start: {log.read_text(errors='replace')[-2000:]}")
        time.sleep(0.05)


def stop_process(process: subprocess.Popen[bytes] | None, timeout: float) -> None:
    """SIGTERM, then SIGKILL if it has not ended within `timeout` seconds."""
    if process is not None and process.poll() is None:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
