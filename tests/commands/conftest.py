"""Fixtures of the end-to-end tests that more than one module of commands uses."""

import uuid

import pytest

from tests.restoring import site  # noqa: F401 - fixtures of the restore_backup tests (template: ../)


@pytest.fixture
def untouched_if_nothing_is_restored(django_db_blocker):
    """A database named as a scratch database of the test database, left by a verification
    that was killed: the next verification that gets as far as making a scratch database (to
    restore into) drops it first (dbops.backups.scratch_database). Returns a function that
    says whether it is still there, that is, whether no verification restored anything since.
    Dropped afterwards."""
    from django.db import connection

    from dbops.backups import scratch_prefix
    from tests import pg_driver
    from tests.conftest import database_url

    name = f"{scratch_prefix(connection.settings_dict)}{uuid.uuid4().hex[:10]}"

    def execute(statement: str, *params) -> list:
        url = database_url(connection.settings_dict, NAME="postgres")
        session = pg_driver.connect(url)
        session.autocommit = True
        try:
            with session.cursor() as cursor:
                cursor.execute(statement, params or None)
                return cursor.fetchall() if cursor.description else []
        finally:
            session.close()

    def still_there() -> bool:
        return bool(execute("SELECT 1 FROM pg_database WHERE datname = %s", name))

    with django_db_blocker.unblock():
        execute(f'CREATE DATABASE "{name}"')
        try:
            yield still_there
        finally:
            execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
