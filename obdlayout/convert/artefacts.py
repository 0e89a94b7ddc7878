"""What an engine is given for one layer, and what it gives back (engine.py describes the seam)."""

from collections.abc import Callable, Mapping
from contextlib import AbstractContextManager
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, BinaryIO

from ..oci.digest import BlobRef
from ..oci.layers import open_uncompressed
from ..oci.layout import Layout
from ..oci.output import OutputLayer
from ..oci.plan import LayerPlan


@dataclass(frozen=True)
class SourceLayer:
    """One layer of a source image, as an engine sees it."""

    layout: Layout
    plan: LayerPlan  # its descriptor, DiffID, chain ID and uuids
    label: str  # names the image and layer in errors
    progress: Callable[[int], None] | None = None  # told the uncompressed bytes read so far

    def open_tar(self) -> AbstractContextManager[BinaryIO]:
        """The layer's uncompressed tar; its blob digest and DiffID are checked by the end of the block."""
        return open_uncompressed(self.layout, self.plan.descriptor, self.plan.diff_id, self.progress)


@dataclass(frozen=True)
class ConvertedLayer:
    """An engine's result for one layer."""

    output: OutputLayer  # how the output image names it: blob, media type, annotations, DiffID
    blobs: tuple[tuple[Path, BlobRef], ...]  # the files DST must hold for it, with their digests
    lower: tuple[Path, ...]  # what the next layer is converted on; its meaning is the engine's own
    warnings: tuple[str, ...] = ()

    def record(self, home: Path) -> dict[str, Any]:
        """As JSON for the work directory: paths inside `home` relative to it, so the directory can move."""
        return {
            "output": asdict(self.output),
            "blobs": [[_relative(path, home), ref.digest, ref.size] for path, ref in self.blobs],
            "lower": [_relative(path, home) for path in self.lower],
            "warnings": list(self.warnings),
        }

    @classmethod
    def from_record(cls, record: Mapping[str, Any], home: Path) -> "ConvertedLayer":
        """The inverse of `record`; KeyError, TypeError or ValueError if it is not one."""
        out = record["output"]
        ref = out["ref"]
        output = OutputLayer(
            BlobRef(str(ref["digest"]), int(ref["size"])),
            bool(out["gzip"]),
            {str(k): str(v) for k, v in dict(out["annotations"]).items()},
            str(out["diff_id"]),
        )
        blobs = tuple((home / str(path), BlobRef(str(digest), int(size))) for path, digest, size in record["blobs"])
        lower = tuple(home / str(path) for path in record["lower"])
        return cls(output, blobs, lower, tuple(str(w) for w in record["warnings"]))


def _relative(path: Path, home: Path) -> str:
    return str(path.relative_to(home)) if path.is_relative_to(home) else str(path)
