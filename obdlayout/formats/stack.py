"""A stack of LSMT layers read as one virtual disk (overlaybd-formats.md §2.8).

Layers are given bottom first. For every sector the topmost layer with a record covering it wins,
whether the record holds data or is zeroed; holes fall through, and a hole in every layer reads
as zeros. The merged index is built once, so each read is a binary search.
A TurboOCI warp layer's tag-1 records read its target, the original layer tar (§7.2).
"""

from bisect import bisect_right
from collections.abc import Iterator, Sequence
from typing import Final, NamedTuple

from .errors import FormatError
from .lsmt_layout import MAX_STACK_LAYERS, SECTOR
from .lsmt_reader import LsmtLayer
from .source import ByteSource

ZEROED: Final = -1  # layer number of a merged segment that reads as zeros


class Segment(NamedTuple):
    """A merged run in bytes: [start, end) of the disk, read from `layer` at `moffset` (or zeros); from the
    layer's target (the original layer tar) rather than its blob when `in_target`."""

    start: int
    end: int
    moffset: int
    layer: int
    in_target: bool = False


def _trim(seg: Segment, start: int, end: int) -> Segment:
    shift = 0 if seg.layer == ZEROED else start - seg.start
    return Segment(start, end, seg.moffset + shift, seg.layer, seg.in_target)


def overlay(lower: Sequence[Segment], upper: Sequence[Segment]) -> list[Segment]:
    """The upper segments, plus the parts of the lower ones they leave uncovered; both sorted."""
    out: list[Segment] = []
    it = iter(lower)
    piece = next(it, None)
    for seg in upper:
        while piece is not None and piece.start < seg.start:
            if piece.end <= seg.start:
                out.append(piece)
                piece = next(it, None)
            else:
                out.append(_trim(piece, piece.start, seg.start))
                piece = _trim(piece, seg.start, piece.end)
        out.append(seg)
        while piece is not None and piece.start < seg.end:
            piece = _trim(piece, seg.end, piece.end) if piece.end > seg.end else next(it, None)
    if piece is not None:
        out.append(piece)
        out.extend(it)
    return out


class LsmtStack:
    """`targets[i]`: the uncompressed original layer tar of warp layer i (None for the other layers)."""

    def __init__(self, layers: Sequence[LsmtLayer], targets: Sequence[ByteSource | None] | None = None) -> None:
        if not layers:
            raise ValueError("a stack needs at least one layer")
        if len(layers) > MAX_STACK_LAYERS:
            raise FormatError(
                layers[-1].name, f"{len(layers)} layers stacked; overlaybd stacks at most {MAX_STACK_LAYERS}"
            )
        self.targets = list(targets) if targets is not None else [None] * len(layers)
        for layer, target in zip(layers, self.targets, strict=True):
            if layer.is_warp and target is None:
                raise FormatError(
                    layer.name,
                    "is a TurboOCI fs-meta (warp) layer; its file data lives in the original layer tar, "
                    "which was not given",
                )
        self.layers = list(layers)
        merged: list[Segment] = []
        for number, layer in enumerate(self.layers):
            merged = overlay(
                merged,
                [
                    Segment(
                        r.offset * SECTOR,
                        (r.offset + r.length) * SECTOR,
                        r.moffset * SECTOR,
                        ZEROED if r.zeroed else number,
                        r.in_target,
                    )
                    for r in layer.records
                ],
            )
        self._segments = merged
        self._starts = [s.start for s in merged]
        # §2.8: the image size is that of the topmost layer that states one.
        self.virtual_size = next((la.virtual_size for la in reversed(self.layers) if la.virtual_size), 0)

    def segments(self) -> Iterator[Segment]:
        return iter(self._segments)

    def read_segment(self, seg: Segment, moffset: int, length: int) -> bytes:
        """`length` bytes at `moffset` of what a (data) segment reads: its layer's blob or its target."""
        if not seg.in_target:
            return self.layers[seg.layer].read_data(moffset, length)
        target = self.targets[seg.layer]
        assert target is not None  # checked when the stack was made
        data = target.pread(moffset, length)
        return data + bytes(length - len(data))  # past the target's end reads zeros, as in the blob (§2.7)

    def read(self, offset: int, length: int) -> bytes:
        """Bytes [offset, offset+length) of the virtual disk; unmapped and zeroed ranges read as zeros."""
        if offset < 0 or length < 0:
            raise ValueError("negative offset or length")
        end = offset + length
        segments = self._segments
        i = bisect_right(self._starts, offset) - 1
        if i < 0 or segments[i].end <= offset:
            i += 1
        # Fast path: one segment serves the whole read (the common 4 KiB metadata read).
        if i < len(segments):
            seg = segments[i]
            if seg.start <= offset and end <= seg.end:
                if seg.layer == ZEROED:
                    return bytes(length)
                return self.read_segment(seg, seg.moffset + offset - seg.start, length)
        parts: list[bytes] = []
        pos = offset
        while pos < end:
            if i < len(segments) and segments[i].start <= pos:
                seg = segments[i]
                take = min(end, seg.end) - pos
                if seg.layer == ZEROED:
                    parts.append(bytes(take))
                else:
                    parts.append(self.read_segment(seg, seg.moffset + pos - seg.start, take))
                i += 1
            else:
                take = (min(end, segments[i].start) if i < len(segments) else end) - pos
                parts.append(bytes(take))
            pos += take
        return b"".join(parts)
