"""MySQL/MariaDB connection strings: the Go driver's DSN, which the Go convertor takes
(`user:password@tcp(host:3306)/dbname?param=value`, convertor-spec.md §1 `--db-str`), or a URL
(`mysql://user:password@host:3306/dbname`)."""

import re
from dataclasses import dataclass
from urllib.parse import unquote, urlsplit

DEFAULT_PORT = 3306

# go-sql-driver/mysql: [user[:password]@][net[(addr)]]/dbname[?params]; the password may hold '@' and ':',
# so the user part ends at the last '@' before the network part.
_GO_DSN = re.compile(
    r"^(?:(?P<user>[^:@]*)(?::(?P<password>.*))?@)?(?P<net>\w+)?(?:\((?P<addr>[^)]*)\))?/(?P<db>[^?]*)"
)


class DsnError(ValueError):
    """A connection string that cannot be read; the message says why, without the password."""


@dataclass(frozen=True)
class Dsn:
    user: str
    password: str
    host: str = "127.0.0.1"
    port: int = DEFAULT_PORT
    socket: str | None = None  # a unix socket, for net "unix"
    database: str = ""

    def __str__(self) -> str:
        """For messages: everything but the password."""
        where = self.socket or f"{self.host}:{self.port}"
        return f"mysql://{self.user}@{where}/{self.database}"


def parse_dsn(text: str) -> Dsn:
    if text.startswith("mysql://"):
        return _parse_url(text)
    found = _GO_DSN.match(text)
    if not found or not found.group("db"):
        raise DsnError("not a MySQL DSN (user:password@tcp(host:port)/dbname, or mysql://user:password@host/dbname)")
    net, addr = found.group("net") or "tcp", found.group("addr") or ""
    dsn = Dsn(found.group("user") or "", found.group("password") or "", database=found.group("db"))
    if net == "unix":
        return Dsn(dsn.user, dsn.password, socket=addr or "/var/run/mysqld/mysqld.sock", database=dsn.database)
    if net != "tcp":
        raise DsnError(f"network {net!r} is not tcp or unix")
    host, port = _host_port(addr or "127.0.0.1:3306")
    return Dsn(dsn.user, dsn.password, host, port, None, dsn.database)


def _parse_url(text: str) -> Dsn:
    parts = urlsplit(text)
    database = parts.path.lstrip("/")
    if not parts.hostname or not database:
        raise DsnError("a mysql:// URL needs a host and a database name")
    try:
        port = parts.port or DEFAULT_PORT
    except ValueError:
        raise DsnError("the port is not a number") from None
    return Dsn(unquote(parts.username or ""), unquote(parts.password or ""), parts.hostname, port, None, database)


def _host_port(addr: str) -> tuple[str, int]:
    host, _, port = addr.rpartition(":") if ":" in addr else (addr, "", str(DEFAULT_PORT))
    if not port.isdigit():
        raise DsnError(f"the port of {addr!r} is not a number")
    return host.strip("[]") or "127.0.0.1", int(port)
