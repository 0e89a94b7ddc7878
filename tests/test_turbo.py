"""TurboOCI (`convert --turbo-oci`): ext4 metadata layers over the original layers, with gzip indexes.

Checked against the real tools' turboOCI blobs (../shared/data/overlaybd-golden/turboOCI-mkfs), against the
gzip format itself (Python's zlib, not our inflate, re-reads every checkpoint), and end to end: the merged disk
(metadata layers + original tars) is fsck-clean, mounts, and holds the model's tree.
"""

import gzip
import json
import os
import random
import shutil
import stat
import struct
import subprocess
import zlib
from collections.abc import Callable
from contextlib import ExitStack
from pathlib import Path

import pytest
from isal import igzip

from obdlayout.convert.native import build_layer
from obdlayout.ext4.placement import MAP_TO_TAR
from obdlayout.ext4.reader import ImageFilesystem, open_image
from obdlayout.formats.blob import StackLayer, open_layers, write_raw
from obdlayout.formats.commit import BlobOptions
from obdlayout.formats.gzindex import GzipIndex, GzipIndexBuilder, IndexedGzip
from obdlayout.formats.source import BytesSource
from obdlayout.formats.stack import LsmtStack
from obdlayout.formats.turbo_archive import TurboArchive
from obdlayout.inflate import BlockInflater, Boundary
from obdlayout.inspect.fstree import image_tree
from obdlayout.inspect.image import open_layers as open_image_layers
from obdlayout.inspect.tree import Node
from obdlayout.oci.layout import Layout
from obdlayout.oci.mediatypes import OCI_LAYER_GZIP, OCI_LAYER_TAR, OCI_LAYER_ZSTD

from .ext4tree import MountUnavailable, mounted, read_mounted
from .oci_layouts import Json, LayoutBuilder, make_tar, sha256
from .ocimodel import Model, Tree, differences
from .shared import BASELAYER, assert_fsck_clean, child_processes, fixture_layers, memo, require_tool, shared
from .test_inspect_support import hello_world, run

Factory = pytest.TempPathFactory
META = BlobOptions(tar=False)


# -- against the real tools' TurboOCI layers -------------------------------------------------------------


Pieces = dict[bytes, list[tuple[int, int, int]]]


def _file_data_in_targets(layers: list[StackLayer]) -> tuple[dict[bytes, Node], Pieces]:
    """The stack's tree, and for each regular file where its blocks' data lies: (layer, tar offset, bytes)."""
    with ExitStack() as stack:
        disk = open_layers(layers, stack)
        fs = open_image(disk.read, disk.virtual_size)
        tree = image_tree(fs)
        return {p: n for p, n in tree.items() if p != b"lost+found"}, _tar_pieces(disk, fs)


def _tar_pieces(disk: LsmtStack, fs: ImageFilesystem) -> Pieces:
    segments = list(disk.segments())
    found: Pieces = {}
    for entry in fs.walk():
        if entry.inode.file_type != stat.S_IFREG:
            continue
        pieces = []
        for extent in sorted(fs.block_mapping(entry.inode, "file").runs):
            start, end = extent.physical * 4096, (extent.physical + extent.length) * 4096
            for seg in segments:
                if seg.in_target and seg.start < end and start < seg.end:
                    low, high = max(seg.start, start), min(seg.end, end)
                    pieces.append((seg.layer, seg.moffset + low - seg.start, high - low))
        found[b"/".join(entry.path)] = pieces
    return found


def test_file_data_maps_to_the_same_tar_offsets_as_the_real_tools(tmp_path: Path) -> None:
    """layer1.tar then layer2.tar: every file's blocks read the same bytes of the same tar as in the real
    tools' ext4.fs.meta, and the stacks hold equal trees (contents read through the tars)."""
    golden = shared("overlaybd-golden")
    tars = [golden / "layers/layer1.tar", golden / "layers/layer2.tar"]
    ours: list[StackLayer] = []
    for number, tar in enumerate(tars):
        meta = tmp_path / f"layer{number}.fs.meta"
        with meta.open("w+b") as sink, tar.open("rb") as layer:
            build_layer(sink, layer, lowers=list(ours), options=META, placement=MAP_TO_TAR)
        ours.append(StackLayer(meta, tar))
    theirs = [StackLayer(golden / f"turboOCI-mkfs/layer{n}/ext4.fs.meta", tars[n]) for n in range(2)]
    for depth in (1, 2):
        our_tree, our_pieces = _file_data_in_targets(ours[:depth])
        their_tree, their_pieces = _file_data_in_targets(theirs[:depth])
        assert our_pieces == their_pieces
        assert our_pieces[b"data/big.bin"] == [(0, 9728, 70144)]  # 70 000 bytes: 137 sectors at tar byte 9728
        assert sorted(our_tree) == sorted(their_tree)
        for path, node in our_tree.items():
            other = their_tree[path]
            assert (node.kind, node.mode, node.uid, node.gid, node.size, node.sha256, node.target, node.rdev) == (
                other.kind, other.mode, other.uid, other.gid, other.size, other.sha256, other.target, other.rdev,
            ), path  # fmt: skip


