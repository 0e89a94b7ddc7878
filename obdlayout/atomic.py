"""Write a file completely or not at all: a temporary name beside it, renamed into place on success."""

import os
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from typing import BinaryIO

from .lifetime import PART_SUFFIX, part_prefix


@contextmanager
def atomic_output(path: str | os.PathLike[str], mode: int = 0o644) -> Iterator[BinaryIO]:
    target = os.fspath(path)
    directory = os.path.dirname(os.path.abspath(target))
    fd, temp = tempfile.mkstemp(prefix=part_prefix(os.path.basename(target)), suffix=PART_SUFFIX, dir=directory)
    try:
        with os.fdopen(fd, "w+b") as out:
            yield out
            out.flush()
            os.fchmod(out.fileno(), mode)
        os.replace(temp, target)
    except BaseException:
        os.unlink(temp)
        raise
