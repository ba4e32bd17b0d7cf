"""What a process does before it serves anything: load the settings, and in production make
sure the database is really there and really PostgreSQL.

Django itself validates nothing at start (the WSGI entry point runs no checks), which is how a
server could run for weeks on the wrong database. Each failure here is one line on stderr and
a non-zero exit, never a traceback and never a secret.
"""

from __future__ import annotations

import sys

# gunicorn halts (rather than respawning workers forever) when a worker exits with this code.
WORKER_BOOT_ERROR = 3


def load_settings_or_exit(exit_code: int = 1, program: str = "dbops") -> None:
    """Import the settings; on a configuration error print it, after `program: `, and exit."""
    from django.conf import settings
    from django.core.exceptions import ImproperlyConfigured

    try:
        settings.INSTALLED_APPS  # noqa: B018 - importing the settings is the point
    except ImproperlyConfigured as exc:
        sys.stderr.write(f"{program}: {exc}\n")
        sys.exit(exit_code)


def refuse_to_start_without_database(
    exit_code: int = WORKER_BOOT_ERROR, program: str = "dbops"
) -> None:
    """When DBOPS_ENVIRONMENT is production, exit unless the default database answers and is
    PostgreSQL (the one line on stderr starts with `program: `)."""
    from django.db import DEFAULT_DB_ALIAS, connections

    from dbops import conf
    from dbops.checks import database_problems

    if conf.ENVIRONMENT != "production":
        return
    connection = connections[DEFAULT_DB_ALIAS]
    errors = [p for p in database_problems(connection, conf.ENVIRONMENT) if p.is_serious()]
    # Never hand an open connection to processes forked after this (gunicorn --preload).
    connection.close()
    if errors:
        reasons = "; ".join(f"{error.id} {error.msg}" for error in errors)
        sys.stderr.write(
            f"{program}: refusing to start: {reasons} "
            f"Run 'manage.py validate_environment' for details.\n"
        )
        sys.exit(exit_code)
