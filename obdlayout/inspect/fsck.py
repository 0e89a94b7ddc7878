"""The real `e2fsck -fn` on a merged image: the independent judge of its ext4 consistency.

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
_CHATTER = ("e2fsck ", "Pass ")  # the version banner and the pass headers say nothing about the image


@dataclass(frozen=True)
class FsckResult:
    exit_code: int  # e2fsck's: 0 clean, 4 errors left uncorrected (-n), 8 and up: it could not check
    lines: list[str]  # what it said, banner and pass headers left out

    @property
    def clean(self) -> bool:
        return self.exit_code == 0


def find_e2fsck() -> str | None:
    return shutil.which("e2fsck") or shutil.which("e2fsck", path=_SBIN)


def fsck(disk: LsmtStack, e2fsck: str) -> FsckResult:
    with tempfile.TemporaryDirectory(prefix="obdlayout-fsck-") as temp:
        image = Path(temp) / "merged.img"
        with image.open("w+b") as out:
            write_raw(disk, out)
        run = subprocess.run([e2fsck, "-fn", str(image)], capture_output=True, text=True, errors="replace")
    said = (run.stdout + run.stderr).replace(str(image), "merged image").splitlines()
    return FsckResult(run.returncode, [line.strip() for line in said if line.strip() and not line.startswith(_CHATTER)])
