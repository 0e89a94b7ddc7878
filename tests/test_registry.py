"""Registry to registry (`-r`, `docker://`), with skopeo moving the bytes, against a real docker-registry.

The source is a Docker schema2 multi-arch list, pushed with skopeo from a `dir:` written here with the
stdlib, so its digests are the registry's. What obdlayout pushes is pulled back with skopeo and checked with
`verify --against` the source, and the registry is asked directly (HTTP) for digests, tags and blobs.
"""

import hashlib
import json
import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from obdlayout.oci.errors import LayoutError
from obdlayout.oci.layout import Layout
from obdlayout.oci.mediatypes import DOCKER_LAYER_GZIP, DOCKER_MANIFEST_LIST
from obdlayout.registry.dirformat import layout_from_dir
from obdlayout.registry.refs import DirRef, LayoutRef, LocationError, RegistryRef, parse_location, parse_registry
from obdlayout.registry.skopeo import RegistryError, TlsOptions, gather_certificates

from .oci_layouts import LayoutBuilder, platform
from .registry import Certificates, Registry, make_certificates
from .shared import require_tool

ROOT = Path(__file__).resolve().parent.parent
PASSWORD = "pa:ss w0rd$secret"  # a colon, a space and a dollar: split at the first colon, quoted nowhere
Factory = pytest.TempPathFactory


@dataclass(frozen=True)
class Source:
    layout: Path  # the OCI layout the image was built in, tag "multi"
    directory: Path  # the same image as skopeo's dir:
    digest: str  # of the list
    layers: list[str]  # every layer digest, both platforms


@pytest.fixture(scope="module")
def source(tmp_path_factory: Factory) -> Source:
    root = tmp_path_factory.mktemp("source")
    builder = LayoutBuilder(root / "layout")
    children, layers = [], []
    for arch, content in (("amd64", b"x86 binary\n"), ("arm64", b"arm binary\n")):
        base = builder.layer({"etc/os-release": b"ID=test\n", "bin/tool": content}, media_type=DOCKER_LAYER_GZIP)
        top = builder.layer({"app/data": arch.encode() * 1000}, media_type=DOCKER_LAYER_GZIP)
        layers += [base["digest"], top["digest"]]
        children.append(builder.image([base, top], arch=arch, docker=True, descriptor_extra=platform("linux", arch)))
    listed = builder.tag("multi", builder.index(children, media_type=DOCKER_MANIFEST_LIST))
    builder.save()
    directory = _as_dir(builder, listed, children, root / "dir")
    return Source(root / "layout", directory, listed["digest"], layers)


def _as_dir(builder: LayoutBuilder, listed: dict[str, Any], children: list[dict[str, Any]], out: Path) -> Path:
    """skopeo's dir: format (ecosystem.md §2.7a), written from the layout's files."""
    out.mkdir()
    (out / "version").write_text("Directory Transport Version: 1.1\n")
    shutil.copyfile(builder.blob_path(listed["digest"]), out / "manifest.json")
    for child in children:
        hex_digest = child["digest"].removeprefix("sha256:")
        shutil.copyfile(builder.blob_path(child["digest"]), out / f"{hex_digest}.manifest.json")
        manifest = json.loads(builder.blob_path(child["digest"]).read_text())
        for blob in (manifest["config"], *manifest["layers"]):
            shutil.copyfile(builder.blob_path(blob["digest"]), out / blob["digest"].removeprefix("sha256:"))
    return out


def _skopeo_push(directory: Path, registry: Registry, image: str, *options: str) -> None:
    skopeo = require_tool("skopeo")
    target = f"docker://{registry.host}/{image}"
    subprocess.run([skopeo, "copy", "--all", "--preserve-digests", *options, f"dir:{directory}", target], check=True)


def _skopeo_pull(registry: Registry, image: str, out: str, *options: str) -> None:
    source = f"docker://{registry.host}/{image}"
    subprocess.run([require_tool("skopeo"), "copy", "--all", "--preserve-digests", *options, source, out], check=True)


