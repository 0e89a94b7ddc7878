"""The layer and manifest cache as a conversion uses it: look up, store, claim, pin.

- A layer is found by its key (convert/engine.layer_key: the source chain, and the engine with every option
  that decides its bytes). Its record names each file it needs (blobs, and the files the next layer is
  converted on) by digest: in the content store, or the source layer blob (a TurboOCI target). A hit is
  used only once every stored file it names is there and hashes to its digest; one that does not is
  dropped, with a warning, and the layer converted again.
- A converter that misses claims the key first. One that finds the key claimed by another waits for that
  one's result instead of converting the layer too, and takes the claim over when its lease runs out (the
  owner died). A running conversion renews its claims and pins (`Heartbeat`).
- Blobs a conversion takes from the store, or puts there, are pinned while it runs, so `cache gc` leaves
  them alone.
- The database failing is never the conversion's failure: the cache says so once, as a warning, and is off
  for the rest of the run.
"""

import json
import os
import threading
import time
import uuid
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from ..convert.artefacts import ConvertedLayer, output_from_record
from ..formats.blob import StackLayer
from ..oci.descriptor import Descriptor
from ..oci.digest import BlobRef, digest_file
from ..oci.output import BuiltNode
from ..units import GiB
from .db import CacheDatabaseError, Database, open_database
from .dsn import Dsn, DsnError, parse_dsn
from .store import ContentStore

DB_TYPES = ("sqlite", "mysql")
CACHE_OFF = "the cache is off for the rest of this run"
DEFAULT_LEASE = 60.0  # seconds a claim or pin lasts unless renewed
DEFAULT_MAX_SIZE = 20 * GiB
POLL_SECONDS = 0.5  # how often a converter waiting for another's layer looks again
STORE, SOURCE = "store", "source"  # where a record's file is: the content store, or the source layout


def default_directory() -> Path:
    """$XDG_CACHE_HOME/obdlayout, or ~/.cache/obdlayout."""
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "obdlayout"


@dataclass(frozen=True)
class CacheSettings:
    directory: Path = field(default_factory=default_directory)  # the content store (and the SQLite index)
    db_type: str = "sqlite"  # or "mysql"
    db_str: str | None = None  # the MySQL DSN
    lease: float = DEFAULT_LEASE
    max_size: int | None = DEFAULT_MAX_SIZE  # the store is trimmed to this after a conversion (None: never)
    origin: tuple[str, str] = ("", "")  # the source's registry host and repository, for the Go columns

    def dsn(self) -> Dsn | None:
        if self.db_type != "mysql":
            return None
        if not self.db_str:
            raise DsnError("--db-type mysql needs --db-str")
        return parse_dsn(self.db_str)

    def describe(self) -> str:
        dsn = self.dsn() if self.db_type == "mysql" else None
        return f"{dsn} + {self.directory}" if dsn else str(self.directory)


