"""A streaming standby and WAL archiving, against real clusters: a primary that archives WAL
and a hot standby made from it by `pg_basebackup -R` (tests/clusters.py), shared by the
whole module, and Caloria served from a child process configured by its environment
(DATABASE_URL on the primary, DATABASE_REPLICA_URL on the standby), as it is deployed.

Lag is made by pausing replay on the standby (`pg_wal_replay_pause()`) and writing on the
primary; archiving is made to fail by an archive_command of `false`, and to succeed again.
`dbbackup --from-replica` is also run with DATABASE_URL through a real PgBouncer in front of
the primary (tests/pgbouncer.py). The tests run in file order, and each leaves the pair
caught up and archiving.
"""

from __future__ import annotations

import json
import re
import subprocess
import time
from datetime import UTC, datetime

import pytest
import yaml

from dbops.replication import StandbyState, lag_problem
from tests.conftest import PROJECT_ROOT
from tests.pgbouncer import running_pgbouncer
from tests.pooling import POOLED_PASSWORD
from tests.replication_site import (
    ARCHIVE_KEY,
    FAIL_BYTES,
    METRICS_TOKEN,
    REPLICA_KEY,
    STANDBY_PASSWORD,
    WARN_BYTES,
    running_pair,
    running_site,
)

RULES = PROJECT_ROOT / "docs" / "monitoring" / "dbops-replication-alerts.yml"
BEHIND = "standby replays more than {} s behind the primary"


@pytest.fixture(scope="module")
def pair(tmp_path_factory):
    with running_pair(tmp_path_factory.mktemp("replication")) as started:
        yield started


@pytest.fixture(scope="module")
def site(pair, tmp_path_factory):
    with running_site(pair, tmp_path_factory.mktemp("replication-site")) as served:
        yield served


def test_a_caught_up_standby_is_healthy_with_no_lag_even_behind_an_idle_primary(pair, site):
    pair.caught_up()
    time.sleep(1.1)  # the primary idles: the newest replayed commit gets older
    idle_for = pair.standby.execute(
        "SELECT extract(epoch FROM now() - pg_last_xact_replay_timestamp())"
    )[0][0]

    status, body = site.health()
    text, values = site.metrics()
    page = site.status_page()

    assert idle_for > 1
    assert status == 200, body
    assert body[REPLICA_KEY] == "OK" and body[ARCHIVE_KEY] == "OK"
    assert body["details"]["replica"] == {
        "reachable": True,
        "is_standby": True,
        "receiving": True,
        "replay_paused": False,
        "lag_bytes": 0,
        "lag_seconds": 0.0,
    }
    assert body["details"]["wal_archiving"]["archive_mode"] == "on"
    assert values["dbops_replica_configured"] == 1 and values["dbops_replica_up"] == 1
    assert values["dbops_replica_lag_bytes"] == 0 and values["dbops_replica_lag_seconds"] == 0
    assert values["dbops_wal_archiving_enabled"] == 1
    assert values["dbops_wal_archive_failing"] == 0
    assert f"127.0.0.1:{pair.standby.port}/caloria" in page
    assert "0.0 s, 0\xa0bytes (0 bytes) not replayed" in page
    for output in (json.dumps(body), text, page):
        assert STANDBY_PASSWORD not in output


def test_promtool_accepts_the_metrics_and_they_serve_every_metric_the_new_rules_read(site):
    _, values = site.metrics()
    _, classic = site.get("/metrics", Authorization=f"Bearer {METRICS_TOKEN}")

    checked = subprocess.run(
        ["promtool", "check", "metrics"], input=classic.encode(), capture_output=True, timeout=30
    )

    assert checked.returncode == 0 and checked.stdout + checked.stderr == b"", checked
    rules = yaml.safe_load(RULES.read_text())["groups"][0]["rules"]
    read = {name for rule in rules for name in re.findall(r"\bdbops_\w+", rule["expr"])}
    served = {name.removesuffix("_total") for name in values} | set(values)
    assert read and read <= served, read - served