# -- the gzip index --------------------------------------------------------------------------------------


def _gzip_sample() -> tuple[bytes, bytes]:
    """(gzip file, its contents): 6 MB of text and binary runs, from zlib (small deflate blocks) then ISA-L."""
    rng = random.Random(7)
    words = [bytes(rng.choices(b"abcdefghij klmnop\n", k=rng.randrange(3, 12))) for _ in range(400)]
    parts = []
    for _ in range(40):
        parts.append(b" ".join(rng.choices(words, k=12000)))
        parts.append(rng.randbytes(rng.randrange(1000, 40000)))
    data = b"".join(parts)
    return zlib.compress(data, 6, wbits=31), data


def _index_of(gz: bytes) -> tuple[bytes, list[Boundary]]:
    builder = GzipIndexBuilder()
    inflater = BlockInflater("sample")
    boundaries: list[Boundary] = []
    for start in range(0, len(gz), 100_000):
        for event in inflater.feed(gz[start : start + 100_000]):
            if isinstance(event, Boundary):
                boundaries.append(event)
                builder.boundary(event)
            else:
                builder.observe_output(event)
    assert inflater.finished
    out = _Sink()
    builder.write(out, len(gz))  # type: ignore[arg-type]
    return out.data, boundaries


class _Sink:
    def __init__(self) -> None:
        self.data = b""

    def write(self, data: bytes) -> int:
        self.data += data
        return len(data)


def _inflate_from(gz: bytes, en_pos: int, bits: int, window: bytes, want: int) -> bytes:
    """Raw inflate starting `bits` bits before byte `en_pos`, with Python's zlib: shift the stream instead of
    priming it."""
    byte, shift = divmod(en_pos * 8 - bits, 8)
    chunk = gz[byte : byte + want + 200_000]
    shifted = (int.from_bytes(chunk, "little") >> shift).to_bytes(len(chunk), "little")
    return zlib.decompressobj(wbits=-15, zdict=window).decompress(shifted, want)


@pytest.mark.parametrize("compressor", ["zlib", "isal"])
def test_every_checkpoint_reinflates_to_the_stream_at_its_offset(compressor: str) -> None:
    gz, data = _gzip_sample()
    if compressor == "isal":
        gz = igzip.compress(data)
    index, boundaries = _index_of(gz)
    # overlaybd-formats.md §7.3: span i32 at 13, index_num i64 at 25, index_start and index_area_len i64 at 313.
    (span,) = struct.unpack_from("<i", index, 13)
    (count,) = struct.unpack_from("<q", index, 25)
    table_start, table_length = struct.unpack_from("<qq", index, 313)
    table = zlib.decompress(index[table_start : table_start + table_length])
    entries = list(struct.iter_unpack("<qqqBI", table))  # de_pos, en_pos, win_pos, bits, win_len
    assert len(entries) == count >= len(data) // span
    for de_pos, en_pos, win_pos, bits, win_len in entries:
        window = zlib.decompress(index[win_pos : win_pos + win_len])
        assert window == data[max(0, de_pos - 32768) : de_pos].rjust(32768, b"\0")
        assert _inflate_from(gz, en_pos, bits, window, 70_000) == data[de_pos : de_pos + 70_000], de_pos
    # overlaybd's choice: the boundary at, or the last one before, each multiple of the span.
    taken = {entry[0] for entry in entries}
    for target in range(0, len(data), span):
        before = [b.de_pos for b in boundaries if b.de_pos <= target]
        assert (max(before) if before else 0) in taken


