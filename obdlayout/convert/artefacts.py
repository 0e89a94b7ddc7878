"""What an engine is given for one layer, and what it gives back (engine.py describes the seam)."""

import os
import shutil
from collections.abc import Callable, Iterator, Mapping
from contextlib import AbstractContextManager, contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, BinaryIO

from ..formats.blob import StackLayer
from ..oci.digest import BlobRef
from ..oci.layers import (
    BlockObserver,
    EntriesAhead,
    open_entries,
    open_tar_file_entries,
    open_uncompressed,
    sniff_blob,
)
from ..oci.layout import Layout
from ..oci.mediatypes import Compression
from ..oci.output import OutputLayer
from ..oci.plan import LayerPlan
from ..tar.reader import EntryCursor
from ..units import STREAM_CHUNK


@dataclass(frozen=True)
class Spool:
    """A source layer's tar decompressed (and checked) into the work directory once, for several engines; with
    the gzip index built in that pass when the layer is gzip and an engine needs one."""

    tar: Path
    gzip_index: Path | None


@dataclass(frozen=True)
class SourceLayer:
    """One layer of a source image, as an engine sees it."""

    layout: Layout
    plan: LayerPlan  # its descriptor, DiffID, chain ID and uuids
    label: str  # names the image and layer in errors
    progress: Callable[[int], None] | None = None  # told the uncompressed bytes read so far
    spool: Spool | None = None
    ahead: EntriesAhead | None = None  # its entries, if they were started early (open_entries takes them)
    when_read: Callable[[], None] | None = None  # called when the process reading its entries is done with it

    @property
    def blob_path(self) -> Path:
        """The layer blob, as an absolute path (a TurboOCI layer's record in the work directory keeps it)."""
        return self.layout.blob_path(self.plan.descriptor.digest).absolute()

    def compression(self) -> Compression:
        """What the blob's first bytes show (containerd decompresses by them, not by the media type)."""
        return sniff_blob(self.layout, self.plan.descriptor)

    def open_tar(self) -> AbstractContextManager[BinaryIO]:
        """The layer's uncompressed tar; its blob digest and DiffID are checked by the end of the block."""
        if self.spool is not None:
            return self.spool.tar.open("rb")
        return open_uncompressed(self.layout, self.plan.descriptor, self.plan.diff_id, self.progress)

    @contextmanager
    def open_entries(self, gzip_observer: BlockObserver | None = None) -> Iterator[EntryCursor]:
        """The layer's tar entries, checked as by `open_tar`, parsed in the process that decompresses the layer
        (a gzip layer's blocks are told to `gzip_observer` in a process of their own: `open_entries`); a
        spooled tar is parsed in a process of its own."""
        if self.spool is not None:
            with open_tar_file_entries(self.spool.tar) as entries:
                yield entries
            return
        with open_entries(
            self.layout, self.plan.descriptor, self.plan.diff_id, self.progress,
            ahead=self.ahead, when_read=self.when_read, gzip_observer=gzip_observer,
        ) as entries:  # fmt: skip
            yield entries

    def save_tar(self, path: Path) -> None:
        """The uncompressed tar (checked as by `open_tar`) written to the new file `path`."""
        if self.spool is not None:
            os.link(self.spool.tar, path)  # the work directory holds both
            return
        with self.open_tar() as tar, path.open("xb") as out:
            shutil.copyfileobj(tar, out, STREAM_CHUNK)

    def check(self) -> None:
        """Read the layer through: LayoutError unless its blob digest and DiffID are right."""
        if self.spool is None:
            with self.open_tar():
                pass  # open_tar reads the rest of the stream when its block ends


@dataclass(frozen=True)
class ConvertedLayer:
    """An engine's result for one layer."""

    output: OutputLayer  # how the output image names it: blob, media type, annotations, DiffID
    blobs: tuple[tuple[Path, BlobRef], ...]  # the files DST must hold for it, with their digests
    lower: tuple[StackLayer, ...]  # what it adds to the stack the next layer is converted on
    warnings: tuple[str, ...] = ()

    def record(self, home: Path) -> dict[str, Any]:
        """As JSON for the work directory: paths inside `home` relative to it, so the directory can move."""
        return {
            "output": asdict(self.output),
            "blobs": [[_relative(path, home), ref.digest, ref.size] for path, ref in self.blobs],
            "lower": [
                {name: None if value is None else _relative(Path(value), home) for name, value in asdict(layer).items()}
                for layer in self.lower
            ],
            "warnings": list(self.warnings),
        }

    @classmethod
    def from_record(cls, record: Mapping[str, Any], home: Path) -> "ConvertedLayer":
        """The inverse of `record`; KeyError, TypeError or ValueError if it is not one."""
        output = output_from_record(record["output"])
        blobs = tuple((home / str(path), BlobRef(str(digest), int(size))) for path, digest, size in record["blobs"])
        lower = tuple(
            StackLayer(
                home / str(layer["blob"]), _optional(home, layer["target"]), _optional(home, layer["gzip_index"])
            )
            for layer in record["lower"]
        )
        return cls(output, blobs, lower, tuple(str(w) for w in record["warnings"]))


def output_from_record(out: Mapping[str, Any]) -> OutputLayer:
    """The inverse of `asdict` on an OutputLayer; KeyError, TypeError or ValueError if it is not one."""
    ref = out["ref"]
    return OutputLayer(
        BlobRef(str(ref["digest"]), int(ref["size"])),
        bool(out["gzip"]),
        {str(k): str(v) for k, v in dict(out["annotations"]).items()},
        str(out["diff_id"]),
    )


def _optional(home: Path, value: object) -> Path | None:
    return None if value is None else home / str(value)


def _relative(path: Path, home: Path) -> str:
    return str(path.relative_to(home)) if path.is_relative_to(home) else str(path)
