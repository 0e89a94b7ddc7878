"""A real registry for tests: Debian's docker-registry (distribution 2.8) on 127.0.0.1 at a free port, plain
HTTP, HTTPS with a CA and server certificate made here by openssl, or HTTPS with htpasswd basic auth.

It is stopped when the test module ends; `stop` and `start` take it down and back up with its storage kept
(a registry that goes away mid-run). `has_blob` and `manifest_digest` ask it directly over HTTP (urllib),
independently of skopeo and obdlayout.
"""

import base64
import json
import ssl
import subprocess
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

from .shared import await_server, free_port, require_tool, stop_process

START_TIMEOUT = 20.0
ACCEPT = ", ".join(
    [
        "application/vnd.oci.image.index.v1+json",
        "application/vnd.oci.image.manifest.v1+json",
        "application/vnd.docker.distribution.manifest.list.v2+json",
        "application/vnd.docker.distribution.manifest.v2+json",
    ]
)


@dataclass(frozen=True)
class Certificates:
    ca: Path
    certificate: Path
    key: Path


def make_certificates(directory: Path) -> Certificates:
    """A CA, and a server certificate for 127.0.0.1 signed by it."""
    openssl = require_tool("openssl")
    directory.mkdir(parents=True, exist_ok=True)
    ca, ca_key = directory / "ca.crt", directory / "ca.key"
    key, csr, cert = directory / "server.key", directory / "server.csr", directory / "server.crt"
    extensions = directory / "server.ext"
    extensions.write_text("subjectAltName=IP:127.0.0.1\n")
    for command in (
        ["req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", ca_key, "-out", ca, "-days", "2",
         "-subj", "/CN=obdlayout test CA"],
        ["req", "-newkey", "rsa:2048", "-nodes", "-keyout", key, "-out", csr, "-subj", "/CN=127.0.0.1"],
        ["x509", "-req", "-in", csr, "-CA", ca, "-CAkey", ca_key, "-CAcreateserial", "-out", cert, "-days", "2",
         "-extfile", extensions],
    ):  # fmt: skip
        subprocess.run([openssl, *map(str, command)], check=True, capture_output=True)
    return Certificates(ca, cert, key)


@dataclass
class Registry:
    root: Path
    certificates: Certificates | None = None
    user: str | None = None
    password: str | None = None
    port: int = field(default_factory=free_port)
    process: subprocess.Popen[bytes] | None = None

    @property
    def host(self) -> str:
        return f"127.0.0.1:{self.port}"

    def start(self) -> "Registry":
        binary = require_tool("docker-registry")
        config = self.root / "config.yml"
        lines = [
            "version: 0.1",
            "log: {level: error}",
            f"storage: {{filesystem: {{rootdirectory: {self.root / 'data'}}}, delete: {{enabled: true}}}}",
            "http:",
            f"  addr: {self.host}",
        ]
        if self.certificates:
            lines.append(f"  tls: {{certificate: {self.certificates.certificate}, key: {self.certificates.key}}}")
        if self.user:
            htpasswd = self.root / "htpasswd"
            made = subprocess.run(
                [require_tool("htpasswd"), "-Bbn", self.user, str(self.password)], check=True, capture_output=True
            )
            htpasswd.write_bytes(made.stdout)
            lines.append(f"auth: {{htpasswd: {{realm: test, path: {htpasswd}}}}}")
        self.root.mkdir(parents=True, exist_ok=True)
        config.write_text("\n".join(lines) + "\n")
        log = (self.root / "registry.log").open("ab")
        self.process = subprocess.Popen([binary, "serve", str(config)], stdout=log, stderr=log)
        await_server(self.process, self._answers, "docker-registry", self.root / "registry.log", START_TIMEOUT)
        return self

    def stop(self) -> None:
        stop_process(self.process, 10)
        self.process = None

    def _answers(self) -> bool:
        try:
            self._open("GET", "/v2/")
        except urllib.error.HTTPError as exc:
            return exc.code == 401
        except OSError:
            return False
        return True

    def _open(self, method: str, path: str) -> tuple[dict[str, str], bytes]:
        """The registry's answer (headers, body); HTTPError for a status that is not 2xx."""
        scheme = "https" if self.certificates else "http"
        request = urllib.request.Request(f"{scheme}://{self.host}{path}", method=method, headers={"Accept": ACCEPT})
        if self.user:
            token = base64.b64encode(f"{self.user}:{self.password}".encode()).decode()
            request.add_header("Authorization", f"Basic {token}")
        context = ssl.create_default_context(cafile=str(self.certificates.ca)) if self.certificates else None
        with urllib.request.urlopen(request, timeout=10, context=context) as response:
            return dict(response.headers), response.read()

    def _found(self, method: str, path: str) -> tuple[dict[str, str], bytes] | None:
        try:
            return self._open(method, path)
        except urllib.error.HTTPError as exc:
            if exc.code == 404:
                return None
            raise

    def has_blob(self, repository: str, digest: str) -> bool:
        return self._found("HEAD", f"/v2/{repository}/blobs/{digest}") is not None

    def manifest_digest(self, repository: str, reference: str) -> str | None:
        """The digest the registry gives the manifest at `reference` (a tag), None if it has none."""
        found = self._found("HEAD", f"/v2/{repository}/manifests/{reference}")
        return found[0]["Docker-Content-Digest"] if found else None

    def manifest(self, repository: str, reference: str) -> bytes | None:
        found = self._found("GET", f"/v2/{repository}/manifests/{reference}")
        return found[1] if found else None

    def tags(self, repository: str) -> list[str]:
        found = self._found("GET", f"/v2/{repository}/tags/list")
        listed: list[str] = json.loads(found[1]).get("tags") or [] if found else []
        return sorted(listed)