def test_random_reads_through_the_index_equal_the_stream() -> None:
    gz, data = _gzip_sample()
    index, _ = _index_of(gz)
    reader = IndexedGzip(BytesSource(gz, "sample.gz"), GzipIndex(BytesSource(index, "gzip.meta")))
    rng = random.Random(11)
    for _ in range(1000):
        offset = rng.randrange(len(data))
        length = rng.randrange(1, 300_000)
        assert reader.pread(offset, length) == data[offset : offset + length], (offset, length)
    assert reader.pread(len(data) - 5, 100) == data[-5:]


@pytest.mark.parametrize("damage", ["header", "crc", "window", "table", "truncated"])
def test_a_damaged_gzip_index_is_reported(damage: str, tmp_path: Path) -> None:
    gz, _ = _gzip_sample()
    index, _ = _index_of(gz)
    (table_start,) = struct.unpack_from("<q", index, 313)
    spoiled = bytearray(index)
    if damage == "header":
        spoiled[0] ^= 1  # the magic
    elif damage == "crc":
        spoiled[329] ^= 1
    elif damage == "window":
        spoiled[333 + 20] ^= 0xFF  # inside the first window, right after the 333-byte header
    elif damage == "table":
        spoiled[table_start + 3] ^= 0xFF
    else:
        spoiled = spoiled[:-7]
    path = tmp_path / "gzip.meta"
    path.write_bytes(bytes(spoiled))
    result = run("blob", "verify", str(path))
    assert result.exit_code == 1
    assert result.stderr.startswith(f"FAULT {path}: "), result.stderr
    (tmp_path / "good.meta").write_bytes(index)
    assert run("blob", "verify", str(tmp_path / "good.meta")).exit_code == 0


# -- converting images ------------------------------------------------------------------------------------


def _source(root: Path, tars: list[Path], tag: str, compression: str = "gzip") -> Path:
    builder = LayoutBuilder(root)
    builder.tag(tag, builder.image([builder.layer_from_tar(tar.read_bytes(), compression) for tar in tars]))
    return builder.save()


def _convert(source: Path, out: Path, *options: str) -> None:
    result = run("convert", str(source), str(out), "-q", "-j", "1", *options)
    assert result.exit_code == 0, result.output


def _merged_disk(layout: Path, tag: str, raw: Path) -> Path:
    opened = Layout(layout)
    manifest = opened.read_manifest(opened.resolve_tag(tag))
    with open_image_layers(opened, list(manifest.layers)) as disk, raw.open("w+b") as out:
        write_raw(disk, out)
    return raw


def _rules_turbo(base: str, factory: Factory) -> tuple[Path, Path]:
    def make() -> tuple[Path, Path]:
        where = factory.mktemp(f"turbo-rules-{base}")
        source = _source(where / "src", fixture_layers(factory)["rules"], "rules")
        options = ["--vsize", "1"] if base == "mkfs" else ["--no-mkfs", "--baselayer", str(BASELAYER)]
        _convert(source, where / "out", "-i", "rules", "--turbo-oci", "rules-turbo", *options)
        return source, where / "out"

    return memo(("turbo-rules", base), make)


def _model(base: str, tmp_path: Path, factory: Factory) -> Model:
    if base == "mkfs":
        model = Model()
    else:
        raw = tmp_path / "baselayer.raw"
        with ExitStack() as stack, raw.open("w+b") as out:
            write_raw(open_layers([StackLayer(shared("baselayer", "ext4_64"))], stack), out)
        root = _kernel_tree(raw, tmp_path).entries[b"/"]
        raw.unlink()
        model = Model.from_root_entry(root)
    for tar in fixture_layers(factory)["rules"]:
        model.apply(tar)
    return model


def _kernel_tree(raw: Path, tmp_path: Path) -> Tree:
    try:
        with mounted(raw, tmp_path) as point:
            return read_mounted(point)[0]
    except MountUnavailable as exc:
        pytest.skip(f"no loop mount here: {exc}")


