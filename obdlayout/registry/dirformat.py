"""skopeo's `dir:` format as an OCI layout, and back, every digest kept (ecosystem.md §2.7a).

`skopeo copy --all --preserve-digests docker://… dir:D` keeps every byte of what the registry holds, where a
copy into an OCI layout would rewrite Docker manifests as OCI ones (new digests). `D` holds one image:
`manifest.json` (the top manifest or list, as stored), `<hex>.manifest.json` for each instance of a list,
every other blob as a file named by its hex digest, and `version`. The converter reads OCI layouts, so a
pulled image is seen through one whose blobs are links to D's files; and a converted image is pushed from a
`dir:` made the same way, which, unlike an OCI layout, skopeo 1.9 reads with Docker media types too (§1.2).
"""

import hashlib
import json
import os
import re
import shutil
from pathlib import Path

from ..oci.descriptor import Descriptor
from ..oci.digest import PREFIX, encoded
from ..oci.errors import LayoutError
from ..oci.layout import BLOBS_DIR, INDEX_FILE, JSON_BLOB_LIMIT, LAYOUT_FILE, Layout
from ..oci.mediatypes import INDEX_TYPES, LAYOUT_VERSION, OCI_INDEX, OCI_MANIFEST, REF_NAME
from ..units import STREAM_CHUNK

VERSION_FILE = "version"
VERSION_TEXT = "Directory Transport Version: 1.1\n"
TOP_MANIFEST = "manifest.json"
_INSTANCE = re.compile(r"([0-9a-f]{64})\.manifest\.json")
_BLOB = re.compile(r"[0-9a-f]{64}")


def layout_from_dir(directory: Path, out: Path, tag: str) -> Descriptor:
    """An OCI layout at `out` (new) holding `directory`'s image tagged `tag`; its blobs are links to the
    files there. LayoutError naming the file if `directory` is no skopeo `dir:` image."""
    version = directory / VERSION_FILE
    try:
        if not version.read_text().startswith("Directory Transport Version:"):
            raise LayoutError(str(version), "is not a skopeo dir: version file")
        top = (directory / TOP_MANIFEST).read_bytes()[: JSON_BLOB_LIMIT + 1]
    except OSError as exc:
        raise LayoutError(str(exc.filename), f"not a skopeo dir: image ({exc.strerror})") from None
    if len(top) > JSON_BLOB_LIMIT:
        raise LayoutError(str(directory / TOP_MANIFEST), "is too large for a manifest")
    blobs = out / BLOBS_DIR / "sha256"
    blobs.mkdir(parents=True)
    (out / LAYOUT_FILE).write_text(json.dumps({"imageLayoutVersion": LAYOUT_VERSION}))
    digest = PREFIX + hashlib.sha256(top).hexdigest()
    _link(directory / TOP_MANIFEST, blobs / encoded(digest))
    for entry in os.scandir(directory):
        instance = _INSTANCE.fullmatch(entry.name)
        if instance:
            _check_digest(Path(entry.path), instance.group(1))
            _link(Path(entry.path), blobs / instance.group(1))
        elif _BLOB.fullmatch(entry.name) and not (blobs / entry.name).exists():
            _link(Path(entry.path), blobs / entry.name)  # checked as the converter reads it
    descriptor = {"mediaType": _media_type(top, directory), "digest": digest, "size": len(top)}
    entry_json = {**descriptor, "annotations": {REF_NAME: tag}}
    (out / INDEX_FILE).write_text(json.dumps({"schemaVersion": 2, "manifests": [entry_json]}))
    return Descriptor.parse(descriptor)


def dir_from_layout(layout: Layout, top: Descriptor, out: Path, *, copy: bool = False) -> None:
    """The image `top` of `layout` as a skopeo `dir:` at `out` (new), its files hard links to the layout's
    blobs, or where they cannot be, symbolic links (copies with `copy`: `out` outlives the layout). A dir:
    holds one level of index: LayoutError for an image whose index nests another."""
    out.mkdir(parents=True)
    (out / VERSION_FILE).write_text(VERSION_TEXT)
    files = {TOP_MANIFEST: top.digest}
    manifests = [top]
    if top.media_type in INDEX_TYPES:
        manifests = list(layout.read_index(top).manifests)
        for child in manifests:
            if child.media_type in INDEX_TYPES:
                raise LayoutError(top.digest, "nests an index, which skopeo's dir: format cannot hold")
            files[f"{encoded(child.digest)}.manifest.json"] = child.digest
    for manifest in manifests:
        document = layout.read_manifest(manifest)
        files.update((encoded(blob.digest), blob.digest) for blob in (document.config, *document.layers))
    for name, digest in files.items():
        _link(layout.blob_path(digest), out / name, copy)


def _media_type(top: bytes, directory: Path) -> str:
    """What a manifest says it is; an OCI one need not say, and then its fields tell."""
    try:
        document = json.loads(top)
    except ValueError:
        raise LayoutError(str(directory / TOP_MANIFEST), "is not JSON") from None
    if not isinstance(document, dict):
        raise LayoutError(str(directory / TOP_MANIFEST), "is not a JSON object")
    stated = document.get("mediaType")
    if isinstance(stated, str) and stated:
        return stated
    return OCI_INDEX if "manifests" in document else OCI_MANIFEST


def _check_digest(path: Path, hex_digest: str) -> None:
    sha = hashlib.sha256()
    with path.open("rb") as data:
        while chunk := data.read(STREAM_CHUNK):
            sha.update(chunk)
    if sha.hexdigest() != hex_digest:
        raise LayoutError(str(path), f"has digest sha256:{sha.hexdigest()}, not the sha256:{hex_digest} its name says")


def _link(source: Path, target: Path, copy: bool = False) -> None:
    """A hard link where the file system allows, else a symbolic one (or with `copy`, a copy)."""
    try:
        os.link(source, target)
    except FileNotFoundError:
        raise LayoutError(str(source), "is missing") from None
    except OSError:
        if copy:
            shutil.copyfile(source, target)
        else:
            target.symlink_to(source.absolute())
