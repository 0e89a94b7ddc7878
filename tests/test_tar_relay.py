"""Layer entries parsed in the decompressing child process and relayed (tar/relay.py, oci.layers.open_entries):
the same entries and bytes as a reader in this process, across frames, with every check of the layer kept."""

import ctypes
import gzip
import hashlib
import io
import os
import resource
import tarfile
import threading
from pathlib import Path

import pytest

from fixtures.make_layers import LayerWriter
from obdlayout.oci.descriptor import Descriptor
from obdlayout.oci.errors import LayoutError
from obdlayout.oci.layers import EntriesAhead, open_entries, open_tar_file_entries
from obdlayout.oci.layout import Layout
from obdlayout.oci.mediatypes import OCI_LAYER_GZIP
from obdlayout.tar.reader import EntryCursor, TarReader
from obdlayout.tar.relay import FRAME_DATA, FRAME_ENTRIES
from obdlayout.tar.ring import RING_BYTES, Ring
from obdlayout.tar.ustar import TarFormatError

from .oci_layouts import LayoutBuilder, sha256
from .shared import child_processes


def _layer(tmp_path: Path, tar: bytes) -> tuple[Layout, Descriptor]:
    builder = LayoutBuilder(tmp_path / "src")
    layer = builder.blob(gzip.compress(tar, mtime=0), OCI_LAYER_GZIP)
    builder.tag("v1", layer)
    builder.save()
    return Layout(builder.root), Descriptor.parse(layer)


def _tar(files: list[tuple[str, bytes]]) -> bytes:
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for name, data in files:
            info = tarfile.TarInfo(name)
            info.size = len(data)
            info.mode = 0o640
            tar.addfile(info, io.BytesIO(data))
    return out.getvalue()


def _read(entries: EntryCursor, piece: int, views: bool = False) -> list[tuple[bytes, int, str]]:
    """Each entry's name, data offset and content digest, its bytes read `piece` at a time (as views, each
    taken in before the next read, with `views`)."""
    out = []
    read = entries.read_view if views else entries.read_at
    for entry in entries:
        digest = hashlib.sha256()
        for offset in range(0, entry.size, piece):
            digest.update(read(offset, min(piece, entry.size - offset)))
        out.append((entry.name, entry.data_offset, digest.hexdigest()))
    return out