def test_paused_replay_warns_then_fails_and_recovers_when_it_resumes(pair, site):
    with pair.replay_paused():
        pair.write(600)  # about 100 kB of WAL
        warned = site.health_until(
            REPLICA_KEY, f"Warning: standby has more than {WARN_BYTES} bytes of WAL not replayed"
        )
        _, warned_values = site.metrics()
        warned_page = site.status_page()
        pair.write(40_000)  # about 7 MB
        failed = site.health_until(
            REPLICA_KEY,
            f"Unavailable: standby has more than {FAIL_BYTES} bytes of WAL not replayed",
        )
        _, failed_values = site.metrics()
    recovered = site.health_until(REPLICA_KEY, "OK")
    _, recovered_values = site.metrics()

    # A warning answers 500, as every health warning does (ServiceWarning).
    assert warned[0] == 500 and warned[1][REPLICA_KEY].startswith("Warning:"), warned
    assert WARN_BYTES < warned_values["dbops_replica_lag_bytes"] < FAIL_BYTES
    assert warned_values["dbops_replica_lag_seconds"] > 0
    assert warned_values["dbops_replica_replay_paused"] == 1
    assert "<td>paused</td>" in warned_page
    assert f"Warning: standby has more than {WARN_BYTES} bytes" in warned_page
    assert failed[0] == 500 and failed[1][REPLICA_KEY].startswith("Unavailable:"), failed
    assert failed[1]["details"]["replica"]["lag_bytes"] > FAIL_BYTES
    assert failed_values["dbops_replica_lag_bytes"] > FAIL_BYTES
    assert recovered[0] == 200, recovered
    assert recovered_values["dbops_replica_lag_bytes"] == 0
    assert recovered_values["dbops_replica_lag_seconds"] == 0
    assert recovered_values["dbops_replica_replay_paused"] == 0


WARN_SECONDS, FAIL_SECONDS = 1, 3


@pytest.fixture
def seconds_site(pair, tmp_path_factory):
    """A second server on the module's pair, where the seconds decide: lag past 1 s warns,
    past 3 s fails, and the bytes thresholds are out of reach. The module's `site` keeps its
    seconds out of reach, or the bytes test above would be decided by the time it takes."""
    folder = tmp_path_factory.mktemp("replication-seconds-site")
    with running_site(
        pair,
        folder,
        DBOPS_REPLICA_LAG_WARN_SECONDS=str(WARN_SECONDS),
        DBOPS_REPLICA_LAG_FAIL_SECONDS=str(FAIL_SECONDS),
        DBOPS_REPLICA_LAG_WARN_BYTES=str(1 << 30),
        DBOPS_REPLICA_LAG_FAIL_BYTES=str(2 << 30),
    ) as served:
        yield served


def test_replay_lag_in_seconds_warns_then_fails_past_the_seconds_thresholds_and_recovers(
    pair, site, seconds_site
):
    """The seconds thresholds had only unit tests: this makes real replay lag in seconds.
    The standby counts it from its newest replayed commit (now() minus
    pg_last_xact_replay_timestamp()) once it has received WAL it has not replayed, so: a
    commit it replays, replay paused, a commit it only receives, and the lag grows by itself
    with a few hundred bytes behind; the same standby is fine for `site`, whose seconds
    thresholds are out of reach."""
    pair.caught_up()  # the lag in seconds counts from this commit
    with pair.replay_paused():
        pair.write()
        pair.standby.wait_for_receipt(pair.primary.wal_lsn())
        warned = seconds_site.health_until(
            REPLICA_KEY, "Warning: " + BEHIND.format(WARN_SECONDS), within=15
        )
        _, warned_values = seconds_site.metrics()
        failed = seconds_site.health_until(
            REPLICA_KEY, "Unavailable: " + BEHIND.format(FAIL_SECONDS), within=15
        )
        _, failed_values = seconds_site.metrics()
        _, elsewhere = site.health()
    recovered = seconds_site.health_until(REPLICA_KEY, "OK")
    _, recovered_values = seconds_site.metrics()

    # A warning answers 500, as every health warning does (ServiceWarning).
    assert warned[0] == 500, warned
    assert warned[1][REPLICA_KEY] == "Warning: " + BEHIND.format(WARN_SECONDS), warned
    replica = warned[1]["details"]["replica"]
    assert replica["replay_paused"] is True and replica["lag_seconds"] > WARN_SECONDS
    assert 0 < replica["lag_bytes"] < WARN_BYTES  # far below even the module site's bytes
    assert warned_values["dbops_replica_lag_seconds"] > WARN_SECONDS
    assert failed[0] == 500, failed
    assert failed[1][REPLICA_KEY] == "Unavailable: " + BEHIND.format(FAIL_SECONDS), failed
    assert failed[1]["details"]["replica"]["lag_seconds"] > FAIL_SECONDS
    assert failed_values["dbops_replica_lag_seconds"] > FAIL_SECONDS
    assert failed_values["dbops_replica_lag_bytes"] < WARN_BYTES
    assert elsewhere[REPLICA_KEY] == "OK", elsewhere
    assert recovered[0] == 200, recovered
    assert recovered_values["dbops_replica_lag_seconds"] == 0
    assert recovered_values["dbops_replica_replay_paused"] == 0


def newest_backup(pair) -> tuple:
    return pair.primary.execute(
        "SELECT id, status, database, dumped_from, table_counts->>'caloria_user', "
        "table_checksums ? 'caloria_user', verification FROM dbops_backuprecord "
        "ORDER BY id DESC LIMIT 1",
        "caloria",
    )[0]


