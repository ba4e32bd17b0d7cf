"""A streaming standby, watched from the application: is it there, is it a standby, is it
receiving WAL, and how far behind the primary does it replay.

The standby is a database alias of its own (`DBOPS_REPLICA_DATABASE`) that no ordinary query
goes to. Everything is measured on the standby itself, so the primary needs no extra rights:

- bytes: WAL the standby received but has not replayed yet
  (`pg_wal_lsn_diff(pg_last_wal_receive_lsn(), pg_last_wal_replay_lsn())`);
- seconds: 0 when everything received is replayed, else how long ago the newest replayed
  transaction committed on the primary (`now() - pg_last_xact_replay_timestamp()`). The
  plain difference grows without end on a standby of an idle primary, which has nothing to
  replay and is not behind at all: that is why caught-up counts as 0. Behind a primary that
  was idle for a while before new writes, the figure overstates the lag by that idle time
  until the next commit is replayed.
- receiving: a standby whose WAL receiver is gone (primary unreachable, replication slot
  lost) has replayed all it received and looks caught up while the primary moves on; so not
  receiving is a failure of its own.

Measurements run in a health thread with the probe's deadline (dbops.health_runner), so a
standby that hangs gives "timed out", never a hung probe, and an unreachable one gives a
fixed message: never the driver's text, which names host and port.
"""

from __future__ import annotations

import dataclasses
import time

from django.db import DatabaseError, connections
from health_check import HealthCheck
from health_check.exceptions import ServiceUnavailable, ServiceWarning
from prometheus_client.core import GaugeMetricFamily

from dbops import conf
from dbops.health import DATABASE_TIMEOUT, prepare_connection
from dbops.health_runner import result_within, submit_once

STANDBY_SQL = """
SELECT pg_wal_lsn_diff(pg_last_wal_receive_lsn(), pg_last_wal_replay_lsn()),
       pg_last_wal_receive_lsn() = pg_last_wal_replay_lsn(),
       extract(epoch FROM now() - pg_last_xact_replay_timestamp()),
       EXISTS (SELECT 1 FROM pg_stat_wal_receiver),
       pg_is_wal_replay_paused()
"""


@dataclasses.dataclass(frozen=True)
class StandbyState:
    """What the standby says of itself; lag figures are None when it cannot tell."""

    is_standby: bool
    receiving: bool = False
    replay_paused: bool = False
    lag_bytes: int | None = None
    lag_seconds: float | None = None


def configured_alias() -> str | None:
    """The standby's alias, when the project names one that is configured."""
    alias = conf.REPLICA_DATABASE
    return alias if alias and alias in connections else None


def standby_state(connection) -> StandbyState:
    """Measure the standby on `connection` (raises DatabaseError when it does not answer)."""
    with connection.cursor() as cursor:
        cursor.execute("SELECT pg_is_in_recovery()")
        if not cursor.fetchone()[0]:
            return StandbyState(is_standby=False)
        cursor.execute(STANDBY_SQL)
        lag_bytes, caught_up, since_replay, receiving, paused = cursor.fetchone()
    if caught_up:
        lag_seconds = 0.0
    elif lag_bytes is not None and since_replay is not None:
        lag_seconds = max(0.0, float(since_replay))
    else:
        lag_seconds = None  # nothing replayed since the standby started, or nothing received
    return StandbyState(
        is_standby=True,
        receiving=bool(receiving),
        replay_paused=bool(paused),
        lag_bytes=None if lag_bytes is None else max(0, int(lag_bytes)),
        lag_seconds=lag_seconds,
    )


def measure(alias: str) -> StandbyState:
    """The standby's state, on this health thread's persistent connection to it."""
    return standby_state(prepare_connection(alias))


def submit_measurement(alias: str):
    """Start measuring the standby in its health thread (or join the run in progress)."""
    return submit_once(f"standby {alias}", lambda: measure(alias))


def observed_state(alias: str, started: float | None = None, future=None) -> StandbyState | None:
    """The standby's state, measured in a health thread within the probe's deadline; None
    when it is unreachable or did not answer in time (for the status page and /metrics)."""
    started = time.monotonic() if started is None else started
    future = future or submit_measurement(alias)
    try:
        return result_within(future, started, DATABASE_TIMEOUT.total_seconds())
    except Exception:  # noqa: BLE001 - unreachable or hung: the same to whoever reads it
        return None


