"""A real PgBouncer in transaction mode in front of the test server.

Debian's pgbouncer (scripts/install-test-packages.sh installs it) started in the foreground on
a free 127.0.0.1 port with a throwaway pgbouncer.ini: `pool_mode = transaction`, a small pool,
and a wildcard database entry, so every database of the test server (pytest-django's test_
database, the scratch databases verification creates) is reachable through it by its own
name. The test server trusts local connections, so PgBouncer trusts its clients too (the user
must still be in its auth_file). As root it runs as `postgres`: PgBouncer refuses to run as
root. Everything lives in one temporary folder, removed with the pooler.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import socket
import subprocess
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from tests.processes import terminate

PGBOUNCER = shutil.which("pgbouncer") or "/usr/sbin/pgbouncer"
POOL_SIZE = 2
START_TIMEOUT_SECONDS = 10


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@dataclass
class PgBouncer:
    folder: Path
    port: int
    server_host: str
    server_port: int
    user: str
    pool_size: int = POOL_SIZE
    process: subprocess.Popen | None = None

    def url(self, database: str, password: str = "") -> str:
        """A postgres:// URL of `database` through the pooler."""
        secret = f":{password}" if password else ""
        return f"postgres://{self.user}{secret}@127.0.0.1:{self.port}/{database}"

    def write_config(self) -> Path:
        (self.folder / "userlist.txt").write_text(f'"{self.user}" ""\n')
        config = self.folder / "pgbouncer.ini"
        config.write_text(
            "[databases]\n"
            f"* = host={self.server_host} port={self.server_port}\n"
            "[pgbouncer]\n"
            "listen_addr = 127.0.0.1\n"
            f"listen_port = {self.port}\n"
            "unix_socket_dir =\n"
            "auth_type = trust\n"
            f"auth_file = {self.folder / 'userlist.txt'}\n"
            "pool_mode = transaction\n"
            f"default_pool_size = {self.pool_size}\n"
            "max_client_conn = 200\n"
            f"admin_users = {self.user}\n"
            "ignore_startup_parameters = extra_float_digits\n"
            f"logfile = {self.folder / 'pgbouncer.log'}\n"
        )
        return config

    def start(self) -> None:
        config = self.write_config()
        as_postgres = {"user": "postgres", "group": "postgres"} if os.geteuid() == 0 else {}
        if as_postgres:
            shutil.chown(self.folder, "postgres", "postgres")
            for path in self.folder.iterdir():
                shutil.chown(path, "postgres", "postgres")
        self.process = subprocess.Popen(
            [PGBOUNCER, str(config)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            **as_postgres,
        )
        deadline = time.monotonic() + START_TIMEOUT_SECONDS
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"pgbouncer exited ({self.process.returncode}):\n{self.log()}")
            with (
                contextlib.suppress(OSError),
                socket.create_connection(("127.0.0.1", self.port), timeout=1),
            ):
                return
            time.sleep(0.05)
        raise RuntimeError(f"pgbouncer did not listen within {START_TIMEOUT_SECONDS} s")

    def admin(self, command: str) -> list[dict[str, str]]:
        """Rows of an admin console command (SHOW POOLS, ...), through psql."""
        completed = subprocess.run(
            ["psql", "-X", "-A", "-F", "\t", "-h", "127.0.0.1", "-p", str(self.port),
             "-U", self.user, "-d", "pgbouncer", "-c", command],
            capture_output=True, text=True, timeout=10, check=True,
        )  # fmt: skip
        header, *rows = completed.stdout.splitlines()[:-1]  # the last line is "(N rows)"
        names = header.split("\t")
        return [dict(zip(names, row.split("\t"), strict=True)) for row in rows]

    def console(self, command: str) -> None:
        """Run an admin console command that returns no rows (PAUSE db, RESUME db)."""
        subprocess.run(
            ["psql", "-X", "-q", "-h", "127.0.0.1", "-p", str(self.port), "-U", self.user,
             "-d", "pgbouncer", "-c", command],
            capture_output=True, text=True, timeout=30, check=True,
        )  # fmt: skip

    def log(self) -> str:
        path = self.folder / "pgbouncer.log"
        return path.read_text(errors="replace")[-3000:] if path.exists() else ""

    def stop(self) -> None:
        terminate(self.process)


@contextlib.contextmanager
def running_pgbouncer(server_host: str, server_port: int, user: str, pool_size: int = POOL_SIZE):
    """A started PgBouncer in front of server_host:server_port; stopped and removed after."""
    folder = Path(tempfile.mkdtemp(prefix="caloria-pgbouncer-"))
    pooler = PgBouncer(folder, free_port(), server_host, server_port, user, pool_size)
    try:
        pooler.start()
        yield pooler
    finally:
        pooler.stop()
        shutil.rmtree(folder, ignore_errors=True)
