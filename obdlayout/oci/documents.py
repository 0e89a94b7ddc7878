"""Image indexes and manifests as read: the parsed JSON, kept whole, plus their validated descriptors.

Checks what image-spec requires of each (ecosystem.md §1.5) and what containerd checks since CVE-2021-41190:
a document's own `mediaType`, when present, must be the one its descriptor gave, and a manifest may not look
like an index or the other way round, so that one blob cannot be read as two different things.
"""

from dataclasses import dataclass
from typing import Any

from .descriptor import Descriptor

SCHEMA_VERSION = 2
# Limits on what one document may list: far above real images (a few dozen platforms, a few dozen layers;
# overlaybd stacks at most 255 layers), and bounding the work a hostile layout can ask for.
MAX_INDEX_ENTRIES = 10_000
MAX_LAYERS = 1_000


def _check_object(obj: Any, media_type: str, forbidden: tuple[str, ...]) -> dict[str, Any]:
    if not isinstance(obj, dict):
        raise ValueError("not a JSON object")
    if obj.get("schemaVersion") != SCHEMA_VERSION:
        raise ValueError(f"schemaVersion is {obj.get('schemaVersion')!r}, not {SCHEMA_VERSION}")
    own = obj.get("mediaType")
    if own is not None and own != media_type:
        raise ValueError(f"its mediaType {own!r} differs from the {media_type!r} its descriptor gives")
    for key in forbidden:
        if key in obj:
            raise ValueError(f"has a {key!r} field, so it is ambiguous between a manifest and an index")
    return obj


def _descriptors(items: Any, name: str, limit: int) -> tuple[Descriptor, ...]:
    if not isinstance(items, list):
        raise ValueError(f"{name} is not an array")
    if len(items) > limit:
        raise ValueError(f"{name} lists {len(items)} descriptors; at most {limit} are read")
    found: list[Descriptor] = []
    for i, item in enumerate(items):
        try:
            found.append(Descriptor.parse(item))
        except ValueError as exc:
            raise ValueError(f"{name}[{i}]: {exc}") from None
    return tuple(found)


@dataclass(frozen=True)
class Index:
    fields: dict[str, Any]
    manifests: tuple[Descriptor, ...]

    @classmethod
    def parse(cls, obj: Any, media_type: str) -> "Index":
        """`media_type` is the one its descriptor gave (the OCI index type for index.json); ValueError if invalid."""
        fields = _check_object(obj, media_type, ("config", "layers"))
        return cls(fields, _descriptors(fields.get("manifests"), "manifests", MAX_INDEX_ENTRIES))


@dataclass(frozen=True)
class Manifest:
    fields: dict[str, Any]
    config: Descriptor
    layers: tuple[Descriptor, ...]

    @classmethod
    def parse(cls, obj: Any, media_type: str) -> "Manifest":
        fields = _check_object(obj, media_type, ("manifests",))
        try:
            config = Descriptor.parse(fields.get("config"))
        except ValueError as exc:
            raise ValueError(f"config: {exc}") from None
        return cls(fields, config, _descriptors(fields.get("layers"), "layers", MAX_LAYERS))