@pytest.fixture(scope="module")
def certificates(tmp_path_factory: Factory) -> Certificates:
    return make_certificates(tmp_path_factory.mktemp("certs"))


@pytest.fixture(scope="module")
def cert_dir(tmp_path_factory: Factory, certificates: Certificates) -> Path:
    """A certificate directory of skopeo's convention holding the test CA."""
    directory = tmp_path_factory.mktemp("certs.d")
    shutil.copyfile(certificates.ca, directory / "ca.crt")
    return directory


def _registry(root: Path, **options: Any) -> Iterator[Registry]:
    registry = Registry(root, **options).start()
    try:
        yield registry
    finally:
        registry.stop()


@pytest.fixture(scope="module")
def plain(tmp_path_factory: Factory) -> Iterator[Registry]:
    yield from _registry(tmp_path_factory.mktemp("plain"))


@pytest.fixture(scope="module")
def secure(tmp_path_factory: Factory, certificates: Certificates) -> Iterator[Registry]:
    yield from _registry(tmp_path_factory.mktemp("secure"), certificates=certificates)


@pytest.fixture(scope="module")
def guarded(tmp_path_factory: Factory, certificates: Certificates) -> Iterator[Registry]:
    yield from _registry(tmp_path_factory.mktemp("guarded"), certificates=certificates, user="alice", password=PASSWORD)


@dataclass(frozen=True)
class Run:
    code: int
    stdout: str
    stderr: str
    argv_log: str  # every skopeo command line the run started

    def report(self) -> Any:
        return json.loads(self.stdout)


def _obdlayout(tmp_path: Path, *args: str, environment: dict[str, str] | None = None, stdin: str = "") -> Run:
    """`obdlayout convert ARGS` as a user runs it, with skopeo behind a wrapper that logs its command lines."""
    wrappers = tmp_path / "wrappers"
    wrappers.mkdir(exist_ok=True)
    log = tmp_path / "skopeo-argv.log"
    wrapper = wrappers / "skopeo"
    wrapper.write_text(
        "#!/bin/sh\n"
        f"printf '%s\\n' \"$*\" >> {log}\n"
        'if [ -n "$KILL_ON" ] && printf "%s" "$*" | grep -q -- "$KILL_ON"; then kill "$KILL_PID"; sleep 1; fi\n'
        f'exec {require_tool("skopeo")} "$@"\n'
    )
    wrapper.chmod(0o755)
    env = {**os.environ, "PATH": f"{wrappers}:{os.environ['PATH']}", **(environment or {})}
    command = [sys.executable, "-m", "obdlayout.cli", "convert", *args]
    done = subprocess.run(command, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600, input=stdin)
    return Run(done.returncode, done.stdout, done.stderr, log.read_text() if log.exists() else "")


def _no_work_left(tmp_path: Path) -> None:
    assert not list(tmp_path.glob(".obdlayout-work-*")), "the work directory is left behind"


# -- the seed's form, plain HTTP -----------------------------------------------------------------------------


def test_a_docker_multi_arch_list_converts_in_its_repository_with_referrer(
    tmp_path: Path, source: Source, plain: Registry
) -> None:
    _skopeo_push(source.directory, plain, "app:multi", "--dest-tls-verify=false")
    assert plain.manifest_digest("app", "multi") == source.digest  # skopeo kept the list's bytes
    run = _obdlayout(
        tmp_path, "-r", f"{plain.host}/app", "-i", "multi", "-o", "multi-obd", "--plain", "--referrer", "--json"
    )
    assert run.code == 0, run.stderr
    report = run.report()
    assert report["pulled"] == {"reference": f"docker://{plain.host}/app:multi", "digest": source.digest}
    [pushed] = report["pushed"]
    assert pushed["reference"] == f"docker://{plain.host}/app:multi-obd"
    assert plain.manifest_digest("app", "multi-obd") == pushed["digest"]
    converted = json.loads(plain.manifest("app", "multi-obd") or b"{}")
    assert converted["subject"]["digest"] == source.digest  # the registry's own digest of the source
    back = tmp_path / "back"
    _skopeo_pull(plain, "app:multi-obd", f"oci:{back}:obd", "--src-tls-verify=false")
    verified = subprocess.run(
        [sys.executable, "-m", "obdlayout.cli", "verify", f"{back}:obd", "--against", f"{source.layout}:multi"],
        capture_output=True, text=True, cwd=ROOT,
    )  # fmt: skip
    assert verified.returncode == 0, verified.stdout + verified.stderr
    fallback = json.loads(plain.manifest("app", "sha256-" + source.digest.removeprefix("sha256:")) or b"{}")
    assert pushed["digest"] in [d["digest"] for d in fallback["manifests"]]
    _no_work_left(tmp_path)


