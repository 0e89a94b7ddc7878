"""Our readers and writers against blobs made by the real overlaybd tools (../shared/data)."""

import hashlib
import io
import re
import struct
from contextlib import ExitStack
from pathlib import Path

import pytest

from obdlayout.formats.blob import Blob, open_stack, write_raw
from obdlayout.formats.errors import FormatError
from obdlayout.formats.lsmt_writer import LsmtWriter
from obdlayout.formats.tarwrap import TarWrapperWriter
from obdlayout.formats.zfile_layout import HT_STRUCT, Algorithm, BlockCodec
from obdlayout.formats.zfile_reader import ZFileReader
from obdlayout.formats.zfile_writer import ZFileWriter

from .shared import SHARED_DATA, debugfs, e2fsck, shared

LAYER_DIRS = ["mkfs/layer0", "mkfs/layer1", "baselayer/layer0", "baselayer/layer1"]
# Layer uuids the README of ../shared/data states for the golden runs.
GOLDEN_UUIDS = {
    "layer0": ("D0C2A979-A603-CD1B-4C54-CDE764294CCD", "00000000-0000-0000-0000-000000000000"),
    "layer1": ("01D4FECA-E826-4D7A-5AB7-26ED4E61D065", "D0C2A979-A603-CD1B-4C54-CDE764294CCD"),
}


def _all_layer_blobs() -> list[str]:
    if not SHARED_DATA.exists():
        return []
    found = [p for p in (SHARED_DATA / "overlaybd-golden").rglob("*") if p.is_file() and "layers" not in p.parts]
    found = [p for p in found if p.suffix != ".txt" and p.name != "layer.tar.meta"]
    found.append(SHARED_DATA / "baselayer" / "ext4_64")
    found.append(
        SHARED_DATA
        / "hello-world"
        / "blobs"
        / "sha256"
        / "022231c3f1af70e0cc42f0c3781eabf174cff608210585bf93fc83e16d33672d"
    )
    return sorted(str(p.relative_to(SHARED_DATA)) for p in found)


@pytest.mark.parametrize("relpath", _all_layer_blobs() or ["(shared data absent)"])
def test_every_shared_blob_opens_and_verifies(relpath: str) -> None:
    path = shared(relpath)
    with Blob(path) as blob:
        blob.verify()
        info = blob.info()
        assert info.virtual_size == 64 << 30
        assert info.records > 0
        chain = GOLDEN_UUIDS.get(path.parent.name)
        if "turboOCI" in relpath:
            assert info.kind == "turbo-oci-warp"
            assert info.target_records > 0
        else:
            assert info.kind == "committed"
            if chain:
                assert (info.uuid, info.parent_uuid) == chain
        expected_wrap = "tar+pax" if path.name == "overlaybd.commit" or "sha256" in relpath else "none"
        assert info.wrapping == expected_wrap
        assert info.compression == ("zstd" if path.name.endswith("z-zstd") else "lz4")


def test_tar_meta_is_named_as_not_a_layer() -> None:
    path = shared("overlaybd-golden", "turboOCI-mkfs", "layer0", "layer.tar.meta")
    with pytest.raises(FormatError, match=r"tar archive \(first member 'etc/'\) holding neither"):
        Blob(path)


def test_baselayer_facts() -> None:
    with Blob(shared("baselayer", "ext4_64")) as blob:
        info = blob.info()
        assert blob.zfile is not None and not blob.zfile.digests_checked  # legacy header garbage (§6.3)
        # §2.6: 8323 real records + padding = 33 x 256; file size from the spec.
        assert info.records == 8323
        assert blob.layer.trailer.index_size == 8448
        assert info.lsmt_size == 541_937_664


def _stack_to_raw(tmp_path: Path, *blobs: Path) -> Path:
    image = tmp_path / "disk.raw"
    with ExitStack() as stack, image.open("w+b") as out:
        write_raw(open_stack(blobs, stack), out)
    return image


def _ls_rows(listing: str) -> list[tuple[str, ...]]:
    """inode, mode, links, uid, gid, size, name of each `debugfs ls -l` row (dates vary in format)."""
    rows = []
    for line in listing.splitlines():
        m = re.match(r"\s*(\d+)\s+(\d+)\s+\((\d+)\)\s+(\d+)\s+(\d+)\s+(\d+)\s+\S+\s+\S+\s+(.*)$", line)
        if m:
            rows.append(m.groups())
    return rows


def test_mkfs_stack_is_fsck_clean_and_holds_the_expected_tree(tmp_path: Path) -> None:
    golden = shared("overlaybd-golden")
    image = _stack_to_raw(tmp_path, golden / "mkfs/layer0/overlaybd.commit", golden / "mkfs/layer1/overlaybd.commit")
    check = e2fsck(image)
    assert check.returncode == 0, check.stdout + check.stderr
    fsinfo = (golden / "img.after-layer2.fsinfo.txt").read_text()
    summary = re.search(r"(\d+/\d+ files .*blocks)", fsinfo)
    assert summary and summary.group(1) in check.stdout
    sections = re.findall(r"^### ls -l (\S+)\n(.*?)(?=^###|\Z)", fsinfo, flags=re.M | re.S)
    assert len(sections) >= 6
    for path, expected in sections:
        assert _ls_rows(debugfs(image, f"ls -l {path}")) == _ls_rows(expected), path
    digest = re.search(r"### cat /etc/hello.txt \| sha256\n([0-9a-f]{64})", fsinfo)
    assert digest is not None
    assert hashlib.sha256(debugfs(image, "cat /etc/hello.txt").encode("utf-8", "surrogateescape")).hexdigest() == (
        digest.group(1)
    )