def lag_problem(state: StandbyState) -> ServiceUnavailable | ServiceWarning | None:
    """How the health check judges a state, in fixed words (one log line per change)."""
    if not state.is_standby:
        return ServiceUnavailable("the replica database is not a standby (not in recovery)")
    if not state.receiving:
        return ServiceUnavailable("standby is not receiving WAL from the primary")
    seconds, lag_bytes = state.lag_seconds, state.lag_bytes
    if seconds is not None and seconds > conf.REPLICA_LAG_FAIL_SECONDS:
        return ServiceUnavailable(
            f"standby replays more than {conf.REPLICA_LAG_FAIL_SECONDS} s behind the primary"
        )
    if lag_bytes is not None and lag_bytes > conf.REPLICA_LAG_FAIL_BYTES:
        return ServiceUnavailable(
            f"standby has more than {conf.REPLICA_LAG_FAIL_BYTES} bytes of WAL not replayed"
        )
    if seconds is not None and seconds > conf.REPLICA_LAG_WARN_SECONDS:
        return ServiceWarning(
            f"standby replays more than {conf.REPLICA_LAG_WARN_SECONDS} s behind the primary"
        )
    if lag_bytes is not None and lag_bytes > conf.REPLICA_LAG_WARN_BYTES:
        return ServiceWarning(
            f"standby has more than {conf.REPLICA_LAG_WARN_BYTES} bytes of WAL not replayed"
        )
    return None


@dataclasses.dataclass
class ReplicaLag(HealthCheck):
    """The standby answers, is a standby, receives WAL, and replays within the thresholds
    (DBOPS_REPLICA_LAG_WARN_* warn, DBOPS_REPLICA_LAG_FAIL_* fail)."""

    alias: str = "replica"
    timeout = DATABASE_TIMEOUT

    def run(self):
        # In the measurement's own health thread, which /metrics, the details and the status
        # page share: one connection to the standby per process, however many ask.
        try:
            state = submit_measurement(self.alias).result()
        except DatabaseError:
            raise ServiceUnavailable("standby unreachable") from None
        problem = lag_problem(state)
        if problem is not None:
            raise problem


def backup_refusal(alias: str) -> str | None:
    """Why `dbbackup --from-replica` must not dump this standby now (None: it may): it is
    unreachable, not a standby, not receiving WAL, or replays further behind than
    DBOPS_REPLICA_BACKUP_MAX_LAG_SECONDS. Measured on the caller's own connection."""
    limit = conf.REPLICA_BACKUP_MAX_LAG_SECONDS
    try:
        state = standby_state(connections[alias])
    except DatabaseError as exc:
        connections[alias].close()
        return f"the standby '{alias}' is unreachable ({type(exc).__name__})"
    if not state.is_standby:
        return f"database '{alias}' is not a standby (pg_is_in_recovery() is false)"
    if not state.receiving:
        return f"the standby '{alias}' is not receiving WAL from the primary"
    if state.lag_seconds is None and state.lag_bytes:
        return (
            f"the standby '{alias}' has {state.lag_bytes} bytes of WAL not replayed and no "
            f"replayed transaction to date them by"
        )
    if state.lag_seconds is not None and state.lag_seconds > limit:
        return (
            f"the standby '{alias}' replays {state.lag_seconds:.0f} s behind the primary, more "
            f"than DBOPS_REPLICA_BACKUP_MAX_LAG_SECONDS ({limit} s)"
        )
    return None


def replication_families(started: float, measurement=None):
    """/metrics: whether a standby is configured and, if so, whether it is up and its lag
    (`measurement`: the future of submit_measurement, started early by the caller)."""
    alias = configured_alias()
    configured = GaugeMetricFamily(
        "dbops_replica_configured", "Whether a standby (DBOPS_REPLICA_DATABASE) is configured"
    )
    configured.add_metric([], float(alias is not None))
    yield configured
    if alias is None:
        return
    state = observed_state(alias, started, measurement)
    up = GaugeMetricFamily(
        "dbops_replica_up", "Whether the standby answered, as a standby, within the deadline"
    )
    up.add_metric([], float(state is not None and state.is_standby))
    yield up
    if state is None or not state.is_standby:
        return
    for name, documentation, value in (
        ("receiving", "Whether the standby's WAL receiver is running", state.receiving),
        ("replay_paused", "Whether replay is paused (pg_wal_replay_pause)", state.replay_paused),
    ):
        yield _gauge(f"dbops_replica_{name}", documentation, float(value))
    if state.lag_bytes is not None:
        yield _gauge(
            "dbops_replica_lag_bytes",
            "WAL the standby received and has not replayed yet",
            state.lag_bytes,
            "bytes",
        )
    if state.lag_seconds is not None:
        yield _gauge(
            "dbops_replica_lag_seconds",
            "How far behind the primary the standby replays (0: all received is replayed)",
            state.lag_seconds,
            "seconds",
        )


def _gauge(name, documentation, value, unit=""):
    family = GaugeMetricFamily(name, documentation, unit=unit)
    family.add_metric([], float(value))
    return family


def details_of(state: StandbyState | None) -> dict:
    """The standby in `/health/`'s details (staff and token holders): figures, no text."""
    if state is None:
        return {"reachable": False}
    return {"reachable": True, **dataclasses.asdict(state)}


def status_of_standby() -> dict | None:
    """The status page's view of the standby (None: none configured)."""
    from dbops.envinfo import describe_location

    alias = configured_alias()
    if alias is None:
        return None
    state = observed_state(alias)
    return {
        "alias": alias,
        "location": describe_location(connections[alias].settings_dict),
        "state": state,
        "problem": ServiceUnavailable("standby unreachable or not answering")
        if state is None
        else lag_problem(state),
    }
