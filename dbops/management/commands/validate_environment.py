"""Check, one line each, everything a deployment needs before it may serve traffic.

This replaces the old validate_environment.sh. It answers the question the team could not
answer during the incident: which .env file was read, which variable won, which database this
process really talks to, and whether that database is ready (reachable, migrated, backed up
with a pg_dump and verified with a pg_restore that fit it, into a private directory). It never
prints a secret.
"""

from __future__ import annotations

import shutil
import stat
import tempfile
from dataclasses import asdict, dataclass
from pathlib import Path

from django.core.management.base import BaseCommand, CommandError
from django.db import DatabaseError, connections

from dbops import conf, pooler_status
from dbops.backup_files import loose_permissions
from dbops.commands import (
    add_database_argument,
    add_json_argument,
    report_on_stdout,
    write_json_report,
)
from dbops.database import DatabaseProbe, client_major_version, migration_state, probe_connection
from dbops.envinfo import (
    SOURCE_DEFAULT,
    SOURCE_ENVIRONMENT,
    describe_database,
    env_file_pitfalls,
)
from dbops.masking import safe_error

PASSED, FAILED, WARNING, SKIPPED = "passed", "failed", "warning", "skipped"


@dataclass
class Result:
    name: str
    status: str
    detail: str
    hint: str = ""


