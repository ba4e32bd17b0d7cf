"""Restoring a backup into service, with a way back (`restore_backup`).

A backup is restored into a new database beside the live one, never over it, and checked
there: the file is the one recorded, the migrations are the recorded ones and the ones this
code expects, every table has the rows (and, where recorded, the checksums) of the backup,
and `check_consistency` finds nothing. Only then, and only when asked, is it swapped in: the
live database is renamed aside (kept for `--rollback`) and the restored one takes its name,
in one transaction (dbops.swap), after dbops' history has been carried over to it
(dbops.history). Until that commit the live database is untouched, whatever fails; a
restored database that did not go into service is dropped unless the operator keeps it.

Each step is recorded in the RestoreRun as it ends (name, outcome, detail, seconds), so a run
that stops half-way says where.
"""

from __future__ import annotations

import contextlib
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from django.db import DatabaseError, connections
from django.utils import timezone

from dbops import backups, conf, consistency, history, locks, offsite, restore_checks, runs, swap
from dbops.database import session_of_its_own
from dbops.masking import safe_error
from dbops.models import BackupRecord, RestoreRun
from dbops.offsite import OffsiteError
from dbops.pgrestore import RestoreError, restore_archive

MAINTENANCE_DATABASE = "postgres"
PASSED, FAILED = "passed", "failed"
RestoreFailed = restore_checks.RestoreFailed


@dataclass
class Plan:
    """What the operator asked for."""

    alias: str = "default"
    swap: bool = False
    terminate_sessions: bool = False
    keep_restored: bool = False
    from_remote: bool = False  # restore the off-site copy (dbops.offsite.fetch_backup)
    private_key: Path | None = None  # decrypts an encrypted backup
    passphrase: str | None = field(default=None, repr=False)  # the private key's, if any
    # Asked before the swap with what is about to happen; None: --noinput.
    confirm: Callable[[str], bool] | None = None
    notice: Callable[[str], object] = print
    report: Callable[[dict], object] = lambda step: None


