"""The virtual disk as one layer sees it: the lower layers' blocks with this layer's changes on top.

Changed metadata blocks stay in memory until `commit`, which emits them in block order; file data
never does: it goes straight to the output layer as it arrives. The allocator guarantees that no
block is written both ways, and never twice as data (blocks freed in a layer are not reused in it).
"""

from collections import OrderedDict
from collections.abc import Callable
from typing import Final

from ..formats.lsmt_writer import LsmtWriter
from .errors import CorruptFilesystem
from .layout import BLOCK_SIZE

_ZERO_BLOCK: Final = bytes(BLOCK_SIZE)
_CACHE_BLOCKS: Final = 4096  # clean lower blocks kept for re-reading (16 MiB)

LowerRead = Callable[[int, int], bytes]


class BlockDevice:
    def __init__(self, block_count: int, out: LsmtWriter | None, lower: LowerRead | None = None) -> None:
        """`lower(offset, length)` reads the lower layers' disk; None for a fresh disk (all zeros).

        Without `out` the device is read-only: reading works, emitting changes does not.
        """
        self.block_count = block_count
        self._out = out
        self._lower = lower
        self._dirty: dict[int, bytearray] = {}
        self._cache: OrderedDict[int, bytes] = OrderedDict()

    def read(self, block: int) -> bytes | bytearray:
        """A block's current contents (do not modify: use `modify`)."""
        dirty = self._dirty.get(block)
        if dirty is not None:
            return dirty
        return self._read_lower(block)

    def modify(self, block: int) -> bytearray:
        """The block's contents as a buffer whose changes this layer will emit."""
        dirty = self._dirty.get(block)
        if dirty is None:
            dirty = self._dirty[block] = bytearray(self._read_lower(block))
            self._cache.pop(block, None)
        return dirty

    def replace(self, block: int, data: bytes | bytearray) -> None:
        """Set a whole metadata block."""
        if len(data) != BLOCK_SIZE:
            raise ValueError(f"metadata block {block} must be {BLOCK_SIZE} bytes, not {len(data)}")
        self._dirty[block] = bytearray(data)
        self._cache.pop(block, None)

    def write_data(self, block: int, data: bytes | bytearray | memoryview) -> None:
        """File data for blocks starting at `block`; a short tail is padded with zeros."""
        self._writable().write_data(block * BLOCK_SIZE, data, padding=-len(data) % BLOCK_SIZE)

    def map_target(self, block: int, length: int, target_offset: int) -> None:
        """File data for blocks starting at `block`: `length` bytes (whole sectors) of the warp layer's target,
        the original layer tar, from `target_offset`."""
        self._writable().write_target(block * BLOCK_SIZE, length, target_offset)

    def commit(self) -> None:
        """Emit every changed metadata block in block order."""
        out = self._writable()
        for block in sorted(self._dirty):
            data = self._dirty[block]
            if data == _ZERO_BLOCK:
                # A fresh disk reads zeros already; over lower layers a zeroed range masks them. A warp layer
                # stores the zeros themselves: overlaybd stacks a warp layer as one resolved file (§7.2), and
                # only plain data is certain to read back through that.
                if self._lower is not None and out.warp:
                    out.write_data(block * BLOCK_SIZE, data)
                elif self._lower is not None:
                    out.write_zeroed(block * BLOCK_SIZE, BLOCK_SIZE)
                continue
            out.write_data(block * BLOCK_SIZE, data)
        self._dirty.clear()

    def _writable(self) -> LsmtWriter:
        if self._out is None:
            raise ValueError("this block device is read-only")
        return self._out

    def _read_lower(self, block: int) -> bytes:
        if not 0 <= block < self.block_count:
            raise CorruptFilesystem(f"block {block} lies outside the {self.block_count}-block disk")
        if self._lower is None:
            return _ZERO_BLOCK
        cached = self._cache.get(block)
        if cached is not None:
            self._cache.move_to_end(block)
            return cached
        data = self._lower(block * BLOCK_SIZE, BLOCK_SIZE)
        self._cache[block] = data
        if len(self._cache) > _CACHE_BLOCKS:
            self._cache.popitem(last=False)
        return data