def count_users(cluster) -> int:
    return cluster.execute("SELECT count(*) FROM caloria_user", "caloria")[0][0]


def assert_dumped_from_the_standby(pair, taken, on_standby: int, on_primary: int, recorded_as):
    """A backup taken with --from-replica while the standby had not replayed the newest user:
    it succeeded, is recorded under `recorded_as` as dumped from the standby, and its counts
    (with checksums) are the standby's, not the primary's. Returns its verification."""
    assert taken.returncode == 0, taken.output
    assert "dumped from the standby 'replica'" in taken.stdout
    assert on_primary == on_standby + 1
    _, status, database, dumped_from, users, has_checksum, verification = newest_backup(pair)
    assert (status, database, dumped_from) == ("succeeded", recorded_as, "replica")
    assert int(users) == on_standby and has_checksum
    return verification


def test_a_backup_from_the_standby_is_refused_when_it_lags_and_dumps_the_standby_otherwise(
    pair,
):
    with pair.replay_paused():
        pair.primary.execute(
            "INSERT INTO caloria_user (password, is_superuser, username, first_name, last_name, "
            "email, is_staff, is_active, date_joined, is_vip) VALUES "
            "('!', false, 'late', '', '', 'late@example.com', false, true, now(), false)",
            "caloria",
        )
        pair.standby.wait_for_receipt(pair.primary.wal_lsn())
        records_before = pair.primary.execute("SELECT count(*) FROM dbops_backuprecord", "caloria")
        refused = pair.manage(
            "dbbackup", "--from-replica", DBOPS_REPLICA_BACKUP_MAX_LAG_SECONDS="0"
        )
        records_after = pair.primary.execute("SELECT count(*) FROM dbops_backuprecord", "caloria")
        taken = pair.manage(
            "dbbackup", "--from-replica", DBOPS_REPLICA_BACKUP_MAX_LAG_SECONDS="3600"
        )
        on_standby, on_primary = count_users(pair.standby), count_users(pair.primary)
    verified = pair.manage("verify_backup", "--latest")

    assert refused.returncode == 1, refused.output
    assert "dbbackup --from-replica refused: the standby 'replica' replays" in refused.stderr
    assert "than DBOPS_REPLICA_BACKUP_MAX_LAG_SECONDS (0 s); no backup taken" in refused.stderr
    assert records_after == records_before
    assert_dumped_from_the_standby(pair, taken, on_standby, on_primary, "default")
    assert verified.returncode == 0, verified.output
    assert newest_backup(pair)[-1] == "passed"
    for output in (refused.output, taken.output, verified.output):
        assert STANDBY_PASSWORD not in output


def test_a_backup_from_the_standby_is_refused_when_none_is_configured(pair):
    refused = pair.manage("dbbackup", "--from-replica", DATABASE_REPLICA_URL="")
    of_another = pair.manage("dbbackup", "--from-replica", "--database", "replica")

    assert refused.returncode == 1, refused.output
    assert "dbbackup --from-replica refused: no standby is configured" in refused.stderr
    assert of_another.returncode == 2, of_another.output
    assert "--from-replica backs up the default database" in of_another.stderr


def test_behind_pgbouncer_a_backup_from_the_standby_works_over_the_direct_url_only(pair):
    with running_pgbouncer("127.0.0.1", pair.primary.port, "postgres") as pgbouncer:
        pooled = {
            "DATABASE_URL": pgbouncer.url("caloria", POOLED_PASSWORD),
            "DATABASE_POOLER": "pgbouncer",
            "DBOPS_REPLICA_BACKUP_MAX_LAG_SECONDS": "3600",
        }
        with pair.replay_paused():
            pair.primary.execute(
                "INSERT INTO caloria_user (password, is_superuser, username, first_name, "
                "last_name, email, is_staff, is_active, date_joined, is_vip) VALUES ('!', false, "
                "'pooled', '', '', 'pooled@example.com', false, true, now(), false)",
                "caloria",
            )
            records = "SELECT count(*) FROM dbops_backuprecord"
            records_before = pair.primary.execute(records, "caloria")
            refused = pair.manage("dbbackup", "--from-replica", **pooled)
            records_after = pair.primary.execute(records, "caloria")
            taken = pair.manage(
                "dbbackup", "--from-replica", "--verify",
                DATABASE_DIRECT_URL=pair.primary.url("caloria"), **pooled,
            )  # fmt: skip
            on_standby, on_primary = count_users(pair.standby), count_users(pair.primary)

    assert refused.returncode == 1, refused.output
    assert refused.stderr.startswith(
        "CommandError: dbbackup refused: database 'default' goes through pgbouncer"
    ), refused.stderr
    assert "set DATABASE_DIRECT_URL" in refused.stderr
    assert records_after == records_before
    # Recorded over the direct connection, dumped and counted on the standby, and verified
    # against those counts.
    verification = assert_dumped_from_the_standby(pair, taken, on_standby, on_primary, "direct")
    assert verification == "passed"
    for output in (refused.output, taken.output):
        assert STANDBY_PASSWORD not in output and POOLED_PASSWORD not in output


