"""The cache index: which layer chain and options gave which converted layer, which source manifest and
options gave which converted image, who is converting what (claims), and which stored blobs a running
conversion uses (pins). In SQLite beside the content store by default; in MySQL/MariaDB for fleets.

The tables are the Go convertor's two (convertor-spec.md §4.2), so a database made from its schema serves
both tools, with what a correct key needs added (`options_key`: the hash of everything that decides the
output bytes; its rows are never matched by ours, which all have one) and our record of each entry:
- `overlaybd_layers(host, repo, chain_id, data_digest, data_size)` + `options_key, record, last_used`;
- `overlaybd_manifests(host, repo, src_digest, out_digest, data_size, mediatype)` + the same three;
- `obdlayout_claims(name, owner, expires)`, `obdlayout_pins(digest, owner, expires)`.
Times are seconds since the epoch by the database's own clock, so machines sharing one need not agree on
theirs. `SEED_MIGRATION` turns a database made from the Go convertor's schema into this one.
"""

import os
import sqlite3
import threading
from collections.abc import Sequence
from contextlib import suppress
from pathlib import Path
from typing import Any, Protocol

from ..errors import ObdlayoutError
from .dsn import Dsn

SQLITE_FILE = "index.sqlite"
BUSY_TIMEOUT = 60.0  # seconds a SQLite writer waits for another


class CacheDatabaseError(ObdlayoutError):
    """The cache index cannot be reached or used."""


# Digests, media types and keys are ASCII: declared so, the widened primary keys fit InnoDB's 3072 bytes.
_LAYERS_COLUMNS = """
  host VARCHAR(255) NOT NULL, repo VARCHAR(255) NOT NULL, chain_id VARCHAR(255) CHARACTER SET ascii NOT NULL,
  data_digest VARCHAR(255) NOT NULL, data_size BIGINT NOT NULL,
  options_key VARCHAR(64) CHARACTER SET ascii NOT NULL DEFAULT '', record MEDIUMTEXT NULL,
  last_used DOUBLE NOT NULL DEFAULT 0"""
_MANIFESTS_COLUMNS = """
  host VARCHAR(255) NOT NULL, repo VARCHAR(255) NOT NULL, src_digest VARCHAR(255) CHARACTER SET ascii NOT NULL,
  out_digest VARCHAR(255) NOT NULL, data_size BIGINT NOT NULL, mediatype VARCHAR(255) CHARACTER SET ascii NOT NULL,
  options_key VARCHAR(64) CHARACTER SET ascii NOT NULL DEFAULT '', record MEDIUMTEXT NULL,
  last_used DOUBLE NOT NULL DEFAULT 0"""
_LEASES = [
    "CREATE TABLE IF NOT EXISTS obdlayout_claims (name VARCHAR(255) CHARACTER SET ascii NOT NULL PRIMARY KEY, "
    "owner VARCHAR(64) NOT NULL, expires DOUBLE NOT NULL)",
    "CREATE TABLE IF NOT EXISTS obdlayout_pins (digest VARCHAR(100) CHARACTER SET ascii NOT NULL, "
    "owner VARCHAR(64) CHARACTER SET ascii NOT NULL, expires DOUBLE NOT NULL, PRIMARY KEY (digest, owner))",
]
MYSQL_SCHEMA = [
    f"CREATE TABLE IF NOT EXISTS overlaybd_layers ({_LAYERS_COLUMNS},"
    " PRIMARY KEY (host, repo, chain_id, options_key), KEY index_registry_chainId (host, chain_id),"
    " KEY index_options_key (options_key)) DEFAULT CHARSET=utf8",
    f"CREATE TABLE IF NOT EXISTS overlaybd_manifests ({_MANIFESTS_COLUMNS},"
    " PRIMARY KEY (host, repo, src_digest, mediatype, options_key),"
    " KEY index_registry_src_digest (host, src_digest, mediatype), KEY index_options_key (options_key))"
    " DEFAULT CHARSET=utf8",
    *_LEASES,
]
# For a database made from the Go convertor's schema (its `mysql.conf`); `obdlayout cache migrate` runs it.
SEED_MIGRATION = [
    "ALTER TABLE overlaybd_layers MODIFY chain_id VARCHAR(255) CHARACTER SET ascii NOT NULL,"
    " ADD COLUMN options_key VARCHAR(64) CHARACTER SET ascii NOT NULL DEFAULT '',"
    " ADD COLUMN record MEDIUMTEXT NULL, ADD COLUMN last_used DOUBLE NOT NULL DEFAULT 0,"
    " DROP PRIMARY KEY, ADD PRIMARY KEY (host, repo, chain_id, options_key), ADD KEY index_options_key (options_key)",
    "ALTER TABLE overlaybd_manifests MODIFY src_digest VARCHAR(255) CHARACTER SET ascii NOT NULL,"
    " MODIFY mediatype VARCHAR(255) CHARACTER SET ascii NOT NULL,"
    " ADD COLUMN options_key VARCHAR(64) CHARACTER SET ascii NOT NULL DEFAULT '',"
    " ADD COLUMN record MEDIUMTEXT NULL, ADD COLUMN last_used DOUBLE NOT NULL DEFAULT 0,"
    " DROP PRIMARY KEY, ADD PRIMARY KEY (host, repo, src_digest, mediatype, options_key),"
    " ADD KEY index_options_key (options_key)",
    *_LEASES,
]
SQLITE_SCHEMA = [
    f"CREATE TABLE IF NOT EXISTS overlaybd_layers ({_LAYERS_COLUMNS.replace(' CHARACTER SET ascii', '')},"
    " PRIMARY KEY (host, repo, chain_id, options_key))",
    "CREATE INDEX IF NOT EXISTS index_layers_options_key ON overlaybd_layers (options_key)",
    f"CREATE TABLE IF NOT EXISTS overlaybd_manifests ({_MANIFESTS_COLUMNS.replace(' CHARACTER SET ascii', '')},"
    " PRIMARY KEY (host, repo, src_digest, mediatype, options_key))",
    "CREATE INDEX IF NOT EXISTS index_manifests_options_key ON overlaybd_manifests (options_key)",
    *(statement.replace(" CHARACTER SET ascii", "") for statement in _LEASES),
]


