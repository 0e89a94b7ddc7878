"""Group descriptor checksums of the uninit_bg (gdt_csum) feature, as e2fsprogs computes them.

crc16 with the reflected 0x8005 polynomial (lib/ext2fs/crc16.c), initial value 0xFFFF, no final
inversion, over the file system UUID, the little-endian group number and the descriptor without
its checksum field (lib/ext2fs/csum.c, ext2fs_group_desc_csum).
"""

import struct
from typing import Final

from .layout import GroupDesc


def _table() -> list[int]:
    table = []
    for byte in range(256):
        crc = byte
        for _ in range(8):
            crc = (crc >> 1) ^ 0xA001 if crc & 1 else crc >> 1
        table.append(crc)
    return table


_TABLE: Final = _table()


def crc16(data: bytes | bytearray, crc: int = 0xFFFF) -> int:
    for byte in data:
        crc = (crc >> 8) ^ _TABLE[(crc ^ byte) & 0xFF]
    return crc


def group_desc_checksum(uuid: bytes, group: int, desc: GroupDesc) -> int:
    raw = desc.raw
    cut = GroupDesc.CHECKSUM_OFFSET
    crc = crc16(uuid)
    crc = crc16(struct.pack("<I", group), crc)
    crc = crc16(raw[:cut], crc)
    return crc16(raw[cut + 2 :], crc)
