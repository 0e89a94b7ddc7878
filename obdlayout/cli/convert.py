"""`obdlayout convert SRC DST`: OCI image layouts, skopeo dir: images or registries in, overlaybd images out."""

import json
import os
import shlex
import sys
from pathlib import Path
from typing import Any

import click
from click.shell_completion import CompletionItem

from .. import api
from ..cache.cache import DEFAULT_LEASE
from ..convert.native import DEFAULT_BASELAYER
from ..convert.pipeline import ENGINES, NATIVE
from ..convert.progress import Display, Events
from ..convert.tools import DEFAULT_TOOLS_DIR
from ..errors import ObdlayoutError
from ..oci.descriptor import Platform
from ..oci.layout import Layout
from ..registry.skopeo import TlsOptions
from .options import cache_location_options, compression_options, size_value


def _cache_options(func: Any) -> Any:
    """The layer and manifest cache (the Go convertor's --db-type/--db-str dedup, and more)."""
    options = [
        click.option("--cache/--no-cache", default=True, show_default=True,
                     help="Take layers and images converted before from the cache, and keep what this run makes."),
        cache_location_options,
        click.option("--cache-lease", type=click.FloatRange(min=0.1), default=DEFAULT_LEASE, show_default=True,
                     metavar="SECONDS",
                     help="How long a claim on a layer lasts unless its converter renews it (a crashed converter's "
                     "layers are taken over after this)."),
        click.option("--cache-max-size", default="20G", show_default=True, callback=size_value, metavar="SIZE",
                     help="After converting, trim the content store to this size (least recently used first; 0 "
                     "for no limit)."),
    ]  # fmt: skip
    for option in reversed(options):
        func = option(func)
    return func


def _complete_tags(ctx: click.Context, param: click.Parameter, incomplete: str) -> list[CompletionItem]:
    """The tags of SRC's index.json, for shell completion (nothing if SRC is not a layout yet)."""
    source = ctx.params.get("src") or _source_word(os.environ.get("COMP_WORDS", ""))
    try:
        tags = Layout(source).tags() if source is not None else []
    except (ObdlayoutError, OSError):
        return []
    return [CompletionItem(tag) for tag in tags if tag.startswith(incomplete)]


def _source_word(words: str) -> str | None:
    """SRC among the words being completed: click stops parsing at the option still missing its value, so it
    never reaches the positional arguments; the shell's words (click's scripts pass them all) still hold it."""
    try:
        parts = shlex.split(words)
    except ValueError:
        return None
    after = parts[parts.index("convert") + 1 :] if "convert" in parts else []
    return next((word for word in after if not word.startswith("-")), None)


def _platforms(ctx: click.Context, param: click.Parameter, values: tuple[str, ...]) -> tuple[str, ...]:
    for value in values:
        try:
            Platform.parse(value)
        except ValueError as exc:
            raise click.BadParameter(str(exc)) from None
    return values


def _client_certs(ctx: click.Context, param: click.Parameter, values: tuple[str, ...]) -> tuple[tuple[Path, Path], ...]:
    pairs = []
    for value in values:
        if value.count(":") != 1:
            raise click.BadParameter(f"{value!r} is not CERTFILE:KEYFILE (exactly one colon)")
        cert, key = value.split(":")
        pairs.append((Path(cert), Path(key)))
    return tuple(pairs)


def _registry_options(func: Any) -> Any:
    """The Go convertor's registry flags, meaning what they mean there (convertor-spec.md §1)."""
    options = [
        click.option("-r", "--repository", metavar="HOST/REPO",
                     help="Convert -i TAG (or -g DIGEST) of this registry repository into the same repository, "
                     "as the Go convertor does (instead of SRC and DST)."),
        click.option("-u", "--username", "credentials", metavar="USER:PASSWORD",
                     help="Registry credentials (split at the first colon); otherwise skopeo's own auth files. "
                     "They reach skopeo in memory, never on a command line."),
        click.option("--password-stdin", is_flag=True,
                     help="Read the password from standard input (with -u USER), to keep it off the command line."),
        click.option("--plain", is_flag=True, help="Talk plain HTTP to the registries."),
        click.option("--insecure", is_flag=True, help="Do not verify the registries' TLS certificates."),
        click.option("--cert-dir", "cert_dirs", multiple=True, type=click.Path(file_okay=False, path_type=Path),
                     help="Directory of *.crt CAs and *.cert/*.key client pairs (repeatable)."),
        click.option("--root-ca", "root_cas", multiple=True, type=click.Path(dir_okay=False, path_type=Path),
                     help="A PEM CA to trust besides the system's (repeatable)."),
        click.option("--client-cert", "client_certs", multiple=True, metavar="CERT:KEY", callback=_client_certs,
                     help="A TLS client certificate and its key (repeatable)."),
        click.option("--no-upload", is_flag=True,
                     help="Convert but push nothing: the result stays in the work directory, as an OCI layout."),
    ]  # fmt: skip
    for option in reversed(options):
        func = option(func)
    return func


