"""overlaybd's raw CRC32C against published vectors and a bit-by-bit reference."""

import random

from obdlayout.formats.crc import BLOCK_CRC_SEED, raw_crc32c


def reference_raw_crc32c(data: bytes, seed: int = 0) -> int:
    """Bitwise reflected CRC-32C with initial value `seed` and no final XOR (overlaybd-formats.md §3.3)."""
    crc = seed
    for byte in data:
        crc ^= byte
        for _ in range(8):
            crc = (crc >> 1) ^ (0x82F63B78 if crc & 1 else 0)
    return crc


def test_published_vectors() -> None:
    assert raw_crc32c(b"123456789") == 0x58E3FA20
    assert raw_crc32c(b"a") == 2477592673
    assert raw_crc32c(b"abc") == 1445960909


def test_standard_crc32c_is_the_inverted_raw_one() -> None:
    # The iSCSI CRC-32C of "123456789" is 0xE3069283.
    assert raw_crc32c(b"123456789", 0xFFFFFFFF) ^ 0xFFFFFFFF == 0xE3069283


def test_matches_bitwise_reference_with_seeds() -> None:
    rng = random.Random(7)
    for _ in range(50):
        data = rng.randbytes(rng.randrange(0, 300))
        for seed in (0, BLOCK_CRC_SEED, rng.getrandbits(32)):
            assert raw_crc32c(data, seed) == reference_raw_crc32c(data, seed)
