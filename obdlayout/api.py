"""The Python API, for pipelines that are Python already: what `obdlayout convert` and the read commands do.

    import obdlayout

    report = obdlayout.convert("in", "out", tags=["redis"], turbo_oci="redis-turbo")
    with obdlayout.open_image("out", "redis-turbo") as image:
        print(image.ls("/etc"), image.read("/etc/os-release"))

`convert` returns the report `obdlayout convert --json` prints. Every error is an ObdlayoutError saying
where and what (`OptionError` for arguments that do not fit together).
"""

from collections.abc import Iterator, Sequence
from contextlib import ExitStack
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from .cache.cache import DB_TYPES, DEFAULT_LEASE, DEFAULT_MAX_SIZE, CacheSettings, default_directory
from .cache.dsn import DsnError
from .convert.native import DEFAULT_BASELAYER
from .convert.pipeline import (
    ENGINES,
    EROFS,
    EXT4,
    FSTYPES,
    NATIVE,
    OVERLAYBD,
    OVERLAYBD_TOOLS,
    TURBO_OCI,
    ConvertOptions,
)
from .convert.pipeline import convert as run_pipeline
from .convert.progress import Events
from .convert.tools import DEFAULT_TOOLS_DIR
from .errors import ObdlayoutError
from .formats.commit import BlobOptions
from .formats.zfile_layout import BLOCK_SIZES, Algorithm
from .formats.zfile_writer import default_jobs
from .inspect.image import FoundImage, open_filesystem, select_image
from .inspect.listing import cat, ls
from .inspect.readfs import ImageFs
from .oci.descriptor import Platform
from .oci.digest import check_digest
from .oci.layout import Layout
from .oci.plan import Selection
from .oci.writer import check_tag
from .registry.flow import UNTAGGED_SOURCE, RemoteOptions, convert_remote
from .registry.refs import DOCKER, DirRef, LayoutRef, Location, LocationError, RegistryRef, parse_location
from .registry.skopeo import TlsOptions
from .units import GiB, KiB


class OptionError(ObdlayoutError):
    """Arguments that cannot be used together, or a value out of range; `where` names the option."""


