"""The default database behind a connection pooler in transaction mode (PgBouncer).

In transaction mode PgBouncer lends a client one server connection for one transaction and
takes it back at COMMIT, so a few server connections serve any number of workers. Plain ORM
work does not notice; what lives in a *session* breaks (Django's docs, "Transaction pooling
and server-side cursors"; PgBouncer's feature table):

- server-side cursors (`QuerySet.iterator()` outside a transaction) are declared in one
  transaction and fetched in the next, on a server connection that may not have them:
  `DISABLE_SERVER_SIDE_CURSORS = True`;
- psycopg 3, given `OPTIONS["prepare_threshold"]` (Django passes None unless a project sets
  it), prepares a query it has run that many times and then executes the statement by name
  on whatever server connection it gets: it must stay None (PgBouncer 1.18, Debian's, knows
  nothing of prepared statements); psycopg2 never prepares, and both drivers bind parameters
  on the client here (Django's default);
- session advisory locks (every run's liveness lock, dbops.locks), `SET`, the exported
  snapshot a backup's checksums are read in, pg_dump and pg_restore, the renames of a swap:
  the commands that need these (`SESSION_COMMANDS`) run over a direct connection to the server
  (`DBOPS_DIRECT_DATABASE`, an alias in DATABASES), or refuse before doing anything.

`CONN_MAX_AGE` is the project's choice: a persistent connection to PgBouncer holds no server
connection between transactions, so either value keeps the server's count at the pool size.
A project may default it to 0 behind the pooler, so that the pooler is the one place where
connections persist.
"""

from __future__ import annotations

from django.core.checks import CheckMessage, Error, register
from django.db import DEFAULT_DB_ALIAS

from dbops import conf

PGBOUNCER = "pgbouncer"
POOLERS = (PGBOUNCER,)
# Django's default on psycopg 3 (OPTIONS without "prepare_threshold"): never prepare, which
# keeps poolers working; psycopg's own default, a query prepared on its fifth run, only
# applies when a project sets it.
DJANGO_DEFAULT_PREPARE_THRESHOLD = None

# What each command needs a session for, for its refusal.
SESSION_COMMANDS = {
    "import_sqlite": "its run lock and its COPY",
    "dbbackup": "pg_dump, the exported snapshot its checksums are read in, and its run lock",
    "verify_backup": "pg_restore into a scratch database and the scratch database's lock",
    "restore_backup": "pg_restore, its run lock and the renames of a swap",
    # Even without --fix: its run lock must hold for the whole run, and a lock taken through
    # the pooler would stay on a pooled server connection and never be released.
    "check_consistency": "its run lock (and, with --fix, its repairs)",
}


class PoolerRefusal(Exception):
    """A command that needs a session was pointed at the pooler with no direct connection."""


def is_pooled(alias: str) -> bool:
    """Whether `alias` goes through the transaction pooler (dbops pools only the default)."""
    return bool(conf.POOLER) and alias == DEFAULT_DB_ALIAS


def direct_alias() -> str | None:
    """The alias of the direct connection, when DATABASES has it."""
    from django.conf import settings

    alias = conf.DIRECT_DATABASE
    return alias if alias and alias in settings.DATABASES else None


def direct_setting_name() -> str:
    """How a refusal names what to set: the project's variable, and the alias it fills."""
    alias = f'DATABASES["{conf.DIRECT_DATABASE}"]'
    variable = conf.DIRECT_DATABASE_VARIABLE
    return f"{variable} ({alias})" if variable else alias


def session_alias(alias: str, command: str) -> str:
    """The alias `command` must do its work on: `alias` itself, or the direct connection when
    `alias` is behind the pooler. Raises PoolerRefusal when it is pooled and no direct
    connection is configured; call it before the command opens any connection or writes."""
    if not is_pooled(alias):
        return alias
    direct = direct_alias()
    if direct is not None:
        return direct
    raise PoolerRefusal(
        f"{command} refused: database '{alias}' goes through {conf.POOLER} in transaction "
        f"mode (DBOPS_POOLER), and {command} needs a session of its own for "
        f"{SESSION_COMMANDS.get(command, 'its work')}; set {direct_setting_name()} to a "
        f"direct connection to the server. Nothing was done."
    )


