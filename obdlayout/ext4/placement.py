"""Where a regular file's data goes once its blocks are allocated: a strategy of the ext4 writer.

The file system's metadata is the same either way; only the data blocks differ. `CopyData` writes the
bytes into the layer (an overlaybd layer holds its files' contents). `MapToTar` (TurboOCI) maps the
blocks to where the bytes already lie in the original layer tar, and makes the layer a warp layer.
"""

from typing import ClassVar, Final, Protocol

from ..layers.errors import TreeError
from ..layers.tree import FileContent
from ..units import STREAM_CHUNK
from .device import BlockDevice
from .extents import Run
from .layout import BLOCK_SIZE

SECTOR: Final = 512


class DataPlacement(Protocol):
    maps_to_target: ClassVar[bool]  # whether the layer must be a warp layer (its data lies in the layer tar)

    def place(self, device: BlockDevice, runs: list[Run], content: FileContent) -> None:
        """Fill the file's allocated blocks `runs` (logical block → physical block) with its data."""
        ...


class CopyData:
    """The file's bytes, read from the layer stream, written into the data blocks."""

    maps_to_target: ClassVar[bool] = False

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


class MapToTar:
    """TurboOCI (overlaybd-formats.md §7.2): each run of a file's blocks is mapped to the file's bytes in the
    uncompressed layer tar, as 512-byte sectors up to the sector holding its last byte (a tag-1 record of a
    warp layer); nothing is copied, and the tar padding fills that last sector. Plain tar file data always
    starts on a 512-byte block. A sparse file's data regions need not be 512-aligned in the tar, so its data
    is copied into the layer instead (turboOCI-apply refuses sparse entries altogether)."""

    maps_to_target: ClassVar[bool] = True

    def place(self, device: BlockDevice, runs: list[Run], content: FileContent) -> None:
        if content.regions is not None or content.stream_offset % SECTOR:
            COPY_DATA.place(device, runs, content)
            return
        for run in runs:
            start = run.logical * BLOCK_SIZE
            length = min(run.length * BLOCK_SIZE, content.size - start)
            if length > 0:
                device.map_target(run.physical, -(-length // SECTOR) * SECTOR, content.stream_offset + start)


COPY_DATA: Final = CopyData()
MAP_TO_TAR: Final = MapToTar()
