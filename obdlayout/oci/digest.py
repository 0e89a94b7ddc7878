"""Content digests, DiffIDs and ChainIDs (ecosystem.md §1.4, §1.8), and a ChainID as an LSMT uuid (§2.3).

Descriptors of any well-formed digest are accepted, but only sha256 blobs are read or written: it is the one
algorithm every OCI implementation must have, and the only one the overlaybd tools and the Go convertor use.
"""

import hashlib
import os
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import BinaryIO

from ..units import STREAM_CHUNK

ALGORITHM = "sha256"
PREFIX = ALGORITHM + ":"
# descriptor.md: encoded sha256 is exactly 64 lowercase hex digits.
_SHA256 = re.compile(r"sha256:[a-f0-9]{64}")
# descriptor.md digest grammar: algorithm ":" encoded.
_ANY_DIGEST = re.compile(r"[a-z0-9]+(?:[+._-][a-z0-9]+)*:[a-zA-Z0-9=_-]+")
# convertor-spec.md §2.3 chainIDtoUUID: the first 32 hex digits, grouped 8-4-4-4-12.
_UUID_GROUPS = (8, 4, 4, 4, 12)


@dataclass(frozen=True)
class BlobRef:
    """The identity of a blob: what a descriptor's `digest` and `size` say."""

    digest: str
    size: int


def check_digest(value: object) -> str:
    """`value` if it is a well-formed digest of any algorithm (descriptors of other algorithms SHOULD pass
    validation, descriptor.md), a sha256 one being exactly 64 lowercase hex digits; ValueError otherwise."""
    if not isinstance(value, str):
        raise ValueError(f"digest {value!r} is not a string")
    if _SHA256.fullmatch(value) or (_ANY_DIGEST.fullmatch(value) and not value.startswith(PREFIX)):
        return value
    raise ValueError(f"digest {value!r} is malformed (sha256:<64 lowercase hex digits> expected)")


def encoded(digest: str) -> str:
    """The hex part of a sha256 digest (its file name under blobs/sha256); ValueError for other algorithms."""
    if not check_digest(digest).startswith(PREFIX):
        raise ValueError(f"digest {digest!r} uses an unsupported algorithm (only sha256 is supported)")
    return digest[len(PREFIX) :]


def digest_bytes(data: bytes) -> str:
    return PREFIX + hashlib.sha256(data).hexdigest()


def ref_of(data: bytes) -> BlobRef:
    return BlobRef(digest_bytes(data), len(data))


def digest_stream(stream: BinaryIO) -> BlobRef:
    """Digest and size of everything left in `stream`."""
    hasher = hashlib.sha256()
    size = 0
    while chunk := stream.read(STREAM_CHUNK):
        hasher.update(chunk)
        size += len(chunk)
    return BlobRef(PREFIX + hasher.hexdigest(), size)


def digest_file(path: str | os.PathLike[str]) -> BlobRef:
    """Digest and size of a file."""
    with open(path, "rb") as stream:
        return digest_stream(stream)


def diff_id(uncompressed_tar: BinaryIO) -> str:
    """A layer's DiffID: the digest of its uncompressed tar (config.md; ecosystem.md §1.8)."""
    return digest_stream(uncompressed_tar).digest


def chain_ids(diff_ids: Iterable[str]) -> list[str]:
    """ChainID(L0) = DiffID(L0); ChainID(L0..Ln) = sha256(ChainID(L0..Ln-1) + " " + DiffID(Ln)) (§1.8)."""
    out: list[str] = []
    for diff in diff_ids:
        out.append(diff if not out else digest_bytes(f"{out[-1]} {diff}".encode("ascii")))
    return out


def chain_id_to_uuid(chain_id: str) -> str:
    """The uuid `overlaybd-commit --uuid` gets for a layer: hex[0:8]-hex[8:12]-hex[12:16]-hex[16:20]-hex[20:32]."""
    hex_digits = encoded(chain_id)
    groups: list[str] = []
    start = 0
    for width in _UUID_GROUPS:
        groups.append(hex_digits[start : start + width])
        start += width
    return "-".join(groups)


def layer_uuids(chains: Sequence[str]) -> list[tuple[str, str | None]]:
    """(uuid, parent uuid) for each layer of a chain, bottom first; layer 0 has no parent (§2.3)."""
    uuids = [chain_id_to_uuid(c) for c in chains]
    return [(uuid, uuids[i - 1] if i else None) for i, uuid in enumerate(uuids)]
