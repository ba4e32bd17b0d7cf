"""Shared fixtures: a clean environment for subprocesses, and URLs of real databases.

Settings are read once per process, so every behaviour of the settings themselves is tested
in a child process (`manage.py` or `python -c`) with an environment the test controls; the
developer's own `.env` never leaks in because CALORIA_ENV_FILE always names a test file.
"""

from __future__ import annotations

import os
import shutil
import socket
import sqlite3
import subprocess
import sys
import uuid
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import quote

import pytest

PROJECT_ROOT = Path(__file__).resolve().parent.parent
STRONG_SECRET_KEY = "k3y-" + "x9Z" * 20  # 64 characters, clearly not the development default

CONFIG_VARIABLES = (
    "ALLOWED_HOSTS",
    "DATABASE_URL",
    "DEBUG",
    "SECRET_KEY",
    "DJANGO_SETTINGS_MODULE",
    "RUN_MAIN",
)


@dataclass
class Completed:
    returncode: int
    stdout: str
    stderr: str

    @property
    def output(self) -> str:
        return self.stdout + self.stderr


def clean_environment(**variables: str) -> dict[str, str]:
    environment = {
        key: value
        for key, value in os.environ.items()
        if key not in CONFIG_VARIABLES and not key.startswith(("CALORIA_", "DATABASE_", "DBOPS_"))
    }
    environment.update(variables)
    return environment


@pytest.fixture
def env_file(tmp_path):
    """An (initially empty) .env file that the child process is told to read."""
    path = tmp_path / "test.env"
    path.write_text("")
    return path


@pytest.fixture
def run(env_file, tmp_path):
    """Run a command in a child process with only the given configuration variables."""

    backup_dir = tmp_path / "backups"
    backup_dir.mkdir(mode=0o700)

    def run_command(args, timeout=60, **variables) -> Completed:
        variables.setdefault("CALORIA_ENV_FILE", str(env_file))
        variables.setdefault("DBOPS_BACKUP_DIR", str(backup_dir))
        completed = subprocess.run(
            args,
            cwd=PROJECT_ROOT,
            env=clean_environment(**variables),
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )
        return Completed(completed.returncode, completed.stdout, completed.stderr)

    return run_command


@pytest.fixture
def manage(run):
    """`manage.py ARGS` in a child process."""

    def run_manage(*args, timeout=60, **variables) -> Completed:
        return run([sys.executable, "manage.py", *args], timeout=timeout, **variables)

    return run_manage


def database_url(settings_dict: dict, **overrides) -> str:
    values = {**settings_dict, **overrides}
    password = f":{quote(values['PASSWORD'], safe='')}" if values.get("PASSWORD") else ""
    host = values.get("HOST") or "127.0.0.1"
    port = values.get("PORT") or 5432
    return f"postgres://{quote(values['USER'])}{password}@{host}:{port}/{values['NAME']}"


@pytest.fixture
def test_database_url(django_db_setup, django_db_blocker) -> str:
    """URL of the migrated test database, for child processes that must reach it."""
    from django.db import connection

    return database_url(connection.settings_dict)


@pytest.fixture
def unreachable_database_url() -> str:
    """A PostgreSQL URL with a password, on a port where nothing listens."""
    return f"postgres://caloria:SECRETPW@127.0.0.1:{closed_port()}/caloria"


def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture
def fresh_health_results():
    """No health result reused from an earlier test; afterwards, the health checks' threads
    close their database connections, so the test database can be flushed and dropped."""
    from dbops.health_runner import LOGGED_STATE, RECENT_RESULTS, close_connections

    RECENT_RESULTS.clear()
    LOGGED_STATE.clear()
    yield
    close_connections()


@pytest.fixture(autouse=True)
def fast_password_hasher(settings):
    """Hashing speed is not under test here; tests of real hashers override this."""
    settings.PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]


@pytest.fixture
def password_database_url(django_db_setup, django_db_blocker) -> tuple[str, str]:
    """URL of the test database that carries a password, and that password.

    The suite's server uses trust authentication, which ignores a password it is given, so a
    known one can be put in the URL to prove it is never printed; a real password in
    TEST_DATABASE_URL is used as it is.
    """
    from django.db import connection

    password = connection.settings_dict.get("PASSWORD") or "SECRETPW"
    return database_url(connection.settings_dict, PASSWORD=password), password


