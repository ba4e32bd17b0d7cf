"""What the tests of `restore_backup` share: databases of their own, made from a migrated
template with demo rows, the commands run in child processes against them, and SQL on the
side through `psql` (so nothing depends on the driver the suite runs with). A swap renames
databases, so these never touch the test database pytest-django runs on; every database of a
test's own name is dropped afterwards.
"""

from __future__ import annotations

import json
import subprocess
import sys
import uuid

import pytest

from tests.conftest import PROJECT_ROOT, clean_environment, database_url

SECRET = "SECRETPW-restore"  # the server trusts this client: a password only to prove masking


def server_url(name: str, password: str | None = None) -> str:
    from django.db import connection

    overrides = {"NAME": name}
    if password:
        overrides["PASSWORD"] = password
    return database_url(connection.settings_dict, **overrides)


def psql(database: str, sql: str) -> list[list[str]]:
    completed = subprocess.run(
        [
            "psql",
            "-X",
            "-q",
            "-At",
            "-F",
            "\t",
            "-v",
            "ON_ERROR_STOP=1",
            "-d",
            server_url(database),
        ],
        input=sql,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert completed.returncode == 0, completed.stderr
    return [line.split("\t") for line in completed.stdout.splitlines()]


def databases_named(prefix: str) -> set[str]:
    pattern = prefix.replace("_", "\\_") + "%"
    return {
        row[0]
        for row in psql(
            "postgres", f"SELECT datname FROM pg_database WHERE datname LIKE '{pattern}'"
        )
    }


@pytest.fixture(scope="session")
def template(tmp_path_factory):
    """A migrated database with a few demo rows, copied for each test."""
    name = f"restore_e2e_{uuid.uuid4().hex[:8]}_template"
    psql("postgres", f'CREATE DATABASE "{name}"')
    env_file = tmp_path_factory.mktemp("restore-template") / "empty.env"
    env_file.write_text("")
    try:
        for args in (
            ["migrate", "--noinput", "-v", "0"],
            ["seed_demo", "--users", "3", "--entries", "12"],
        ):
            completed = subprocess.run(
                [sys.executable, "manage.py", *args],
                cwd=PROJECT_ROOT,
                env=clean_environment(
                    CALORIA_ENV="test",
                    DATABASE_URL=server_url(name),
                    CALORIA_ENV_FILE=str(env_file),
                ),
                capture_output=True,
                text=True,
                timeout=180,
                check=False,
            )
            assert completed.returncode == 0, completed.stdout + completed.stderr
        yield name
    finally:
        psql("postgres", f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


class Site:
    """A live database of this test's own, and the commands run against it."""

    def __init__(self, template: str, manage_env: dict):
        self.live = f"restore_e2e_{uuid.uuid4().hex[:8]}"
        self.env = manage_env
        psql("postgres", f'CREATE DATABASE "{self.live}" TEMPLATE "{template}"')

    def environment(self, password: str | None = None) -> dict[str, str]:
        return clean_environment(
            CALORIA_ENV="test", DATABASE_URL=server_url(self.live, password), **self.env
        )

    def manage(self, *args, password: str | None = None, stdin=subprocess.DEVNULL):
        return subprocess.run(
            [sys.executable, "manage.py", *args],
            cwd=PROJECT_ROOT,
            env=self.environment(password),
            stdin=stdin,
            capture_output=True,
            text=True,
            timeout=180,
            check=False,
        )

    def sql(self, query: str, database: str | None = None) -> list[list[str]]:
        return psql(database or self.live, query)

    def value(self, query: str, database: str | None = None) -> str:
        return self.sql(query, database)[0][0]

    def backup(self) -> str:
        completed = self.manage("dbbackup")
        assert completed.returncode == 0, completed.stderr
        return self.value("SELECT filename FROM dbops_backuprecord ORDER BY id DESC LIMIT 1")

    def foods(self, database: str | None = None) -> int:
        return int(self.value("SELECT count(*) FROM caloria_foodentry", database))

    def runs(self, database: str | None = None) -> list[dict]:
        rows = self.sql(
            "SELECT json_build_object('id', id, 'action', action, 'status', status, 'steps', "
            "steps, 'error', error, 'restored', restored_database, 'previous', "
            "previous_database, 'backup', backup_id, 'from_remote', from_remote) "
            "FROM dbops_restorerun ORDER BY id",
            database,
        )
        return [json.loads(row[0]) for row in rows]

    def databases(self) -> set[str]:
        return databases_named(self.live)


@pytest.fixture
def site(template, tmp_path):
    backup_dir = tmp_path / "backups"
    backup_dir.mkdir(mode=0o700)
    env_file = tmp_path / "site.env"
    env_file.write_text("")
    site = Site(template, {"DBOPS_BACKUP_DIR": str(backup_dir), "CALORIA_ENV_FILE": str(env_file)})
    try:
        yield site
    finally:
        for name in site.databases():
            psql("postgres", f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def step_names(run: dict) -> list[tuple[str, str]]:
    return [(step["name"], step["outcome"]) for step in run["steps"]]
