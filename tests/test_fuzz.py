"""Every parser a hostile image reaches, fed damaged input: the result is a value or one of our errors
(ObdlayoutError, or ValueError from the JSON layer that the layout turns into one), never another
exception, never a hang (each example runs under an alarm), never a write outside the target.

Inputs are valid artefacts with bytes flipped, inserted or cut, so that the parsers get past their magic
numbers and meet damage deep inside. `make test` runs FUZZ_EXAMPLES of each; `make fuzz` runs thousands
(HYPOTHESIS_PROFILE=fuzz, tests/conftest.py).
"""

import io
import json
import os
import stat
import tarfile
from collections.abc import Callable
from contextlib import ExitStack, suppress
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from fixtures.make_layers import LayerWriter
from obdlayout.convert.native import build_layer
from obdlayout.convert.turbo_erofs import build_erofs_layer
from obdlayout.erofs.reader import ErofsImage
from obdlayout.errors import ObdlayoutError
from obdlayout.ext4.reader import open_image
from obdlayout.formats.blob import Blob, StackLayer, open_layers, write_raw
from obdlayout.formats.commit import BlobOptions
from obdlayout.formats.gzindex import GzipIndex, GzipIndexBuilder, IndexedGzip
from obdlayout.formats.source import BytesSource
from obdlayout.formats.stack import LsmtStack
from obdlayout.formats.turbo_archive import TurboArchive, write_archive
from obdlayout.inflate import BlockInflater, Boundary
from obdlayout.inspect.fstree import image_tree
from obdlayout.inspect.listing import ls
from obdlayout.inspect.source import SourceTree
from obdlayout.oci import gojson
from obdlayout.oci.documents import Index, Manifest
from obdlayout.oci.layout import Layout
from obdlayout.tar.reader import EntryCursor, TarReader
from obdlayout.tar.relay import RelayedEntries, relay_entries
from obdlayout.tar.ring import Ring
from obdlayout.tar.ustar import BLOCK, checksum_ok, stamp_checksum

from .shared import PLAIN_BLOB, memo, pack_raw_image_file
from .test_ext4_build import deadline

FUZZ_EXAMPLES = 60 if os.environ.get("HYPOTHESIS_PROFILE") != "fuzz" else 5000
EXAMPLE_SECONDS = 20  # a parser that needs longer on a few KiB is hung


def _damage(data: bytes, draw: Callable[[Any], Any], span: tuple[int, int] | None = None) -> bytes:
    """`data` with up to 8 bytes flipped (within `span` if given), maybe a run inserted, maybe cut short."""
    out = bytearray(data)
    low, high = span or (0, len(data))
    for _ in range(draw(st.integers(0, 8))):
        at = draw(st.integers(low, max(low, high - 1)))
        if at < len(out):
            out[at] ^= draw(st.integers(1, 255))
    if draw(st.booleans()):
        at = draw(st.integers(0, len(out)))
        out[at:at] = draw(st.binary(max_size=64))
    if draw(st.integers(0, 4)) == 0:
        del out[draw(st.integers(0, len(out))) :]
    return bytes(out)


def _damage_tar(data: bytes, draw: Callable[[Any], Any]) -> bytes:
    """Damage inside the header blocks, with their checksums made right again: the reader then trusts the
    fields and meets the damage in sizes, numbers, names, PAX records and sparse maps."""
    headers = [at for at in range(0, len(data), BLOCK) if checksum_ok(data[at : at + BLOCK])]
    out = bytearray(data)
    for at in draw(st.lists(st.sampled_from(headers), min_size=1, max_size=3)):
        for _ in range(draw(st.integers(1, 6))):
            offset = at + draw(st.integers(0, 499))
            out[offset] = draw(st.sampled_from([0, 0x20, 0x30, 0x37, 0x39, 0x80, 0xFF, draw(st.integers(0, 255))]))
        block = bytearray(out[at : at + BLOCK])
        out[at : at + BLOCK] = stamp_checksum(block)
    return bytes(out)


