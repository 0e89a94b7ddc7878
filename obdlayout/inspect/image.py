"""Which images a layout's tags name, and the merged file system of one of them, opened for reading.

A tag names a manifest or an index; indexes are walked down to their manifests (nested ones too), BuildKit
attestation manifests left out as the convertor leaves them out (oci/walk.py). Layer blobs are read in place
from blobs/sha256; their digests are not checked here (that takes reading each blob whole: `verify` does it),
but every ZFile block read is checked against its CRC.
"""

import os
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from pathlib import Path

from ..formats.stack import LsmtStack
from ..layers.errors import TreeError
from ..oci.descriptor import Descriptor, Platform
from ..oci.documents import Manifest
from ..oci.errors import LayoutError
from ..oci.layout import LAYOUT_FILE, Layout
from ..oci.mediatypes import INDEX_TYPES, MANIFEST_TYPES, OVERLAYBD_ANNOTATION_PREFIX
from ..oci.walk import IndexWalker
from .errors import InspectError
from .layers import open_stack_of
from .readfs import ImageFs, open_image_fs


@dataclass(frozen=True)
class Target:
    """`LAYOUT[:TAG]` as given on the command line."""

    layout: Path
    tag: str | None

    def __str__(self) -> str:
        return f"{self.layout}:{self.tag}" if self.tag else str(self.layout)


@dataclass(frozen=True)
class FoundImage:
    tag: str
    descriptor: Descriptor  # the manifest's, as the index (or index.json) names it
    manifest: Manifest
    platform: Platform | None  # the descriptor's, else the config's; None if neither says
    parents: tuple[str, ...]  # digests of the indexes above it, top first

    @property
    def label(self) -> str:
        platform = f" ({self.platform})" if self.platform else ""
        return f"tag {self.tag!r}{platform}"


def parse_target(text: str) -> Target:
    """LAYOUT or LAYOUT:TAG. A layout path may hold ':' and a tag may too, so the split is at the
    right-most ':' whose left side is a layout directory."""
    if (Path(text) / LAYOUT_FILE).exists() or ":" not in text:
        return Target(Path(text), None)
    at = len(text)
    while (at := text.rfind(":", 0, at)) > 0:
        if (Path(text[:at]) / LAYOUT_FILE).exists():
            return Target(Path(text[:at]), text[at + 1 :] or None)
    return Target(Path(text), None)


def find_images(layout: Layout, tag: str, on_error: Callable[[LayoutError], None] | None = None) -> list[FoundImage]:
    """Every image the tag names, in index order. A bad index or manifest is raised, or, given `on_error`,
    handed to it and skipped (so that `verify` can go on to report every fault)."""
    found: list[FoundImage] = []
    try:
        root = layout.resolve_tag(tag)
    except LayoutError as exc:
        if on_error is None:
            raise
        on_error(exc)
        return found
    for visit in IndexWalker(layout.read_index).walk([root], on_error=on_error):
        descriptor = visit.descriptor
        try:
            if descriptor.media_type in MANIFEST_TYPES:
                manifest = layout.read_manifest(descriptor)
                platform = image_platform(layout, descriptor, manifest, strict=on_error is None)
                parents = tuple(parent.digest for parent in visit.parents)
                found.append(FoundImage(tag, descriptor, manifest, platform, parents))
            elif not visit.parents and descriptor.media_type not in INDEX_TYPES:
                # An index may hold other artifacts (they are no images); a tag must name an image.
                raise LayoutError(layout.index_path, f"tag {tag!r} names a {descriptor.media_type!r}, not an image")
        except LayoutError as exc:
            if on_error is None:
                raise
            on_error(exc)
    return found


def image_platform(layout: Layout, descriptor: Descriptor, manifest: Manifest, strict: bool = True) -> Platform | None:
    """The descriptor's platform, else the config's; None if neither says (or, not `strict`, if the
    config cannot be read: whoever checks the image reports that)."""
    if descriptor.platform is not None:
        return descriptor.platform
    try:
        config = layout.read_json(manifest.config)
    except LayoutError:
        if strict:
            raise
        return None
    platform = Platform.from_json(config) if isinstance(config, dict) else None
    return platform if platform and platform.os and platform.architecture else None


def select_image(layout: Layout, tag: str, platform: Platform | None) -> FoundImage:
    """The one image the tag names, narrowed by `platform`; a clear error when none or several remain."""
    images = find_images(layout, tag)
    if platform is not None:
        images = [i for i in images if i.platform is not None and platform.matches(i.platform)]
    if len(images) == 1:
        return images[0]
    where = f"{layout.root}:{tag}"
    if not images:
        raise InspectError(where, f"no image for platform {platform}" if platform else "names no image")
    choices = ", ".join(str(i.platform) for i in images)
    raise InspectError(where, f"names {len(images)} images ({choices}); choose one with --platform")


def is_overlaybd(layer: Descriptor) -> bool:
    """Whether a layer descriptor says it is an overlaybd blob (convertor-spec.md §3.3: its annotations)."""
    return any(key.startswith(OVERLAYBD_ANNOTATION_PREFIX) for key in layer.annotations)


def checked_layers(layout: Layout, image: FoundImage) -> list[Descriptor]:
    """The layers of an image, bottom first; an error if one is not overlaybd's, absent, or of the wrong size."""
    for number, layer in enumerate(image.manifest.layers):
        path = layout.blob_path(layer.digest)
        if not is_overlaybd(layer):
            raise InspectError(
                f"{layout.root}:{image.tag}",
                f"{image.label}, layer {number} ({layer.media_type}) is not an overlaybd layer: "
                "the image is not a converted one",
            )
        if not layout.has_blob(layer):
            problem = "is missing" if not path.exists() else f"is not {layer.size} bytes as its descriptor says"
            raise LayoutError(str(path), f"{image.label}, layer {number}: blob {layer.digest} {problem}")
    if not image.manifest.layers:
        raise LayoutError(str(layout.blob_path(image.descriptor.digest)), f"{image.label}: the image has no layers")
    return list(image.manifest.layers)


@contextmanager
def open_layers(layout: Layout, layers: list[Descriptor]) -> Iterator[LsmtStack]:
    """The virtual disk of an image's layers (overlaybd blobs, or TurboOCI layers over their targets)."""
    with ExitStack() as stack:
        yield open_stack_of(layout, layers, stack)


@contextmanager
def open_filesystem(layout: Layout, image: FoundImage) -> Iterator[ImageFs]:
    """The image's merged file system (ext4, or EROFS); the layer blobs stay open until the block ends."""
    with open_layers(layout, checked_layers(layout, image)) as disk:
        try:
            fs = open_image_fs(disk.read, disk.virtual_size)
        except TreeError as exc:
            raise InspectError(f"{layout.root}:{image.tag}", f"{image.label}: {exc}") from None
        yield fs


def open_layout(target: Target) -> Layout:
    if not os.path.isdir(target.layout):
        raise LayoutError(str(target.layout), "is not a directory (an OCI image layout was expected)")
    return Layout(target.layout)
