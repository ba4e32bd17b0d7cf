"""A streaming standby and WAL archiving, against real clusters: a primary that archives WAL
and a hot standby made from it by `pg_basebackup -R` (tests/clusters.py), shared by the
whole module, and Caloria served from a child process configured by its environment
(DATABASE_URL on the primary, DATABASE_REPLICA_URL on the standby), as it is deployed.

Lag is made by pausing replay on the standby (`pg_wal_replay_pause()`) and writing on the
primary; archiving is made to fail by an archive_command of `false`, and to succeed again.
The tests run in file order, and each leaves the pair caught up and archiving.
"""

from __future__ import annotations

import contextlib
import http.cookiejar
import json
import re
import subprocess
import sys
import time
import urllib.error
import urllib.parse
import urllib.request

import pytest
import yaml
from prometheus_client.openmetrics.parser import text_string_to_metric_families

from dbops.replication import StandbyState, lag_problem
from tests.clusters import Cluster
from tests.conftest import PROJECT_ROOT, Completed, clean_environment, closed_port

HEALTH_TOKEN = "health-token-" + "r3pl1ca" * 4
METRICS_TOKEN = "metrics-token-" + "m3tr1c" * 4
STANDBY_PASSWORD = "standby-" + "pa55w0rd" * 3  # trust authentication ignores it
STAFF_PASSWORD = "staff-" + "l0g1n" * 4
OPENMETRICS = "application/openmetrics-text; version=1.0.0"
REPLICA_KEY = "ReplicaLag(alias='replica')"
ARCHIVE_KEY = "WalArchiving(alias='default')"
WARN_BYTES, FAIL_BYTES = 64 * 1024, 4 * 1024 * 1024
RULES = PROJECT_ROOT / "docs" / "monitoring" / "dbops-replication-alerts.yml"