def test_a_failing_archive_command_fails_health_until_a_segment_is_archived_again(pair, site):
    failing_message = "Unavailable: WAL archiving is failing: archive_command failed last"
    pair.archive_command("false")
    try:
        pair.caught_up()
        pair.primary.execute("SELECT pg_switch_wal()")
        failing = site.health_until(ARCHIVE_KEY, failing_message)
        _, failing_values = site.metrics()
        failing_page = site.status_page()
    finally:
        pair.archive_command(pair.copy_to_archive())
    recovered = site.health_until(ARCHIVE_KEY, "OK", within=30)
    _, recovered_values = site.metrics()
    pair.caught_up()

    assert failing[0] == 500, failing
    archiving = failing[1]["details"]["wal_archiving"]
    assert archiving["failing"] is True and archiving["failed_count"] >= 1
    assert failing_values["dbops_wal_archive_failing"] == 1
    assert failing_values["dbops_wal_archive_failures_total"] >= 1
    assert (
        failing_values["dbops_wal_archive_last_failure_timestamp_seconds"]
        > failing_values["dbops_wal_archive_last_success_timestamp_seconds"]
    )
    assert f"yes: archive_command failed on {archiving['last_failed_wal']}" in failing_page
    # No count since the last success exists (pg_stat_archiver's is since the statistics
    # reset): what is reported is since when nothing reached the archive.
    success = failing_values["dbops_wal_archive_last_success_timestamp_seconds"]
    since = datetime.fromtimestamp(success, UTC).isoformat(timespec="seconds") if success else None
    assert archiving["failing_since"] == since
    assert f"nothing archived since {since or 'the statistics reset'}" in failing_page
    assert recovered[0] == 200, recovered
    archived = recovered[1]["details"]["wal_archiving"]["last_archived_wal"]
    assert (pair.archive / archived).is_file()
    assert recovered_values["dbops_wal_archive_failing"] == 0
    assert recovered[1]["details"]["wal_archiving"]["failing_since"] is None


def test_a_standby_that_hangs_or_goes_away_is_a_clear_failure_never_a_hang(pair, site):
    pair.standby.freeze()
    try:
        started = time.monotonic()
        hung = site.health()
        waited = time.monotonic() - started
    finally:
        pair.standby.thaw()
    pair.standby.stop()
    try:
        gone = site.health_until(REPLICA_KEY, "Unavailable: standby unreachable")
        text, values = site.metrics()
        page = site.status_page()
        refused = pair.manage("dbbackup", "--from-replica")
    finally:
        pair.standby.start()

    assert hung[0] == 500 and hung[1][REPLICA_KEY] == "Unavailable: Timed out after 3 s"
    assert waited < 8  # bounds the hang: the deadline is 4 s
    assert gone[0] == 500 and gone[1]["details"]["replica"] == {"reachable": False}
    assert values["dbops_replica_up"] == 0 and "dbops_replica_lag_bytes" not in values
    assert "no: the standby did not answer" in page
    assert "Unavailable: standby unreachable or not answering" in page
    assert refused.returncode == 1
    assert "dbbackup --from-replica refused: the standby 'replica' is unreachable" in (
        refused.stderr
    )
    server_log = site.log_path.read_text()
    assert "Health check ReplicaLag(alias='replica') failed" in server_log
    for output in (json.dumps(hung[1]), json.dumps(gone[1]), text, page, refused.output):
        assert STANDBY_PASSWORD not in output
    assert STANDBY_PASSWORD not in server_log


@pytest.mark.parametrize(
    "state, expected",
    [
        (StandbyState(True, True, lag_bytes=0, lag_seconds=0.0), None),
        (StandbyState(True, True, lag_bytes=10, lag_seconds=59.0), None),
        (StandbyState(True, True, lag_bytes=10, lag_seconds=61.0), "Warning: " + BEHIND.format(60)),
        (
            StandbyState(True, True, lag_bytes=9, lag_seconds=301.0),
            "Unavailable: " + BEHIND.format(300),
        ),
        (StandbyState(True, True, lag_bytes=10, lag_seconds=None), None),
        (StandbyState(True, False), "Unavailable: standby is not receiving WAL from the primary"),
        (
            StandbyState(False),
            "Unavailable: the replica database is not a standby (not in recovery)",
        ),
    ],
)
def test_lag_in_seconds_warns_and_fails_at_the_default_thresholds(state, expected):
    problem = lag_problem(state)

    assert (None if problem is None else str(problem)) == expected