def run_with_sqlite(path: Path, *args: str, env_file: Path) -> None:
    """Run a manage.py command (or `python -c`) against a SQLite file, in a child process."""
    command = [sys.executable, *args] if args[0] == "-c" else [sys.executable, "manage.py", *args]
    completed = subprocess.run(
        command,
        cwd=PROJECT_ROOT,
        env=clean_environment(
            CALORIA_ENV="test",
            DATABASE_URL=f"sqlite:///{path}",
            CALORIA_ENV_FILE=str(env_file),
            DJANGO_SETTINGS_MODULE="caloria.settings",
        ),
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert completed.returncode == 0, completed.stdout + completed.stderr


@pytest.fixture(scope="session")
def sqlite_templates(tmp_path_factory):
    """A migrated empty SQLite database of this project, and one filled by tests/import_data."""
    folder = tmp_path_factory.mktemp("sqlite-templates")
    env_file = folder / "empty.env"
    env_file.write_text("")
    empty = folder / "empty.sqlite3"
    run_with_sqlite(empty, "migrate", "--noinput", env_file=env_file)
    filled = folder / "filled.sqlite3"
    shutil.copyfile(empty, filled)
    script = (
        "import django; django.setup(); from tests.import_data import create_rows; create_rows()"
    )
    run_with_sqlite(filled, "-c", script, env_file=env_file)
    return {"empty": empty, "filled": filled}


@pytest.fixture
def empty_source(sqlite_templates, tmp_path) -> Path:
    """A migrated SQLite database with no rows but what migrate creates, in tmp_path."""
    path = tmp_path / "source-empty.sqlite3"
    shutil.copyfile(sqlite_templates["empty"], path)
    return path


@pytest.fixture
def filled_source(sqlite_templates, tmp_path) -> Path:
    """A SQLite database holding tests/import_data's rows, in tmp_path."""
    path = tmp_path / "source.sqlite3"
    shutil.copyfile(sqlite_templates["filled"], path)
    return path


LARGE_TABLE_ROWS = 300_000


@pytest.fixture(scope="session")
def large_source_template(sqlite_templates, tmp_path_factory) -> Path:
    """The migrated empty database with one user and LARGE_TABLE_ROWS food entries, written
    once per session (inserting them takes seconds; copying the file, milliseconds)."""
    path = tmp_path_factory.mktemp("sqlite-large") / "large.sqlite3"
    shutil.copyfile(sqlite_templates["empty"], path)
    with sqlite3.connect(path) as source:
        source.execute(
            "INSERT INTO caloria_user (id, password, is_superuser, username, first_name, "
            "last_name, email, is_staff, is_active, date_joined, is_vip) VALUES "
            "(1, '!', 0, 'big', '', '', 'big@example.com', 0, 1, '2025-01-01 00:00:00', 0)"
        )
        source.executemany(
            "INSERT INTO caloria_foodentry (id, user_id, eaten_at, name, calories, protein, "
            "carbs, fat, meal, notes, created_at) VALUES (?, 1, ?, ?, ?, 1.5, NULL, 2.25, "
            "'lunch', '', '2025-01-01 00:00:00')",
            (
                (n, f"2025-01-01 00:00:{n % 60:02d}.{n % 1000000:06d}", f"food {n}", n % 3000)
                for n in range(1, LARGE_TABLE_ROWS + 1)
            ),
        )
    source.close()
    return path


@pytest.fixture
def large_source(large_source_template, tmp_path) -> Path:
    """A project database with one user and enough food entries for a copy of seconds, in
    tmp_path (the test may change it)."""
    path = tmp_path / "source-empty.sqlite3"
    shutil.copyfile(large_source_template, path)
    return path


@pytest.fixture
def throwaway_cluster():
    """A started PostgreSQL cluster of this test's own (see tests/clusters.py), removed after."""
    from tests.clusters import Cluster

    cluster = Cluster()
    try:
        cluster.start()
        yield cluster
    finally:
        cluster.remove()


@pytest.fixture
def migrated_cluster_url(throwaway_cluster, tmp_path) -> str:
    """URL of a database `caloria` in the throwaway cluster, migrated by this project."""
    throwaway_cluster.execute("CREATE DATABASE caloria")
    url = throwaway_cluster.url("caloria")
    env_file = tmp_path / "cluster.env"
    env_file.write_text("")
    completed = subprocess.run(
        [sys.executable, "manage.py", "migrate", "--noinput", "-v", "0"],
        cwd=PROJECT_ROOT,
        env=clean_environment(CALORIA_ENV="test", DATABASE_URL=url, CALORIA_ENV_FILE=str(env_file)),
        capture_output=True,
        text=True,
        timeout=180,
        check=False,
    )
    assert completed.returncode == 0, completed.stdout + completed.stderr
    return url


SMALL_FILESYSTEM_SIZE = 1 << 20


def as_root() -> list[str]:
    """The prefix that runs a command as root: none for root, `sudo -n` if it needs no password."""
    if os.geteuid() == 0:
        return []
    if shutil.which("sudo"):
        probe = subprocess.run(["sudo", "-n", "true"], capture_output=True, check=False)
        if probe.returncode == 0:
            return ["sudo", "-n"]
    pytest.fail("this test mounts a tmpfs: run the tests as root or with passwordless sudo")


@pytest.fixture
def small_filesystem(tmp_path) -> Path:
    """A real file system of 1 MiB (a tmpfs, mode 0700, owned by this user) that really fills
    up, for tests of what a full disk does; unmounted afterwards. `leave_free` fills it.

    Mounting needs root, or passwordless sudo; without either the test fails (a skipped test
    would hide that the behaviour went unchecked).
    """
    prefix = as_root()
    mount_point = tmp_path / "small-filesystem"
    mount_point.mkdir()
    options = f"size={SMALL_FILESYSTEM_SIZE},mode=0700,uid={os.getuid()},gid={os.getgid()}"
    mount = ["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(mount_point)]
    subprocess.run([*prefix, *mount], check=True)
    try:
        yield mount_point
    finally:
        subprocess.run([*prefix, "umount", str(mount_point)], check=True)


def leave_free(directory: Path, free_bytes: int) -> Path:
    """Fill `directory`'s file system with a file named `filler` until about `free_bytes` are
    left (rounded down to whole blocks); returns the filler's path."""
    stats = os.statvfs(directory)
    filler = directory / "filler"
    filler.write_bytes(b"\0" * max(0, stats.f_bavail * stats.f_frsize - free_bytes))
    return filler


@pytest.fixture
def login_role(django_db_blocker) -> str:
    """A new role that may log in and has no privileges (grant what a test needs); the role
    and whatever was granted to it in the test database go afterwards. Roles belong to the
    whole server, so the name is unique to this test."""
    from django.db import connection

    role = f"caloria_role_{uuid.uuid4().hex[:12]}"
    with django_db_blocker.unblock(), connection.cursor() as cursor:
        cursor.execute(f'CREATE ROLE "{role}" LOGIN')
    yield role
    with django_db_blocker.unblock(), connection.cursor() as cursor:
        cursor.execute(f'DROP OWNED BY "{role}"')
        cursor.execute(f'DROP ROLE "{role}"')


@pytest.fixture(scope="session")
def sshd():
    """A real OpenSSH server on a free 127.0.0.1 port (see tests/sshd.py), stopped afterwards."""
    from tests.sshd import running_sshd

    with running_sshd() as server:
        yield server


@pytest.fixture
def remote_storage(sshd, settings, tmp_path):
    """STORAGES["dbbackup_remote"] on the test sshd, in a folder of this test's own; the
    folder's path (on this machine: the server is local)."""
    folder = tmp_path / "off-site"
    settings.STORAGES = {**settings.STORAGES, "dbbackup_remote": sshd.storage(folder)}
    return folder


@pytest.fixture(scope="session")
def gpg_keys(tmp_path_factory):
    """GPG key pairs made now: `backups` (the one backups are encrypted to), `other`, and
    `protected`, whose private key has the passphrase GPG_PASSPHRASE."""
    from tests.gpg_keys import PASSPHRASE, make_key_pair

    folder = tmp_path_factory.mktemp("gpg-keys")
    keys = {name: make_key_pair(folder, name) for name in ("backups", "other")}
    keys["protected"] = make_key_pair(folder, "protected", passphrase=PASSPHRASE)
    return keys


# Fixtures of their own modules that tests in more than one folder use: the restore tests'
# seeded template database, and a real PgBouncer in transaction mode with a site behind it.
from tests.pooling import pgbouncer, pooled_site  # noqa: E402, F401
from tests.restoring import template  # noqa: E402, F401
