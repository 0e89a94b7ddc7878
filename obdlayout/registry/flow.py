"""Converting from and to registries: pull with skopeo, convert the OCI layout, push with skopeo.

One run works in a directory of its own (under `-d`, default `.obdlayout-work-…` in the current directory),
removed at the end unless kept (--reserve, --dump-manifest, --no-upload):
- `pulled/`: the source as skopeo's `dir:` (every digest as the registry has it), `source/` the OCI layout
  the converter reads it through (dirformat.py);
- `out/`: the converted OCI layout, pushed only once every image converted, so a failure leaves the
  destination's tags as they were; `push/`: the `dir:` views skopeo pushes from.
A TurboOCI image keeps the original layers as its data, and the snapshotter fetches them by digest from the
image's repository: pushed to another repository than its source, the source image goes there too, untagged
(by digest). With --referrer, the referrers fallback tag is kept (referrers.py).
"""

import hashlib
import shutil
import tempfile
from collections.abc import Callable, Mapping, Sequence
from contextlib import ExitStack, suppress
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from ..convert.pipeline import TURBO_OCI, ConvertOptions
from ..convert.pipeline import convert as run_pipeline
from ..convert.progress import Events, Message
from ..lifetime import PART_SUFFIX, part_prefix, sweep_stale_parts
from ..oci.descriptor import Descriptor
from ..oci.errors import LayoutError
from ..oci.layout import Layout
from ..oci.plan import Selection
from .dirformat import dir_from_layout, layout_from_dir
from .referrers import add_referrer, referrer_descriptor
from .refs import DirRef, LayoutRef, Location, RegistryRef
from .skopeo import Skopeo, TlsOptions, gather_certificates

UNTAGGED_SOURCE = "source"  # the tag a source named by digest (or a dir:) has in the layout converted from


@dataclass(frozen=True)
class RemoteOptions:
    credentials: str | None = None  # USER:PASSWORD
    tls: TlsOptions = field(default_factory=TlsOptions)
    no_upload: bool = False  # convert, and keep the result in the work directory


def default_work_root(source: Location, destination: Location) -> Path:
    """In the current directory (like the Go convertor's `tmp_conv`), named after the run's two ends."""
    tag = hashlib.sha256(f"{source} {destination}".encode()).hexdigest()[:12]
    return Path.cwd() / f".obdlayout-work-{tag}"


def convert_remote(
    source: Location,
    destination: Location,
    selection: Selection,
    output_tags: Mapping[str, Sequence[str]],
    options: ConvertOptions,
    remote: RemoteOptions,
    events: Events,
) -> dict[str, Any]:
    """Convert what `selection` names at `source` into `destination`, either of which may be a registry or a
    `dir:`; returns the pipeline's report with what was pulled, pushed or kept."""
    root = options.work_dir or default_work_root(source, destination)
    made_root = not root.exists()
    root.mkdir(parents=True, exist_ok=True)
    sweep_stale_parts(root)  # runs that were killed
    run = Path(tempfile.mkdtemp(prefix=part_prefix("run"), suffix=PART_SUFFIX, dir=root))
    keep = options.reserve or options.dump_manifest or remote.no_upload
    warnings: list[str] = []

    def warn(text: str) -> None:
        warnings.append(text)
        events.send(Message(text, warning=True))

    try:
        hosts = sorted({end.host for end in (source, destination) if isinstance(end, RegistryRef)})
        with ExitStack() as stack:
            skopeo = None
            if hosts:
                cert_dir = gather_certificates(remote.tls, run / "tls")
                skopeo = stack.enter_context(Skopeo(remote.tls, cert_dir, remote.credentials, hosts))
            view_tag = selection.tags[0] if selection.tags else UNTAGGED_SOURCE
            source_layout = _source_layout(source, view_tag, run, skopeo, events)
            out = destination.path if isinstance(destination, LayoutRef) else run / "out"
            pipeline_options = (
                options if isinstance(destination, LayoutRef) else replace(options, work_dir=run / "layers")
            )
            if isinstance(source, RegistryRef) and options.cache is not None:
                # The Go convertor's columns: the cache's rows say which registry repository they came from.
                origin = (source.host, source.repository)
                pipeline_options = replace(pipeline_options, cache=replace(options.cache, origin=origin))
            report = run_pipeline(source_layout, out, selection, output_tags, pipeline_options, events).as_dict()
            if isinstance(destination, DirRef):
                _write_dir(out, report["outputs"], destination)
            elif isinstance(destination, RegistryRef) and remote.no_upload:
                report["kept"] = str(out)
                events.send(Message(f"--no-upload: the converted image is the OCI layout {out}"))
            elif isinstance(destination, RegistryRef):
                assert skopeo is not None
                scratch = run / "push"
                scratch.mkdir()
                push = _Push(skopeo, scratch, events, warn)
                report["pushed"] = push.outputs(
                    source, source_layout, out, destination, report["outputs"], options.referrer
                )
        if isinstance(source, RegistryRef):
            report["pulled"] = {"reference": str(source), "digest": _source_digest(source_layout, view_tag)}
        report["warnings"] = [*report["warnings"], *warnings]
        if keep:
            report["work_dir"] = str(run)
        return report
    finally:
        if not keep:
            shutil.rmtree(run, ignore_errors=True)
            if made_root:
                with suppress(OSError):  # another run's directory is in it
                    root.rmdir()


