"""Property tests: random layers round-trip through writers and readers; stacks read as a model says."""

from contextlib import ExitStack
from pathlib import Path
from tempfile import TemporaryDirectory

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from obdlayout.formats.blob import Blob, open_stack
from obdlayout.formats.commit import BlobOptions
from obdlayout.formats.lsmt_layout import MAX_RECORD_SECTORS
from obdlayout.formats.zfile_layout import BLOCK_SIZES, Algorithm

from .blobs import SECTOR, Extent, apply_to_model, write_blob

VSIZE_SECTORS = 2048  # a 1 MiB virtual disk keeps each example fast


@st.composite
def extents(draw: st.DrawFn, max_count: int = 12) -> list[Extent]:
    """Sorted, disjoint extents; data or zeroed; touching neighbours allowed (they exercise merging)."""
    out: list[Extent] = []
    sector = draw(st.integers(0, 64))
    for _ in range(draw(st.integers(0, max_count))):
        sectors = draw(st.integers(1, 300))
        if sector + sectors > VSIZE_SECTORS:
            break
        out.append(Extent(sector, sectors, draw(st.booleans()), draw(st.integers(0, 2**32))))
        sector += sectors + draw(st.sampled_from([0, 0, 1, 7, 64]))
    return out


options = st.builds(
    BlobOptions,
    compression=st.sampled_from([None, Algorithm.LZ4, Algorithm.ZSTD]),
    block_size=st.sampled_from(BLOCK_SIZES),
    tar=st.booleans(),
)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(layer=extents(), opts=options)
def test_single_layer_round_trip(layer: list[Extent], opts: BlobOptions) -> None:
    with TemporaryDirectory() as tmp:
        path = write_blob(Path(tmp) / "blob", layer, VSIZE_SECTORS * SECTOR, opts)
        model = bytearray(VSIZE_SECTORS * SECTOR)
        apply_to_model(model, layer)
        with Blob(path) as blob, ExitStack() as stack:
            blob.verify()
            info = blob.info()
            assert info.compression == (opts.compression.name.lower() if opts.compression else "none")
            assert info.block_size == (opts.block_size if opts.compression else None)
            assert info.wrapping == ("tar+pax" if opts.tar else "none")
            assert all(0 < r.length <= MAX_RECORD_SECTORS for r in blob.layer.records)
            assert info.data_bytes == sum(e.sectors for e in layer if not e.zeroed) * SECTOR
            disk = open_stack([path], stack)
            assert disk.read(0, len(model)) == bytes(model)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    layers=st.lists(extents(), min_size=1, max_size=4),
    reads=st.lists(st.tuples(st.integers(0, VSIZE_SECTORS * SECTOR - 1), st.integers(0, 70000)), max_size=10),
    compression=st.sampled_from([None, Algorithm.LZ4]),
)
def test_stack_reads_as_the_model(
    layers: list[list[Extent]], reads: list[tuple[int, int]], compression: Algorithm | None
) -> None:
    model = bytearray(VSIZE_SECTORS * SECTOR)
    with TemporaryDirectory() as tmp, ExitStack() as stack:
        paths = []
        for number, layer in enumerate(layers):
            paths.append(
                write_blob(Path(tmp) / f"layer{number}", layer, VSIZE_SECTORS * SECTOR, BlobOptions(compression))
            )
            apply_to_model(model, layer)
        disk = open_stack(paths, stack)
        assert disk.virtual_size == len(model)
        assert disk.read(0, len(model)) == bytes(model)
        for offset, length in reads:
            assert disk.read(offset, length) == bytes(model[offset : offset + length]).ljust(length, b"\0")