@dataclass
class Cache:
    """The cache of one run, in one process (each worker process opens its own; `owner` is the run's)."""

    settings: CacheSettings
    owner: str
    warn: Callable[[str], None]
    problem: str | None = None  # why the cache went off, if it did
    store: ContentStore = field(init=False)
    _db: Database | None = field(default=None, init=False)
    _pid: int = field(default=0, init=False)

    def __post_init__(self) -> None:
        self.store = ContentStore(self.settings.directory)

    @property
    def on(self) -> bool:
        return self.problem is None

    def _database(self) -> Database:
        if self._db is None or self._pid != os.getpid():  # a connection never crosses a fork
            self.store.open()
            self._db = open_database(self.settings.db_type, self.settings.directory, self.settings.dsn())
            self._pid = os.getpid()
        return self._db

    def _guarded(self, action: Callable[[Database], Any], default: Any = None) -> Any:
        """`action` on the database; if the database fails (or cannot be opened), the cache is off."""
        if not self.on:
            return default
        try:
            return action(self._database())
        except (CacheDatabaseError, DsnError, OSError) as exc:
            self.problem = str(exc)
            self.warn(f"{CACHE_OFF}: {exc}")
            return default

    def _sql(self, sql: str, params: Sequence[Any] = (), default: Any = None) -> Any:
        return self._guarded(lambda db: db.execute(sql, params), default)

    def check(self) -> bool:
        """Open the cache now (a problem becomes a warning, once)."""
        return bool(self._guarded(lambda db: True, False))

    # -- layers ----------------------------------------------------------------------------------------

    def lookup_layer(self, key: str, source_blob: Callable[[str], Path]) -> ConvertedLayer | None:
        """The stored layer of `key`, its files checked; `source_blob` finds a source layer blob by digest."""
        rows = self._sql(_LAYER_RECORD, (key,), [])
        if not rows:
            return None
        record = json.loads(rows[0][0])
        stored = stored_refs(record)
        self.pin(ref.digest for ref in stored)
        damaged = [ref for ref in stored if not self.store.verify(ref)]
        if damaged:
            for ref in damaged:
                self.store.remove(ref.digest)
            self._sql("DELETE FROM overlaybd_layers WHERE options_key = ?", (key,))
            self.warn(f"cache: blob {damaged[0].digest} of layer {key} is missing or damaged; converting it again")
            return None
        self._sql("UPDATE overlaybd_layers SET last_used = {now} WHERE options_key = ?", (key,))
        return _layer_from_record(record, self.store, source_blob)

    def store_layer(self, key: str, chain_id: str, layer: ConvertedLayer, home: Path) -> None:
        """Keep `layer` (made in `home`) under `key`: its own files into the store, then its record."""
        if not self.on:
            return
        record, own = _layer_record(layer, home)
        stored = stored_refs(record)
        self.pin(ref.digest for ref in stored)
        for ref in stored:
            self.store.put_file(own[ref.digest], ref)
        host, repo = self.settings.origin
        ref = layer.output.ref
        params = (host, repo, chain_id, ref.digest, ref.size, key, json.dumps(record))
        self._sql(_INSERT_LAYER, params)

    # -- claims ----------------------------------------------------------------------------------------

    @property
    def _me(self) -> str:
        """Claims and pins are this process's: two workers of one run must not both take a layer."""
        return f"{self.owner}/{os.getpid()}"

    def claim(self, key: str) -> bool:
        """Whether this process may convert the layer `key` now: nobody else is (or their lease ran out)."""
        name = f"layer:{key}"

        def take(db: Database) -> bool:
            db.execute(db.claim_sql(), (name, self._me, self.settings.lease))
            rows = db.execute("SELECT owner FROM obdlayout_claims WHERE name = ?", (name,))
            if rows and rows[0][0] != self._me and _dead_here(rows[0][0]):
                take_over = "UPDATE obdlayout_claims SET owner = ?, expires = {now} + ? WHERE name = ? AND owner = ?"
                db.execute(take_over, (self._me, self.settings.lease, name, rows[0][0]))
                rows = db.execute("SELECT owner FROM obdlayout_claims WHERE name = ?", (name,))
            return bool(rows) and rows[0][0] == self._me

        return bool(self._guarded(take, True))

    def release(self, key: str) -> None:
        self._sql("DELETE FROM obdlayout_claims WHERE name = ? AND owner = ?", (f"layer:{key}", self._me))

    def await_layer(
        self, key: str, source_blob: Callable[[str], Path], waiting: Callable[[], None]
    ) -> ConvertedLayer | None:
        """The layer `key` from the cache, if another converter stored it or is making it (then once it is
        done); None once this process holds its claim, to convert it, or if the cache is off. `waiting` is
        called once if there is a wait."""
        told = False
        while self.on:
            found = self.lookup_layer(key, source_blob)
            if found is not None:
                return found
            if self.claim(key):
                # Stored between our look and our claim (its maker stores, then releases)?
                found = self.lookup_layer(key, source_blob)
                if found is not None:
                    self.release(key)
                return found
            if not told:
                waiting()
                told = True
            time.sleep(POLL_SECONDS)
        return None

    # -- pins ------------------------------------------------------------------------------------------

    def pin(self, digests: Iterable[str]) -> None:
        rows = [(digest, self._me, self.settings.lease) for digest in dict.fromkeys(digests)]
        for row in rows:
            self._sql("{insert_ignore} INTO obdlayout_pins VALUES (?, ?, {now} + ?)", row)

    def renew(self) -> None:
        """Extend the claims and pins of this run (all its processes) by a lease."""
        for table in ("obdlayout_claims", "obdlayout_pins"):
            sql = f"UPDATE {table} SET expires = {{now}} + ? WHERE owner LIKE ?"
            self._sql(sql, (self.settings.lease, f"{self.owner}/%"))

    def end(self) -> None:
        """This run is over: the claims and pins of all its processes go."""
        for table in ("obdlayout_claims", "obdlayout_pins"):
            self._sql(f"DELETE FROM {table} WHERE owner LIKE ?", (f"{self.owner}/%",))
        self.close()

    def close(self) -> None:
        if self._db is not None and self._pid == os.getpid():
            self._db.close()
        self._db = None

    # -- manifests -------------------------------------------------------------------------------------

    def lookup_output(
        self, key: str, source_blob: Callable[[str], Path]
    ) -> tuple[BuiltNode, dict[str, tuple[Path, BlobRef]]] | None:
        """A converted image stored under `key`: its documents, and every file DST must hold for it."""
        rows = self._sql(_MANIFEST_RECORD, (key,), [])
        if not rows:
            return None
        record = json.loads(rows[0][0])
        documents = [BlobRef(d, s) for d, s in record["documents"]]
        files = [(where, BlobRef(d, s)) for where, d, s in record["files"]]
        stored = documents + [ref for where, ref in files if where == STORE]
        self.pin(ref.digest for ref in stored)
        found = {ref.digest: (self._path(where, ref.digest, source_blob), ref) for where, ref in files}
        if not all(self.store.verify(ref) for ref in stored) or not all(p.exists() for p, _ in found.values()):
            self._sql("DELETE FROM overlaybd_manifests WHERE options_key = ?", (key,))
            self.warn(f"cache: a blob of the converted image {record['descriptor']['digest']} is gone; converting it")
            return None
        self._sql("UPDATE overlaybd_manifests SET last_used = {now} WHERE options_key = ?", (key,))
        node = BuiltNode(
            Descriptor.parse(record["descriptor"]),
            tuple(self.store.path(ref.digest).read_bytes() for ref in documents),
            tuple(BlobRef(d, s) for d, s in record["layers"]),
        )
        return node, found

    def store_output(
        self, key: str, source_digest: str, node: BuiltNode, files: Sequence[tuple[Path, BlobRef]],
        source_blobs: set[str],
    ) -> None:  # fmt: skip
        """Keep the converted image `node` (converted from `source_digest`) under `key`, with `files`, all DST
        must hold for it: into the store, except source blobs (`source_blobs`: TurboOCI targets)."""
        if not self.on:
            return
        documents = [self.store.put_bytes(data) for data in node.blobs]
        self.pin([*(ref.digest for ref in documents), *(ref.digest for _, ref in files)])
        named = []
        for path, ref in files:
            where = SOURCE if ref.digest in source_blobs else STORE
            if where == STORE:
                self.store.put_file(path, ref)
            named.append([where, ref.digest, ref.size])
        record = {
            "descriptor": dict(node.descriptor.fields),
            "documents": [[ref.digest, ref.size] for ref in documents],
            "layers": [[ref.digest, ref.size] for ref in node.layers],
            "files": named,
        }
        host, repo = self.settings.origin
        top = node.descriptor
        params = (host, repo, source_digest, top.digest, top.size, top.media_type, key, json.dumps(record))
        self._sql(_INSERT_MANIFEST, params)

    def _path(self, where: str, digest: str, source_blob: Callable[[str], Path]) -> Path:
        return self.store.path(digest) if where == STORE else source_blob(digest)