class Database(Protocol):
    """One connection to the index. SQL is written with `?` placeholders, `{now}` for the database's clock and
    `{insert_ignore}` for an INSERT that leaves an existing row alone."""

    name: str

    def execute(self, sql: str, params: Sequence[Any] = ()) -> list[tuple[Any, ...]]: ...

    def claim_sql(self) -> str:
        """Insert claim (name, owner, lease seconds), or take it over if it expired or is ours already."""
        ...

    def close(self) -> None: ...


class SqliteDatabase:
    name = "sqlite"
    _INSERT_IGNORE = "INSERT OR IGNORE"
    _NOW = "((julianday('now') - 2440587.5) * 86400.0)"

    def __init__(self, path: Path) -> None:
        self.path = path
        try:
            self._connection = sqlite3.connect(
                path, timeout=BUSY_TIMEOUT, isolation_level=None, check_same_thread=False
            )
            self._lock = threading.Lock()
            self._connection.execute("PRAGMA journal_mode=WAL")
            for statement in SQLITE_SCHEMA:
                self._connection.execute(statement)
        except sqlite3.Error as exc:
            raise CacheDatabaseError(str(path), f"cannot open the cache index: {exc}") from None

    def execute(self, sql: str, params: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
        try:
            with self._lock:
                query = sql.format(now=self._NOW, insert_ignore=self._INSERT_IGNORE)
                return list(self._connection.execute(query, tuple(params)).fetchall())
        except sqlite3.Error as exc:
            raise CacheDatabaseError(str(self.path), str(exc)) from None

    def claim_sql(self) -> str:
        return (
            "INSERT INTO obdlayout_claims (name, owner, expires) VALUES (?, ?, {now} + ?) ON CONFLICT(name) DO UPDATE"
            " SET owner = excluded.owner, expires = excluded.expires"
            " WHERE obdlayout_claims.expires < {now} OR obdlayout_claims.owner = excluded.owner"
        )

    def close(self) -> None:
        self._connection.close()


class MysqlDatabase:
    name = "mysql"
    _INSERT_IGNORE = "INSERT IGNORE"
    _NOW = "UNIX_TIMESTAMP(NOW(6))"

    def __init__(self, dsn: Dsn, create: bool = True) -> None:
        self.dsn = dsn
        self._lock = threading.Lock()
        import pymysql  # only a MySQL cache needs it: not loaded at every start (20 ms)

        self._error: type[Exception] = pymysql.MySQLError
        try:
            self._connection = pymysql.connect(
                host=dsn.host, port=dsn.port, unix_socket=dsn.socket, user=dsn.user, password=dsn.password,
                database=dsn.database, autocommit=True, connect_timeout=10, read_timeout=60, write_timeout=60,
                charset="utf8mb4",
            )  # fmt: skip
        except self._error as exc:
            raise CacheDatabaseError(str(dsn), f"cannot connect to the cache database: {_message(exc, dsn)}") from None
        if create:
            self._check_schema()

    def _check_schema(self) -> None:
        tables = {row[0] for row in self.execute("SHOW TABLES")}
        if "overlaybd_layers" in tables and not self.execute("SHOW COLUMNS FROM overlaybd_layers LIKE 'options_key'"):
            raise CacheDatabaseError(
                str(self.dsn),
                "has the Go convertor's tables without obdlayout's columns: run `obdlayout cache migrate`",
            )
        for statement in MYSQL_SCHEMA:
            self.execute(statement)

    def execute(self, sql: str, params: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
        try:
            with self._lock, self._connection.cursor() as cursor:
                query = sql.format(now=self._NOW, insert_ignore=self._INSERT_IGNORE).replace("?", "%s")
                cursor.execute(query, tuple(params))
                return list(cursor.fetchall())
        except self._error as exc:
            raise CacheDatabaseError(str(self.dsn), _message(exc, self.dsn)) from None

    def claim_sql(self) -> str:
        # MySQL applies the assignments left to right: `expires` sees the owner just decided.
        return (
            "INSERT INTO obdlayout_claims (name, owner, expires) VALUES (?, ?, {now} + ?) ON DUPLICATE KEY UPDATE"
            " owner = IF(expires < {now} OR owner = VALUES(owner), VALUES(owner), owner),"
            " expires = IF(owner = VALUES(owner), VALUES(expires), expires)"
        )

    def close(self) -> None:
        with suppress(self._error):
            self._connection.close()


def _message(exc: Exception, dsn: Dsn) -> str:
    text = " ".join(str(part) for part in exc.args) or type(exc).__name__
    return text.replace(dsn.password, "***") if dsn.password else text


def open_database(db_type: str, directory: Path, dsn: Dsn | None) -> Database:
    """The index: SQLite in `directory`, or the MySQL database `dsn`."""
    if db_type == "mysql":
        assert dsn is not None
        return MysqlDatabase(dsn)
    os.makedirs(directory, exist_ok=True)
    return SqliteDatabase(directory / SQLITE_FILE)