def convert(
    source: str | Path | None = None,
    destination: str | Path | None = None,
    *,
    repository: str | None = None,
    tags: Sequence[str] = (),
    digests: Sequence[str] = (),
    output_tag: str | None = None,
    turbo_oci: str | None = None,
    platforms: Sequence[str] = (),
    mkfs: bool = True,
    baselayer: str | Path = DEFAULT_BASELAYER,
    vsize_gib: int = 64,
    fstype: str = EXT4,
    algorithm: str = "lz4",
    block_kib: int = 4,
    jobs: int | None = None,
    oci: bool = True,
    referrer: bool = False,
    concurrency: int = 4,
    work_dir: str | Path | None = None,
    reserve: bool = False,
    dump_manifest: bool = False,
    engine: str = NATIVE,
    tools_dir: str | Path | None = None,
    disable_sparse: bool = False,
    credentials: str | None = None,
    tls: TlsOptions | None = None,
    no_upload: bool = False,
    cache: bool = True,
    cache_dir: str | Path | None = None,
    db_type: str = "sqlite",
    db_str: str | None = None,
    cache_lease: float = DEFAULT_LEASE,
    cache_max_size: int | None = DEFAULT_MAX_SIZE,
    events: Events | None = None,
) -> dict[str, Any]:
    """Convert images from `source` into `destination` (as `obdlayout convert`).

    Either is an OCI layout directory, `oci:DIR[:TAG]`, `dir:DIR` (skopeo's format) or
    `docker://HOST/REPO[:TAG]` (through skopeo, with `credentials` "USER:PASSWORD" and `tls`); or instead of
    both, `repository` "HOST/REPO" with one tag (or digest) in `tags` (`digests`), converted into the same
    repository (the Go convertor's -r). In a layout, `tags` and `digests` select what to convert (every tag
    when neither is given). Each result is tagged like its source, or `output_tag` (the overlaybd image) and
    `turbo_oci` (a TurboOCI image: both may be given) when one image is selected. `engine` "overlaybd-tools"
    runs the overlaybd tools of `tools_dir` (default /opt/overlaybd/bin) instead of our writer. Layers and
    images are taken from, and kept in, the cache (`cache_dir`, default $XDG_CACHE_HOME/obdlayout, with its
    index in SQLite there, or with `db_type` "mysql" in the database `db_str`) unless `cache` is False.
    Returns the report `--json` prints.
    """
    if engine not in ENGINES:
        raise OptionError("engine", f"must be one of {', '.join(ENGINES)}, not {engine!r}")
    if engine != OVERLAYBD_TOOLS and tools_dir is not None:
        raise OptionError("tools_dir", f"a tools directory is for the engine {OVERLAYBD_TOOLS!r} only")
    if fstype not in FSTYPES:
        raise OptionError("fstype", f"must be one of {', '.join(FSTYPES)}, not {fstype!r}")
    if fstype == EROFS and not turbo_oci:
        raise OptionError("fstype", "EROFS is for TurboOCI images: give a --turbo-oci tag (overlaybd images are ext4)")
    if fstype == EROFS and not mkfs:
        raise OptionError("fstype", "EROFS images start their own file system: --no-mkfs (a baselayer) is for ext4")
    if fstype == EROFS and engine == OVERLAYBD_TOOLS:
        raise OptionError("fstype", f"the engine {OVERLAYBD_TOOLS!r} makes ext4 TurboOCI images only")
    if engine != OVERLAYBD_TOOLS and disable_sparse:
        raise OptionError("disable_sparse", f"sparse writable files are the engine {OVERLAYBD_TOOLS!r}'s only")
    cache_settings = _cache_settings(cache, cache_dir, db_type, db_str, cache_lease, cache_max_size)
    ends = _ends(source, destination, repository, tags, digests, output_tag)
    src, dst, tags, digests, output_tag = ends.source, ends.destination, ends.tags, ends.digests, ends.output_tag
    remote = not (isinstance(src, LayoutRef) and isinstance(dst, LayoutRef))
    if not remote and (credentials or tls or no_upload):
        raise OptionError("credentials", "credentials, TLS options and --no-upload are for registries")
    if isinstance(src, LayoutRef):
        chosen_tags = list(tags) or ([] if digests else Layout(src.path).tags())
        if not chosen_tags and not digests:
            raise OptionError("tags", f"{src.path} has no tagged images; select one by digest")
    else:
        chosen_tags = list(tags)
    if output_tag and turbo_oci and output_tag == turbo_oci:
        raise OptionError("turbo_oci", f"the overlaybd and the TurboOCI image cannot both be tagged {turbo_oci!r}")
    roots = len(chosen_tags) + len(digests)
    if (output_tag or turbo_oci) and roots > 1:
        raise OptionError("output_tag", f"{roots} images are selected; an output tag names the result of one")
    if not (output_tag or turbo_oci):
        why = _why_an_output_tag(src, dst, bool(digests))
        if why:
            raise OptionError("output_tag", f"{why} needs an output tag (overlaybd or TurboOCI)")
    for name, tag in (("output_tag", output_tag), ("turbo_oci", turbo_oci)):
        if tag:
            try:
                check_tag(tag)
            except ValueError as exc:
                raise OptionError(name, str(exc)) from None
    output_tags: dict[str, list[str]] = {}
    if output_tag or not turbo_oci:
        output_tags[OVERLAYBD] = [output_tag] if output_tag else chosen_tags
    if turbo_oci:
        output_tags[TURBO_OCI] = [turbo_oci]
    options = ConvertOptions(
        mkfs=mkfs,
        baselayer=Path(baselayer),
        vsize=_positive("vsize_gib", vsize_gib) * GiB,
        fstype=fstype,
        blob=blob_options(algorithm, block_kib, jobs),
        oci=oci,
        referrer=referrer,
        concurrency=_positive("concurrency", concurrency),
        work_dir=Path(work_dir) if work_dir is not None else None,
        reserve=reserve,
        dump_manifest=dump_manifest,
        engine=engine,
        tools_dir=Path(tools_dir) if tools_dir is not None else DEFAULT_TOOLS_DIR,
        sparse=not disable_sparse,
        cache=cache_settings,
    )
    for digest in digests:
        try:
            check_digest(digest)
        except ValueError as exc:
            raise OptionError("digests", str(exc)) from None
    selection = Selection(tuple(chosen_tags), tuple(digests), tuple(_platform(p) for p in platforms))
    events = events or Events(shown=False)
    if not remote:
        assert isinstance(src, LayoutRef) and isinstance(dst, LayoutRef)
        return run_pipeline(src.path, dst.path, selection, output_tags, options, events).as_dict()
    access = RemoteOptions(credentials, tls or TlsOptions(), no_upload)
    return convert_remote(src, dst, selection, output_tags, options, access, events)