def command_alias(alias: str, command: str) -> str:
    """`session_alias` for a management command: a refusal is its CommandError (exit 1)."""
    from django.core.management.base import CommandError

    try:
        return session_alias(alias, command)
    except PoolerRefusal as exc:
        raise CommandError(str(exc), returncode=1) from None


# --------------------------------------------------------------------------- settings


def is_psycopg3() -> bool:
    """Whether Django's PostgreSQL backend runs on psycopg 3 (it prefers it when installed)."""
    from django.db.backends.postgresql.psycopg_any import is_psycopg3 as driver_is_psycopg3

    return driver_is_psycopg3


def pooled_database(settings_dict: dict) -> dict:
    """A DATABASES entry fit for PgBouncer in transaction mode: server-side cursors off and,
    on psycopg 3, no prepared statements. For a project's settings module."""
    pooled = {**settings_dict, "DISABLE_SERVER_SIDE_CURSORS": True}
    if is_psycopg3():
        pooled["OPTIONS"] = {**settings_dict.get("OPTIONS", {}), "prepare_threshold": None}
    return pooled


def direct_database(settings_dict: dict) -> dict:
    """A DATABASES entry for the direct connection: its own settings, and under test the
    default's test database (pytest-django creates no second one)."""
    return {**settings_dict, "TEST": {"MIRROR": DEFAULT_DB_ALIAS}}


def prepare_threshold(settings_dict: dict) -> object:
    """The psycopg 3 prepare threshold in force (None: never prepares), or "not used"."""
    if not is_psycopg3():
        return "not used (psycopg2 never prepares)"
    return settings_dict.get("OPTIONS", {}).get(
        "prepare_threshold", DJANGO_DEFAULT_PREPARE_THRESHOLD
    )


def settings_in_force(alias: str = DEFAULT_DB_ALIAS) -> list[tuple[str, object]]:
    """(name, value) of what the pooler changes, for validate_environment and the status page."""
    from django.db import connections

    settings_dict = connections[alias].settings_dict
    cursors = "off" if settings_dict.get("DISABLE_SERVER_SIDE_CURSORS") else "on"
    return [
        ("pooler", f"{conf.POOLER} (transaction mode)" if conf.POOLER else "none"),
        ("server-side cursors", cursors),
        ("CONN_MAX_AGE", settings_dict.get("CONN_MAX_AGE")),
        ("prepare threshold", prepare_threshold(settings_dict)),
    ]


def pooled_database_problems(alias: str = DEFAULT_DB_ALIAS) -> list[str]:
    """What breaks in transaction mode in `alias`'s settings (empty when fine or not pooled)."""
    from django.db import connections

    if not conf.POOLER:
        return []
    if conf.POOLER not in POOLERS:
        return [f"DBOPS_POOLER is {conf.POOLER!r}; dbops knows {', '.join(POOLERS)} (or None)"]
    settings_dict = connections[alias].settings_dict
    problems = []
    if not settings_dict.get("DISABLE_SERVER_SIDE_CURSORS"):
        problems.append(
            f'DATABASES["{alias}"] goes through {conf.POOLER} in transaction mode with '
            f"server-side cursors on: QuerySet.iterator() fails with 'cursor does not exist'"
        )
    if is_psycopg3() and prepare_threshold(settings_dict) is not None:
        problems.append(
            f'DATABASES["{alias}"] goes through {conf.POOLER} in transaction mode and psycopg 3 '
            f"prepares statements: a query run a few times fails with 'prepared statement "
            f"does not exist'"
        )
    return problems


@register()
def check_pooler(app_configs=None, **kwargs) -> list[CheckMessage]:
    """dbops.E012: a pooled database configured in a way transaction pooling breaks."""
    return [
        Error(
            problem + ".",
            hint='Set "DISABLE_SERVER_SIDE_CURSORS": True and, on psycopg 3, OPTIONS '
            '"prepare_threshold": None (dbops.pooler.pooled_database does both).',
            id="dbops.E012",
        )
        for problem in pooled_database_problems()
    ]
