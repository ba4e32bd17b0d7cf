"""Which backups to keep: the last N daily, weekly and monthly ones, never fewer than a floor of
good ones, never the newest verified one, never a pinned one; decided from the records alone.

The rule, as restic and borg keep snapshots (and as django-dbbackup's `--clean`, which counts
files whose names match, does not): of the successful backups, newest first,
- DBOPS_BACKUP_KEEP_DAILY: the newest backup of each of the last N days that have one;
- DBOPS_BACKUP_KEEP_WEEKLY: the same per ISO week (Monday to Sunday), the last N weeks;
- DBOPS_BACKUP_KEEP_MONTHLY: the same per calendar month, the last N months;
- DBOPS_BACKUP_KEEP_MIN: the N newest, whatever their days (more backups a day than tiers);
- DBOPS_BACKUP_KEEP_DAYS: every backup younger than N days (0, the default: none);
- the newest backup whose verification passed, however old: it may be the only one proven;
- every pinned backup (the admin's "keep" action).
Periods are UTC. A period without a backup uses no slot: a month of outage does not age the
backups out. Every other successful backup goes, from the local directory and from the remote
storage alike; its record stays, with `deleted_at` / `remote_deleted_at` set. Failed runs
left no file and are not considered.

`decide` is a pure function of records and a time, so the tiers are tested with records at
chosen dates; `apply_retention` deletes what it decided.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

from django.db.models import Q
from django.utils import timezone

from dbops import conf
from dbops.backups import backup_path
from dbops.masking import safe_error
from dbops.models import BackupRecord


@dataclass(frozen=True)
class Policy:
    daily: int = 7
    weekly: int = 4
    monthly: int = 12
    minimum: int = 3
    days: int = 0

    @classmethod
    def from_settings(cls) -> Policy:
        return cls(
            daily=conf.BACKUP_KEEP_DAILY,
            weekly=conf.BACKUP_KEEP_WEEKLY,
            monthly=conf.BACKUP_KEEP_MONTHLY,
            minimum=conf.BACKUP_KEEP_MIN,
            days=conf.BACKUP_KEEP_DAYS,
        )

    def describe(self) -> str:
        return (
            f"{self.daily} daily, {self.weekly} weekly, {self.monthly} monthly, "
            f"the {self.minimum} newest"
            + (f", all younger than {self.days} days" if self.days else "")
        )


@dataclass
class Decision:
    record: BackupRecord
    keep: bool = False
    reasons: list[str] = field(default_factory=list)

    @property
    def why(self) -> str:
        return "; ".join(self.reasons)


def _day(moment: datetime) -> tuple[str, str]:
    day = moment.date().isoformat()
    return day, day


def _week(moment: datetime) -> tuple[tuple[int, int], str]:
    year, week, _ = moment.isocalendar()
    return (year, week), f"week {year}-W{week:02d}"


def _month(moment: datetime) -> tuple[tuple[int, int], str]:
    return (moment.year, moment.month), f"{moment.year}-{moment.month:02d}"


TIERS = (("daily", _day), ("weekly", _week), ("monthly", _month))


def decide(records, policy: Policy, now: datetime) -> list[Decision]:
    """A Decision for each successful record, newest first, with every reason to keep it or
    the reason it goes. `records` need `pk`, `started_at`, `status`, `verification`,
    `pinned` and `filename`."""
    good = sorted(
        (r for r in records if r.status == BackupRecord.Status.SUCCEEDED),
        key=lambda r: (r.started_at, r.pk),
        reverse=True,
    )
    decisions = [Decision(record) for record in good]
    newest_of_day: dict[str, BackupRecord] = {}
    for decision in decisions:
        record = decision.record
        if record.pinned:
            decision.reasons.append("pinned (kept from the admin)")
        newest_of_day.setdefault(_day(_utc(record.started_at))[0], record)
    verified = next(
        (d for d in decisions if d.record.verification == BackupRecord.Verification.PASSED), None
    )
    if verified is not None:
        verified.reasons.append("the newest verified backup")
    for position, decision in enumerate(decisions[: max(policy.minimum, 0)], start=1):
        decision.reasons.append(f"{position} of the {policy.minimum} newest (KEEP_MIN)")
    if policy.days > 0:
        cutoff = now - timedelta(days=policy.days)
        for decision in decisions:
            if decision.record.started_at > cutoff:
                decision.reasons.append(f"younger than {policy.days} days (KEEP_DAYS)")
    kept_periods = {
        name: _keep_newest_per_period(decisions, name, period_of, getattr(policy, name))
        for name, period_of in TIERS
    }
    kept_days = kept_periods["daily"]
    for decision in decisions:
        decision.keep = bool(decision.reasons)
        if decision.keep:
            continue
        day = _day(_utc(decision.record.started_at))[0]
        if day in kept_days:
            newest = newest_of_day[day].filename
            decision.reasons.append(f"not the newest backup of {day} ({newest} is)")
        else:
            decision.reasons.append(f"older than the tiers keep ({policy.describe()})")
    return decisions


def _keep_newest_per_period(decisions, name: str, period_of, slots: int) -> list:
    """Keep the newest decision's record of each of the `slots` newest periods that have one;
    return those periods."""
    seen = []
    for decision in decisions:
        period, label = period_of(_utc(decision.record.started_at))
        if period in seen:
            continue
        if len(seen) >= slots:
            break
        seen.append(period)
        decision.reasons.append(f"{name} {len(seen)} of {slots}: the newest of {label}")
    return seen


def _utc(moment: datetime) -> datetime:
    return moment.astimezone(UTC)


# --------------------------------------------------------------------------- applying it


def candidates():
    """The successful backups that still have a copy, local or remote."""
    return BackupRecord.objects.filter(status=BackupRecord.Status.SUCCEEDED).filter(
        Q(deleted_at__isnull=True)
        | Q(
            remote_copy=BackupRecord.RemoteCopy.COPIED,
            remote_deleted_at__isnull=True,
            remote_name__gt="",
        )
    )


def plan(now: datetime | None = None) -> list[Decision]:
    return decide(list(candidates()), Policy.from_settings(), now or timezone.now())


@dataclass
class Outcome:
    decisions: list[Decision]
    deleted: list[tuple[Decision, list[str]]] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)


def apply_retention(now: datetime | None = None) -> Outcome:
    """Delete every backup `plan` lets go, locally and from the remote storage. A copy that
    cannot be deleted is a problem (its record stays unmarked, so the next run tries again);
    the others go on."""
    now = now or timezone.now()
    outcome = Outcome(plan(now))
    remote = conf.remote_backup_storage()
    with _RemoteSession() as remote_files:
        _apply(outcome, now, remote, remote_files)
    return outcome


def _apply(outcome: Outcome, now: datetime, remote, remote_files: _RemoteSession) -> None:
    for decision in outcome.decisions:
        if decision.keep:
            continue
        record, gone = decision.record, []
        if record.deleted_at is None:
            try:
                _delete_local(record)
            except OSError as exc:
                outcome.problems.append(
                    f"{record.filename}: local file not deleted: {safe_error(exc)}"
                )
            else:
                record.deleted_at = now
                gone.append("local file")
        # Only a copy that was written and read back is dbops' to delete: a record from
        # before failed copies stopped naming a file may name one dbops never wrote.
        copied = record.remote_copy == BackupRecord.RemoteCopy.COPIED
        if copied and record.remote_name and record.remote_deleted_at is None:
            if remote is None:
                outcome.notes.append(
                    f"{record.filename}: off-site copy {record.remote_name} left in place: no "
                    f'remote storage (STORAGES["{conf.REMOTE_BACKUP_STORAGE_ALIAS}"]) configured'
                )
            else:
                try:
                    _delete_remote(remote_files.open(), record.remote_name)
                except Exception as exc:  # noqa: BLE001 - any storage's error, reported
                    outcome.problems.append(
                        f"{record.filename}: off-site copy {record.remote_name} not deleted: "
                        f"{safe_error(exc)}"
                    )
                else:
                    record.remote_deleted_at = now
                    gone.append("off-site copy")
        if gone:
            record.save(update_fields=["deleted_at", "remote_deleted_at"])
            outcome.deleted.append((decision, gone))


class _RemoteSession(contextlib.ExitStack):
    """The remote's files (dbops.offsite.remote_files: for SFTP, dbops' own session, which
    refuses an unknown host key, where the storage's own API would accept it), opened at the
    first deletion and kept for the others; a failure to open is raised for each."""

    def __init__(self):
        super().__init__()
        self._files = None
        self._error: Exception | None = None

    def open(self):
        from dbops import offsite

        if self._error is not None:
            raise self._error
        if self._files is None:
            try:
                self._files = self.enter_context(offsite.remote_files())
            except Exception as exc:
                self._error = exc
                raise
        return self._files


def _delete_local(record: BackupRecord) -> None:
    for path in (backup_path(record.filename), backup_path(record.filename + ".metadata")):
        path.unlink(missing_ok=True)


def _delete_remote(files, name: str) -> None:
    """Delete a remote copy (and its .metadata, if one was copied); one already gone is no
    error (a storage's delete of a missing file may raise)."""
    if files.exists(name):
        files.delete(name)
    with contextlib.suppress(Exception):
        if files.exists(name + ".metadata"):
            files.delete(name + ".metadata")