def _tar_damage(draw: Callable[[Any], Any]) -> bytes:
    damage = _damage_tar if draw(st.booleans()) else _damage
    return damage(_sample_tar(), draw)


def _survives(action: Callable[[], object], allowed: tuple[type[BaseException], ...] = (ObdlayoutError,)) -> None:
    with deadline(EXAMPLE_SECONDS), suppress(*allowed):
        action()


# -- the layer tar: reader, rules, ext4 writer -------------------------------------------------------------


def _sample_tar() -> bytes:
    def make() -> bytes:
        path = Path(os.environ.get("TMPDIR", "/tmp")) / f"obd-fuzz-{os.getpid()}.tar"
        writer = LayerWriter(path)
        writer.add("dir/", tarfile.DIRTYPE)
        writer.add("dir/" + "long" * 40, data=b"long name\n" * 20, xattrs={"user.a": b"1"})
        writer.add("dir/link", tarfile.SYMTYPE, linkname="../dir")
        writer.add("hard", tarfile.LNKTYPE, linkname="dir/" + "long" * 40)
        writer.pax_raw(b"when", b"0", [(b"mtime", b"1700000000.25")], b"x\n")
        writer.old_gnu_sparse(b"sparse", 40960, [(0, 512), (8192, 1024)], seed=1)
        writer.pax_sparse_1_0(b"sparse1", 20480, [(4096, 512)], seed=2)
        writer.add("dir/.wh.gone")
        data = writer.close().read_bytes()
        path.unlink()
        return data

    return memo("fuzz-tar", make)


@settings(max_examples=FUZZ_EXAMPLES)
@given(data=st.data())
def test_the_tar_reader(data: st.DataObject) -> None:
    damaged = _tar_damage(data.draw)

    def read_all() -> None:
        tar = TarReader(io.BytesIO(damaged))
        for entry in tar:
            if entry.is_regular:
                tar.read_at(0, min(entry.size, 1 << 20))
        tar.drain()

    _survives(read_all)


class _FailsAtEnd(io.BytesIO):
    """The relayed frames, then the parsing process's error at the stream's end (as _ChildStream raises it)."""

    def __init__(self, frames: bytes, error: BaseException | None) -> None:
        super().__init__(frames)
        self._error = error

    def read(self, size: int | None = -1) -> bytes:
        data = super().read(size)
        if not data and self._error is not None:
            raise self._error
        return data


def _outcome(tar: EntryCursor) -> list[object]:
    """What a consumer sees: each entry with its bytes read in uneven pieces, then the error it meets."""
    seen: list[object] = []
    try:
        for entry in tar:
            pieces = []
            if entry.is_regular:
                for offset in range(0, min(entry.size, 1 << 20), 3000):
                    pieces.append(tar.read_at(offset, 3000))
            seen.append((entry, b"".join(pieces)))
        tar.drain()
    except ObdlayoutError as exc:
        seen.append((type(exc), str(exc)))
    return seen


@settings(max_examples=FUZZ_EXAMPLES)
@given(data=st.data())
def test_relayed_entries_are_what_the_reader_gives(data: st.DataObject) -> None:
    """Parsed in another process and relayed, a damaged tar gives the same entries, bytes and error, at the
    same point, as a reader in this process."""
    damaged = _tar_damage(data.draw)
    sink = io.BytesIO()
    error: BaseException | None = None
    ring = Ring(len(damaged) + 1)  # room for all the file data: one process both writes and reads it here
    try:
        with deadline(EXAMPLE_SECONDS):
            try:
                reader = TarReader(io.BytesIO(damaged))
                relay_entries(reader, sink, ring)
                reader.drain()
            except ObdlayoutError as exc:
                error = exc
            relayed = _outcome(RelayedEntries(_FailsAtEnd(sink.getvalue(), error), ring))
            direct = _outcome(TarReader(io.BytesIO(damaged)))
    finally:
        ring.close()
    assert relayed == direct


