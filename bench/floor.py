"""The native work an overlaybd conversion cannot do without, timed alone: what no scheduling can beat.

Whatever runs the layers, the bytes must be inflated (ISA-L, the fastest inflate we have), the source blobs and
their tars hashed (the blob digest and DiffID checks), every block of the new layers LZ4-compressed with its
CRC32C (ZFile, what overlaybd-commit -z does), and the new blobs hashed (their digests). These are timed here in
one process on the very bytes of a conversion, with the libraries the conversion uses, so that the convert's
time can be set against the least time this machine's cores allow: their CPU time over the cores.
"""

import hashlib
import time
from collections.abc import Iterator
from pathlib import Path

import lz4.block
from crc32c import crc32c
from isal import igzip_lib

from obdlayout.formats.blob import Blob
from obdlayout.oci.layout import Layout

READ = 1 << 20
ZFILE_BLOCK = 4096  # the ZFile block size of a default conversion


def _manifest_layers(root: Path, tag: str) -> list[Path]:
    """The layer blobs of the manifest tagged `tag` in the OCI layout at `root`."""
    layout = Layout(root)
    return [layout.blob_path(layer.digest) for layer in layout.read_manifest(layout.resolve_tag(tag)).layers]


def _chunks(path: Path) -> Iterator[bytes]:
    with path.open("rb") as stream:
        while chunk := stream.read(READ):
            yield chunk


def _inflate_and_hash(blob: Path) -> tuple[float, float]:
    """CPU seconds to inflate a gzip layer, and to hash it and its tar."""
    inflate = hashing = 0.0
    decompressor = igzip_lib.IgzipDecompressor(flag=igzip_lib.DECOMP_GZIP)
    blob_hash, tar_hash = hashlib.sha256(), hashlib.sha256()
    for chunk in _chunks(blob):
        start = time.process_time()
        tar = decompressor.decompress(chunk)
        inflate += time.process_time() - start
        start = time.process_time()
        blob_hash.update(chunk)
        tar_hash.update(tar)
        hashing += time.process_time() - start
    return inflate, hashing


def _compress(blob: Path) -> float:
    """CPU seconds to LZ4-compress a ZFile blob's payload block by block, each with its CRC32C."""
    seconds = 0.0
    with Blob(blob) as opened:
        for chunk in opened.iter_lsmt():
            with memoryview(chunk) as view:
                start = time.process_time()
                for at in range(0, len(view), ZFILE_BLOCK):
                    crc32c(lz4.block.compress(view[at : at + ZFILE_BLOCK], store_size=False))
                seconds += time.process_time() - start
    return seconds


def _hash(blob: Path) -> float:
    """CPU seconds to hash a file."""
    hasher = hashlib.sha256()
    seconds = 0.0
    for chunk in _chunks(blob):
        start = time.process_time()
        hasher.update(chunk)
        seconds += time.process_time() - start
    return seconds


def run(source: Path, source_tag: str, converted: Path, converted_tag: str, cores: int) -> dict[str, float]:
    """The native CPU seconds of converting `source_tag` of `source` into `converted_tag` of `converted` (made by
    an overlaybd convert), and the least wall time `cores` cores allow for them."""
    inflate = source_hash = 0.0
    for blob in _manifest_layers(source, source_tag):
        spent = _inflate_and_hash(blob)
        inflate, source_hash = inflate + spent[0], source_hash + spent[1]
    source_blobs = {path.name for path in (source / "blobs" / "sha256").iterdir()}
    made = [blob for blob in _manifest_layers(converted, converted_tag) if blob.name not in source_blobs]
    compress = sum(map(_compress, made))
    output_hash = sum(map(_hash, made))
    total = inflate + source_hash + compress + output_hash
    result = {
        "inflate_s": round(inflate, 2),
        "source_sha256_s": round(source_hash, 2),
        "lz4_crc32c_s": round(compress, 2),
        "output_sha256_s": round(output_hash, 2),
        "native_cpu_s": round(total, 2),
        "floor_s": round(total / cores, 2),
    }
    print(
        f"  native work alone (CPU s): inflate {inflate:.2f}, source SHA-256 {source_hash:.2f}, LZ4 + CRC32C "
        f"{compress:.2f}, output SHA-256 {output_hash:.2f}; {total:.2f} in all, so no convert on {cores} cores "
        f"takes less than {total / cores:.2f} s"
    )
    return result