def test_no_upload_keeps_the_result_and_pushes_nothing(tmp_path: Path, source: Source, plain: Registry) -> None:
    _skopeo_push(source.directory, plain, "quiet:multi", "--dest-tls-verify=false")
    work = tmp_path / "work"
    args = ("-r", f"{plain.host}/quiet", "-i", "multi", "-o", "obd", "--plain", "--no-upload", "-d", str(work))
    run = _obdlayout(tmp_path, *args, "--json")
    assert run.code == 0, run.stderr
    kept = Path(run.report()["kept"])
    assert kept.is_relative_to(work)
    assert Layout(kept).tags() == ["obd"]
    assert plain.tags("quiet") == ["multi"]


# -- TLS and credentials -------------------------------------------------------------------------------------


def test_https_with_cert_dir_and_with_root_ca_and_not_without(
    tmp_path: Path, source: Source, secure: Registry, certificates: Certificates, cert_dir: Path
) -> None:
    _skopeo_push(source.directory, secure, "tls:multi", "--dest-cert-dir", str(cert_dir))
    repository = f"{secure.host}/tls"
    for number, trust in enumerate((("--cert-dir", str(cert_dir)), ("--root-ca", str(certificates.ca)))):
        run = _obdlayout(tmp_path, "-r", repository, "-i", "multi", "-o", f"obd{number}", *trust, "--json")
        assert run.code == 0, run.stderr
        assert secure.manifest_digest("tls", f"obd{number}") == run.report()["pushed"][0]["digest"]
    untrusted = _obdlayout(tmp_path, "-r", repository, "-i", "multi", "-o", "never")
    assert untrusted.code == 1
    assert f"{repository}:multi: the registry's certificate is not trusted" in untrusted.stderr
    assert secure.manifest_digest("tls", "never") is None


def test_credentials_work_and_never_show(
    tmp_path: Path, source: Source, guarded: Registry, certificates: Certificates, cert_dir: Path
) -> None:
    creds = f"alice:{PASSWORD}"
    _skopeo_push(source.directory, guarded, "private:multi", "--dest-cert-dir", str(cert_dir), "--dest-creds", creds)
    repository = f"{guarded.host}/private"
    common = ("-r", repository, "-i", "multi", "--root-ca", str(certificates.ca))
    run = _obdlayout(tmp_path, *common, "-o", "obd", "-u", creds, "--json")
    assert run.code == 0, run.stderr
    assert guarded.manifest_digest("private", "obd") == run.report()["pushed"][0]["digest"]
    piped = _obdlayout(tmp_path, *common, "-o", "piped", "-u", "alice", "--password-stdin", stdin=PASSWORD + "\n")
    assert piped.code == 0, piped.stderr
    assert guarded.manifest_digest("private", "piped") == run.report()["pushed"][0]["digest"]
    wrong = _obdlayout(tmp_path, *common, "-o", "nope", "-u", "alice:not-" + PASSWORD)
    assert wrong.code == 1
    assert f"{repository}:multi: authentication failed" in wrong.stderr
    for secret in (PASSWORD, "not-" + PASSWORD, "w0rd$secret"):
        for shown in (run.stdout, run.stderr, run.argv_log, wrong.stdout, wrong.stderr, wrong.argv_log, piped.argv_log):
            assert secret not in shown
    assert run.argv_log.count("copy") >= 2  # the wrapper did see skopeo's command lines
    _no_work_left(tmp_path)