@settings(max_examples=FUZZ_EXAMPLES)
@given(data=st.data())
def test_the_layer_rules_in_memory_and_in_ext4(data: st.DataObject, tmp_path_factory: pytest.TempPathFactory) -> None:
    damaged = _tar_damage(data.draw)
    _survives(lambda: SourceTree().apply(io.BytesIO(damaged), "layer"))
    out = tmp_path_factory.mktemp("fuzz-ext4") / "layer.blob"

    def build() -> None:
        with out.open("w+b") as sink:
            build_layer(sink, io.BytesIO(damaged), vsize=64 << 20, options=BlobOptions(compression=None, tar=False))

    _survives(build)


# -- layer blobs ------------------------------------------------------------------------------------------


def _sample_blob() -> bytes:
    def make() -> bytes:
        sink = io.BytesIO()
        build_layer(sink, io.BytesIO(_sample_tar()), vsize=64 << 20, options=BlobOptions(block_size=4096))
        return sink.getvalue()

    return memo("fuzz-blob", make)


@settings(max_examples=FUZZ_EXAMPLES)
@given(data=st.data())
def test_the_blob_readers(data: st.DataObject) -> None:
    """Tar wrapper, ZFile (header, jump table, blocks, CRCs, trailer) and LSMT (header, index, trailer)."""
    blob = _sample_blob()
    where = data.draw(st.sampled_from(["head", "tail", "anywhere"]))
    span = {"head": (0, 3 * 512 + 600), "tail": (len(blob) - 2048, len(blob)), "anywhere": (0, len(blob))}[where]
    damaged = _damage(blob, data.draw, span)

    def read() -> None:
        with Blob("fuzzed.blob", contents=damaged) as opened:
            opened.info()
            opened.verify()
            for _ in opened.iter_lsmt():
                pass
            disk = LsmtStack([opened.layer])
            disk.read(0, 1 << 16)

    _survives(read)


@settings(max_examples=FUZZ_EXAMPLES)
@given(data=st.data())
def test_the_ext4_reader_behind_inspect(data: st.DataObject, tmp_path_factory: pytest.TempPathFactory) -> None:
    """The image's metadata blocks damaged: superblock, descriptors, inodes, directories, extents, xattrs."""
    raw = _sample_raw(tmp_path_factory)
    metadata = [offset for offset in range(0, len(raw), 4096) if raw[offset : offset + 4096].strip(b"\0")]
    block = data.draw(st.sampled_from(metadata))
    damaged = _damage(raw, data.draw, (block, block + 4096))

    def read() -> None:
        fs = open_image(BytesSource(damaged, "disk").pread, len(damaged))
        image_tree(fs, contents=False)
        list(ls(fs, b"/", long=True, recursive=True))
        for entry in fs.walk():  # contents too, but only their start: a damaged size may be 16 TiB of holes
            if stat.S_ISREG(entry.inode.mode):
                for _ in zip(range(2), fs.iter_data(entry.inode, "file"), strict=False):
                    pass

    _survives(read)


def _sample_raw(factory: pytest.TempPathFactory) -> bytes:
    def make() -> bytes:
        where = factory.mktemp("fuzz-raw")
        blob = where / "layer.blob"
        with blob.open("w+b") as sink:
            build_layer(
                sink, io.BytesIO(_sample_tar()), vsize=8 << 20, options=BlobOptions(compression=None, tar=False)
            )
        raw = where / "disk.raw"
        with ExitStack() as stack, raw.open("w+b") as out:
            write_raw(open_layers([StackLayer(blob)], stack), out)
        return raw.read_bytes()

    return memo("fuzz-raw", make)


# -- the EROFS reader, and the EROFS writer on a damaged lower image ------------------------------------------


