"""The private parts of Django the importer relies on, in one place.

Django has no public API for these: the SQL functions its SQLite backend adds to each of its
connections (REGEXP, django_date_extract, ...), which CHECK constraints may call; the SQL a
CheckConstraint becomes in SQLite's dialect, which `migrate` wrote into a source's schema; and
the column type a field has on each backend, asked of backends that never connect.
tests/sqlite_import/test_django_internals.py fails loudly when a Django upgrade changes them.
"""

from __future__ import annotations

import sqlite3
from functools import cache

from django.db import models
from django.db.backends.sqlite3._functions import register as _register_functions
from django.db.backends.sqlite3.base import DatabaseWrapper as SQLiteDatabaseWrapper


def add_django_functions(connection: sqlite3.Connection) -> None:
    """Give a plain sqlite3 connection the functions Django's SQLite backend gives its own."""
    _register_functions(connection)


def check_sql(constraint: models.CheckConstraint, model: type[models.Model]) -> str:
    """A CHECK constraint's condition in SQLite's SQL, as `migrate` wrote it."""
    return constraint._get_check_sql(model, _sqlite_schema_editor())


def column_types(field: models.Field) -> tuple[str | None, str | None]:
    """The field's column type in PostgreSQL and in SQLite, as `migrate` would create it."""
    return field.db_type(_postgresql_connection()), field.db_type(
        _sqlite_schema_editor().connection
    )


@cache
def _postgresql_connection():
    """Django's PostgreSQL backend, for what it says about types; it never connects."""
    from django.db.backends.postgresql.base import DatabaseWrapper as PostgreSQLDatabaseWrapper

    return PostgreSQLDatabaseWrapper({**_SETTINGS, "ENGINE": "django.db.backends.postgresql"})


_SETTINGS = {
    "NAME": ":memory:",
    "OPTIONS": {},
    "TIME_ZONE": None,
    "CONN_MAX_AGE": 0,
    "CONN_HEALTH_CHECKS": False,
    "AUTOCOMMIT": True,
    "ATOMIC_REQUESTS": False,
    "HOST": "",
    "PORT": "",
    "USER": "",
    "PASSWORD": "",
}


@cache
def _sqlite_schema_editor():
    """A schema editor of Django's SQLite backend that never connects (it only renders SQL)."""
    settings = {**_SETTINGS, "ENGINE": "django.db.backends.sqlite3"}
    connection = SQLiteDatabaseWrapper(settings, alias="dbops_sqlite_checks")
    return connection.SchemaEditorClass(connection, collect_sql=True)
