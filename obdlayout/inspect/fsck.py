"""The real `e2fsck -fn` (or `fsck.erofs`) on a merged image: the independent judge of its consistency.

The stack is written as a sparse raw image (formats/blob.py `write_raw`: only mapped, non-zero data takes
space) in a private temporary directory, checked read-only, and removed.
"""

import shutil
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

from ..formats.blob import write_raw
from ..formats.stack import LsmtStack

_SBIN = "/usr/sbin:/sbin"  # where e2fsprogs lives, often off a user's PATH
# The version banners and e2fsck's pass headers say nothing about the image.
_CHATTER = ("e2fsck ", "Pass ", "fsck.erofs ", "<I> erofs: ")


@dataclass(frozen=True)
class Checker:
    command: str
    options: tuple[str, ...]  # check only, change nothing
    package: str  # Debian's


CHECKERS = {
    "ext4": Checker("e2fsck", ("-fn",), "e2fsprogs"),
    "erofs": Checker("fsck.erofs", (), "erofs-utils"),
}


@dataclass(frozen=True)
class FsckResult:
    exit_code: int  # 0 clean; e2fsck: 4 errors left uncorrected (-n), 8 and up: it could not check
    lines: list[str]  # what it said, banner and pass headers left out

    @property
    def clean(self) -> bool:
        return self.exit_code == 0


def find_checker(fstype: str) -> str | None:
    """The path of the checker of a file system type (CHECKERS), None if it is not installed."""
    command = CHECKERS[fstype].command
    return shutil.which(command) or shutil.which(command, path=_SBIN)


def find_e2fsck() -> str | None:
    return find_checker("ext4")


def fsck(disk: LsmtStack, tool: str, fstype: str = "ext4") -> FsckResult:
    with tempfile.TemporaryDirectory(prefix="obdlayout-fsck-") as temp:
        image = Path(temp) / "merged.img"
        with image.open("w+b") as out:
            write_raw(disk, out)
        command = [tool, *CHECKERS[fstype].options, str(image)]
        run = subprocess.run(command, capture_output=True, text=True, errors="replace")
    said = (run.stdout + run.stderr).replace(str(image), "merged image").splitlines()
    return FsckResult(run.returncode, [line.strip() for line in said if line.strip() and not line.startswith(_CHATTER)])
