"""The referrers tag schema (distribution-spec v1.1 fallback, ecosystem.md §1.9): on a registry without the
referrers API, the referrers of manifest `sha256:H` are listed by an image index tagged `sha256-H`, which each
client pushing a referrer pulls, extends and pushes back.

skopeo cannot tell whether a registry has the referrers API, so the tag is kept up to date on every
registry; clients that find the API use it and never read the tag. Referrers others listed stay listed.
skopeo before 1.16 cannot push an index whose descriptors carry `artifactType` without rewriting it
(skopeo.KEEPS_ARTIFACT_TYPE); with such a skopeo the index lists its referrers without it, and a warning says
so.
"""

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

from ..oci.descriptor import Descriptor
from ..oci.digest import encoded
from ..oci.layout import Layout
from ..oci.mediatypes import OCI_INDEX
from .dirformat import TOP_MANIFEST, VERSION_FILE, VERSION_TEXT
from .refs import DirRef, RegistryRef
from .skopeo import Skopeo


def fallback_tag(subject: str) -> str:
    """`<alg>-<ref>` (the digest's encoded part is at most 64 characters for sha256)."""
    algorithm, _, hex_digest = subject.partition(":")
    return f"{algorithm}-{hex_digest[:64]}"


def referrer_descriptor(layout: Layout, top: Descriptor) -> dict[str, Any]:
    """How the referrers index lists the image `top`: its descriptor with its artifactType and annotations."""
    document = layout.read_json(top)
    described: dict[str, Any] = {"mediaType": top.media_type, "digest": top.digest, "size": top.size}
    artifact_type = document.get("artifactType") or document.get("config", {}).get("mediaType")
    if artifact_type:
        described["artifactType"] = artifact_type
    if document.get("annotations"):
        described["annotations"] = document["annotations"]
    return described


def add_referrer(
    skopeo: Skopeo, repository: RegistryRef, subject: str, referrer: dict[str, Any], scratch: Path,
    warn: Callable[[str], None],
) -> None:  # fmt: skip
    """List `referrer` in `repository`'s fallback index for `subject`, keeping the referrers already listed."""
    tag = repository.with_tag(fallback_tag(subject))
    listed: list[dict[str, Any]] = []
    held = skopeo.inspect_raw(tag)
    if held is not None:
        try:
            index = json.loads(held)
            listed = [d for d in index["manifests"] if isinstance(d, dict) and d.get("digest") != referrer["digest"]]
        except (ValueError, KeyError, TypeError):
            warn(f"{tag}: the referrers index there is not an image index; it is replaced")
    listed.append(referrer)
    if not skopeo.keeps_artifact_type and any("artifactType" in d for d in listed):
        shown = ".".join(map(str, skopeo.version))
        warn(f"{tag}: skopeo {shown} cannot push artifactType in an index; the referrers are listed without it")
        listed = [{k: v for k, v in d.items() if k != "artifactType"} for d in listed]
    document = {"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": listed}
    directory = scratch / f"referrers-{encoded(subject)[:16]}"
    directory.mkdir(parents=True)
    (directory / VERSION_FILE).write_text(VERSION_TEXT)
    (directory / TOP_MANIFEST).write_bytes(json.dumps(document, separators=(",", ":")).encode())
    skopeo.copy(DirRef(directory), tag, index_only=True)