def new_owner() -> str:
    """A run's identity in claims and pins: HOST:RANDOM (each process adds /PID: `Cache._me`)."""
    return f"{os.uname().nodename[:40]}:{uuid.uuid4().hex[:16]}"


def _dead_here(owner: str) -> bool:
    """Whether `owner` (HOST:RANDOM/PID) was a process of this host that is gone: its claims need not wait
    for their lease. (A reused PID only makes the wait as long as the lease.)"""
    host, _, rest = owner.partition(":")
    pid = rest.rpartition("/")[2]
    if host != os.uname().nodename[:40] or not pid.isdigit():
        return False
    try:
        os.kill(int(pid), 0)
    except ProcessLookupError:
        return True
    except PermissionError:
        return False
    return False


# The heartbeat thread uses the database while the main thread may fork image workers: a fork while the
# thread is inside the database library would leave the child a lock nobody will release.
_BEATING = threading.Lock()
os.register_at_fork(before=_BEATING.acquire, after_in_parent=_BEATING.release, after_in_child=_BEATING.release)


class Heartbeat:
    """Renews a run's claims and pins every third of a lease, in a thread, until stopped."""

    def __init__(self, cache: Cache) -> None:
        self._cache = cache
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._beat, name="obdlayout-cache-heartbeat", daemon=True)

    def __enter__(self) -> "Heartbeat":
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()

    def _beat(self) -> None:
        while not self._stop.wait(self._cache.settings.lease / 3):
            with _BEATING:
                self._cache.renew()


