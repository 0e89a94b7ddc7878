"""Small layer blobs made with our own writers, for tests."""

import io
import random
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

from obdlayout.formats.commit import BlobOptions, LayerBlobWriter

SECTOR = 512
PLAIN = BlobOptions(compression=None, tar=False)
TAR_LZ4 = BlobOptions()


@dataclass(frozen=True)
class Extent:
    sector: int
    sectors: int
    zeroed: bool = False
    seed: int = 0

    def data(self) -> bytes:
        """Half-compressible bytes (random runs between zero runs), fixed by the seed."""
        rng = random.Random(self.seed)
        size = self.sectors * SECTOR
        pattern = b"".join(rng.randbytes(64) + bytes(64) for _ in range(32))  # 4 KiB
        return (pattern * (size // len(pattern) + 1))[:size]


def write_layer(
    out: BinaryIO, extents: list[Extent], virtual_size: int, options: BlobOptions, ordered: bool = True
) -> None:
    writer = LayerBlobWriter(
        out, virtual_size=virtual_size, uuid=None, parent_uuid=None, options=options, ordered=ordered
    )
    for e in extents:
        if e.zeroed:
            writer.lsmt.write_zeroed(e.sector * SECTOR, e.sectors * SECTOR)
        else:
            writer.lsmt.write_data(e.sector * SECTOR, e.data())
    writer.close()


def write_blob(path: Path, extents: list[Extent], virtual_size: int, options: BlobOptions = TAR_LZ4) -> Path:
    with path.open("w+b") as out:
        write_layer(out, extents, virtual_size, options)
    return path


def plain_lsmt_bytes(extents: list[Extent], virtual_size: int) -> bytes:
    out = io.BytesIO()
    write_layer(out, extents, virtual_size, PLAIN)
    return out.getvalue()


def apply_to_model(model: bytearray, extents: list[Extent]) -> None:
    """What a stack must read after this layer: data replaces, zeroed ranges read as zeros."""
    for e in extents:
        start, end = e.sector * SECTOR, (e.sector + e.sectors) * SECTOR
        model[start:end] = bytes(end - start) if e.zeroed else e.data()
