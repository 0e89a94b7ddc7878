"""Where images are: `docker://HOST/REPO[:TAG][@DIGEST]`, `oci:DIR[:TAG]`, `dir:DIR`, or a bare directory (an
OCI layout), as skopeo names them (ecosystem.md §2), and the Go convertor's `-r HOST/REPO` (convertor-spec.md §1).
"""

import re
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path

from ..oci.digest import check_digest
from ..oci.writer import check_tag

DOCKER = "docker://"
OCI = "oci:"
DIR = "dir:"
DOCKER_HUB = "docker.io"

# distribution/reference: a path component, and a tag.
_COMPONENT = re.compile(r"[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*")
_TAG = re.compile(r"[\w][\w.-]{0,127}")
_HOST = re.compile(r"[A-Za-z0-9](?:[A-Za-z0-9.-]*[A-Za-z0-9])?(?::[0-9]+)?|\[[0-9A-Fa-f:.]+\](?::[0-9]+)?")


class LocationError(ValueError):
    """A location that cannot be parsed; the message says why."""


@dataclass(frozen=True)
class RegistryRef:
    """An image, or a repository (no tag and no digest), in a registry."""

    host: str  # with the port, as the registry is addressed
    repository: str
    tag: str | None = None
    digest: str | None = None

    @property
    def name(self) -> str:
        """HOST/REPO, the repository's full name."""
        return f"{self.host}/{self.repository}"

    def with_tag(self, tag: str) -> "RegistryRef":
        return replace(self, tag=tag, digest=None)

    def with_digest(self, digest: str) -> "RegistryRef":
        return replace(self, tag=None, digest=digest)

    def __str__(self) -> str:
        """As skopeo takes it."""
        return DOCKER + self.name + (f":{self.tag}" if self.tag else "") + (f"@{self.digest}" if self.digest else "")


@dataclass(frozen=True)
class LayoutRef:
    """An OCI image layout, and maybe one tag in it."""

    path: Path
    tag: str | None = None

    def __str__(self) -> str:
        return f"{OCI}{self.path}" + (f":{self.tag}" if self.tag else "")


@dataclass(frozen=True)
class DirRef:
    """skopeo's `dir:` format: one image or one multi-arch list, every digest kept."""

    path: Path

    def __str__(self) -> str:
        return f"{DIR}{self.path}"


Location = RegistryRef | LayoutRef | DirRef


def parse_location(text: str) -> Location:
    """A location as skopeo writes it; anything without a transport prefix is an OCI layout directory."""
    if text.startswith(DOCKER):
        return parse_registry(text[len(DOCKER) :], text)
    if text.startswith(OCI):
        path, _, tag = text[len(OCI) :].partition(":")  # skopeo splits at the first colon too
        if not path:
            raise LocationError(f"{text!r} names no directory")
        if tag:
            _checked(check_tag, tag, text)
        return LayoutRef(Path(path), tag or None)
    if text.startswith(DIR):
        if not text[len(DIR) :]:
            raise LocationError(f"{text!r} names no directory")
        return DirRef(Path(text[len(DIR) :]))
    return LayoutRef(Path(text))


def parse_registry(reference: str, original: str | None = None) -> RegistryRef:
    """`HOST/REPO[:TAG][@DIGEST]`, with Docker's defaults: a first component that is no host name (no dot, no
    port, not localhost) means Docker Hub, and a one-component name there is under `library/`."""
    shown = original or reference
    name, _, digest = reference.partition("@")
    tag = None
    last_slash = name.rfind("/")
    if ":" in name[last_slash + 1 :]:
        name, _, tag = name.rpartition(":")
        if not _TAG.fullmatch(tag):
            raise LocationError(f"{shown!r}: {tag!r} is not a valid tag")
    if digest:
        _checked(check_digest, digest, shown)
    first, _, rest = name.partition("/")
    if rest and ("." in first or ":" in first or first == "localhost" or first.startswith("[")):
        host, path = first, rest
    else:
        host, path = DOCKER_HUB, name if "/" in name else f"library/{name}"
    if not _HOST.fullmatch(host):
        raise LocationError(f"{shown!r}: {host!r} is not a registry host")
    if not path or not all(_COMPONENT.fullmatch(part) for part in path.split("/")):
        raise LocationError(f"{shown!r}: {path!r} is not a repository name (lower-case letters, digits, . _ - /)")
    return RegistryRef(host, path, tag, digest or None)


def _checked(check: Callable[[str], object], value: str, shown: str) -> None:
    try:
        check(value)
    except ValueError as exc:
        raise LocationError(f"{shown!r}: {exc}") from None