class Command(BaseCommand):
    help = (
        "Check the configuration and the database one step at a time: .env file, variables, "
        "DATABASE_URL, connection, server version, engine, migrations, pg_dump, pg_restore, "
        "backup directory. Exit 0 when every check passes, 1 on any failure (or warning, "
        "with --strict)."
    )
    requires_system_checks = []

    def add_arguments(self, parser):
        add_database_argument(parser, "Database alias to check (default: default).")
        add_json_argument(parser, '"checks": [{"name", "status", "detail", "hint"}, ...]')
        parser.add_argument(
            "--strict", action="store_true", help="Treat warnings as failures (exit 1)."
        )

    def handle(self, *args, database, json_report, strict: bool, **options):
        results = self.run_checks(database)
        failed = [r for r in results if r.status == FAILED or (strict and r.status == WARNING)]
        if not report_on_stdout(json_report):
            self.write_lines(results)
        write_json_report(
            self.stdout,
            json_report,
            ok=not failed,
            environment=conf.ENVIRONMENT,
            env_file=None if conf.ENV_FILE is None else str(conf.ENV_FILE),
            env_file_exists=conf.ENV_FILE_EXISTS,
            checks=[asdict(r) for r in results],
        )
        if failed:
            raise CommandError(
                f"{len(failed)} of {len(results)} checks failed: "
                + ", ".join(r.name for r in failed),
                returncode=1,
            )

    # ------------------------------------------------------------------ the checks

    def run_checks(self, alias: str) -> list[Result]:
        connection = connections[alias]
        results = [self.check_env_file(), *self.check_variables(), self.check_database_url(alias)]
        probe = self.check_connection_probe(connection)
        results.append(self.connection_result(connection, probe))
        reachable = probe is not None and probe.reachable
        results.append(self.check_server_version(probe))
        results.append(self.check_engine(connection))
        results.append(
            self.check_migrations(connection) if reachable else self.skipped_migrations()
        )
        results.append(self.check_client_program("pg_dump", connection, probe))
        results.append(self.check_client_program("pg_restore", connection, probe))
        results.append(self.check_backup_dir())
        results += [Result(*line) for line in pooler_status.environment_checks()]
        results += self.check_pitfalls()
        connection.close()
        return results

    def check_env_file(self) -> Result:
        path = conf.ENV_FILE
        if path is None:
            return Result(".env file", SKIPPED, "not reported by the settings (DBOPS_ENV_FILE)")
        if conf.ENV_FILE_EXISTS:
            return Result(".env file", PASSED, f"read {path}")
        variable = conf.ENV_FILE_VARIABLE
        return Result(
            ".env file",
            WARNING,
            f"no file at {path}; values come from the process environment and defaults",
            hint="Create it from .env.example"
            + (f", or set {variable} to the file to read." if variable else "."),
        )

    def check_variables(self) -> list[Result]:
        results = []
        sources = conf.SETTING_SOURCES or {}
        problems = conf.CONFIGURATION_PROBLEMS
        file_keys = set(conf.ENV_FILE_KEYS)
        key_variables = conf.KEY_VARIABLES
        for name in key_variables:
            source = sources.get(name, SOURCE_DEFAULT)
            own_problems = [p for p in problems if p.startswith(f"{name}:")]
            if own_problems:
                results.append(
                    Result(
                        name,
                        FAILED,
                        "; ".join(p.split(": ", 1)[1] for p in own_problems),
                        hint=f"Set {name} in {conf.ENV_FILE} or the environment "
                        f"(see .env.example).",
                    )
                )
                continue
            if source == SOURCE_DEFAULT:
                detail = "not set; default used"
                if name == "DATABASE_URL" and conf.DATABASE_IS_DEFAULT_SQLITE:
                    results.append(
                        Result(
                            name,
                            WARNING,
                            "not set: development uses SQLite at "
                            + str(connections["default"].settings_dict["NAME"]),
                            hint="Set DATABASE_URL to use PostgreSQL.",
                        )
                    )
                    continue
            else:
                detail = f"set in the {source}"
            if source == SOURCE_ENVIRONMENT and name in file_keys:
                results.append(
                    Result(
                        name,
                        WARNING,
                        f"set in the process environment, which overrides the value in "
                        f"{conf.ENV_FILE}",
                        hint=f"Unset {name} in the environment if the .env file should win.",
                    )
                )
                continue
            if name == conf.ENVIRONMENT_VARIABLE:
                detail = f"{conf.ENVIRONMENT}; {detail}"
            results.append(Result(name, PASSED, detail))
        others = [p for p in problems if p.split(":", 1)[0] not in key_variables]
        results += [
            Result(p.split(":", 1)[0], FAILED, p.split(": ", 1)[1], hint="See .env.example.")
            for p in others
        ]
        return results

    def check_database_url(self, alias: str) -> Result:
        settings_dict = connections[alias].settings_dict
        if settings_dict["ENGINE"] == "django.db.backends.dummy":
            return Result("database settings", SKIPPED, "no usable DATABASE_URL")
        return Result("database settings", PASSED, describe_database(settings_dict))

    def check_connection_probe(self, connection) -> DatabaseProbe | None:
        if connection.settings_dict["ENGINE"] == "django.db.backends.dummy":
            return None
        if connection.vendor == "sqlite" and not Path(connection.settings_dict["NAME"]).exists():
            return None
        return probe_connection(connection)

    def connection_result(self, connection, probe: DatabaseProbe | None) -> Result:
        if probe is None:
            if connection.vendor == "sqlite":
                return Result(
                    "connection",
                    WARNING,
                    f"SQLite file {connection.settings_dict['NAME']} does not exist yet",
                    hint="'manage.py migrate' creates it.",
                )
            return Result("connection", SKIPPED, "no usable DATABASE_URL")
        if probe.reachable:
            return Result("connection", PASSED, f"answered in {probe.elapsed_ms:.0f} ms")
        reason = self.connection_error_reason(connection)
        timeout = connection.settings_dict.get("OPTIONS", {}).get("connect_timeout")
        return Result(
            "connection",
            FAILED,
            f"unreachable ({probe.error_class}) after {probe.elapsed_ms / 1000:.1f} s{reason}",
            hint="Is the server running, and does DATABASE_URL name the right host, port, "
            "user and password?"
            + (
                f" Connections give up after {timeout} s (OPTIONS connect_timeout)."
                if timeout
                else ""
            ),
        )

    def connection_error_reason(self, connection) -> str:
        """The driver's own words (first line, secrets masked): an operator needs them."""
        try:
            connection.ensure_connection()
        except Exception as exc:  # noqa: BLE001
            return f": {safe_error(exc, limit=200)}"
        return ""

    def check_server_version(self, probe: DatabaseProbe | None) -> Result:
        if probe is None or not probe.reachable:
            return Result("server version", SKIPPED, "the database is not reachable")
        return Result("server version", PASSED, f"{probe.vendor} {probe.server_version}")

    def check_engine(self, connection) -> Result:
        environment = conf.ENVIRONMENT
        vendor = connection.vendor
        if connection.settings_dict["ENGINE"] == "django.db.backends.dummy":
            return Result("engine", SKIPPED, "no usable DATABASE_URL")
        if environment == "production" and vendor != "postgresql":
            return Result(
                "engine",
                FAILED,
                f"production runs on {vendor}",
                hint="Production must use PostgreSQL: set DATABASE_URL to a postgres:// URL.",
            )
        if vendor == "sqlite":
            return Result(
                "engine",
                WARNING,
                f"{environment} runs on SQLite",
                hint="Set DATABASE_URL to use PostgreSQL.",
            )
        return Result("engine", PASSED, f"{vendor} fits {conf.ENVIRONMENT_VARIABLE}={environment}")

    def check_migrations(self, connection) -> Result:
        try:
            state = migration_state(connection)
        except DatabaseError as exc:
            # A role that may connect but not read django_migrations (wrong user in the URL,
            # grants not yet given) must get a line, not a traceback.
            user = connection.settings_dict.get("USER") or "the role"
            return Result(
                "migrations",
                FAILED,
                f"cannot read django_migrations: {safe_error(exc, limit=200)}",
                hint=f"Grant {user} SELECT on django_migrations (and the application's "
                "tables), or set DATABASE_URL to the role that owns them.",
            )
        if not state.unapplied:
            return Result("migrations", PASSED, f"all applied ({state.applied})")
        return Result(
            "migrations",
            FAILED,
            f"{len(state.unapplied)} not applied: {state.shown()}",
            hint=f"Run 'manage.py migrate --database {connection.alias}'.",
        )

    def skipped_migrations(self) -> Result:
        return Result("migrations", SKIPPED, "the database is not reachable")

    def check_client_program(self, program: str, connection, probe: DatabaseProbe | None) -> Result:
        """pg_dump writes the backups, pg_restore verifies them: each present, and new enough."""
        if connection.vendor != "postgresql":
            return Result(program, SKIPPED, "not needed: SQLite is backed up through its API")
        path = shutil.which(program)
        if path is None:
            return Result(
                program,
                FAILED,
                "not found on PATH",
                hint="Install the PostgreSQL client tools (Debian: postgresql-client).",
            )
        client_major = client_major_version(path)
        if client_major is None:
            return Result(program, FAILED, f"{path} did not report its version")
        if probe is None or not probe.reachable:
            return Result(program, WARNING, f"{path} is version {client_major}; server unknown")
        server_major = int(probe.server_version.split(".")[0])
        if client_major < server_major:
            return Result(
                program,
                FAILED,
                f"{path} is version {client_major}, older than the server ({server_major})",
                hint=f"Install postgresql-client-{server_major} or newer: backups and their "
                "verification need it.",
            )
        return Result(program, PASSED, f"{path} version {client_major} (server {server_major})")

    def check_backup_dir(self) -> Result:
        if conf.BACKUP_DIR is None:
            return Result(
                "backup directory",
                FAILED,
                'not configured: neither DBOPS_BACKUP_DIR nor STORAGES["dbbackup"] names one',
                hint="'manage.py check' says what to set (dbops.E003, dbops.E006).",
            )
        directory = Path(conf.BACKUP_DIR)
        if directory.is_dir():
            try:
                with tempfile.NamedTemporaryFile(dir=directory, prefix=".write-test-"):
                    pass
            except OSError as exc:
                return Result(
                    "backup directory",
                    FAILED,
                    f"{directory} is not writable ({exc.strerror})",
                    hint="Fix its owner or mode, or set DBOPS_BACKUP_DIR.",
                )
            loose = loose_permissions(directory)
            if loose:
                return Result("backup directory", WARNING, loose, hint=f"chmod 700 {directory}")
            mode = stat.S_IMODE(directory.stat().st_mode)
            return Result("backup directory", PASSED, f"{directory} is writable, mode {mode:04o}")
        if directory.exists():
            return Result("backup directory", FAILED, f"{directory} is not a directory")
        parent = next((p for p in directory.parents if p.exists()), None)
        if parent is not None and parent.is_dir() and _writable(parent):
            return Result(
                "backup directory",
                WARNING,
                f"{directory} does not exist yet; it will be created (mode 0700)",
            )
        return Result(
            "backup directory",
            FAILED,
            f"{directory} does not exist and cannot be created",
            hint="Create it (mode 0700) or set DBOPS_BACKUP_DIR.",
        )

    def check_pitfalls(self) -> list[Result]:
        if conf.ENV_FILE is None or not conf.ENV_FILE_EXISTS:
            return []
        pitfalls = env_file_pitfalls(Path(conf.ENV_FILE))
        if not pitfalls:
            return [Result(".env pitfalls", PASSED, "no '$' values, no unquoted ' #'")]
        return [Result(".env pitfalls", WARNING, pitfall) for pitfall in pitfalls]

    # ------------------------------------------------------------------ output

    def write_lines(self, results: list[Result]) -> None:
        styles = {
            PASSED: self.style.SUCCESS,
            FAILED: self.style.ERROR,
            WARNING: self.style.WARNING,
            SKIPPED: str,
        }
        self.stdout.write(f"Environment check ({conf.ENVIRONMENT_VARIABLE}={conf.ENVIRONMENT})")
        for result in results:
            label = styles[result.status](f"{result.status:<8}")
            self.stdout.write(f"  {label} {result.name}: {result.detail}")
            if result.hint and result.status in (FAILED, WARNING):
                self.stdout.write(f"           hint: {result.hint}")
        counts = {status: sum(r.status == status for r in results) for status in styles}
        self.stdout.write(
            f"{len(results)} checks: {counts[PASSED]} passed, {counts[FAILED]} failed, "
            f"{counts[WARNING]} warnings, {counts[SKIPPED]} skipped"
        )


def _writable(directory: Path) -> bool:
    try:
        with tempfile.NamedTemporaryFile(dir=directory, prefix=".write-test-"):
            return True
    except OSError:
        return False