@pytest.mark.parametrize("base", ["mkfs", "baselayer"])
def test_the_all_rules_image_is_fsck_clean_mounts_and_holds_the_models_tree(
    base: str, tmp_path: Path, tmp_path_factory: Factory
) -> None:
    if base == "baselayer":
        shared("baselayer", "ext4_64")
    source, out = _rules_turbo(base, tmp_path_factory)
    raw = _merged_disk(out, "rules-turbo", tmp_path / "disk.raw")
    assert_fsck_clean(raw)
    seen = _kernel_tree(raw, tmp_path)
    diff = differences(_model(base, tmp_path, tmp_path_factory).tree(), seen)
    assert not diff, "\n".join(diff)
    verified = run("verify", f"{out}:rules-turbo", "--against", f"{source}:rules")
    assert verified.exit_code == 0, verified.output
    assert "tree equal to the source's" in verified.stdout and "gzip indexes" in verified.stdout


def test_what_a_turbo_image_holds(tmp_path_factory: Factory) -> None:
    """Per layer: the archive (fs meta, marker, gzip index), the original blob kept, the annotations and
    DiffIDs of §3.3-§3.4; with --no-mkfs, the raw baselayer as layer 0."""
    source, out = _rules_turbo("baselayer", tmp_path_factory)
    layout = Layout(out)
    manifest = layout.read_manifest(layout.resolve_tag("rules-turbo"))
    config = layout.read_json(manifest.config)
    base, *layers = manifest.layers
    assert base.digest == "sha256:c3a417552a6cf9ffa959b541850bab7d7f08f4255425bf8b48c85f7b36b378d9"
    assert base.media_type == OCI_LAYER_TAR and config["rootfs"]["diff_ids"][0] == base.digest
    sources = Layout(source).read_manifest(Layout(source).resolve_tag("rules")).layers
    for layer, original, diff_id in zip(layers, sources, config["rootfs"]["diff_ids"][1:], strict=True):
        assert layer.media_type == OCI_LAYER_GZIP
        notes = layer.annotations
        assert notes["containerd.io/snapshot/overlaybd/version"] == "0.1.0-turbo.ociv1"
        assert notes["containerd.io/snapshot/overlaybd/blob-digest"] == layer.digest
        assert notes["containerd.io/snapshot/overlaybd/turbo-oci/target-digest"] == original.digest
        assert notes["containerd.io/snapshot/overlaybd/turbo-oci/target-media-type"] == OCI_LAYER_GZIP
        assert layout.has_blob(original)
        archive_bytes = layout.blob_path(layer.digest).read_bytes()
        archive = TurboArchive(layer.digest, archive_bytes)
        assert archive.members == [".turbo.ociv1", "ext4.fs.meta", "gzip.meta"]
        assert diff_id == sha256(gzip.decompress(archive_bytes))
        require_tool("tar")
        listing = subprocess.run(
            ["tar", "-tvzf", str(layout.blob_path(layer.digest))], capture_output=True, text=True, check=True
        ).stdout.splitlines()
        assert [line.split()[:2] for line in listing] == [["-rw-r--r--", "0/0"]] * 3  # fixed modes, owners


def test_converting_twice_gives_the_same_bytes(tmp_path: Path, tmp_path_factory: Factory) -> None:
    source, out = _rules_turbo("mkfs", tmp_path_factory)
    again = tmp_path / "again"
    _convert(source, again, "-i", "rules", "--turbo-oci", "rules-turbo", "--vsize", "1")
    first = sorted(p.name for p in (out / "blobs" / "sha256").iterdir())
    assert sorted(p.name for p in (again / "blobs" / "sha256").iterdir()) == first


def test_both_formats_in_one_run_equal_two_runs(tmp_path: Path, tmp_path_factory: Factory) -> None:
    tars = fixture_layers(tmp_path_factory)["rules"]
    source = _source(tmp_path / "src", tars, "rules")
    both, overlaybd, turbo = tmp_path / "both", tmp_path / "obd", tmp_path / "turbo"
    _convert(source, both, "-i", "rules", "--overlaybd", "o", "--turbo-oci", "t", "--vsize", "1", "--json")
    _convert(source, overlaybd, "-i", "rules", "--overlaybd", "o", "--vsize", "1")
    _convert(source, turbo, "-i", "rules", "--turbo-oci", "t", "--vsize", "1")
    index = {e["annotations"]["org.opencontainers.image.ref.name"]: e["digest"] for e in _index(both)}
    assert index["o"] == _index(overlaybd)[0]["digest"]
    assert index["t"] == _index(turbo)[0]["digest"]
    blobs = {p.name for p in (both / "blobs" / "sha256").iterdir()}
    assert blobs == {p.name for d in (overlaybd, turbo) for p in (d / "blobs" / "sha256").iterdir()}