def _source_layout(source: Location, view_tag: str, run: Path, skopeo: Skopeo | None, events: Events) -> Path:
    """The OCI layout the converter reads the source through."""
    if isinstance(source, LayoutRef):
        return source.path
    if isinstance(source, RegistryRef):
        assert skopeo is not None
        events.send(Message(f"pulling {source}"))
        pulled = DirRef(run / "pulled")
        skopeo.copy(source, pulled)
        directory = pulled.path
    else:
        directory = source.path
    layout_from_dir(directory, run / "source", view_tag)
    return run / "source"


def _source_digest(layout: Path, tag: str) -> str:
    return Layout(layout).resolve_tag(tag).digest


def _write_dir(out: Path, outputs: list[dict[str, Any]], destination: DirRef) -> None:
    """The converted image as a skopeo `dir:` (its files copied where they cannot be linked)."""
    if len(outputs) != 1:
        raise ValueError("a dir: destination holds one image")
    if destination.path.exists() and (not destination.path.is_dir() or any(destination.path.iterdir())):
        raise LayoutError(str(destination.path), "is not an empty directory (a dir: destination is written whole)")
    layout = Layout(out)
    with suppress(FileNotFoundError):
        destination.path.rmdir()
    dir_from_layout(layout, layout.resolve_tag(outputs[0]["tag"]), destination.path, copy=True)


@dataclass
class _Push:
    skopeo: Skopeo
    scratch: Path
    events: Events
    warn: Callable[[str], None]

    def outputs(
        self, source: Location, source_layout: Path, out: Path, destination: RegistryRef,
        outputs: list[dict[str, Any]], referrer: bool,
    ) -> list[dict[str, str]]:  # fmt: skip
        """Push each converted image to its tag in `destination`, with what it needs there."""
        layout, sources = Layout(out), Layout(source_layout)
        pushed = []
        for output in outputs:
            top, subject = layout.resolve_tag(output["tag"]), sources.resolve_digest(output["source"])
            if output["format"] == TURBO_OCI and not (
                isinstance(source, RegistryRef) and source.name == destination.name
            ):
                # The TurboOCI layers' data: the source image, untagged, in the destination repository.
                self._push(sources, subject, destination.with_digest(subject.digest))
            target = destination.with_tag(output["tag"])
            self._push(layout, top, target)
            pushed.append({"reference": str(target), "digest": top.digest})
            if referrer:
                described = referrer_descriptor(layout, top)
                add_referrer(self.skopeo, destination, subject.digest, described, self.scratch, self.warn)
        return pushed

    def _push(self, layout: Layout, top: Descriptor, target: RegistryRef) -> None:
        self.events.send(Message(f"pushing {target}"))
        view = Path(tempfile.mkdtemp(prefix="push-", dir=self.scratch)) / "image"
        dir_from_layout(layout, top, view)
        self.skopeo.copy(DirRef(view), target)