def _cache_settings(
    cache: bool, directory: str | Path | None, db_type: str, db_str: str | None, lease: float, max_size: int | None
) -> CacheSettings | None:
    if not cache:
        if directory is not None or db_str is not None:
            raise OptionError("cache", "a cache directory or database is given, and the cache is off")
        return None
    if db_type not in DB_TYPES:
        raise OptionError("db_type", f"must be one of {', '.join(DB_TYPES)}, not {db_type!r}")
    if lease <= 0:
        raise OptionError("cache_lease", f"must be more than 0 seconds, not {lease}")
    if db_str is not None and db_type != "mysql":
        raise OptionError("db_str", "a database connection string is for the db type 'mysql'")
    settings = CacheSettings(Path(directory) if directory is not None else default_directory(), db_type, db_str, lease,
                             max_size)  # fmt: skip
    try:
        settings.dsn()
    except DsnError as exc:
        raise OptionError("db_str", str(exc)) from None
    return settings


@dataclass(frozen=True)
class _Ends:
    source: Location
    destination: Location
    tags: Sequence[str]
    digests: Sequence[str]
    output_tag: str | None


def _ends(
    source: str | Path | None,
    destination: str | Path | None,
    repository: str | None,
    tags: Sequence[str],
    digests: Sequence[str],
    output_tag: str | None,
) -> _Ends:
    """Where from and where to, with the tags each names folded into the selection and the output tag."""
    if repository is not None:
        if source is not None or destination is not None:
            raise OptionError("repository", "-r names both the source and the destination: give no SRC or DST")
        repo = _location("repository", DOCKER + repository)
        if not isinstance(repo, RegistryRef) or repo.tag or repo.digest:
            raise OptionError("repository", f"{repository!r} is not a repository (HOST/REPO, with no tag)")
        if len(tags) + len(digests) != 1:
            raise OptionError("tags", "-r converts one image: give one -i TAG or -g DIGEST")
        image = repo.with_tag(tags[0]) if tags else repo.with_digest(digests[0])
        return _Ends(image, repo, tags, digests, output_tag)
    if source is None or destination is None:
        raise OptionError("source", "give SRC and DST, or -r REPOSITORY")
    src = _location("source", source)
    dst = _location("destination", destination)
    if isinstance(src, LayoutRef) and src.tag:
        if tags and list(tags) != [src.tag]:
            raise OptionError("tags", f"{source} names the tag {src.tag!r} already")
        tags = [src.tag]
    elif isinstance(src, RegistryRef):
        if tags or digests:
            raise OptionError("tags", f"{source} names its image: -i and -g are for layouts and -r")
        if not (src.tag or src.digest):
            raise OptionError("source", f"{source} names no tag or digest")
        tags, digests = ([], [src.digest]) if src.digest else ([str(src.tag)], [])
    elif isinstance(src, DirRef):
        if tags or digests:
            raise OptionError("tags", f"{source} holds one image: -i and -g are for layouts and -r")
        tags = [UNTAGGED_SOURCE]
    if isinstance(dst, RegistryRef) and dst.digest:
        raise OptionError("destination", f"{destination}: images are pushed to a tag, not a digest")
    if isinstance(dst, (LayoutRef, RegistryRef)) and dst.tag:
        if output_tag and output_tag != dst.tag:
            raise OptionError("output_tag", f"{destination} names the tag {dst.tag!r} already")
        output_tag = dst.tag
        dst = replace(dst, tag=None)
    return _Ends(src, dst, tags, digests, output_tag)


