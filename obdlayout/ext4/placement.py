"""Where a regular file's data goes once its blocks are allocated: a strategy of the ext4 writer.

The file system's metadata is the same either way; only the data blocks differ. `CopyData` writes the
bytes into the layer (an overlaybd layer holds its files' contents). A TurboOCI layer instead maps the
blocks to where the bytes already lie in the original layer tar (FileContent.stored_ranges).
"""

from typing import Protocol

from ..layers.errors import TreeError
from ..layers.tree import FileContent
from ..units import STREAM_CHUNK
from .device import BlockDevice
from .extents import Run
from .layout import BLOCK_SIZE


class DataPlacement(Protocol):
    def place(self, device: BlockDevice, runs: list[Run], content: FileContent) -> None:
        """Fill the file's allocated blocks `runs` (logical block → physical block) with its data."""
        ...


class CopyData:
    """The file's bytes, read from the layer stream, written into the data blocks."""

    def place(self, device: BlockDevice, runs: list[Run], content: FileContent) -> None:
        step = STREAM_CHUNK // BLOCK_SIZE
        for run in runs:
            for done in range(0, run.length, step):
                blocks = min(step, run.length - done)
                offset = (run.logical + done) * BLOCK_SIZE
                want = min(blocks * BLOCK_SIZE, content.size - offset)
                data = content.read(offset, want)
                if len(data) != want:
                    raise TreeError(f"file data ended after {offset + len(data)} of {content.size} bytes")
                device.write_data(run.physical + done, data)


COPY_DATA = CopyData()
