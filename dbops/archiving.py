"""WAL archiving, watched: the server's own account of its archive_command (pg_stat_archiver).

Point-in-time recovery (pgBackRest, WAL-G, or a plain `archive_command`) is only as good as
the newest segment that reached the archive. A failing archive_command fails silently: the
server keeps the segments in pg_wal, retries, and says so only in its log and in
pg_stat_archiver, until the disk fills. So `/health/` fails as soon as the newest attempt
failed after the newest success (`last_failed_time > last_archived_time`), `/metrics`
exports both times for alerts, and the status page shows the age of the newest archived
segment. PostgreSQL counts failures since its statistics were reset and keeps no count
since the last success; "failing" is the comparison of the two times, and `failing_since`
(the newest success) says how long point-in-time recovery has been stuck, which is what a
count since the last success would be read for.

With archive_mode off, archiving is reported as off, which is not a failure: a site that
relies on nightly dumps alone has nothing to archive.
"""

from __future__ import annotations

import dataclasses
from datetime import UTC, datetime

from django.db import DEFAULT_DB_ALIAS, DatabaseError
from health_check import HealthCheck
from health_check.exceptions import ServiceUnavailable
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

from dbops.health import DATABASE_TIMEOUT, prepare_connection

ARCHIVER_SQL = """
SELECT current_setting('archive_mode'), archived_count, last_archived_wal,
       extract(epoch FROM last_archived_time), failed_count, last_failed_wal,
       extract(epoch FROM last_failed_time), extract(epoch FROM now())
  FROM pg_stat_archiver
"""


@dataclasses.dataclass(frozen=True)
class ArchiverState:
    """pg_stat_archiver, with times as Unix timestamps (None: never)."""

    mode: str  # archive_mode: off, on or always
    archived_count: int = 0
    last_archived_wal: str | None = None
    last_archived_at: float | None = None
    failed_count: int = 0
    last_failed_wal: str | None = None
    last_failed_at: float | None = None
    now: float = 0.0

    @property
    def enabled(self) -> bool:
        return self.mode != "off"

    @property
    def failing(self) -> bool:
        """The newest attempt failed: no segment was archived after the newest failure."""
        if self.last_failed_at is None:
            return False
        return self.last_archived_at is None or self.last_failed_at > self.last_archived_at

    @property
    def failing_since(self) -> str | None:
        """While failing, when the newest segment was archived (ISO 8601, UTC): nothing has
        reached the archive since. None when not failing, or when nothing was archived since
        the statistics reset."""
        if not self.failing or self.last_archived_at is None:
            return None
        return datetime.fromtimestamp(self.last_archived_at, UTC).isoformat(timespec="seconds")

    @property
    def last_archived_age(self) -> float | None:
        if self.last_archived_at is None:
            return None
        return max(0.0, self.now - self.last_archived_at)


def archiver_state(connection) -> ArchiverState | None:
    """The archiver's state, read on `connection` (None: not PostgreSQL). Raises
    DatabaseError when the server does not answer."""
    if connection.vendor != "postgresql":
        return None
    with connection.cursor() as cursor:
        cursor.execute(ARCHIVER_SQL)
        row = cursor.fetchone()
    mode, archived, archived_wal, archived_at, failed, failed_wal, failed_at, now = row
    return ArchiverState(
        mode=mode,
        archived_count=archived,
        last_archived_wal=archived_wal,
        last_archived_at=None if archived_at is None else float(archived_at),
        failed_count=failed,
        last_failed_wal=failed_wal,
        last_failed_at=None if failed_at is None else float(failed_at),
        now=float(now),
    )


@dataclasses.dataclass
class WalArchiving(HealthCheck):
    """With archive_mode on, the newest archive_command run did not fail after the newest
    success. Off (or not PostgreSQL): nothing to check, which passes."""

    alias: str = DEFAULT_DB_ALIAS
    timeout = DATABASE_TIMEOUT

    def run(self):
        try:
            state = archiver_state(prepare_connection(self.alias))
        except DatabaseError:
            raise ServiceUnavailable("archiver state unknown") from None
        if state is not None and state.enabled and state.failing:
            raise ServiceUnavailable("WAL archiving is failing: archive_command failed last")


def details_of(state: ArchiverState) -> dict:
    """WAL archiving in `/health/`'s details (staff and token holders)."""
    if not state.enabled:
        return {"archive_mode": state.mode}
    age = state.last_archived_age
    return {
        "archive_mode": state.mode,
        "failing": state.failing,
        "failing_since": state.failing_since,
        "last_archived_wal": state.last_archived_wal,
        "last_archived_age_seconds": None if age is None else round(age),
        "last_failed_wal": state.last_failed_wal,
        "failed_count": state.failed_count,
    }


def archiving_families(state: ArchiverState | None):
    """/metrics: whether archiving is on and, when it is, the archiver's times and counts."""
    if state is None:
        return
    enabled = GaugeMetricFamily(
        "dbops_wal_archiving_enabled", "Whether the server archives WAL (archive_mode not off)"
    )
    enabled.add_metric([], float(state.enabled))
    yield enabled
    if not state.enabled:
        return
    for name, documentation, value in (
        (
            "last_success_timestamp_seconds",
            "When the newest WAL segment was archived (0: none since the statistics reset)",
            state.last_archived_at or 0.0,
        ),
        (
            "last_failure_timestamp_seconds",
            "When archive_command last failed (0: never since the statistics reset)",
            state.last_failed_at or 0.0,
        ),
    ):
        family = GaugeMetricFamily(f"dbops_wal_archive_{name}", documentation, unit="seconds")
        family.add_metric([], value)
        yield family
    failing = GaugeMetricFamily(
        "dbops_wal_archive_failing", "Whether archive_command failed after the newest success"
    )
    failing.add_metric([], float(state.failing))
    yield failing
    for name, documentation, value in (
        (
            "archived_segments",
            "WAL segments archived since the statistics reset",
            state.archived_count,
        ),
        ("failures", "archive_command failures since the statistics reset", state.failed_count),
    ):
        counter = CounterMetricFamily(f"dbops_wal_archive_{name}", documentation)
        counter.add_metric([], value)
        yield counter
