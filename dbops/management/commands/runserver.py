"""runserver that says which database it serves, and stops cleanly when there is none.

Django's runserver prints a traceback from its migration check when the database is down,
and names no database at all when it is up: the incident began with a development server
that everyone assumed was on PostgreSQL. This one prints a single banner line first.
"""

import os

from django.conf import settings
from django.core.management.base import CommandError
from django.db import DEFAULT_DB_ALIAS, connections

from dbops.database import probe_connection

if "django.contrib.staticfiles" in settings.INSTALLED_APPS:
    from django.contrib.staticfiles.management.commands.runserver import (
        Command as BaseRunserverCommand,
    )
else:  # a project without django.contrib.staticfiles
    from django.core.management.commands.runserver import Command as BaseRunserverCommand


class Command(BaseRunserverCommand):
    def handle(self, *args, **options):
        # With the autoreloader the command runs twice: in the watching parent and in the
        # serving child (RUN_MAIN=true). The parent speaks and refuses; the child just serves.
        if os.environ.get("RUN_MAIN") != "true":
            self.announce_database()
        super().handle(*args, **options)

    def announce_database(self) -> None:
        connection = connections[DEFAULT_DB_ALIAS]
        probe = probe_connection(connection)
        connection.close()
        if not probe.reachable:
            raise CommandError(
                f"Database '{DEFAULT_DB_ALIAS}' is unreachable ({probe.error_class}): "
                f"{probe.description}. Start it or fix DATABASE_URL; "
                f"'manage.py validate_environment' shows each step.",
                returncode=1,
            )
        self.stdout.write(f"Database: {probe.headline}")
