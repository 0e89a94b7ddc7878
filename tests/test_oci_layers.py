"""Source layers as uncompressed tar streams: sniffed compression, digest and DiffID checked to the end."""

import gzip
import struct
import tarfile
from collections.abc import Callable
from pathlib import Path

import pytest
import zstandard

from obdlayout.oci.descriptor import Descriptor
from obdlayout.oci.digest import diff_id
from obdlayout.oci.errors import LayoutError
from obdlayout.oci.layers import open_uncompressed, sniff
from obdlayout.oci.layout import Layout
from obdlayout.oci.mediatypes import DOCKER_LAYER_TAR, OCI_LAYER_GZIP, Compression

from .oci_layouts import LayoutBuilder, make_tar, sha256

FILES = {"etc/hello": b"hello\n", "data/big": bytes(range(256)) * 4000}


def _layout_with(tmp_path: Path, data: bytes, media_type: str) -> tuple[Layout, Descriptor, Path]:
    builder = LayoutBuilder(tmp_path / "src")
    layer = builder.blob(data, media_type)
    builder.tag("v1", layer)
    builder.save()
    return Layout(builder.root), Descriptor.parse(layer), builder.blob_path(layer["digest"])


def _skippable_frame(payload: bytes) -> bytes:
    return struct.pack("<II", 0x184D2A5E, len(payload)) + payload


@pytest.mark.parametrize(
    "compress",
    [
        lambda tar: tar,
        lambda tar: gzip.compress(tar, mtime=0),
        lambda tar: gzip.compress(tar[:5000]) + gzip.compress(tar[5000:]),  # multi-member gzip
        lambda tar: gzip.compress(tar) + bytes(1024),  # zero padding after the member, as some tools write
        lambda tar: zstandard.ZstdCompressor().compress(tar),
        lambda tar: _skippable_frame(b"toc") + zstandard.ZstdCompressor(write_content_size=False).compress(tar),
    ],
    ids=["plain", "gzip", "gzip-members", "gzip-padded", "zstd", "zstd-skippable"],
)
def test_every_compression_gives_the_same_tar(tmp_path: Path, compress: Callable[[bytes], bytes]) -> None:
    tar = make_tar(FILES)
    # The media type says plain tar: the stream is sniffed, as containerd does.
    layout, layer, _ = _layout_with(tmp_path, compress(tar), DOCKER_LAYER_TAR)
    with open_uncompressed(layout, layer, diff_id=sha256(tar)) as stream:
        assert stream.read() == tar


def test_sniff() -> None:
    assert sniff(b"\x1f\x8b\x08\x00") is Compression.GZIP
    assert sniff(b"\x28\xb5\x2f\xfd") is Compression.ZSTD
    assert sniff(b"\x50\x2a\x4d\x18") is Compression.ZSTD
    assert sniff(b"\x60\x2a\x4d\x18") is Compression.NONE
    assert sniff(b"etc/") is Compression.NONE
    assert sniff(b"") is Compression.NONE


def test_a_consumer_that_stops_at_the_tar_end_still_gets_the_diff_id_checked(tmp_path: Path) -> None:
    tar = make_tar(FILES)
    layout, layer, path = _layout_with(tmp_path, gzip.compress(tar), OCI_LAYER_GZIP)
    wrong = sha256(b"something else")
    expected = rf"{path}: uncompressed layer has DiffID {sha256(tar)}, its image config says {wrong}"
    with (
        pytest.raises(LayoutError, match=expected),
        open_uncompressed(layout, layer, diff_id=wrong) as stream,
        tarfile.open(fileobj=stream, mode="r|") as archive,
    ):
        assert archive.next() is not None  # reads one member only


def test_a_corrupt_gzip_layer_names_the_blob(tmp_path: Path) -> None:
    data = bytearray(gzip.compress(make_tar(FILES)))
    data[len(data) // 2] ^= 0xFF
    # The descriptor matches the corrupt bytes: decompression, not the digest, must catch it.
    layout, layer, path = _layout_with(tmp_path, bytes(data), OCI_LAYER_GZIP)
    with (
        pytest.raises(LayoutError, match=rf"{path}: cannot decompress the gzip layer"),
        open_uncompressed(layout, layer) as s,
    ):
        s.read()


def test_a_blob_whose_digest_is_wrong_fails_even_if_only_the_start_is_read(tmp_path: Path) -> None:
    tar = make_tar(FILES)
    layout, layer, path = _layout_with(tmp_path, tar, DOCKER_LAYER_TAR)
    data = bytearray(tar)
    data[-1] ^= 0x01  # in the tar's zero padding, which a tar reader never looks at
    path.write_bytes(bytes(data))
    with pytest.raises(LayoutError, match=rf"{path}: digest mismatch"), open_uncompressed(layout, layer) as stream:
        stream.read(10)


def test_diff_id_of_the_stream_is_the_plain_tars(tmp_path: Path) -> None:
    tar = make_tar(FILES)
    layout, layer, _ = _layout_with(tmp_path, zstandard.ZstdCompressor().compress(tar), OCI_LAYER_GZIP)
    with open_uncompressed(layout, layer) as stream:
        assert diff_id(stream) == sha256(tar)