# -- TurboOCI to another repository, registry down, mixes with layouts ---------------------------------------


def test_turbo_oci_to_another_repository_takes_its_targets_along(
    tmp_path: Path, source: Source, plain: Registry
) -> None:
    _skopeo_push(source.directory, plain, "base:multi", "--dest-tls-verify=false")
    run = _obdlayout(
        tmp_path,
        f"docker://{plain.host}/base:multi",
        f"docker://{plain.host}/fast",
        "--turbo-oci",
        "t",
        "--plain",
        "--json",
    )
    assert run.code == 0, run.stderr
    assert plain.tags("fast") == ["t"]
    assert all(plain.has_blob("fast", layer) for layer in source.layers)
    assert plain.manifest_digest("fast", source.digest) == source.digest  # the source image, untagged


def test_a_registry_that_stops_mid_run_leaves_the_tag_as_it_was(
    tmp_path: Path, source: Source, tmp_path_factory: Factory
) -> None:
    registry = Registry(tmp_path_factory.mktemp("stopping")).start()
    try:
        _skopeo_push(source.directory, registry, "app:multi", "--dest-tls-verify=false")
        _skopeo_push(source.directory, registry, "app:live", "--dest-tls-verify=false")
        assert registry.process is not None
        kill = {"KILL_ON": f"{registry.host}/app:live", "KILL_PID": str(registry.process.pid)}
        run = _obdlayout(
            tmp_path, "-r", f"{registry.host}/app", "-i", "multi", "-o", "live", "--plain", environment=kill
        )
        assert run.code == 1
        assert f"{registry.host}/app:live: the registry is unreachable" in run.stderr
        assert len(run.stderr.strip().splitlines()[-1]) < 600
        registry.stop()
        registry.start()
        assert registry.manifest_digest("app", "live") == source.digest
    finally:
        registry.stop()
    _no_work_left(tmp_path)


def test_registry_to_layout_layout_to_registry_and_dir_sources(tmp_path: Path, source: Source, plain: Registry) -> None:
    _skopeo_push(source.directory, plain, "mix:multi", "--dest-tls-verify=false")
    pulled = _obdlayout(tmp_path, f"docker://{plain.host}/mix:multi", f"oci:{tmp_path / 'out'}:obd", "--plain")
    assert pulled.code == 0, pulled.stderr
    from_dir = _obdlayout(tmp_path, f"dir:{source.directory}", f"oci:{tmp_path / 'out'}:from-dir")
    assert from_dir.code == 0, from_dir.stderr
    out = Layout(tmp_path / "out")
    assert out.resolve_tag("obd").digest == out.resolve_tag("from-dir").digest  # the same bytes either way
    pushed = _obdlayout(
        tmp_path, f"{source.layout}", f"docker://{plain.host}/mix:from-layout", "-i", "multi", "--plain", "--json"
    )
    assert pushed.code == 0, pushed.stderr
    assert plain.manifest_digest("mix", "from-layout") == out.resolve_tag("obd").digest
    _no_work_left(tmp_path)


def test_a_wrong_tag_and_an_unreachable_registry_are_named(tmp_path: Path, plain: Registry) -> None:
    missing = _obdlayout(tmp_path, "-r", f"{plain.host}/app", "-i", "no-such-tag", "-o", "x", "--plain")
    assert missing.code == 1 and f"{plain.host}/app:no-such-tag: tag or digest not found" in missing.stderr
    port = Registry(tmp_path / "unused").port
    down = _obdlayout(tmp_path, "-r", f"127.0.0.1:{port}/app", "-i", "t", "-o", "x", "--plain")
    assert down.code == 1 and f"127.0.0.1:{port}/app:t: the registry is unreachable" in down.stderr
    _no_work_left(tmp_path)


