"""A real MariaDB for tests: Debian's mariadb-server, installed into a temporary directory by
`mariadb-install-db` and run by `mariadbd` on a private socket and a free loopback port, as root's own
server (no system service is touched). `database()` makes a fresh database and a password user for it."""

import itertools
import subprocess
from dataclasses import dataclass, field
from pathlib import Path

import pymysql

from .shared import await_server, free_port, require_tool, stop_process

START_TIMEOUT = 60.0
PASSWORD = "cache:p@ss word"  # a colon, an @ and a space, as DSNs must carry them


@dataclass
class MariaDB:
    root: Path
    port: int = field(default_factory=free_port)
    process: subprocess.Popen[bytes] | None = None
    _names: "itertools.count[int]" = field(default_factory=itertools.count)

    @property
    def socket(self) -> Path:
        return self.root / "mysqld.sock"

    def start(self) -> "MariaDB":
        data = self.root / "data"
        if not data.exists():
            install = require_tool("mariadb-install-db")
            subprocess.run(
                [install, "--no-defaults", f"--datadir={data}", "--user=root",
                 "--auth-root-authentication-method=socket", "--skip-test-db"],
                check=True, capture_output=True,
            )  # fmt: skip
        self.process = subprocess.Popen(
            [require_tool("mariadbd"), "--no-defaults", f"--datadir={data}", f"--socket={self.socket}",
             f"--port={self.port}", "--bind-address=127.0.0.1", "--user=root", f"--pid-file={self.root / 'pid'}",
             f"--log-error={self.root / 'error.log'}", "--skip-log-bin", "--innodb-buffer-pool-size=32M"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )  # fmt: skip
        await_server(self.process, self._answers, "mariadbd", self.root / "error.log", START_TIMEOUT)
        return self

    def _answers(self) -> bool:
        try:
            self.admin().close()
        except pymysql.MySQLError:
            return False
        return True

    def stop(self) -> None:
        stop_process(self.process, 60)
        self.process = None

    def admin(self) -> pymysql.connections.Connection:
        return pymysql.connect(unix_socket=str(self.socket), user="root", autocommit=True)

    def database(self, prefix: str = "cache") -> str:
        """A new, empty database and a user of it with a password: its Go-style DSN."""
        name = f"{prefix}{next(self._names)}"
        with self.admin() as admin, admin.cursor() as cursor:
            cursor.execute(f"CREATE DATABASE {name}")
            cursor.execute(f"CREATE USER IF NOT EXISTS 'obd'@'127.0.0.1' IDENTIFIED BY '{PASSWORD}'")
            cursor.execute(f"GRANT ALL ON {name}.* TO 'obd'@'127.0.0.1'")
        return f"obd:{PASSWORD}@tcp(127.0.0.1:{self.port})/{name}"

    def query(self, database: str, sql: str) -> list[tuple[object, ...]]:
        with self.admin() as admin, admin.cursor() as cursor:
            cursor.execute(f"USE {database}")
            cursor.execute(sql)
            return list(cursor.fetchall())