def _index(layout: Path) -> list[Json]:
    entries: list[Json] = json.loads((layout / "index.json").read_text())["manifests"]
    return entries


def test_multi_arch_image_converts_verifies_and_copies_with_skopeo(tmp_path: Path) -> None:
    out = tmp_path / "out"
    _convert(hello_world(), out, "-i", "docker-list", "--turbo-oci", "list-turbo")
    verified = run("verify", f"{out}:list-turbo", "--against", f"{hello_world()}:docker-list")
    assert verified.exit_code == 0, verified.output
    assert verified.stdout.count("\nok ") + verified.stdout.startswith("ok ") == 9
    skopeo = require_tool("skopeo")
    copy = tmp_path / "copy"
    done = subprocess.run(
        [skopeo, "copy", "--all", "--preserve-digests", f"oci:{out}:list-turbo", f"oci:{copy}:list-turbo"],
        capture_output=True,
        text=True,
    )
    assert done.returncode == 0, done.stderr
    assert _index(copy)[0]["digest"] == _index(out)[0]["digest"]


def test_an_uncompressed_layer_has_no_gzip_index(tmp_path: Path, tmp_path_factory: Factory) -> None:
    source = _source(tmp_path / "src", fixture_layers(tmp_path_factory)["whiteout-missing-parent"], "w", "none")
    out = tmp_path / "out"
    _convert(source, out, "-i", "w", "--turbo-oci", "w-turbo", "--vsize", "1")
    layout = Layout(out)
    for layer in layout.read_manifest(layout.resolve_tag("w-turbo")).layers:
        archive = TurboArchive(layer.digest, layout.blob_path(layer.digest).read_bytes())
        assert archive.gzip_meta is None and archive.members == [".turbo.ociv1", "ext4.fs.meta"]
        assert layer.annotations["containerd.io/snapshot/overlaybd/turbo-oci/target-media-type"] == OCI_LAYER_TAR
    assert run("verify", f"{out}:w-turbo", "--against", f"{source}:w").exit_code == 0


def test_a_zstd_layer_is_refused_naming_it(tmp_path: Path, tmp_path_factory: Factory) -> None:
    source = _source(tmp_path / "src", fixture_layers(tmp_path_factory)["whiteout-missing-parent"], "w", "zstd")
    zstd_layer = Layout(source).read_manifest(Layout(source).resolve_tag("w")).layers[0]
    assert zstd_layer.media_type == OCI_LAYER_ZSTD
    result = run("convert", str(source), str(tmp_path / "out"), "-q", "-i", "w", "--turbo-oci", "t")
    assert result.exit_code == 1
    assert zstd_layer.digest in result.stderr and "zstd" in result.stderr and "--overlaybd" in result.stderr
    assert not (tmp_path / "out").exists()


def test_a_gzip_layer_of_several_members_is_refused(tmp_path: Path) -> None:
    builder = LayoutBuilder(tmp_path / "src")
    tar = (shared("overlaybd-golden") / "layers/layer1.tar").read_bytes()
    half = len(tar) // 2 // 512 * 512
    data = zlib.compress(tar[:half], 6, wbits=31) + zlib.compress(tar[half:], 6, wbits=31)
    layer = {**builder.blob(data, OCI_LAYER_GZIP), "_diff_id": sha256(tar)}
    builder.tag("two", builder.image([layer]))
    source = builder.save()
    result = run("convert", str(source), str(tmp_path / "out"), "-q", "-i", "two", "--turbo-oci", "t")
    assert result.exit_code == 1
    assert "gzip member" in result.stderr, result.stderr
    _convert(source, tmp_path / "obd", "-i", "two")  # the overlaybd engine reads every member