def test_baselayer_raw_is_fsck_clean(tmp_path: Path) -> None:
    image = _stack_to_raw(tmp_path, shared("baselayer", "ext4_64"))
    check = e2fsck(image)
    assert check.returncode == 0, check.stdout + check.stderr


def _plain_lsmt(path: Path) -> bytes:
    with Blob(path) as blob:
        return b"".join(blob.iter_lsmt())


def _rewrite_lsmt(path: Path) -> bytes:
    """Our LSMT writer fed with the records and data of a golden layer."""
    out = io.BytesIO()
    with Blob(path) as blob:
        layer = blob.layer
        writer = LsmtWriter(out, virtual_size=layer.virtual_size, uuid=layer.uuid, parent_uuid=layer.parent_uuid)
        for r in layer.records:
            if r.zeroed:
                writer.write_zeroed(r.offset * 512, r.length * 512)
            else:
                writer.write_data(r.offset * 512, layer.read_data(r.moffset * 512, r.length * 512))
        writer.close()
    return out.getvalue()


def _zfile(data: bytes, algorithm: Algorithm, jobs: int = 1, block_size: int = 4096) -> bytes:
    out = io.BytesIO()
    writer = ZFileWriter(out, algorithm=algorithm, jobs=jobs, block_size=block_size)
    writer.write(data)
    writer.close()
    return out.getvalue()


@pytest.mark.parametrize("layer_dir", LAYER_DIRS)
def test_lsmt_writer_reproduces_overlaybd_commit(layer_dir: str) -> None:
    golden = shared("overlaybd-golden", layer_dir, "overlaybd.commit.z-notar")
    assert _rewrite_lsmt(golden) == _plain_lsmt(golden)


@pytest.mark.parametrize("layer_dir", LAYER_DIRS)
def test_zstd_zfile_is_byte_identical(layer_dir: str) -> None:
    directory = shared("overlaybd-golden", layer_dir)
    lsmt = _plain_lsmt(directory / "overlaybd.commit.z-zstd")
    assert _zfile(lsmt, Algorithm.ZSTD) == (directory / "overlaybd.commit.z-zstd").read_bytes()


def test_zfile_output_does_not_depend_on_workers() -> None:
    directory = shared("overlaybd-golden", "mkfs", "layer0")
    lsmt = _plain_lsmt(directory / "overlaybd.commit.z-zstd")
    for algorithm in Algorithm:
        assert _zfile(lsmt, algorithm, jobs=1) == _zfile(lsmt, algorithm, jobs=2)


@pytest.mark.parametrize("layer_dir", LAYER_DIRS)
def test_lz4_zfile_matches_in_structure_and_blocks(layer_dir: str) -> None:
    """liblz4 versions may encode a block differently; the frame and every decoded block must agree."""
    directory = shared("overlaybd-golden", layer_dir)
    golden = (directory / "overlaybd.commit.z-notar").read_bytes()
    lsmt = _plain_lsmt(directory / "overlaybd.commit.z-notar")
    ours = _zfile(lsmt, Algorithm.LZ4)
    g_head, o_head = HT_STRUCT.unpack_from(golden, 0), HT_STRUCT.unpack_from(ours, 0)
    # Every header field but digest (3), index_offset (5) and index_crc (8) must be equal.
    varying = {3, 5, 8}
    assert [v for i, v in enumerate(g_head) if i not in varying] == [
        v for i, v in enumerate(o_head) if i not in varying
    ]
    codec = BlockCodec(Algorithm.LZ4)

    def blocks(blob: bytes) -> list[bytes]:
        head = HT_STRUCT.unpack_from(blob, 0)
        index_offset, count, original = head[5], head[6], head[7]
        lengths = struct.unpack_from(f"<{count}I", blob, index_offset)
        out, pos = [], 512
        for i, length in enumerate(lengths):
            size = min(4096, original - i * 4096)
            out.append(codec.decompress(blob[pos : pos + length - 4], size))
            pos += length
        assert pos == index_offset
        return out

    assert blocks(ours) == blocks(golden)
    assert b"".join(blocks(ours)) == lsmt


@pytest.mark.parametrize("layer_dir", LAYER_DIRS)
def test_tar_wrapper_is_byte_identical(layer_dir: str) -> None:
    directory = shared("overlaybd-golden", layer_dir)
    out = io.BytesIO()
    wrapper = TarWrapperWriter(out)
    out.write((directory / "overlaybd.commit.z-notar").read_bytes())
    wrapper.close()
    assert out.getvalue() == (directory / "overlaybd.commit").read_bytes()


def test_zfile_reader_random_access_matches_stream() -> None:
    path = shared("overlaybd-golden", "mkfs", "layer1", "overlaybd.commit.z-zstd")
    with Blob(path) as blob:
        assert isinstance(blob.zfile, ZFileReader)
        whole = b"".join(blob.zfile.iter_blocks())
        for offset, length in [(0, 1), (4095, 2), (12345, 70000), (len(whole) - 10, 100)]:
            assert blob.zfile.pread(offset, length) == whole[offset : offset + length]
