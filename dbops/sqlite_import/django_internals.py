"""The private parts of Django the importer relies on, in one place.

Django has no public API for either: the SQL functions its SQLite backend adds to each of its
connections (REGEXP, django_date_extract, ...), which CHECK constraints may call, and the SQL a
CheckConstraint becomes in SQLite's dialect, which `migrate` wrote into a source's schema.
tests/sqlite_import/test_django_internals.py fails loudly when a Django upgrade changes either.
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


@cache
def _sqlite_schema_editor():
    """A schema editor of Django's SQLite backend that never connects (it only renders SQL)."""
    settings = {
        "NAME": ":memory:",
        "ENGINE": "django.db.backends.sqlite3",
        "OPTIONS": {},
        "TIME_ZONE": None,
        "CONN_MAX_AGE": 0,
        "CONN_HEALTH_CHECKS": False,
        "AUTOCOMMIT": True,
        "ATOMIC_REQUESTS": False,
    }
    connection = SQLiteDatabaseWrapper(settings, alias="dbops_sqlite_checks")
    return connection.SchemaEditorClass(connection, collect_sql=True)