class Runner:
    """One run: its record, its steps, and the databases it made or moved."""

    def __init__(self, run: RestoreRun, plan: Plan):
        self.run = run
        self.plan = plan
        self.alias = plan.alias
        self.live = connections[self.alias].settings_dict["NAME"]
        self.swapped = False

    # ------------------------------------------------------------------ steps

    @contextlib.contextmanager
    def step(self, name: str):
        """Record the step's outcome when it ends; a failure in it fails the run."""
        started = time.monotonic()
        outcome = {"detail": ""}
        try:
            yield outcome
        except (RestoreFailed, RestoreError, backups.VerificationFailed, OffsiteError) as exc:
            self.record_step(name, FAILED, str(exc), started)
            raise RestoreFailed(f"{name}: {exc}") from None
        except (DatabaseError, OSError, consistency.ConsistencyError) as exc:
            reason = safe_error(exc)
            self.record_step(name, FAILED, reason, started)
            raise RestoreFailed(f"{name}: {reason}") from None
        self.record_step(name, PASSED, outcome["detail"], started)

    def record_step(self, name: str, outcome: str, detail: str, started: float) -> None:
        entry = {
            "name": name,
            "outcome": outcome,
            "detail": detail[:2000],
            "seconds": round(time.monotonic() - started, 3),
        }
        self.run.steps = [*self.run.steps, entry]
        self.plan.report(entry)
        # Saved as it happens, so a run killed half-way shows where; a save that cannot
        # happen (the live database refusing sessions mid-swap) waits for the outcome's.
        with contextlib.suppress(DatabaseError):
            self.run.save(update_fields=["steps", "restored_database", "previous_database"])

    def maintenance(self):
        return session_of_its_own(self.alias, MAINTENANCE_DATABASE)

    # ------------------------------------------------------------------ restore and check

    def restore(self, record: BackupRecord) -> None:
        """Restore and check; swap in when the plan says so. Raises RestoreFailed."""
        self.drop_abandoned_databases()
        try:
            self.restore_and_check(record)
            if self.plan.swap:
                self.swap_in(self.run.restored_database, "previous")
        except BaseException:
            self.drop_restored_unless_kept()
            raise

    def restore_and_check(self, record: BackupRecord) -> None:
        with contextlib.ExitStack() as cleanup:
            with self.step("file") as step:
                if record.engine != "postgresql":
                    raise RestoreFailed(
                        f"{record.filename} is a {record.engine or 'unknown'} backup; "
                        f"restore_backup restores PostgreSQL backups"
                    )
                path, step["detail"] = self.backup_file(record, cleanup)
            self.restore_file_and_check(record, path)

    def backup_file(self, record: BackupRecord, cleanup: contextlib.ExitStack) -> tuple:
        """The plain backup file to restore, and how it was checked: the local file as it is,
        or a private copy fetched (from the off-site storage) and decrypted, removed when
        the restore is done with it."""
        if not self.plan.from_remote and not record.encrypted:
            path = backups.checked_file(record)
            return path, f"{path} ({record.size:,} bytes), sha256 matches the record"
        folder = cleanup.enter_context(
            tempfile.TemporaryDirectory(prefix=".dbops-restore-", dir=conf.BACKUP_DIR)
        )
        path = Path(folder) / record.filename.removesuffix(".gpg")
        offsite.fetch_backup(
            record,
            path,
            remote=self.plan.from_remote,
            private_key=self.plan.private_key,
            passphrase=self.plan.passphrase,
        )
        where = (
            f"the off-site copy ({offsite.where()})"
            if self.plan.from_remote
            else str(backups.backup_path(record.filename))
        )
        decrypted = ", decrypted" if record.encrypted else ""
        return path, f"{where}: {record.size:,} bytes, sha256 matches the record{decrypted}"

    def restore_file_and_check(self, record: BackupRecord, path: Path) -> None:
        with self.step("create database") as step:
            with self.maintenance() as maintenance, maintenance.cursor() as cursor:
                name = swap.unused_name(
                    cursor, swap.timestamped_name(self.live, "restored", timezone.now())
                )
                # Recorded first: a run killed from here on leaves a database the next
                # run knows to drop (drop_abandoned_databases).
                self.run.restored_database = name
                self.run.save(update_fields=["restored_database"])
                swap.create_database_like(cursor, name, self.live)
            step["detail"] = f"created {name}, with the encoding and collation of {self.live}"
        with self.step("pg_restore") as step:
            restore_archive(path, self.alias, name)
            step["detail"] = f"{record.filename} restored into {name}"
        with session_of_its_own(self.alias, name) as restored:
            with self.step("migrations") as step:
                step["detail"] = restore_checks.check_migrations(restored, record)
            with self.step("rows") as step:
                step["detail"] = restore_checks.check_rows(restored, record)
            with self.step("check_consistency") as step:
                step["detail"] = restore_checks.check_consistency(restored)

    def drop_abandoned_databases(self) -> None:
        """A run killed half-way (SIGKILL, a machine lost) cannot drop the database it was
        restoring into: the next run does, once that run's record shows it abandoned (its
        lock is gone with its session) and the database still has the name it was restored
        under (so it never went into service)."""
        abandoned = (
            RestoreRun.objects.using(self.alias)
            .filter(
                status=RestoreRun.Status.ABANDONED,
                action__in=[RestoreRun.Action.RESTORE, RestoreRun.Action.SWAP],
            )
            .exclude(restored_database__in=["", self.live])
        )
        names = sorted(set(abandoned.values_list("restored_database", flat=True)))
        if not names:
            return
        try:
            with self.maintenance() as maintenance, maintenance.cursor() as cursor:
                for name in names:
                    if swap.database_exists(cursor, name):
                        swap.drop_database(cursor, name)
                        self.plan.notice(f"Dropped {name}, left by a restore run that was killed")
        except DatabaseError as exc:  # the restore does not depend on it: say so, go on
            self.plan.notice(f"Could not drop a killed run's database: {safe_error(exc)}")

    def drop_restored_unless_kept(self) -> None:
        name = self.run.restored_database
        if not name or self.swapped:
            return
        if self.plan.keep_restored:
            self.plan.notice(f"Kept {name} (--keep-restored): drop it when done with it.")
            return
        started = time.monotonic()
        try:
            with self.maintenance() as maintenance, maintenance.cursor() as cursor:
                if not swap.database_exists(cursor, name):
                    self.run.restored_database = ""  # it was never created
                    return
                swap.drop_database(cursor, name)
        except DatabaseError as exc:
            self.record_step("drop restored", FAILED, safe_error(exc), started)
            self.plan.notice(f"Could not drop {name}: {safe_error(exc)}")
            return
        self.record_step("drop restored", PASSED, f"dropped {name}", started)

    # ------------------------------------------------------------------ swap

    def swap_in(self, incoming: str, kind: str) -> None:
        """Put `incoming` in the live database's place, the live one aside as `{live}_{kind}_
        {time}`: sessions, history, then both renames in one transaction."""
        if self.plan.confirm is not None:
            with self.step("confirm") as step:
                question = f"{self.live} will be renamed aside and {incoming} will take its name."
                if not self.plan.confirm(question):
                    raise RestoreFailed("the operator did not confirm the swap")
                step["detail"] = "confirmed at the prompt"
        live_connection = connections[self.alias]
        with live_connection.cursor() as cursor:
            cursor.execute("SELECT pg_backend_pid()")
            own_pids = {cursor.fetchone()[0]}
        with self.maintenance() as maintenance:
            self.swap_from(maintenance, incoming, kind, own_pids)
        self.hold_lock_again()

    def swap_from(self, maintenance, incoming: str, kind: str, own_pids: set[int]) -> None:
        live_connection = connections[self.alias]
        closed = False
        try:
            with self.step("sessions") as step:
                with maintenance.cursor() as cursor:
                    swap.refuse_new_sessions(cursor, self.live)
                    closed = True
                step["detail"] = self.clear_sessions(maintenance, [self.live, incoming], own_pids)
            with self.step("history") as step:
                step["detail"] = self.carry_history(incoming)
            with self.step("swap") as step:
                with maintenance.cursor() as cursor:
                    aside = swap.unused_name(
                        cursor, swap.timestamped_name(self.live, kind, timezone.now())
                    )
                self.run.previous_database = aside
                live_connection.close()  # the rename needs the live database without sessions
                swap.swap_names(maintenance, self.live, incoming, aside)
                self.swapped = True
                step["detail"] = (
                    f"{self.live} renamed to {aside}; {incoming} renamed to {self.live}"
                )
        finally:
            if closed and not self.swapped:
                with contextlib.suppress(DatabaseError), maintenance.cursor() as cursor:
                    swap.allow_connections(cursor, self.live, True)

    def clear_sessions(self, maintenance, databases: list[str], own_pids: set[int]) -> str:
        with maintenance.cursor() as cursor:
            others = swap.sessions_on(cursor, databases, own_pids)
            if not others:
                return f"no other session on {' or '.join(databases)}; new ones refused"
            listed = "; ".join(str(session) for session in others)
            if not self.plan.terminate_sessions:
                raise RestoreFailed(
                    f"{len(others)} other session(s) connected: {listed}. Stop them (the "
                    f"application, workers, psql), or pass --terminate-sessions to end them"
                )
            remaining = swap.terminate(cursor, others)
        if remaining:
            raise RestoreFailed(
                "sessions did not end: " + "; ".join(str(session) for session in remaining)
            )
        return f"ended {len(others)} session(s): {listed}"

    def carry_history(self, incoming: str) -> str:
        self.run.save(update_fields=["steps", "restored_database", "previous_database"])
        with session_of_its_own(self.alias, incoming) as target:
            copied = history.carry_history(connections[self.alias], target)
        rows = ", ".join(f"{table} {count}" for table, count in copied.items())
        return f"dbops' history of {self.live} carried into {incoming}: {rows}"

    def hold_lock_again(self) -> None:
        """The run's lock went with the old live database's session: take it on the new one,
        so the record is not taken for abandoned before its outcome is saved."""
        connection = connections[self.alias]
        with contextlib.suppress(DatabaseError):
            with connection.cursor() as cursor:
                locks.hold(cursor, RestoreRun.RUN_LOCK, locks.key_of_number(self.run.pk))
            self.run.lock_session = connection.connection

    # ------------------------------------------------------------------ rollback

    def rollback(self, name: str | None) -> None:
        with self.step("find") as step:
            target = self.previous_database(name)
            self.run.restored_database = target
            step["detail"] = f"{target} was set aside by an earlier swap"
        self.swap_in(target, "rolledback")

    def previous_database(self, name: str | None) -> str:
        done = RestoreRun.objects.using(self.alias).filter(
            status=RestoreRun.Status.SUCCEEDED,
            action__in=[RestoreRun.Action.SWAP, RestoreRun.Action.ROLLBACK],
        )
        if name:
            if not done.filter(previous_database=name).exists():
                raise RestoreFailed(
                    f"{name} was not set aside by a swap of {self.live} (the restore history "
                    f"lists those: admin, Restore runs)"
                )
        else:
            newest = done.exclude(previous_database="").first()
            if newest is None:
                raise RestoreFailed(f"no swap of {self.live} is recorded: nothing to roll back")
            name = newest.previous_database
        with self.maintenance() as maintenance, maintenance.cursor() as cursor:
            exists = swap.database_exists(cursor, name)
        if not exists:
            raise RestoreFailed(f"database {name} no longer exists on the server")
        return name


