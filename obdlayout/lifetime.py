"""Processes, shared memory and temporary files end with what made them.

- A forked helper (a compression worker, a layer reader, an image worker, a tool) calls `die_with_parent` first: if
  the process that forked it is killed (SIGKILL leaves it no chance to clean up), Linux kills the helper too,
  instead of leaving it running and holding files and locks.
- Shared memory a helper was forked to use is left out of the processes forked after it (`keep_from_later_children`):
  else a later child (the next layer's reader, started while this layer is still applied) would keep it
  allocated until that child ends, whatever the process that made it has freed.
- Temporary files are named `.NAME.PID.RANDOM.part` (`part_prefix`), so that a later run can tell, and
  remove, those a killed process left behind (`sweep_stale_parts`).
"""

import ctypes
import mmap
import os
import re
import shutil
import signal
from collections.abc import Callable
from contextlib import suppress
from pathlib import Path

PR_SET_PDEATHSIG = 1  # linux/prctl.h
PART_SUFFIX = ".part"
_PART = re.compile(r"^\..*\.(\d+)\.[^.]*\.part$")


def _find_prctl() -> Callable[..., int] | None:
    try:
        return ctypes.CDLL(None, use_errno=True).prctl
    except (OSError, AttributeError):
        return None


# Looked up once, here: die_with_parent also runs between fork and exec (a tool's preexec_fn), where loading
# a library could deadlock on a lock another thread of the parent held.
_prctl = _find_prctl()


def keep_from_later_children(mapping: mmap.mmap) -> None:
    """Leave `mapping` out of the processes this one forks from now on (Linux's MADV_DONTFORK; a no-op elsewhere).
    Python code in such a child must not touch it: only the helpers forked before this call may."""
    advice = getattr(mmap, "MADV_DONTFORK", None)
    if advice is not None:
        mapping.madvise(advice)


def die_with_parent(parent: int) -> None:
    """Ask Linux to SIGKILL this process when its parent dies (a no-op elsewhere). `parent` is the pid of the
    process that forked this one, read by it before the fork: if it died before this call, Linux will never
    send the signal (this process already belongs to another), so exit now."""
    if _prctl is not None:
        _prctl(PR_SET_PDEATHSIG, signal.SIGKILL)
    if os.getppid() != parent:
        os._exit(1)


def part_prefix(name: str) -> str:
    """The prefix of a temporary file for `name` (mkstemp adds the random part, the caller PART_SUFFIX)."""
    return f".{name}.{os.getpid()}."


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # another user's process: alive
    return True


def sweep_stale_parts(directory: Path) -> None:
    """Remove the temporary files (and directories) in `directory` whose writer process is gone."""
    try:
        entries = list(os.scandir(directory))
    except OSError:
        return
    for entry in entries:
        found = _PART.match(entry.name)
        if not found or _alive(int(found.group(1))):
            continue
        if entry.is_dir(follow_symlinks=False):
            shutil.rmtree(entry.path, ignore_errors=True)
        elif entry.is_file(follow_symlinks=False):
            with suppress(FileNotFoundError):
                os.unlink(entry.path)
