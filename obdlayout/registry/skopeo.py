"""skopeo, the only thing that talks to registries (ecosystem.md §2).

Every copy keeps digests (`--all --preserve-digests`: skopeo would otherwise gzip overlaybd's uncompressed
layers and drop their annotations, §2.5-§2.6). Credentials reach skopeo in an auth file that exists only in
memory (a memfd, named by /dev/fd/N): never on a command line, which other users can read, and never on
disk, where a killed run would leave it. TLS options mean what the Go convertor's do (convertor-spec.md
§1, §5.4), in skopeo's terms: `--plain` and `--insecure` turn verification off (skopeo then also speaks
plain HTTP), and the certificates go into one certificate directory of skopeo's convention (`*.crt` CAs,
`*.cert` + `*.key` client pairs), which adds to the system's CAs.
"""

import base64
import json
import os
import re
import shutil
import subprocess
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from functools import partial
from pathlib import Path

from ..errors import ObdlayoutError
from ..lifetime import die_with_parent
from .refs import Location, RegistryRef

MIN_VERSION = (1, 6)  # --preserve-digests
# c/image 5.32 (skopeo 1.16) keeps an index's unknown fields, such as its descriptors' artifactType; older
# ones must rewrite such an index, which --preserve-digests forbids (ecosystem.md §2.1, §2.4).
KEEPS_ARTIFACT_TYPE = (1, 16)
ERROR_LINES = 3


class RegistryError(ObdlayoutError):
    """skopeo is missing or failed; `where` names the image (registry, repository, tag), `problem` the cause."""


@dataclass(frozen=True)
class TlsOptions:
    plain: bool = False  # HTTP
    insecure: bool = False  # HTTPS, not verified
    cert_dirs: tuple[Path, ...] = ()
    root_cas: tuple[Path, ...] = ()
    client_certs: tuple[tuple[Path, Path], ...] = ()  # (certificate, key)


def gather_certificates(tls: TlsOptions, into: Path) -> Path | None:
    """One certificate directory holding everything `tls` names (links to the files), or None if nothing;
    a single --cert-dir is used as it is. RegistryError naming a file that cannot be read."""
    if not tls.root_cas and not tls.client_certs and len(tls.cert_dirs) <= 1:
        for directory in tls.cert_dirs:
            if not directory.is_dir():
                raise RegistryError(str(directory), "is not a directory (--cert-dir)")
        return tls.cert_dirs[0].absolute() if tls.cert_dirs else None
    into.mkdir(mode=0o700, parents=True, exist_ok=True)
    links: list[tuple[str, Path]] = []
    for number, directory in enumerate(tls.cert_dirs):
        if not directory.is_dir():
            raise RegistryError(str(directory), "is not a directory (--cert-dir)")
        links += [
            (f"dir{number}-{f.name}", f) for f in sorted(directory.iterdir()) if f.suffix in (".crt", ".cert", ".key")
        ]
    links += [(f"root-ca-{number}.crt", ca) for number, ca in enumerate(tls.root_cas)]
    for number, (cert, key) in enumerate(tls.client_certs):
        links += [(f"client-{number}.cert", cert), (f"client-{number}.key", key)]
    for name, target in links:
        if not os.access(target, os.R_OK) or not target.is_file():
            raise RegistryError(str(target), "cannot be read (a certificate or key file)")
        (into / name).unlink(missing_ok=True)
        (into / name).symlink_to(target.absolute())
    return into


def parse_version(text: str) -> tuple[int, ...]:
    found = re.search(r"(\d+)\.(\d+)(?:\.(\d+))?", text)
    if not found:
        raise RegistryError("skopeo", f"cannot tell its version from {text.strip()!r}")
    return tuple(int(part) for part in found.groups() if part is not None)


