"""Every setting dbops reads, with its default: the one list a project needs to configure it.

Each setting is `DBOPS_<NAME>` in the project's settings and `conf.<NAME>` in dbops
(`from dbops import conf; conf.BACKUP_KEEP_DAYS`), in the manner of django-dbbackup's
settings module. Unlike that module, a value is read from django.conf.settings each time it
is used, not once at import: the settings a test overrides, or a project changes after dbops
was imported, are the ones dbops sees.

Nothing here is required of every project. The one value dbops cannot do without, the local
backup directory, defaults to the location of django-dbbackup's storage; when neither is
there, a system check (dbops.checks) names what to set. The settings that describe where the
configuration came from (`ENV_FILE`, `SETTING_SOURCES`, ...) are reported by the project's
settings module, which alone knows; a project that reports nothing gets "not reported" on the
status page and in `validate_environment`.
"""

from __future__ import annotations

from pathlib import Path
from typing import NamedTuple

from django.conf import settings
from django.core.files.storage import FileSystemStorage, InvalidStorageError, storages

PREFIX = "DBOPS_"
BACKUP_STORAGE_ALIAS = "dbbackup"
REMOTE_BACKUP_STORAGE_ALIAS = "dbbackup_remote"


class Setting(NamedTuple):
    default: object
    meaning: str


SETTINGS: dict[str, Setting] = {
    # What kind of deployment this is.
    "ENVIRONMENT": Setting(
        "development",
        '"production": the database must be PostgreSQL (dbops.E002, the /health/ engine check, '
        'the WSGI start in dbops.startup); "development": SQLite is a warning (dbops.W001); '
        'any other value (e.g. "test"): neither',
    ),
    "ENVIRONMENT_VARIABLE": Setting(
        "DBOPS_ENVIRONMENT",
        "The name the environment is known by in messages (the variable the project reads it from)",
    ),
    # The database connections dbops opens itself.
    "CONNECT_TIMEOUT": Setting(
        5,
        "Seconds pg_dump, pg_restore and dbops' own connections (restore-verification) wait "
        "for the server",
    ),
    # A connection pooler in front of the default database (dbops.pooler).
    "POOLER": Setting(
        None,
        '"pgbouncer": `DATABASES["default"]` goes through PgBouncer in transaction mode, so '
        "server-side cursors must be off (dbops.E012) and the commands that need a session of "
        "their own (import_sqlite, dbbackup, verify_backup, restore_backup, check_consistency) "
        "run over `DIRECT_DATABASE` or refuse; None: no pooler",
    ),
    "DIRECT_DATABASE": Setting(
        "direct",
        "The alias in DATABASES that reaches the default database's server without the "
        'pooler (give it `"TEST": {"MIRROR": "default"}`); only used with `POOLER`',
    ),
    "DIRECT_DATABASE_VARIABLE": Setting(
        None,
        "The variable the project reads the direct connection from, named in refusals "
        "(None: messages name the DATABASES alias)",
    ),
    # Backups (django-dbbackup writes them; dbops records, keeps and verifies them).
    "BACKUP_DIR": Setting(
        None,
        "The local directory of backups and import snapshots (`imports/`); default: the "
        '`location` of `STORAGES["dbbackup"]`, which must be the same directory',
    ),
    "BACKUP_KEEP_DAILY": Setting(
        7, "`dbbackup --clean` keeps the newest backup of each of the last N days that have one"
    ),
    "BACKUP_KEEP_WEEKLY": Setting(4, "... of each of the last N ISO weeks (UTC) that have one"),
    "BACKUP_KEEP_MONTHLY": Setting(12, "... of each of the last N months (UTC) that have one"),
    "BACKUP_KEEP_MIN": Setting(
        3,
        "... and the N newest successful ones whatever their dates (and always the newest "
        "verified one, and every pinned one)",
    ),
    "BACKUP_KEEP_DAYS": Setting(
        0, "... and every backup younger than N days (0: none beyond the tiers)"
    ),
    "BACKUP_ENCRYPT": Setting(
        False,
        "Encrypt every backup to `BACKUP_GPG_PUBLIC_KEY` (as `dbbackup --encrypt` does for one)",
    ),
    "BACKUP_GPG_PUBLIC_KEY": Setting(
        None,
        "The armored GPG public key file backups are encrypted to (the server holds no "
        "private key); its fingerprint is recorded with each encrypted backup",
    ),
    "BACKUP_REMOTE_SFTP_PROGRAM": Setting(
        "sftp",
        "OpenSSH's sftp client, which moves the bytes of off-site copies to and from an SFTP "
        "storage that authenticates with a key (empty, a password, or `sftp` not installed: "
        "dbops' own paramiko session moves them, slower; another program that is missing "
        "fails the copy)",
    ),
    "BACKUP_CHECK": Setting(
        False,
        "Whether `/health/` fails when backups are stale, or when the newest one has no "
        'off-site copy while `STORAGES["dbbackup_remote"]` is set',
    ),
    "BACKUP_MAX_AGE_HOURS": Setting(26, "Age of the newest backup past which `/health/` fails"),
    "BACKUP_MIN_FREE_MB": Setting(
        1024, "Free space in the backup directory below which `/health/` warns"
    ),
    # Health endpoints.
    "HEALTH_TOKEN": Setting(
        "", "Bearer token that shows health details to a monitor (empty: staff only)"
    ),
    "HEALTH_CACHE_SECONDS": Setting(
        1, "A health result, and the `/metrics` text, is reused this long per process (0: never)"
    ),
    "METRICS_TOKEN": Setting(
        "",
        "Bearer token for `/metrics` alone (`DBOPS_HEALTH_TOKEN` and staff are let in too; "
        "empty: only those)",
    ),
    # Dead man's switch (healthchecks.io and its clones).
    "BACKUP_PING_URL": Setting(
        "",
        "After each `dbbackup` run: GET this URL on success, POST the log's last lines to "
        "`<url>/fail` on failure (empty: no ping)",
    ),
    "CONSISTENCY_PING_URL": Setting("", "The same, for each `check_consistency` run"),
    "PING_TIMEOUT_SECONDS": Setting(
        5, "A ping gives up after this; a failed ping is logged and never fails the run"
    ),
    "HEALTH_DEADLINE_SECONDS": Setting(4, "A health endpoint answers within this"),
    "HEALTH_EXACT_COUNT_BELOW": Setting(
        100_000, "Users are counted exactly below this; above, PostgreSQL's estimate is shown"
    ),
    # A streaming standby (dbops.replication) and WAL archiving (dbops.archiving).
    "REPLICA_DATABASE": Setting(
        None,
        "The database alias of a streaming standby of the default database, watched by "
        "`/health/`, `/metrics` and the status page and dumped by `dbbackup --from-replica` "
        "(None: no standby)",
    ),
    "REPLICA_LAG_WARN_SECONDS": Setting(
        60, "Replay lag of the standby past which `/health/` warns (ServiceWarning)"
    ),
    "REPLICA_LAG_FAIL_SECONDS": Setting(300, "Replay lag past which `/health/` fails"),
    "REPLICA_LAG_WARN_BYTES": Setting(
        64 * 1024 * 1024, "WAL received by the standby but not replayed, past which it warns"
    ),
    "REPLICA_LAG_FAIL_BYTES": Setting(1024 * 1024 * 1024, "... past which `/health/` fails"),
    "REPLICA_BACKUP_MAX_LAG_SECONDS": Setting(
        300, "`dbbackup --from-replica` refuses a standby that replays further behind than this"
    ),
    # import_sqlite.
    "IMPORT_MAPPINGS": Setting({}, "`import_sqlite --mapping NAME`: name -> TOML file"),
    # Where the configuration came from, as the project's settings module reports it.
    "ENV_FILE": Setting(None, "The `.env` file the settings looked at (None: not reported)"),
    "ENV_FILE_EXISTS": Setting(False, "Whether that file existed and was read"),
    "ENV_FILE_VARIABLE": Setting(None, "The variable that names the `.env` file, for hints"),
    "ENV_FILE_KEYS": Setting((), "The variables that file assigns"),
    "SETTING_SOURCES": Setting(
        None,
        "Variable -> where its value came from (process environment, .env file, default); "
        "None: not reported",
    ),
    "KEY_VARIABLES": Setting((), "The variables `validate_environment` reports one line each"),
    "CONFIGURATION_PROBLEMS": Setting(
        (),
        "Problems the settings found and left for `validate_environment` to report, each "
        '"VARIABLE: what is wrong"',
    ),
    "DATABASE_IS_DEFAULT_SQLITE": Setting(
        False, "True when the settings fell back to SQLite because `DATABASE_URL` was unset"
    ),
}


