"""System checks that make a wrong or missing database, or a dangerous backup place,
impossible to overlook.

The database checks (E001, E002, W001) are registered with the `database` tag, so they run
for `check --database default` and before `migrate`, and not on every command (Django calls
them with `databases=None` then). The checks of dbops' own configuration (E003-E009) touch no
database and run with every command that runs system checks, so a project that installs dbops
half-configured hears about it before its first backup lands in a public directory.

Ids are stable: tests and runbooks refer to them.
"""

from __future__ import annotations

import os
from pathlib import Path

from django.apps import apps
from django.conf import settings
from django.core.checks import CheckMessage, Error, Tags, Warning, register
from django.core.files.storage import FileSystemStorage
from django.db import DEFAULT_DB_ALIAS, connections
from django.db.backends.base.base import BaseDatabaseWrapper

from dbops import conf
from dbops.database import probe_connection
from dbops.pooler import check_pooler  # noqa: F401 - registers dbops.E012 (transaction pooling)

STORAGE_EXAMPLE = (
    'STORAGES["dbbackup"] = {"BACKEND": "django.core.files.storage.FileSystemStorage", '
    '"OPTIONS": {"location": "/var/backups/<project>"}}'
)


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


# --------------------------------------------------------------------------- backups


@register()
def check_backup_storage(app_configs=None, **kwargs) -> list[CheckMessage]:
    """Where django-dbbackup writes: configured (E003), private (E004), fixed (E005), and
    the directory dbops reads the backups back from (E006, E007)."""
    if conf.BACKUP_STORAGE_ALIAS not in getattr(settings, "STORAGES", {}):
        return [
            Error(
                'STORAGES["dbbackup"] is not set: django-dbbackup would write database dumps '
                "into MEDIA_ROOT, or the current directory when MEDIA_ROOT is empty.",
                hint=f"Give backups a private directory of their own: {STORAGE_EXAMPLE}.",
                id="dbops.E003",
            )
        ]
    storage = conf.backup_storage()
    if not isinstance(storage, FileSystemStorage):
        if conf.is_set("BACKUP_DIR"):
            return []
        return [
            Error(
                f'STORAGES["dbbackup"] is {type(storage).__name__}, not a local directory, '
                "and DBOPS_BACKUP_DIR is not set: dbops has nowhere to keep import snapshots "
                "or to read backups back.",
                hint="Set DBOPS_BACKUP_DIR to a private local directory (mode 0700).",
                id="dbops.E006",
            )
        ]
    return location_problems(storage.base_location) + backup_dir_problems(storage.location)


def location_problems(configured) -> list[CheckMessage]:
    """A FileSystemStorage location that is served to the web (E004) or moves with the
    current directory (E005). `configured` is the location as given (MEDIA_ROOT when none)."""
    if not configured or not os.path.isabs(configured):
        return [
            Error(
                f'STORAGES["dbbackup"] has the relative location {str(configured)!r}: backups '
                "land in whatever directory a command runs from.",
                hint="Give it an absolute, private directory: " + STORAGE_EXAMPLE + ".",
                id="dbops.E005",
            )
        ]
    location = Path(configured).resolve()
    for name in ("MEDIA_ROOT", "STATIC_ROOT"):
        root = getattr(settings, name, None)
        if root and is_within(location, Path(root).resolve()):
            return [
                Error(
                    f'STORAGES["dbbackup"] location {location} is inside {name} ({root}), '
                    "which the web server may serve to anyone.",
                    hint=f"Move backups out of {name}: {STORAGE_EXAMPLE}.",
                    id="dbops.E004",
                )
            ]
    if location == Path.cwd().resolve():
        return [
            Error(
                f'STORAGES["dbbackup"] location {location} is the current directory: backups '
                "would lie among the project's files.",
                hint=f"Give backups a directory of their own: {STORAGE_EXAMPLE}.",
                id="dbops.E005",
            )
        ]
    return []


def backup_dir_problems(storage_location: str) -> list[CheckMessage]:
    """DBOPS_BACKUP_DIR, when set, is where django-dbbackup writes: dbops reads each new
    backup back from it to record its size and checksum."""
    if not conf.is_set("BACKUP_DIR"):
        return []
    backup_dir = Path(conf.BACKUP_DIR).resolve()
    if backup_dir == Path(storage_location).resolve():
        return []
    return [
        Error(
            f'DBOPS_BACKUP_DIR ({backup_dir}) is not the directory of STORAGES["dbbackup"] '
            f"({storage_location}): every backup would be written where dbops does not look, "
            "and recorded as failed.",
            hint="Set both from one value, or leave DBOPS_BACKUP_DIR unset (it defaults to "
            'the location of STORAGES["dbbackup"]).',
            id="dbops.E007",
        )
    ]


def is_within(path: Path, root: Path) -> bool:
    return path == root or root in path.parents


# --------------------------------------------------------------------------- apps


