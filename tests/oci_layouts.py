"""Helpers shared by the test_oci_* modules: small OCI layouts built with the stdlib in a tmp_path.

Fixtures are written with
the stdlib's json, not with obdlayout's serializer, so that the reader is tested against independent bytes.
"""

import gzip
import hashlib
import io
import json
import tarfile
from pathlib import Path
from typing import Any

import zstandard

from obdlayout.oci.mediatypes import (
    DOCKER_CONFIG,
    DOCKER_MANIFEST,
    OCI_CONFIG,
    OCI_INDEX,
    OCI_LAYER_GZIP,
    OCI_LAYER_TAR,
    OCI_LAYER_ZSTD,
    OCI_MANIFEST,
    REF_NAME,
)

Json = dict[str, Any]


def make_tar(files: dict[str, bytes]) -> bytes:
    """A small deterministic tar (fixed mtime, root owner)."""
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for name, data in files.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            info.mtime = 1700000000
            tar.addfile(info, io.BytesIO(data))
    return out.getvalue()


def sha256(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


class LayoutBuilder:
    """Writes blobs as they are added; `save()` writes index.json with the tagged and untagged entries."""

    def __init__(self, root: Path) -> None:
        self.root = root
        (root / "blobs" / "sha256").mkdir(parents=True, exist_ok=True)
        (root / "oci-layout").write_text('{"imageLayoutVersion":"1.0.0"}')
        self.entries: list[Json] = []

    def blob_path(self, digest: str) -> Path:
        return self.root / "blobs" / "sha256" / digest.removeprefix("sha256:")

    def blob(self, data: bytes, media_type: str, **extra: Any) -> Json:
        self.blob_path(sha256(data)).write_bytes(data)
        return {"mediaType": media_type, "digest": sha256(data), "size": len(data), **extra}

    def json_blob(self, obj: Any, media_type: str, **extra: Any) -> Json:
        return self.blob(json.dumps(obj, indent=1).encode(), media_type, **extra)

    def layer(self, files: dict[str, bytes], compression: str = "gzip", media_type: str | None = None) -> Json:
        """A layer descriptor; its DiffID (the plain tar's digest) is under the private key `_diff_id`."""
        return self.layer_from_tar(make_tar(files), compression, media_type)

    def layer_from_tar(self, tar: bytes, compression: str = "gzip", media_type: str | None = None) -> Json:
        if compression == "gzip":
            data, default_type = gzip.compress(tar, mtime=0), OCI_LAYER_GZIP
        elif compression == "zstd":
            data, default_type = zstandard.ZstdCompressor().compress(tar), OCI_LAYER_ZSTD
        else:
            data, default_type = tar, OCI_LAYER_TAR
        return {**self.blob(data, media_type or default_type), "_diff_id": sha256(tar)}

    def image(
        self,
        layers: list[Json],
        *,
        arch: str = "amd64",
        os: str = "linux",
        variant: str | None = None,
        docker: bool = False,
        config_extra: Json | None = None,
        config_media_type: str | None = None,
        manifest_extra: Json | None = None,
        descriptor_extra: Json | None = None,
    ) -> Json:
        """An image manifest descriptor; descriptor_extra (e.g. platform, annotations) goes on the descriptor."""
        config: Json = {
            "created": "2024-01-02T03:04:05.5+00:00",
            "architecture": arch,
            "os": os,
            **({"variant": variant} if variant else {}),
            "config": {"Cmd": ["/bin/sh"]},
            "rootfs": {"type": "layers", "diff_ids": [layer["_diff_id"] for layer in layers]},
            **(config_extra or {}),
        }
        config_type = config_media_type or (DOCKER_CONFIG if docker else OCI_CONFIG)
        manifest_type = DOCKER_MANIFEST if docker else OCI_MANIFEST
        manifest: Json = {
            "schemaVersion": 2,
            "mediaType": manifest_type,
            "config": self.json_blob(config, config_type),
            "layers": [{k: v for k, v in layer.items() if not k.startswith("_")} for layer in layers],
            **(manifest_extra or {}),
        }
        return self.json_blob(manifest, manifest_type, **(descriptor_extra or {}))

    def index(
        self, children: list[Json], media_type: str = OCI_INDEX, document_extra: Json | None = None, **extra: Any
    ) -> Json:
        """An index descriptor: document_extra goes into the index, extra on its descriptor."""
        document = {"schemaVersion": 2, "mediaType": media_type, "manifests": children, **(document_extra or {})}
        return self.json_blob(document, media_type, **extra)

    def tag(self, name: str, descriptor: Json) -> Json:
        entry = {**descriptor, "annotations": {**descriptor.get("annotations", {}), REF_NAME: name}}
        self.entries.append(entry)
        return entry

    def save(self) -> Path:
        (self.root / "index.json").write_text(json.dumps({"schemaVersion": 2, "manifests": self.entries}))
        return self.root


def platform(os: str, arch: str, variant: str | None = None) -> Json:
    return {"platform": {"architecture": arch, "os": os, **({"variant": variant} if variant else {})}}