@click.command("convert", context_settings={"help_option_names": ["-h", "--help"]})
@click.argument("src", required=False)
@click.argument("dst", required=False)
@click.option(
    "-i",
    "--input-tag",
    "input_tags",
    multiple=True,
    shell_complete=_complete_tags,
    help="Tag in SRC to convert (repeatable; default: all).",
)
@click.option(
    "-g", "--input-digest", "input_digests", multiple=True, help="Manifest or index digest in SRC to convert."
)
@click.option("-o", "--output-tag", "output_tag", help="Tag of the result in DST (default: the input tag).")
@click.option("--overlaybd", "overlaybd_tag", help="Synonym of --output-tag, as the Go convertor names it.")
@click.option(
    "--turbo-oci",
    "--turboOCI",
    "turbo_tag",
    metavar="TAG",
    help="Tag of a TurboOCI image in DST: ext4 metadata layers over the original layers, which are kept as the "
    "data (with a gzip index for gzip layers). With --overlaybd too, both images are made, each layer read once.",
)
@click.option("--fastoci", "fastoci_tag", hidden=True, help="Deprecated Go name of --turbo-oci.")
@click.option(
    "--mkfs/--no-mkfs",
    default=True,
    show_default=True,
    help="Make a new ext4 in the first layer; with --no-mkfs, start from --baselayer.",
)
@click.option(
    "--baselayer",
    type=click.Path(dir_okay=False, path_type=Path),
    default=DEFAULT_BASELAYER,
    show_default=True,
    help="The overlaybd baselayer used with --no-mkfs (written into DST as layer 0).",
)
@click.option(
    "--vsize",
    type=click.IntRange(min=1),
    default=64,
    show_default=True,
    help="Virtual block device size in GiB (with --mkfs).",
)
@click.option(
    "--fstype",
    type=click.Choice(["ext4", "erofs"]),
    default="ext4",
    show_default=True,
    help="File system of the TurboOCI image: ext4, or EROFS (read-only and compact: less metadata to "
    "fetch; each layer's EROFS metadata extends the one below, so no --no-mkfs).",
)
@compression_options
@click.option(
    "--oci/--docker-media-types",
    default=True,
    show_default=True,
    help="Media types of the output; OCI by default, since skopeo before 1.19 cannot read Docker "
    "media types in index.json.",
)
@click.option("--referrer", is_flag=True, help="Add subject and artifactType (the source) to every manifest and index.")
@click.option(
    "--platform",
    "platforms",
    multiple=True,
    callback=_platforms,
    metavar="OS/ARCH[/VARIANT]",
    help="Convert only these platforms of multi-arch images (repeatable; default: all).",
)
@click.option(
    "--concurrency-limit",
    type=click.IntRange(min=1),
    default=4,
    show_default=True,
    help="Images (manifests) converted at once.",
)
@click.option(
    "-d",
    "--dir",
    "work_dir",
    type=click.Path(file_okay=False, path_type=Path),
    help="Work directory (default: a hidden one beside DST, removed when done).",
)
@click.option("--reserve", is_flag=True, help="Keep the work directory.")
@click.option("--dump-manifest", is_flag=True, help="Write every config, manifest and index into the work directory.")
@click.option(
    "--engine",
    type=click.Choice(ENGINES),
    default=NATIVE,
    show_default=True,
    help="What makes the layers: obdlayout's own writer (native, needs nothing installed), or the overlaybd "
    "tools, run per layer exactly as the Go convertor runs them (overlaybd-tools).",
)
@click.option(
    "--tools-dir",
    type=click.Path(file_okay=False, path_type=Path),
    help=f"Where the overlaybd tools are, with --engine overlaybd-tools  [default: {DEFAULT_TOOLS_DIR}]",
)
@click.option(
    "--disable-sparse",
    is_flag=True,
    help="With --engine overlaybd-tools: create the overlaybd layers' writable files without -s (the TurboOCI "
    "engine always makes them sparse, as the Go convertor does).",
)
@click.option("-v", "--verbose", is_flag=True, help="A line per layer even on a terminal.")
@click.option("-q", "--quiet", is_flag=True, help="Print nothing but errors.")
@click.option("--json", "as_json", is_flag=True, help="Print a JSON summary (digests, sizes, seconds) on stdout.")
@_registry_options
@_cache_options
def convert_command(
    src: str | None,
    dst: str | None,
    input_tags: tuple[str, ...],
    input_digests: tuple[str, ...],
    output_tag: str | None,
    overlaybd_tag: str | None,
    turbo_tag: str | None,
    fastoci_tag: str | None,
    mkfs: bool,
    baselayer: Path,
    vsize: int,
    fstype: str,
    algorithm: str,
    block_kib: str,
    oci: bool,
    referrer: bool,
    platforms: tuple[str, ...],
    concurrency_limit: int,
    jobs: int,
    work_dir: Path | None,
    reserve: bool,
    dump_manifest: bool,
    repository: str | None,
    credentials: str | None,
    plain: bool,
    insecure: bool,
    cert_dirs: tuple[Path, ...],
    root_cas: tuple[Path, ...],
    client_certs: tuple[tuple[Path, Path], ...],
    no_upload: bool,
    password_stdin: bool,
    cache: bool,
    cache_dir: Path | None,
    db_type: str,
    db_str: str | None,
    cache_lease: float,
    cache_max_size: int,
    engine: str,
    tools_dir: Path | None,
    disable_sparse: bool,
    verbose: bool,
    quiet: bool,
    as_json: bool,
) -> None:
    """Convert images of SRC into overlaybd images in DST.

    SRC and DST are OCI image layouts (a directory, or oci:DIR[:TAG]), skopeo dir: images (dir:DIR), or
    registry images (docker://HOST/REPO:TAG, moved by skopeo with every digest kept); or, as with the Go
    convertor, -r HOST/REPO -i TAG -o TAG converts within one repository. A layout DST is created if missing
    and may be SRC itself (then --output-tag is needed). Every layer of every selected manifest (all
    platforms of multi-arch images) becomes an overlaybd layer blob (or, with --turbo-oci, a TurboOCI
    metadata layer over the original layer, which DST then holds too); manifests, configs and annotations
    are what containerd's overlaybd snapshotter expects. DST changes only when everything succeeded: a
    layout's index.json is replaced last, atomically; a registry's tag is pushed last.

    \b
    Examples:
      obdlayout convert in out                            # every tag of the layout `in`
      obdlayout convert -r registry.example/redis -i 7 -o 7-obd
      obdlayout convert docker://registry.example/redis:7 docker://mirror.example/redis:7-obd
      obdlayout convert docker://registry.example/redis:7 oci:out:redis-obd --turbo-oci redis-turbo
    """
    if output_tag and overlaybd_tag and output_tag != overlaybd_tag:
        raise click.UsageError("--output-tag and --overlaybd name different tags")
    mode = "quiet" if quiet else "bars" if sys.stderr.isatty() and not verbose else "lines"
    events = Events()
    tls = TlsOptions(plain, insecure, cert_dirs, root_cas, client_certs)
    if password_stdin:
        if not credentials or ":" in credentials:
            raise click.UsageError("--password-stdin needs -u USER (with no password)")
        credentials = f"{credentials}:{sys.stdin.readline().rstrip(chr(10))}"
    try:
        with Display(events, mode):
            report = api.convert(
                src,
                dst,
                tags=input_tags,
                digests=input_digests,
                output_tag=output_tag or overlaybd_tag,
                turbo_oci=turbo_tag or fastoci_tag,  # as in Go, --turboOCI wins over --fastoci
                platforms=platforms,
                mkfs=mkfs,
                baselayer=baselayer,
                vsize_gib=vsize,
                fstype=fstype,
                algorithm=algorithm,
                block_kib=int(block_kib),
                jobs=jobs,
                oci=oci,
                referrer=referrer,
                concurrency=concurrency_limit,
                work_dir=work_dir,
                reserve=reserve,
                dump_manifest=dump_manifest,
                engine=engine,
                tools_dir=tools_dir,
                disable_sparse=disable_sparse,
                repository=repository,
                credentials=credentials,
                tls=tls if tls != TlsOptions() else None,
                no_upload=no_upload,
                cache=cache,
                cache_dir=cache_dir,
                db_type=db_type,
                db_str=db_str,
                cache_lease=cache_lease,
                cache_max_size=cache_max_size or None,
                events=events,
            )
    except api.OptionError as exc:
        raise click.UsageError(exc.problem) from None
    except ObdlayoutError as exc:
        raise click.ClickException(str(exc)) from None
    except OSError as exc:
        raise click.ClickException(f"{exc.filename or ''}: {exc.strerror}") from None
    if as_json:
        click.echo(json.dumps(report, indent=2))
    elif not quiet:
        _summary(report, dst)


def _summary(report: dict[str, Any], dst: str | None) -> None:
    seconds = report["seconds"]
    pushed = {entry["digest"]: entry["reference"] for entry in report.get("pushed", [])}
    for output in report["outputs"]:
        where = pushed.get(output["digest"]) or f"{report.get('kept') or dst}:{output['tag']}"
        click.echo(
            f"{where} = {output['digest']} ({output['format']}, from {output['source']}, {seconds:.1f} s)", err=True
        )
