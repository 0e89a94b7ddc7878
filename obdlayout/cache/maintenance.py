"""Looking after the cache: what is in it (`entries`, `stats`), whether its blobs are sound (`verify`), and
making room (`collect`, and `trim` after a conversion). Blobs pinned by a running conversion are never
removed, nor are rows the Go convertor wrote (they have no record of ours)."""

import json
from collections import Counter
from contextlib import closing, suppress
from dataclasses import asdict, dataclass
from typing import Any

from ..oci.digest import BlobRef
from .cache import STORE, CacheSettings, stored_refs
from .db import SEED_MIGRATION, CacheDatabaseError, Database, MysqlDatabase, open_database
from .dsn import DsnError
from .store import ContentStore

TABLES = {"layer": "overlaybd_layers", "manifest": "overlaybd_manifests"}
_SOURCE_COLUMN = {"layer": "chain_id", "manifest": "src_digest"}
_OUTPUT_COLUMN = {"layer": "data_digest", "manifest": "out_digest"}


@dataclass(frozen=True)
class Entry:
    kind: str  # "layer" or "manifest"
    key: str  # options_key: the hash of everything that decided the output
    source: str  # the source chain ID (layer) or manifest digest
    output: str  # the converted layer blob or image digest
    host: str
    repo: str
    last_used: float  # seconds since the epoch, by the database's clock
    blobs: tuple[BlobRef, ...]  # the stored blobs it needs

    def as_dict(self) -> dict[str, Any]:
        described = asdict(self)
        described["blobs"] = [asdict(ref) for ref in self.blobs]
        return described


def entries(settings: CacheSettings) -> list[Entry]:
    with closing(_database(settings)) as db:
        return _entries(db)


def _database(settings: CacheSettings) -> Database:
    return open_database(settings.db_type, settings.directory, settings.dsn())


def _entries(db: Database) -> list[Entry]:
    found = []
    for kind, table in TABLES.items():
        rows = db.execute(
            f"SELECT options_key, {_SOURCE_COLUMN[kind]}, {_OUTPUT_COLUMN[kind]}, host, repo, last_used, record"
            f" FROM {table} WHERE record IS NOT NULL ORDER BY last_used"
        )
        for key, source, output, host, repo, last_used, record in rows:
            blobs = _blobs(kind, json.loads(record))
            found.append(Entry(kind, key, source, output, host, repo, float(last_used), blobs))
    return sorted(found, key=lambda entry: entry.last_used)


def _blobs(kind: str, record: dict[str, Any]) -> tuple[BlobRef, ...]:
    if kind == "layer":
        return tuple(stored_refs(record))
    documents = [BlobRef(d, s) for d, s in record["documents"]]
    return tuple(documents + [BlobRef(d, s) for where, d, s in record["files"] if where == STORE])


def stats(settings: CacheSettings) -> dict[str, Any]:
    store = ContentStore(settings.directory)
    sizes = dict(store.entries())
    listed = entries(settings)
    referenced = {ref.digest for entry in listed for ref in entry.blobs}
    return {
        "location": settings.describe(),
        "backend": settings.db_type,
        "layers": sum(entry.kind == "layer" for entry in listed),
        "manifests": sum(entry.kind == "manifest" for entry in listed),
        "blobs": len(sizes),
        "bytes": sum(sizes.values()),
        "unreferenced_blobs": len(set(sizes) - referenced),
    }


def verify(settings: CacheSettings) -> dict[str, Any]:
    """Hash every stored blob; a damaged one is removed with the entries that need it."""
    store = ContentStore(settings.directory)
    damaged = [digest for digest, size in store.entries() if not store.verify(BlobRef(digest, size))]
    dropped = 0
    with closing(_database(settings)) as db:
        for entry in _entries(db):
            if any(ref.digest in damaged or not store.has(ref) for ref in entry.blobs):
                _drop(db, entry)
                dropped += 1
    for digest in damaged:
        store.remove(digest)
    return {"checked": len(damaged) + len(list(store.entries())), "damaged": damaged, "entries_dropped": dropped}


def collect(settings: CacheSettings, max_size: int | None = None, older_than: float | None = None) -> dict[str, Any]:
    """Remove entries last used more than `older_than` seconds ago, then the least recently used ones while the
    store holds more than `max_size` bytes, then every blob no entry needs and no running conversion pins."""
    store = ContentStore(settings.directory)
    with closing(_database(settings)) as db:
        for table in ("obdlayout_claims", "obdlayout_pins"):
            db.execute(f"DELETE FROM {table} WHERE expires < {{now}}")
        pinned = {row[0] for row in db.execute("SELECT digest FROM obdlayout_pins")}
        now = float(db.execute("SELECT {now}")[0][0])
        listed = _entries(db)
        dropped = 0
        if older_than is not None:
            for entry in [e for e in listed if e.last_used < now - older_than]:
                _drop(db, entry)
                listed.remove(entry)
                dropped += 1
        sizes = dict(store.entries())
        needed = Counter(digest for entry in listed for digest in {ref.digest for ref in entry.blobs})
        total = sum(size for digest, size in sizes.items() if needed[digest] > 0 or digest in pinned)
        while max_size is not None and total > max_size and listed:
            entry = listed.pop(0)  # the least recently used
            _drop(db, entry)
            dropped += 1
            for digest in {ref.digest for ref in entry.blobs}:
                needed[digest] -= 1
                if needed[digest] == 0 and digest not in pinned:
                    total -= sizes.get(digest, 0)
    removed = [digest for digest in sizes if needed[digest] <= 0 and digest not in pinned]
    for digest in removed:
        store.remove(digest)
    freed = sum(sizes[digest] for digest in removed)
    return {"entries_dropped": dropped, "blobs_removed": len(removed), "bytes_freed": freed}


def trim(settings: CacheSettings, max_size: int) -> None:
    """After a conversion: `collect` down to `max_size` if the store holds more (a failure changes nothing)."""
    if sum(size for _, size in ContentStore(settings.directory).entries()) > max_size:
        with suppress(CacheDatabaseError, DsnError, OSError, ValueError):  # never worth failing a conversion
            collect(settings, max_size=max_size)


def migrate(settings: CacheSettings) -> list[str]:
    """Turn a database made from the Go convertor's schema into one both tools use; the statements run."""
    dsn = settings.dsn()
    if dsn is None:
        raise ValueError("migrate is for a MySQL/MariaDB database (--db-type mysql --db-str DSN)")
    with closing(MysqlDatabase(dsn, create=False)) as db:
        if db.execute("SHOW COLUMNS FROM overlaybd_layers LIKE 'options_key'"):
            return []
        for statement in SEED_MIGRATION:
            db.execute(statement)
    return list(SEED_MIGRATION)


def _drop(db: Database, entry: Entry) -> None:
    db.execute(f"DELETE FROM {TABLES[entry.kind]} WHERE options_key = ?", (entry.key,))