# Many small files (several frames of entries), then files larger than a frame's data, read unevenly.
FILES = [(f"small/{i}", bytes([i % 251]) * (i % 700)) for i in range(FRAME_ENTRIES * 2 + 5)] + [
    ("big", bytes(range(256)) * (FRAME_DATA // 256 * 3 + 7)),
    ("after-big", b"tail\n"),
]


@pytest.mark.parametrize("views", [False, True], ids=["copies", "views"])
@pytest.mark.parametrize(
    ("piece", "ring"), [(1 << 20, RING_BYTES), (4096 + 7, RING_BYTES), (1 << 20, 5000), (4096 + 7, 65536 + 3)]
)
def test_relayed_entries_equal_the_readers(tmp_path: Path, piece: int, ring: int, views: bool) -> None:
    """Read in even and uneven pieces, as copies or as views of the ring; through the full ring, and through
    rings far smaller than the data, which the writer fills and waits on, and whose data wraps around inside
    pieces."""
    tar = _tar(FILES)
    layout, layer = _layer(tmp_path, tar)
    progress: list[int] = []
    with open_entries(layout, layer, sha256(tar), progress.append, ring) as entries:
        relayed = _read(entries, piece, views)
    assert relayed == _read(TarReader(io.BytesIO(tar)), piece)
    assert len(relayed) == len(FILES)
    assert progress == sorted(progress) and len(tar) - 10240 <= progress[-1] <= len(tar)


def test_entries_skipped_unread_do_not_shift_the_next(tmp_path: Path) -> None:
    tar = _tar(FILES)
    layout, layer = _layer(tmp_path, tar)
    with open_entries(layout, layer, sha256(tar)) as entries:
        names = []
        for entry in entries:
            names.append(entry.name)
            if entry.name == b"after-big":
                assert entries.read_at(0, 5) == b"tail\n"
    assert names == [name.encode() for name, _ in FILES]


def test_a_wrong_diff_id_fails_at_the_end_of_the_block(tmp_path: Path) -> None:
    tar = _tar(FILES[:3])
    layout, layer = _layer(tmp_path, tar)
    wrong = sha256(b"other")
    with pytest.raises(LayoutError, match="uncompressed layer has DiffID"), open_entries(layout, layer, wrong) as e:
        assert next(iter(e)).name == b"small/0"  # stops after one entry: the rest is still checked


def test_a_truncated_tar_fails_after_the_entries_before_the_damage(tmp_path: Path) -> None:
    tar = _tar(FILES[:10])
    cut = tar[: tar.index(b"small/8") + 600]  # small/8's 8 bytes are whole; the padding after them is cut
    layout, layer = _layer(tmp_path, cut)
    seen: list[bytes] = []
    with pytest.raises(TarFormatError, match="ends inside"), open_entries(layout, layer, sha256(cut)) as entries:
        for entry in entries:
            seen.append(entry.name)
            entries.read_at(0, entry.size)
    assert seen == [f"small/{i}".encode() for i in range(9)]


def test_a_spooled_tar_file_is_relayed_as_its_reader_reads_it(tmp_path: Path) -> None:
    tar = _tar(FILES)
    spooled = tmp_path / "layer.tar"
    spooled.write_bytes(tar)
    with open_tar_file_entries(spooled, ring_bytes=65536 + 3) as entries:
        relayed = _read(entries, 4096 + 7)
    assert relayed == _read(TarReader(io.BytesIO(tar)), 4096 + 7)
    assert len(relayed) == len(FILES)


def test_a_writer_waiting_on_a_full_ring_is_woken_once_a_quarter_is_free() -> None:
    ring = Ring(1000)
    try:
        ring.write(bytes(1000))
        woken = threading.Event()

        def wait() -> None:
            ring.wait_for_room(10)
            woken.set()

        writer = threading.Thread(target=wait)
        writer.start()
        ring.release(200)  # room for the 10 bytes, but not yet the quarter a full ring waits for
        assert not woken.wait(0.2)
        ring.release(250)
        assert woken.wait(10)
        writer.join()
        assert ring.room(250) and not ring.room(251)
    finally:
        ring.close()


def test_a_piece_lying_whole_in_the_ring_is_lent_not_copied(tmp_path: Path) -> None:
    tar = _tar([("data", bytes(range(256)) * 64)])
    layout, layer = _layer(tmp_path, tar)
    with open_entries(layout, layer, sha256(tar)) as entries:
        for _ in entries:
            first = entries.read_view(0, 4096)
            assert isinstance(first, memoryview) and bytes(first) == bytes(range(256)) * 16
            assert isinstance(entries.read_at(4096, 4096), bytes)


def _live_children() -> set[int]:
    return set(child_processes(os.getpid()))


def test_entries_started_ahead_are_taken_over_and_tell_when_read(tmp_path: Path) -> None:
    """The child started ahead fills its ring before anyone reads; open_entries takes it over and gives the
    same entries, and says once, by the end, that the child has read the whole layer."""
    tar = _tar(FILES)
    layout, layer = _layer(tmp_path, tar)
    before = _live_children()
    ahead = EntriesAhead(layout, layer, sha256(tar), ring_bytes=65536 + 3)
    started = _live_children() - before
    assert len(started) == 1
    read: list[bool] = []
    with open_entries(layout, layer, sha256(tar), ahead=ahead, when_read=lambda: read.append(True)) as entries:
        assert _live_children() - before == started  # no second child: the one started ahead
        relayed = _read(entries, 4096 + 7)
    assert read == [True]
    assert relayed == _read(TarReader(io.BytesIO(tar)), 4096 + 7)
    assert not _live_children() - before
    ahead.close()  # taken: nothing left to close


def test_entries_started_ahead_for_another_layer_are_not_taken_and_close_ends_their_child(tmp_path: Path) -> None:
    tar = _tar(FILES[:5])
    layout, layer = _layer(tmp_path, tar)
    other = _tar(FILES)
    other_layout, other_layer = _layer(tmp_path / "other", other)
    before = _live_children()
    ahead = EntriesAhead(other_layout, other_layer, sha256(other), ring_bytes=65536 + 3)  # too small: it waits
    with open_entries(layout, layer, sha256(tar), ahead=ahead) as entries:
        assert [e.name for e in entries] == [name.encode() for name, _ in FILES[:5]]
    assert len(_live_children() - before) == 1  # not taken: still waiting for its reader
    ahead.close()
    assert not _live_children() - before


def test_a_bad_layer_started_ahead_fails_when_its_entries_are_read(tmp_path: Path) -> None:
    tar = _tar(FILES[:3])
    layout, layer = _layer(tmp_path, tar)
    wrong = sha256(b"other")
    ahead = EntriesAhead(layout, layer, wrong)
    with (
        pytest.raises(LayoutError, match="uncompressed layer has DiffID"),
        open_entries(layout, layer, wrong, ahead=ahead) as entries,
    ):
        assert [e.name for e in entries] == [name.encode() for name, _ in FILES[:3]]


def test_relaying_works_with_descriptors_numbered_past_1024(tmp_path: Path) -> None:
    """A process with many files open gets pipes numbered past select()'s limit; the ring's wait and the
    finished-child check must not use select()."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard != resource.RLIM_INFINITY and hard < 1200:
        pytest.skip(f"the hard limit of open files is {hard}: no descriptor can be numbered past 1024")
    resource.setrlimit(resource.RLIMIT_NOFILE, (max(soft, 1200) if hard == resource.RLIM_INFINITY else hard, hard))
    filler = [os.open(os.devnull, os.O_RDONLY) for _ in range(1100)]
    try:
        tar = _tar(FILES)
        layout, layer = _layer(tmp_path, tar)
        read: list[bool] = []
        ahead = EntriesAhead(layout, layer, sha256(tar), ring_bytes=65536 + 3)  # small: the child waits on it
        with open_entries(layout, layer, sha256(tar), ahead=ahead, when_read=lambda: read.append(True)) as entries:
            relayed = _read(entries, 4096 + 7, views=True)
        assert relayed == _read(TarReader(io.BytesIO(tar)), 4096 + 7)
        assert read == [True]
    finally:
        for fd in filler:
            os.close(fd)
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))


def test_a_sparse_file_read_as_a_view_in_one_piece_keeps_every_region(tmp_path: Path) -> None:
    """One read across two data regions: the first must not be freed (and overwritten by the child) while the
    second is taken. The ring is just larger than a region, so the child refills it at once."""
    path = tmp_path / "sparse.tar"
    writer = LayerWriter(path)
    writer.old_gnu_sparse(b"sparse", 131072, [(0, 40960), (65536, 40960)], seed=7)
    writer.add("after", data=b"x" * 100000)
    writer.close()
    with path.open("rb") as stream:
        reader = TarReader(stream)
        expected = {entry.name: reader.read_at(0, entry.size) for entry in reader if entry.is_regular}
    with open_tar_file_entries(path, ring_bytes=65536) as entries:
        got = {entry.name: bytes(entries.read_view(0, entry.size)) for entry in entries if entry.is_regular}
    assert got == expected


def _mapped(pid: int, address: int) -> bool:
    for line in Path(f"/proc/{pid}/maps").read_text().splitlines():
        start, end = (int(part, 16) for part in line.split()[0].split("-"))
        if start <= address < end:
            return True
    return False


def _address(ring: Ring) -> int:
    view = ctypes.c_char.from_buffer(ring._map)
    try:
        return ctypes.addressof(view)
    finally:
        del view


def test_a_reader_started_later_does_not_keep_an_earlier_ring(tmp_path: Path) -> None:
    """The next layer's reader is forked while this layer's ring is in use; it must not map that ring (it
    would keep its memory allocated after this process frees it), only its own."""
    tar = _tar(FILES)
    layout, layer = _layer(tmp_path, tar)
    first = EntriesAhead(layout, layer, sha256(tar), ring_bytes=65536 + 3)
    before = _live_children()
    second = EntriesAhead(layout, layer, sha256(tar), ring_bytes=65536 + 3)
    try:
        (child,) = _live_children() - before
        first_ring, second_ring = first._ring, second._ring
        assert _mapped(os.getpid(), _address(first_ring))
        assert _mapped(child, _address(second_ring))
        assert not _mapped(child, _address(first_ring))
    finally:
        first.close()
        second.close()
