"""overlaybd's "raw" CRC32C (overlaybd-formats.md §3.3).

Castagnoli polynomial, reflected, initial value = the seed, no final inversion. The `crc32c`
package computes the standard (inverted) variant in hardware; the two are related by
raw(data, seed) = ~std(data, ~seed).
"""

from typing import Final

import crc32c as _crc32c

_MASK: Final = 0xFFFFFFFF

# §3.3: every ZFile block's CRC is salted with this seed.
BLOCK_CRC_SEED: Final = 100007


def raw_crc32c(data: bytes | bytearray | memoryview, seed: int = 0) -> int:
    value: int = _crc32c.crc32c(data, ~seed & _MASK)
    return ~value & _MASK