@register()
def check_installed_apps(app_configs=None, **kwargs) -> list[CheckMessage]:
    """dbops overrides django-dbbackup's `dbbackup` command (to record every run), which only
    works when dbops comes first (E008); the health pages use django-health-check's
    templates (E009)."""
    labels = [app_config.label for app_config in apps.get_app_configs()]
    problems: list[CheckMessage] = []
    if "dbbackup" not in labels or labels.index("dbbackup") < labels.index("dbops"):
        problems.append(
            Error(
                "INSTALLED_APPS must list 'dbbackup' after 'dbops': otherwise manage.py "
                "dbbackup is django-dbbackup's own command, and no backup is recorded.",
                hint="INSTALLED_APPS = [..., 'dbops', 'dbbackup', ...]",
                id="dbops.E008",
            )
        )
    if "health_check" not in labels:
        problems.append(
            Error(
                "INSTALLED_APPS lacks 'health_check': dbops' health pages extend its templates.",
                hint="Add 'health_check' (django-health-check 4.x) to INSTALLED_APPS.",
                id="dbops.E009",
            )
        )
    return problems


@register()
def check_off_site_and_encryption(app_configs=None, **kwargs) -> list[CheckMessage]:
    """An off-site storage that cannot work (E010: not loadable, or SFTP without the
    known-hosts file dbops insists on) and encryption without a key (E011) are found when
    the settings are read, not by the first backup at night."""
    from dbops import sftp

    problems: list[CheckMessage] = []
    if conf.has_remote_backup_storage():
        try:
            storage = conf.remote_backup_storage()
        except Exception:  # noqa: BLE001 - an unloadable backend is the finding
            storage = None
        if storage is None:
            problems.append(
                Error(
                    f'STORAGES["{conf.REMOTE_BACKUP_STORAGE_ALIAS}"] cannot be loaded: no '
                    f"backup can be copied off-site.",
                    hint="Install django-storages (and paramiko for SFTP) and check BACKEND.",
                    id="dbops.E010",
                )
            )
        if storage is not None and sftp.is_sftp_storage(storage):
            known_hosts = sftp.known_hosts_file(storage)
            if not known_hosts.is_file():
                problems.append(
                    Error(
                        f"The off-site SFTP storage's known-hosts file {known_hosts} does not "
                        f"exist: dbops copies only to a host whose key it already knows.",
                        hint=f"ssh-keyscan -p PORT {storage.host} >> {known_hosts} (after "
                        f"checking the fingerprint), or set the storage's known_host_file.",
                        id="dbops.E010",
                    )
                )
    key = conf.BACKUP_GPG_PUBLIC_KEY
    if conf.BACKUP_ENCRYPT and not key:
        problems.append(
            Error(
                "DBOPS_BACKUP_ENCRYPT is on but DBOPS_BACKUP_GPG_PUBLIC_KEY is not set.",
                hint="Name an armored public key file: gpg --armor --export KEYID > FILE.",
                id="dbops.E011",
            )
        )
    elif key and not Path(key).is_file():
        problems.append(
            Error(
                f"DBOPS_BACKUP_GPG_PUBLIC_KEY names {key}, which is not a file.",
                hint="Copy the public key there (never the private key).",
                id="dbops.E011",
            )
        )
    return problems


@register()
def check_replica_database(app_configs=None, **kwargs) -> list[CheckMessage]:
    """A standby named by DBOPS_REPLICA_DATABASE that is not a configured alias (E013) would
    be watched by nothing and refused by every `dbbackup --from-replica`: say so now."""
    alias = conf.REPLICA_DATABASE
    if not alias:
        return []
    if alias == DEFAULT_DB_ALIAS or alias not in settings.DATABASES:
        return [
            Error(
                f"DBOPS_REPLICA_DATABASE is {alias!r}, which is not the alias of a standby in "
                f"DATABASES.",
                hint="Add the standby to DATABASES under its own alias (with TEST "
                '{"MIRROR": "default"}) and name that alias, or unset DBOPS_REPLICA_DATABASE.',
                id="dbops.E013",
            )
        ]
    return []


@register()
def check_ping_urls(app_configs=None, **kwargs) -> list[CheckMessage]:
    """A ping URL that cannot be pinged (W002: no scheme, not http(s), no host) means the
    monitor never hears from the job and raises the alarm every night for a backup that ran.
    A warning, not an error: an error would stop `dbbackup` itself, and a ping must never
    fail the backup. The message names the setting, never the URL (its path is the secret)."""
    from dbops.pings import url_problem

    problems: list[CheckMessage] = []
    for name in ("BACKUP_PING_URL", "CONSISTENCY_PING_URL"):
        url = getattr(conf, name)
        problem = url and url_problem(url)
        if problem:
            problems.append(
                Warning(
                    f"{conf.PREFIX}{name} is set but cannot be pinged ({problem}): the "
                    "monitor will never hear from the job and will raise the alarm.",
                    hint="Give the full URL with its scheme, e.g. https://hc-ping.com/<uuid>, "
                    "or leave it empty for no ping.",
                    id="dbops.W002",
                )
            )
    return problems
