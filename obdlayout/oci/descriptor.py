"""Descriptors and platforms (ecosystem.md §1.4), kept as the JSON objects they were read from.

A descriptor is carried whole, unknown fields included, so that the converter can replace what it changes
(media type, digest, size) and pass everything else through (ecosystem.md §0.5, convertor-spec.md §2.1).
"""

import copy
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from .digest import BlobRef, check_digest

# containerd platforms.Normalize: the architecture spellings that mean the same thing.
_ARCH_ALIASES = {"x86_64": "amd64", "x86-64": "amd64", "aarch64": "arm64", "i386": "386"}
# containerd platforms.Normalize: amd64 v1 and arm64 v8 are the baselines, written without a variant;
# 32-bit arm without a variant means v7.
_BASELINE_VARIANTS = {("amd64", "v1"), ("arm64", "v8"), ("arm64", "v8.0")}
_DEFAULT_VARIANTS = {"arm": "v7"}


@dataclass(frozen=True)
class Platform:
    os: str
    architecture: str
    variant: str = ""

    @classmethod
    def parse(cls, text: str) -> "Platform":
        """`os/arch[/variant]`, as in `linux/arm64/v8`; ValueError otherwise."""
        parts = text.split("/")
        if len(parts) not in (2, 3) or not all(parts):
            raise ValueError(f"platform {text!r} is not of the form os/arch[/variant]")
        return cls(*parts)

    @classmethod
    def from_json(cls, obj: Mapping[str, Any]) -> "Platform":
        """From a descriptor's `platform` or an image config (both use architecture, os, variant)."""
        return cls(str(obj.get("os") or ""), str(obj.get("architecture") or ""), str(obj.get("variant") or ""))

    def normalized(self) -> "Platform":
        arch = self.architecture.lower()
        arch = _ARCH_ALIASES.get(arch, arch)
        variant = self.variant.lower()
        if variant.isdigit():
            variant = "v" + variant
        if (arch, variant) in _BASELINE_VARIANTS:
            variant = ""
        variant = variant or _DEFAULT_VARIANTS.get(arch, "")
        return Platform(self.os.lower(), arch, variant)

    def matches(self, candidate: "Platform") -> bool:
        """Whether `candidate` is selected by this filter: same os and architecture, and the same variant when
        the filter names one (`linux/arm` selects every arm variant, `linux/arm/v7` only v7)."""
        want, have = self.normalized(), candidate.normalized()
        if (want.os, want.architecture) != (have.os, have.architecture):
            return False
        return not self.variant or want.variant == have.variant

    def __str__(self) -> str:
        return "/".join(p for p in (self.os, self.architecture, self.variant) if p)


@dataclass(frozen=True)
class Descriptor:
    """A descriptor's JSON object, validated; `fields` is never mutated (the `with_*` methods copy)."""

    fields: Mapping[str, Any]

    @classmethod
    def parse(cls, obj: Any) -> "Descriptor":
        """Check the fields image-spec requires and types those it defines; ValueError naming the fault."""
        if not isinstance(obj, dict):
            raise ValueError("descriptor is not a JSON object")
        media_type = obj.get("mediaType")
        if not isinstance(media_type, str) or not media_type:
            raise ValueError("descriptor has no mediaType")
        check_digest(obj.get("digest"))
        size = obj.get("size")
        if isinstance(size, bool) or not isinstance(size, int) or size < 0:
            raise ValueError(f"descriptor of {obj['digest']} has size {size!r}, not a non-negative integer")
        annotations = obj.get("annotations")
        if annotations is not None and not (
            isinstance(annotations, dict) and all(isinstance(v, str) for v in annotations.values())
        ):
            raise ValueError(f"descriptor of {obj['digest']} has annotations that are not a string map")
        platform = obj.get("platform")
        if platform is not None and not (
            isinstance(platform, dict)
            and isinstance(platform.get("os"), str)
            and isinstance(platform.get("architecture"), str)
        ):
            raise ValueError(f"descriptor of {obj['digest']} has a platform without os and architecture strings")
        return cls(obj)

    @classmethod
    def of(cls, media_type: str, ref: BlobRef, annotations: Mapping[str, str] | None = None) -> "Descriptor":
        fields: dict[str, Any] = {"mediaType": media_type, "digest": ref.digest, "size": ref.size}
        if annotations:
            fields["annotations"] = dict(annotations)
        return cls(fields)

    @property
    def media_type(self) -> str:
        return str(self.fields["mediaType"])

    @property
    def digest(self) -> str:
        return str(self.fields["digest"])

    @property
    def size(self) -> int:
        return int(self.fields["size"])

    @property
    def ref(self) -> BlobRef:
        return BlobRef(self.digest, self.size)

    @property
    def annotations(self) -> Mapping[str, str]:
        return self.fields.get("annotations") or {}

    @property
    def platform(self) -> Platform | None:
        platform = self.fields.get("platform")
        return None if platform is None else Platform.from_json(platform)

    @property
    def urls(self) -> list[str]:
        return list(self.fields.get("urls") or [])

    def to_json(self) -> dict[str, Any]:
        return copy.deepcopy(dict(self.fields))

    def content(self) -> dict[str, Any]:
        """Only mediaType, digest and size: the form of a `subject` (convertor-spec.md §3.6)."""
        return {"mediaType": self.media_type, "digest": self.digest, "size": self.size}

    def with_content(self, media_type: str, ref: BlobRef) -> "Descriptor":
        """The same descriptor (platform, annotations, unknown fields) for other content (convertor-spec.md §2.1)."""
        fields = self.to_json()
        fields.update(mediaType=media_type, digest=ref.digest, size=ref.size)
        return Descriptor(fields)

    def with_annotation(self, key: str, value: str) -> "Descriptor":
        fields = self.to_json()
        fields["annotations"] = {**(fields.get("annotations") or {}), key: value}
        return Descriptor(fields)