# -- locations and the dir: format -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("docker://127.0.0.1:5000/a/b:t", RegistryRef("127.0.0.1:5000", "a/b", "t")),
        ("docker://redis:7", RegistryRef("docker.io", "library/redis", "7")),
        ("docker://localhost/x@sha256:" + "a" * 64, RegistryRef("localhost", "x", None, "sha256:" + "a" * 64)),
        ("oci:out:docker.io/library/alpine:3.19", LayoutRef(Path("out"), "docker.io/library/alpine:3.19")),
        ("dir:/tmp/d", DirRef(Path("/tmp/d"))),
        ("plain/dir", LayoutRef(Path("plain/dir"))),
    ],
)
def test_locations_parse_as_skopeo_names_them(text: str, expected: object) -> None:
    assert parse_location(text) == expected


@pytest.mark.parametrize(
    "text", ["docker://Host/UPPER:t", "docker://h.io/a:b:c", "docker://h.io/a@sha256:12", "oci:", "dir:"]
)
def test_bad_locations_are_refused(text: str) -> None:
    with pytest.raises(LocationError):
        parse_location(text)


@given(st.text(max_size=80))
def test_any_location_text_parses_or_is_refused(text: str) -> None:
    try:
        parse_location(text)
        parse_registry(text)
    except LocationError:
        pass


def test_a_dir_image_whose_instance_manifest_was_changed_is_refused(tmp_path: Path, source: Source) -> None:
    damaged = tmp_path / "dir"
    shutil.copytree(source.directory, damaged)
    instance = next(damaged.glob("*.manifest.json"))
    instance.write_bytes(instance.read_bytes() + b" ")
    with pytest.raises(LayoutError, match=instance.name):
        layout_from_dir(damaged, tmp_path / "view", "t")


def test_a_dir_image_reads_as_a_layout_with_the_same_digests(tmp_path: Path, source: Source) -> None:
    top = layout_from_dir(source.directory, tmp_path / "view", "t")
    view = Layout(tmp_path / "view")
    assert (
        top.digest
        == source.digest
        == "sha256:" + hashlib.sha256((source.directory / "manifest.json").read_bytes()).hexdigest()
    )
    assert view.resolve_tag("t").media_type == DOCKER_MANIFEST_LIST
    assert [m.digest for m in view.read_index(top).manifests] == [
        m.digest for m in Layout(source.layout).read_index(top).manifests
    ]


def test_certificates_are_gathered_into_one_directory_of_links(tmp_path: Path, certificates: Certificates) -> None:
    tls = TlsOptions(root_cas=(certificates.ca,), client_certs=((certificates.certificate, certificates.key),))
    gathered = gather_certificates(tls, tmp_path / "tls")
    assert gathered is not None
    names = sorted(p.name for p in gathered.iterdir())
    assert names == ["client-0.cert", "client-0.key", "root-ca-0.crt"]
    assert (gathered / "client-0.key").read_bytes() == certificates.key.read_bytes()
    with pytest.raises(RegistryError, match=r"missing\.pem"):
        gather_certificates(TlsOptions(root_cas=(tmp_path / "missing.pem",)), tmp_path / "tls2")
    assert gather_certificates(TlsOptions(cert_dirs=(tmp_path,)), tmp_path / "tls3") == tmp_path


@pytest.mark.parametrize(("version", "expected"), [(None, "skopeo: is not installed"), ("1.4.0", "1.4.0 is too old")])
def test_a_missing_or_old_skopeo_is_named(tmp_path: Path, version: str | None, expected: str) -> None:
    tools = tmp_path / "bin"
    tools.mkdir()
    if version:
        (tools / "skopeo").write_text(f"#!/bin/sh\necho 'skopeo version {version}'\n")
        (tools / "skopeo").chmod(0o755)
    python = Path(sys.executable)
    env = {**os.environ, "PATH": str(tools)}
    command = [str(python), "-m", "obdlayout.cli", "convert", "-r", "127.0.0.1:1/app", "-i", "t", "-o", "x"]
    done = subprocess.run(command, cwd=tmp_path, env=env, capture_output=True, text=True)
    assert done.returncode == 1
    assert expected in done.stderr
    _no_work_left(tmp_path)
