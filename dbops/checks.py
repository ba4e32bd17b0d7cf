"""System checks that make a wrong or missing database impossible to overlook.

Registered with the `database` tag, so they run for `check --database default` and before
`migrate`, and not on every command (Django calls them with `databases=None` then).
"""

from __future__ import annotations

from django.core.checks import CheckMessage, Error, Tags, Warning, register
from django.db import connections
from django.db.backends.base.base import BaseDatabaseWrapper

from dbops import conf
from dbops.database import probe_connection


def database_problems(connection: BaseDatabaseWrapper, environment: str) -> list[CheckMessage]:
    """What is wrong with one connection for the given DBOPS_ENVIRONMENT (empty when fine)."""
    problems: list[CheckMessage] = []
    if environment == "production" and connection.vendor != "postgresql":
        problems.append(
            Error(
                f"Production must run on PostgreSQL, but database '{connection.alias}' is "
                f"{connection.vendor}.",
                hint="Set DATABASE_URL to a postgres:// URL.",
                id="dbops.E002",
            )
        )
    elif connection.vendor == "sqlite" and environment == "development":
        problems.append(
            Warning(
                f"Database '{connection.alias}' is SQLite ({connection.settings_dict['NAME']}).",
                hint="Fine for development; set DATABASE_URL to use PostgreSQL.",
                id="dbops.W001",
            )
        )
    probe = probe_connection(connection)
    if not probe.reachable:
        problems.append(
            Error(
                f"Database '{connection.alias}' is unreachable ({probe.error_class}).",
                hint="Check DATABASE_URL and that the server is running; "
                "'manage.py validate_environment' shows each step.",
                id="dbops.E001",
            )
        )
    return problems


@register(Tags.database)
def check_databases(app_configs=None, databases=None, **kwargs) -> list[CheckMessage]:
    if not databases:
        return []
    problems: list[CheckMessage] = []
    for alias in databases:
        problems += database_problems(connections[alias], conf.ENVIRONMENT)
    return problems