_LAYER_RECORD = "SELECT record FROM overlaybd_layers WHERE options_key = ? AND record IS NOT NULL LIMIT 1"
_MANIFEST_RECORD = "SELECT record FROM overlaybd_manifests WHERE options_key = ? AND record IS NOT NULL LIMIT 1"
_INSERT_LAYER = (
    "{insert_ignore} INTO overlaybd_layers (host, repo, chain_id, data_digest, data_size, options_key, record,"
    " last_used) VALUES (?, ?, ?, ?, ?, ?, ?, {now})"
)
_INSERT_MANIFEST = (
    "{insert_ignore} INTO overlaybd_manifests (host, repo, src_digest, out_digest, data_size, mediatype,"
    " options_key, record, last_used) VALUES (?, ?, ?, ?, ?, ?, ?, ?, {now})"
)


# -- records: a converted layer with its files named by digest ---------------------------------------------


def _layer_record(layer: ConvertedLayer, home: Path) -> tuple[dict[str, Any], dict[str, Path]]:
    """The layer with each file as [where, digest, size], and its own files (those in `home`, which go to the
    store) by digest; any other file is a source layer blob (a TurboOCI target), found again by digest."""
    refs = {Path(path): ref for path, ref in layer.blobs}
    own: dict[str, Path] = {}

    def named(given: str | os.PathLike[str] | None) -> list[Any] | None:
        if given is None:
            return None
        path = Path(given)
        ref = refs.get(path) or digest_file(path)  # the lower-only files (fs.meta, gzip.meta) are small
        refs[path] = ref
        if path.is_relative_to(home):
            own[ref.digest] = path
        return [STORE if path.is_relative_to(home) else SOURCE, ref.digest, ref.size]

    record = {
        "output": asdict(layer.output),
        "blobs": [named(path) for path, _ in layer.blobs],
        "lower": [{k: named(getattr(s, k)) for k in ("blob", "target", "gzip_index")} for s in layer.lower],
        "warnings": list(layer.warnings),
    }
    return record, own


def stored_refs(record: Mapping[str, Any]) -> list[BlobRef]:
    """The content-store files a layer record names, once each."""
    named = [*record["blobs"], *(f for lower in record["lower"] for f in lower.values() if f is not None)]
    return list({d: BlobRef(d, s) for where, d, s in named if where == STORE}.values())


def _layer_from_record(
    record: Mapping[str, Any], store: ContentStore, source_blob: Callable[[str], Path]
) -> ConvertedLayer:
    def path(named: Sequence[Any]) -> Path:
        where, digest, _ = named
        return store.path(digest) if where == STORE else source_blob(digest)

    def optional(named: Sequence[Any] | None) -> Path | None:
        return None if named is None else path(named)

    blobs = tuple((path(f), BlobRef(f[1], f[2])) for f in record["blobs"])
    lower = tuple(
        StackLayer(path(s["blob"]), optional(s["target"]), optional(s["gzip_index"])) for s in record["lower"]
    )
    return ConvertedLayer(output_from_record(record["output"]), blobs, lower, tuple(record["warnings"]))