def _location(name: str, text: str | Path) -> Location:
    if isinstance(text, Path):
        return LayoutRef(text)
    try:
        return parse_location(text)
    except LocationError as exc:
        raise OptionError(name, str(exc)) from None


def _why_an_output_tag(src: Location, dst: Location, by_digest: bool) -> str:
    """Why the results cannot be tagged like their sources, if they cannot."""
    if isinstance(dst, RegistryRef):
        return "pushing to a registry"  # never over the source's own tag by default
    if isinstance(src, DirRef):
        return "an image from a dir: directory"
    if by_digest:
        return "an image selected by digest"
    if isinstance(src, LayoutRef) and isinstance(dst, LayoutRef) and src.path.resolve() == dst.path.resolve():
        return "converting in place"
    return ""


def blob_options(algorithm: str, block_kib: int, jobs: int | None, zfile: bool = True, tar: bool = True) -> BlobOptions:
    """Layer blob options from their command-line form: an algorithm name, a ZFile block size in KiB (no
    ZFile at all without `zfile`), compression processes (None: one per core), a tar wrapper or not."""
    try:
        compression = Algorithm.named(algorithm) if zfile else None
    except ValueError as exc:
        raise OptionError("algorithm", str(exc)) from None
    if block_kib * KiB not in BLOCK_SIZES:
        sizes = ", ".join(str(size // KiB) for size in BLOCK_SIZES)
        raise OptionError("block_kib", f"{block_kib} KiB is not a ZFile block size ({sizes})")
    return BlobOptions(compression, block_kib * KiB, tar, _positive("jobs", jobs) if jobs else default_jobs())


def _positive(name: str, value: int) -> int:
    if value < 1:
        raise OptionError(name, f"must be at least 1, not {value}")
    return value


def _platform(text: str) -> Platform:
    try:
        return Platform.parse(text)
    except ValueError as exc:
        raise OptionError("platforms", str(exc)) from None


@dataclass
class Image:
    """One converted image, opened for reading (its layer blobs stay open until `close`)."""

    layout: Layout
    found: FoundImage
    fs: ImageFs
    _files: ExitStack

    @property
    def platform(self) -> str | None:
        return str(self.found.platform) if self.found.platform else None

    @property
    def manifest_digest(self) -> str:
        return self.found.descriptor.digest

    def ls(self, path: str | bytes = "/", long: bool = False, recursive: bool = False) -> list[str]:
        """The lines `obdlayout ls` prints."""
        return list(ls(self.fs, _bytes(path), long, recursive))

    def read(self, path: str | bytes) -> bytes:
        """A regular file's contents (symlinks followed inside the image)."""
        return b"".join(cat(self.fs, _bytes(path)))

    def iter_read(self, path: str | bytes) -> Iterator[bytes]:
        """A regular file's contents in pieces, for large files."""
        return cat(self.fs, _bytes(path))

    def close(self) -> None:
        self._files.close()

    def __enter__(self) -> "Image":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def open_image(layout: str | Path, tag: str, platform: str | None = None) -> Image:
    """The image `tag` of a converted layout (overlaybd or TurboOCI), narrowed to `platform` when it is a
    multi-arch one; use it as a context manager."""
    opened = Layout(layout)
    found = select_image(opened, tag, _platform(platform) if platform else None)
    files = ExitStack()
    try:
        fs = files.enter_context(open_filesystem(opened, found))
    except BaseException:
        files.close()
        raise
    return Image(opened, found, fs, files)


def _bytes(path: str | bytes) -> bytes:
    return path if isinstance(path, bytes) else path.encode("utf-8", "surrogateescape")