# --------------------------------------------------------------------------- the run


def reopen_live_database(alias: str, notice: Callable[[str], object]) -> None:
    """Before anything else (a live database that takes no sessions cannot even be read):
    undo what a swap killed half-way left (dbops.swap.reopen_if_abandoned)."""
    live = connections[alias].settings_dict["NAME"]
    with (
        session_of_its_own(alias, MAINTENANCE_DATABASE) as maintenance,
        maintenance.cursor() as cursor,
    ):
        try:
            done = swap.reopen_if_abandoned(cursor, live)
        except swap.SwapInProgress as exc:
            raise RestoreFailed(str(exc)) from None
    if done:
        notice(done)


def start(
    alias: str, action: str, record: BackupRecord | None = None, from_remote: bool = False
) -> RestoreRun:
    """The run's record, unless another restore_backup of this database is running."""
    runs.mark_abandoned(RestoreRun, alias)
    running = RestoreRun.objects.using(alias).filter(status=RestoreRun.Status.RUNNING).first()
    if running is not None:
        raise RestoreFailed(
            f"restore run {running.pk} (pid {running.pid} on {running.host}) is still running"
        )
    return runs.start_run(
        RestoreRun, alias, action=action, backup=record, database=alias, from_remote=from_remote
    )


def finish(run: RestoreRun, started: float, error: str = "") -> bool:
    run.status = RestoreRun.Status.FAILED if error else RestoreRun.Status.SUCCEEDED
    run.error = error
    run.finished_at = timezone.now()
    run.duration_seconds = time.monotonic() - started
    return runs.save_outcome(run)