def __getattr__(name: str):
    """`conf.NAME`: the project's `DBOPS_NAME`, or its default (`BACKUP_DIR`: see below)."""
    if name == "BACKUP_DIR":
        return backup_dir()
    if name not in SETTINGS:
        raise AttributeError(f"dbops has no setting {PREFIX}{name}")
    return getattr(settings, PREFIX + name, SETTINGS[name].default)


def is_set(name: str) -> bool:
    """Whether the project gives `DBOPS_NAME` a value of its own (not empty, not None)."""
    return bool(getattr(settings, PREFIX + name, None))


def backup_dir() -> Path | None:
    """`DBOPS_BACKUP_DIR`, else the directory of a FileSystemStorage `STORAGES["dbbackup"]`;
    None when neither names a local directory (dbops.E006 says so)."""
    if is_set("BACKUP_DIR"):
        return Path(settings.DBOPS_BACKUP_DIR)
    storage = backup_storage()
    if isinstance(storage, FileSystemStorage):
        return Path(storage.location)
    return None


def backup_storage():
    """The storage django-dbbackup writes to, or None when `STORAGES["dbbackup"]` is unset
    (django-dbbackup then falls back to a FileSystemStorage of MEDIA_ROOT)."""
    try:
        return storages[BACKUP_STORAGE_ALIAS]
    except InvalidStorageError:
        return None


def remote_backup_storage():
    """The off-site storage every backup is also copied to (`STORAGES["dbbackup_remote"]`),
    or None when the project has none."""
    try:
        return storages[REMOTE_BACKUP_STORAGE_ALIAS]
    except InvalidStorageError:
        return None


def has_remote_backup_storage() -> bool:
    """Whether the project names an off-site storage, without loading it (health checks)."""
    return REMOTE_BACKUP_STORAGE_ALIAS in getattr(settings, "STORAGES", {})


SECRET_OPTION_WORDS = ("password", "passphrase", "secret", "token", "access_key", "pkey")


def remote_storage_secrets() -> list[str]:
    """The secrets in the off-site storage's OPTIONS (an SFTP password or key passphrase, S3
    keys), read from the settings without loading the storage, for the masking helper."""
    found: list[str] = []

    def walk(value, key=""):
        if isinstance(value, dict):
            for inner_key, inner in value.items():
                walk(inner, str(inner_key).lower())
        elif isinstance(value, str) and value and any(w in key for w in SECRET_OPTION_WORDS):
            found.append(value)

    walk(getattr(settings, "STORAGES", {}).get(REMOTE_BACKUP_STORAGE_ALIAS, {}).get("OPTIONS", {}))
    return found