def _sample_erofs(factory: pytest.TempPathFactory) -> bytes:
    """The sample tar as a TurboOCI EROFS layer, then a second layer changing it: the merged raw disk."""

    def make() -> bytes:
        where = factory.mktemp("fuzz-erofs")
        tar = where / "layer.tar"
        tar.write_bytes(_sample_tar())
        layers: list[StackLayer] = []
        for number in range(2):
            blob = where / f"layer{number}.blob"
            with blob.open("w+b") as sink, tar.open("rb") as stream:
                build_erofs_layer(sink, stream, lowers=layers, vsize=8 << 20, options=PLAIN_BLOB)
            layers.append(StackLayer(blob, tar))
        raw = where / "disk.raw"
        with ExitStack() as stack, raw.open("w+b") as out:
            write_raw(open_layers(layers, stack), out)
        return raw.read_bytes()

    return memo("fuzz-erofs", make)


def _damaged_erofs(data: st.DataObject, factory: pytest.TempPathFactory) -> bytes:
    raw = _sample_erofs(factory)
    metadata = [offset for offset in range(0, len(raw), 4096) if raw[offset : offset + 4096].strip(b"\0")]
    block = data.draw(st.sampled_from(metadata))
    return _damage(raw, data.draw, (block, block + 4096))


@settings(max_examples=FUZZ_EXAMPLES)
@given(data=st.data())
def test_the_erofs_reader_behind_inspect(data: st.DataObject, tmp_path_factory: pytest.TempPathFactory) -> None:
    """Superblock, inodes, xattr areas, directory blocks and inline tails damaged."""
    damaged = _damaged_erofs(data, tmp_path_factory)

    def read() -> None:
        fs = ErofsImage(BytesSource(damaged, "disk").pread, len(damaged))
        image_tree(fs, contents=False)
        list(ls(fs, b"/", long=True, recursive=True))
        for entry in fs.walk(fs.root):
            if stat.S_ISREG(entry.inode.mode):
                for _ in zip(range(2), fs.iter_data(entry.inode, "file"), strict=False):
                    pass

    _survives(read)