class Skopeo:
    """skopeo with the run's credentials and TLS options; a context manager (the credentials live as long)."""

    def __init__(self, tls: TlsOptions, cert_dir: Path | None, credentials: str | None, hosts: Iterable[str]) -> None:
        executable = shutil.which("skopeo")
        if executable is None:
            raise RegistryError(
                "skopeo", "is not installed; registries are reached through it (apt-get install skopeo)"
            )
        self.executable = executable
        self.version = parse_version(self._output(["--version"]))
        if self.version < MIN_VERSION:
            shown = ".".join(map(str, self.version))
            raise RegistryError("skopeo", f"{shown} is too old: obdlayout needs 1.6 or newer (--preserve-digests)")
        self.tls = tls
        self.cert_dir = cert_dir
        self._secret = credentials.partition(":")[2] if credentials else None
        self._auth_fd = _auth_memfd(credentials, hosts) if credentials else None

    @property
    def keeps_artifact_type(self) -> bool:
        return self.version >= KEEPS_ARTIFACT_TYPE

    def __enter__(self) -> "Skopeo":
        return self

    def __exit__(self, *exc: object) -> None:
        if self._auth_fd is not None:
            os.close(self._auth_fd)
            self._auth_fd = None

    def copy(self, source: Location, destination: Location, *, index_only: bool = False) -> None:
        """Copy an image (a multi-arch one whole, or with `index_only` its index alone) keeping every digest."""
        args = ["copy", "--quiet", "--preserve-digests", "--multi-arch=index-only" if index_only else "--all"]
        args += self._side("src", source) + self._side("dest", destination)
        where = destination if isinstance(destination, RegistryRef) else source
        self._run([*args, str(source), str(destination)], where)

    def inspect_raw(self, image: RegistryRef) -> bytes | None:
        """The manifest (or index) bytes the registry holds for `image`, or None if it has no such tag."""
        try:
            return self._run(["inspect", "--raw", *self._side("", image), str(image)], image)
        except RegistryError as exc:
            if exc.problem.startswith(NOT_FOUND):
                return None
            raise

    def _side(self, prefix: str, location: Location) -> list[str]:
        if not isinstance(location, RegistryRef):
            return []
        option = f"--{prefix}-" if prefix else "--"
        args = [f"{option}tls-verify=false"] if self.tls.plain or self.tls.insecure else []
        if self.cert_dir is not None:
            args += [f"{option}cert-dir", str(self.cert_dir)]
        if self._auth_fd is not None:
            args += [f"{option}authfile", f"/dev/fd/{self._auth_fd}"]
        return args

    def _run(self, args: Sequence[str], where: Location) -> bytes:
        fds = (self._auth_fd,) if self._auth_fd is not None else ()
        try:
            done = subprocess.run(
                [self.executable, *args], stdin=subprocess.DEVNULL, capture_output=True, pass_fds=fds,
                preexec_fn=partial(die_with_parent, os.getpid()),
            )  # fmt: skip
        except OSError as exc:
            raise RegistryError("skopeo", f"could not be started: {exc.strerror}") from None
        if done.returncode != 0:
            raise RegistryError(_shown(where), self._cause(done.stderr.decode("utf-8", "replace")))
        return done.stdout

    def _output(self, args: Sequence[str]) -> str:
        done = subprocess.run([self.executable, *args], stdin=subprocess.DEVNULL, capture_output=True, text=True)
        return done.stdout + done.stderr

    def _cause(self, stderr: str) -> str:
        """skopeo's error as one line: what went wrong in words, then skopeo's own message, never a secret."""
        messages = [m.replace('\\"', '"') for m in re.findall(r'msg="((?:[^"\\]|\\.)*)"', stderr)]
        detail = messages[-1] if messages else " ".join(stderr.split()[-40:])
        if self._secret:
            detail = detail.replace(self._secret, "***")
        return f"{_classify(detail)} ({detail})" if _classify(detail) else detail


NOT_FOUND = "tag or digest not found"
_CAUSES = (
    (("connection refused", "no such host", "i/o timeout", "network is unreachable", "connection reset"),
     "the registry is unreachable"),
    (("unauthorized", "authentication required", "incorrect username or password"),
     "authentication failed (401): check -u USER:PASSWORD or your skopeo login"),
    (("denied",), "access denied (403): the credentials may not push or pull here"),
    (("manifest unknown", "name unknown", "not found"), NOT_FOUND),
    (("server gave HTTP response to HTTPS client",), "the registry speaks plain HTTP: use --plain"),
    (("x509:", "certificate"), "the registry's certificate is not trusted: use --cert-dir or --root-ca, or --insecure"),
)  # fmt: skip


def _classify(detail: str) -> str:
    for needles, cause in _CAUSES:
        if any(needle in detail for needle in needles):
            return cause
    return ""


def _shown(where: Location) -> str:
    if isinstance(where, RegistryRef):
        return where.name + (f":{where.tag}" if where.tag else "") + (f"@{where.digest}" if where.digest else "")
    return str(where)


def _auth_memfd(credentials: str, hosts: Iterable[str]) -> int:
    """An in-memory auth file (containers-auth.json) giving `credentials` for each of `hosts`. -u is split at
    its first colon, as the Go convertor does, so passwords may hold colons."""
    user, _, password = credentials.partition(":")
    token = base64.b64encode(f"{user}:{password}".encode()).decode()
    document = {"auths": {host: {"auth": token} for host in hosts}}
    fd = os.memfd_create("obdlayout-auth")
    os.write(fd, json.dumps(document).encode())
    return fd