def _corrupt_deflate(builder: LayoutBuilder) -> tuple[Json, str]:
    tar = make_tar({f"f{i}": random.Random(i).randbytes(40_000) for i in range(40)})
    data = bytearray(gzip.compress(tar, mtime=0))
    data[len(data) // 2 : len(data) // 2 + 64] = bytes(64)
    return {**builder.blob(bytes(data), OCI_LAYER_GZIP), "_diff_id": sha256(tar)}, "corrupt"


def _bad_first_entry(builder: LayoutBuilder) -> tuple[Json, str]:
    """An entry the rules refuse, first, before 60 MB that take zlib a while to inflate."""
    text = random.Random(7).randbytes(30 << 20).hex().encode()
    layer = builder.layer_from_tar(make_tar({"/".join(["d"] * 2500): b"", "big": text}))
    return layer, "a path of 4999 bytes"


@pytest.mark.parametrize("fstype", ["ext4", "erofs"])
@pytest.mark.parametrize("make", [_corrupt_deflate, _bad_first_entry])
def test_a_failing_gzip_layer_stops_both_its_readers(
    tmp_path: Path, fstype: str, make: Callable[[LayoutBuilder], tuple[Json, str]]
) -> None:
    """A TurboOCI gzip layer is read by two processes (its entries, and its gzip index by zlib): when either
    fails, the conversion fails naming the layer, and neither process is left running."""
    builder = LayoutBuilder(tmp_path / "src")
    layer, problem = make(builder)
    builder.tag("bad", builder.image([layer]))
    source = builder.save()
    before = set(child_processes(os.getpid()))
    options = ("-q", "-i", "bad", "--turbo-oci", "t", "--fstype", fstype)
    result = run("convert", str(source), str(tmp_path / "out"), *options)
    assert result.exit_code == 1
    assert layer["digest"] in result.stderr and problem in result.stderr, result.stderr
    assert not (tmp_path / "out").exists()
    assert set(child_processes(os.getpid())) <= before


def test_the_go_flag_names_are_accepted(tmp_path: Path) -> None:
    for flag in ("--turboOCI", "--fastoci"):
        out = tmp_path / flag.strip("-")
        _convert(hello_world(), out, "-i", "amd64", flag, "hw")
        layer = Layout(out).read_manifest(Layout(out).resolve_tag("hw")).layers[0]
        assert layer.annotations["containerd.io/snapshot/overlaybd/version"] == "0.1.0-turbo.ociv1"


class _Counting:
    """A ByteSource that counts the bytes read from it."""

    def __init__(self, inner: BytesSource) -> None:
        self.inner = inner
        self.name = inner.name
        self.read = 0

    @property
    def size(self) -> int:
        return self.inner.size

    def pread(self, offset: int, length: int) -> bytes:
        data = self.inner.pread(offset, length)
        self.read += len(data)
        return data


def test_one_file_is_read_without_decompressing_the_layer_whole(tmp_path: Path) -> None:
    """`cat` of one file of a gzip layer, through the gzip index: the inflate starts at the checkpoint before
    it, reading at most a span (1 MiB) more than the file; the original blob in DST is the data."""
    rng = random.Random(5)
    builder = LayoutBuilder(tmp_path / "src")
    files = {f"f{i}": rng.randbytes(300_000) for i in range(12)}  # incompressible: gzip bytes = tar bytes
    builder.tag("big", builder.image([builder.layer(files)]))
    source = builder.save()
    out = tmp_path / "out"
    _convert(source, out, "-i", "big", "--turbo-oci", "big-turbo", "--vsize", "1")
    shutil.rmtree(source)
    result = run("cat", f"{out}:big-turbo", "/f9")
    assert result.exit_code == 0 and result.stdout_bytes == files["f9"]
    layout = Layout(out)
    layer = layout.read_manifest(layout.resolve_tag("big-turbo")).layers[0]
    archive = TurboArchive(layer.digest, layout.blob_path(layer.digest).read_bytes())
    assert archive.gzip_meta is not None
    target = layout.blob_path(layer.annotations["containerd.io/snapshot/overlaybd/turbo-oci/target-digest"])
    gz = _Counting(BytesSource(target.read_bytes(), "target"))
    reader = IndexedGzip(gz, GzipIndex(BytesSource(archive.gzip_meta, "gzip.meta")))
    offset = 9 * 300_000 + 9 * 1024  # about where f9's data lies in the tar
    assert reader.pread(offset, 100_000) == gzip.decompress(target.read_bytes())[offset : offset + 100_000]
    assert gz.read < (1 << 20) + 300_000, f"{gz.read} compressed bytes read for 100 000"
    assert gz.read < gz.size // 2