@settings(max_examples=FUZZ_EXAMPLES // 2)
@given(data=st.data())
def test_the_erofs_writer_on_a_damaged_lower_image(
    data: st.DataObject, tmp_path_factory: pytest.TempPathFactory
) -> None:
    """A layer applied on a damaged EROFS image: it reads the lower directories, inodes and xattrs it touches."""
    damaged = _damaged_erofs(data, tmp_path_factory)[: 8 << 20]
    damaged += bytes(-len(damaged) % 4096)  # a disk is whole blocks
    where = tmp_path_factory.mktemp("fuzz-erofs-layer")
    lower = pack_raw_image_file(_write(where / "lower.raw", damaged), where / "lower.blob", 8 << 20)

    def write() -> None:
        with (where / "upper.blob").open("w+b") as sink:
            build_erofs_layer(
                sink, io.BytesIO(_sample_tar()), lowers=[StackLayer(lower)], vsize=8 << 20, options=PLAIN_BLOB
            )

    _survives(write)


def _write(path: Path, data: bytes) -> Path:
    path.write_bytes(data)
    return path


# -- the gzip index and the TurboOCI archive ---------------------------------------------------------------


def _sample_gzip() -> tuple[bytes, bytes]:
    def make() -> tuple[bytes, bytes]:
        import zlib

        data = b"".join(bytes([i % 251]) * 3000 + os.urandom(200) for i in range(900))
        gz = zlib.compress(data, 6, wbits=31)
        builder = GzipIndexBuilder(span=65536)
        inflater = BlockInflater("sample")
        for event in inflater.feed(gz):
            if isinstance(event, Boundary):
                builder.boundary(event)
            else:
                builder.observe_output(event)
        out = io.BytesIO()
        builder.write(out, len(gz))
        return gz, out.getvalue()

    return memo("fuzz-gzip", make)


@settings(max_examples=FUZZ_EXAMPLES)
@given(data=st.data())
def test_the_gzip_index_reader(data: st.DataObject) -> None:
    gz, index = _sample_gzip()
    damaged_index = _damage(index, data.draw)
    damaged_gz = _damage(gz, data.draw) if data.draw(st.booleans()) else gz
    offset = data.draw(st.integers(0, 4 << 20))

    def read() -> None:
        opened = GzipIndex(BytesSource(damaged_index, "gzip.meta"))
        opened.verify()
        IndexedGzip(BytesSource(damaged_gz, "layer.gz"), opened).pread(offset, 100_000)

    _survives(read)


def _sample_archive(factory: pytest.TempPathFactory) -> bytes:
    def make() -> bytes:
        where = factory.mktemp("fuzz-archive")
        meta, marker, index = where / "ext4.fs.meta", where / ".turbo.ociv1", where / "gzip.meta"
        meta.write_bytes(_sample_blob()[:50_000])
        marker.touch()
        index.write_bytes(_sample_gzip()[1])
        archive = where / "turboOCIv1.tar.gz"
        write_archive(archive, [("ext4.fs.meta", meta), (".turbo.ociv1", marker), ("gzip.meta", index)])
        return archive.read_bytes()

    return memo("fuzz-archive", make)


@settings(max_examples=FUZZ_EXAMPLES)
@given(data=st.data())
def test_the_turbo_archive_reader(data: st.DataObject, tmp_path_factory: pytest.TempPathFactory) -> None:
    damaged = _damage(_sample_archive(tmp_path_factory), data.draw)
    _survives(lambda: TurboArchive("archive", damaged))


# -- JSON documents and layouts ----------------------------------------------------------------------------


_MANIFEST = json.dumps(
    {
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": "sha256:" + "a" * 64, "size": 7},
        "layers": [
            {
                "mediaType": "application/vnd.oci.image.layer.v1.tar+gzip",
                "digest": "sha256:" + "b" * 64,
                "size": 32,
                "annotations": {"k": "v"},
                "platform": {"architecture": "amd64", "os": "linux"},
            }
        ],
    }
).encode()


@settings(max_examples=FUZZ_EXAMPLES)
@given(data=st.data())
def test_json_documents(data: st.DataObject) -> None:
    damaged = _damage(_MANIFEST, data.draw)

    def parse() -> None:
        value = gojson.parse(damaged)
        Manifest.parse(value, "application/vnd.oci.image.manifest.v1+json")
        Index.parse(value, "application/vnd.oci.image.index.v1+json")

    _survives(parse, (ValueError, ObdlayoutError))


@settings(max_examples=FUZZ_EXAMPLES)
@given(data=st.data())
def test_layouts(data: st.DataObject, tmp_path_factory: pytest.TempPathFactory) -> None:
    """A real layout with its index.json or one of its JSON blobs damaged, read as every command reads it."""
    from .test_inspect_support import hello_world

    source = hello_world()
    root = tmp_path_factory.mktemp("fuzz-layout")
    for path in source.rglob("*"):
        target = root / path.relative_to(source)
        if path.is_dir():
            target.mkdir(exist_ok=True)
        elif path.stat().st_size < 100_000:
            target.write_bytes(path.read_bytes())
    names = ["index.json", *(p.name for p in (root / "blobs" / "sha256").iterdir())]
    name = data.draw(st.sampled_from(names))
    victim = root / "index.json" if name == "index.json" else root / "blobs" / "sha256" / name
    victim.write_bytes(_damage(victim.read_bytes(), data.draw))

    def read() -> None:
        from obdlayout.oci.plan import Selection, plan

        layout = Layout(root)
        for descriptor in layout.walk():
            layout.read_json(descriptor)
        for tag in layout.tags():
            plan(layout, Selection(tags=(tag,)))

    _survives(read)