class Pair:
    """The primary (archiving into `archive`), its standby, and Caloria's environment for
    them: `manage()` runs a command in a child process with it."""

    def __init__(self, primary: Cluster, standby: Cluster, archive, folder):
        self.primary, self.standby, self.archive = primary, standby, archive
        env_file = folder / "empty.env"
        backups = folder / "backups"
        backups.mkdir(mode=0o700, exist_ok=True)
        self.environment = {
            "CALORIA_ENV": "test",
            "CALORIA_ENV_FILE": str(env_file),
            "DATABASE_URL": primary.url("caloria"),
            "DATABASE_REPLICA_URL": (
                f"postgres://postgres:{STANDBY_PASSWORD}@127.0.0.1:{standby.port}/caloria"
            ),
            "DBOPS_BACKUP_DIR": str(backups),
            "DATABASE_CONNECT_TIMEOUT": "2",
        }

    def manage(self, *args, **variables) -> Completed:
        completed = subprocess.run(
            [sys.executable, "manage.py", *args],
            cwd=PROJECT_ROOT,
            env=clean_environment(**{**self.environment, **variables}),
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
        return Completed(completed.returncode, completed.stdout, completed.stderr)

    def write(self, rows: int = 1) -> None:
        self.primary.execute(
            f"INSERT INTO ticks SELECT repeat('x', 100) FROM generate_series(1, {rows})", "caloria"
        )

    def caught_up(self) -> None:
        """Write on the primary and wait until the standby replayed it."""
        self.write()
        self.standby.wait_for_replay(self.primary.wal_lsn())

    @contextlib.contextmanager
    def replay_paused(self):
        self.standby.execute("SELECT pg_wal_replay_pause()")
        try:
            yield
        finally:
            self.standby.execute("SELECT pg_wal_replay_resume()")
            self.caught_up()

    def archive_command(self, command: str) -> None:
        self.primary.execute(f"ALTER SYSTEM SET archive_command = '{command}'")
        self.primary.execute("SELECT pg_reload_conf()")

    def copy_to_archive(self) -> str:
        return f"cp %p {self.archive}/%f"


@pytest.fixture(scope="module")
def pair(tmp_path_factory):
    folder = tmp_path_factory.mktemp("replication")
    (folder / "empty.env").write_text("")
    primary = Cluster({"wal_level": "replica", "max_wal_senders": "4", "archive_mode": "on"})
    standby = None
    try:
        primary.start()
        archive = primary.folder_for_server("archive")
        primary.execute(f"ALTER SYSTEM SET archive_command = 'cp %p {archive}/%f'")
        primary.execute("SELECT pg_reload_conf()")
        primary.execute("CREATE DATABASE caloria")
        primary.execute("CREATE TABLE ticks (filler text)", "caloria")
        environment = {
            "CALORIA_ENV": "test",
            "DATABASE_URL": primary.url("caloria"),
            "DJANGO_SUPERUSER_PASSWORD": STAFF_PASSWORD,
        }
        for command in (
            "migrate --noinput -v 0",
            "createsuperuser --noinput --username oncall --email oncall@example.com",
        ):
            done = subprocess.run(
                [sys.executable, "manage.py", *command.split()],
                cwd=PROJECT_ROOT,
                env=clean_environment(**environment, CALORIA_ENV_FILE=str(folder / "empty.env")),
                capture_output=True,
                text=True,
                timeout=120,
                check=False,
            )
            assert done.returncode == 0, done.stdout + done.stderr
        standby = Cluster(standby_of=primary)
        standby.start()
        pair = Pair(primary, standby, archive, folder)
        pair.caught_up()
        yield pair
    finally:
        if standby is not None:
            standby.remove()
        primary.remove()


class Served:
    """Caloria served by `manage.py runserver` in a child process, with a staff session."""

    def __init__(self, base: str):
        self.base = base
        self.session = urllib.request.build_opener(
            urllib.request.HTTPCookieProcessor(http.cookiejar.CookieJar())
        )

    def get(self, path: str, opener=None, **headers) -> tuple[int, str]:
        request = urllib.request.Request(self.base + path, headers=headers)
        try:
            with (opener or urllib.request.build_opener()).open(request, timeout=20) as response:
                return response.status, response.read().decode()
        except urllib.error.HTTPError as error:
            return error.code, error.read().decode()

    def health(self) -> tuple[int, dict]:
        status, body = self.get("/health/?format=json", Authorization=f"Bearer {HEALTH_TOKEN}")
        return status, json.loads(body)

    def health_until(self, key: str, expected: str, within: float = 20) -> tuple[int, dict]:
        """Probe /health/ until the check `key` says `expected` (the last answer otherwise)."""
        deadline = time.monotonic() + within
        while True:
            status, body = self.health()
            if body.get(key) == expected or time.monotonic() > deadline:
                return status, body
            time.sleep(0.1)

    def metrics(self) -> tuple[str, dict]:
        status, text = self.get(
            "/metrics", Accept=OPENMETRICS, Authorization=f"Bearer {METRICS_TOKEN}"
        )
        assert status == 200, text
        values = {
            sample.name: sample.value
            for family in text_string_to_metric_families(text)
            for sample in family.samples
            if not sample.labels
        }
        return text, values

    def log_in(self) -> None:
        _, page = self.get("/admin/login/", opener=self.session)
        token = re.search(r'name="csrfmiddlewaretoken" value="([^"]+)"', page).group(1)
        form = urllib.parse.urlencode(
            {"csrfmiddlewaretoken": token, "username": "oncall", "password": STAFF_PASSWORD}
        ).encode()
        request = urllib.request.Request(self.base + "/admin/login/?next=/admin/", data=form)
        with self.session.open(request, timeout=20) as response:
            assert response.status == 200

    def status_page(self) -> str:
        status, page = self.get("/admin/database/", opener=self.session)
        assert status == 200 and "Database status" in page, page[:500]
        return page


def serve(environment: dict, folder) -> tuple[subprocess.Popen, Served]:
    port = closed_port()
    log = (folder / f"server-{port}.log").open("w")
    server = subprocess.Popen(
        [sys.executable, "manage.py", "runserver", "--noreload", f"127.0.0.1:{port}"],
        cwd=PROJECT_ROOT,
        env=clean_environment(**environment),
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    served = Served(f"http://127.0.0.1:{port}")
    deadline = time.monotonic() + 30
    while True:
        assert server.poll() is None, (folder / f"server-{port}.log").read_text()
        try:
            if served.get("/health/live/")[0] == 200:
                return server, served
        except OSError:
            if time.monotonic() > deadline:
                raise
        time.sleep(0.1)


@pytest.fixture(scope="module")
def site(pair, tmp_path_factory):
    """Caloria on the pair: lag past 64 kB warns, past 4 MB fails (the seconds thresholds are
    out of reach, so the bytes decide); every probe queries (no cache)."""
    folder = tmp_path_factory.mktemp("replication-site")
    server, served = serve(
        {
            **pair.environment,
            "HEALTH_TOKEN": HEALTH_TOKEN,
            "METRICS_TOKEN": METRICS_TOKEN,
            "DBOPS_HEALTH_CACHE_SECONDS": "0",
            "DBOPS_REPLICA_LAG_WARN_BYTES": str(WARN_BYTES),
            "DBOPS_REPLICA_LAG_FAIL_BYTES": str(FAIL_BYTES),
            "DBOPS_REPLICA_LAG_WARN_SECONDS": "3600",
            "DBOPS_REPLICA_LAG_FAIL_SECONDS": "7200",
        },
        folder,
    )
    try:
        served.log_in()
        yield served
    finally:
        server.terminate()
        server.wait(timeout=20)
        served.log = "".join(path.read_text() for path in folder.glob("server-*.log"))


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


def newest_backup(pair) -> tuple:
    return pair.primary.execute(
        "SELECT id, status, database, dumped_from, table_counts->>'caloria_user', "
        "table_checksums ? 'caloria_user', verification FROM dbops_backuprecord "
        "ORDER BY id DESC LIMIT 1",
        "caloria",
    )[0]


def count_users(cluster) -> int:
    return cluster.execute("SELECT count(*) FROM caloria_user", "caloria")[0][0]


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
    assert taken.returncode == 0, taken.output
    assert "dumped from the standby 'replica'" in taken.stdout
    # The dump and its counts come from the standby, which has not replayed the new user.
    assert on_primary == on_standby + 1
    _, status, database, dumped_from, users, has_checksum, _ = newest_backup(pair)
    assert (status, database, dumped_from) == ("succeeded", "default", "replica")
    assert int(users) == on_standby and has_checksum
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
    assert recovered[0] == 200, recovered
    archived = recovered[1]["details"]["wal_archiving"]["last_archived_wal"]
    assert (pair.archive / archived).is_file()
    assert recovered_values["dbops_wal_archive_failing"] == 0


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
    for output in (json.dumps(hung[1]), json.dumps(gone[1]), text, page, refused.output):
        assert STANDBY_PASSWORD not in output


BEHIND = "standby replays more than {} s behind the primary"


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
