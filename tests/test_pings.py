"""The dead man's switch against a small HTTP server of the test's own (healthchecks.io's
convention: GET <url> on success, POST <url>/fail with the log's tail on failure)."""

import logging
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import quote

import pytest
from django.core.files.storage import FileSystemStorage
from django.core.management import CommandError, call_command
from django.db import connection

from caloria.models import FoodEntry, User
from dbops import pings
from dbops.models import BackupRecord
from tests.commands.test_backups import run_manage
from tests.commands.test_check_consistency import insert_food
from tests.conftest import STRONG_SECRET_KEY, closed_port

pytestmark = pytest.mark.django_db(transaction=True)

CHECK_UUID = "5a3b9c1e-check-uuid"


class Monitor:
    """An HTTP server on a free 127.0.0.1 port that records every request."""

    def __init__(self, status: int = 200, delay: float = 0.0):
        self.requests: list[tuple[str, str, bytes]] = []
        self.status, self.delay = status, delay
        self.release = threading.Event()
        monitor = self

        class Handler(BaseHTTPRequestHandler):
            def answer(self):
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else b""
                monitor.requests.append((self.command, self.path, body))
                if monitor.delay:
                    monitor.release.wait(monitor.delay)
                self.send_response(monitor.status)
                self.send_header("Content-Length", "2")
                self.end_headers()
                self.wfile.write(b"OK")

            do_GET = do_POST = answer

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/ping/{CHECK_UUID}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self):
        self.release.set()
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def monitor():
    server = Monitor()
    yield server
    server.close()


def consistency(**options):
    call_command("check_consistency", verbosity=1, **options)


def test_a_clean_consistency_run_gets_the_success_url(settings, monitor):
    settings.DBOPS_CONSISTENCY_PING_URL = monitor.url

    consistency()

    assert monitor.requests == [("GET", f"/ping/{CHECK_UUID}", b"")]


def test_findings_post_the_tail_of_the_output_to_the_fail_url(settings, monitor):
    settings.DBOPS_CONSISTENCY_PING_URL = monitor.url
    user = User.objects.create(username="ana")
    insert_food(FoodEntry.objects.create(user=user, name="Toast", calories=1).pk + 1000, user.pk)

    with pytest.raises(CommandError) as raised:
        consistency()

    assert raised.value.returncode == 1
    [(method, path, body)] = monitor.requests
    assert (method, path) == ("POST", f"/ping/{CHECK_UUID}/fail")
    text = body.decode()
    assert "finding  sequence caloria_foodentry" in text
    assert text.endswith("CommandError: 1 finding(s) in database 'default': sequence 1")


def test_a_backup_pings_success_and_a_failed_one_posts_its_error_secrets_masked(
    monitor, password_database_url, tmp_path
):
    url, password = password_database_url
    done = run_manage("dbbackup", DBOPS_BACKUP_PING_URL=monitor.url, DATABASE_URL=url)
    not_a_directory = tmp_path / "file"
    not_a_directory.write_text("")
    failed = run_manage(
        "dbbackup",
        DBOPS_BACKUP_PING_URL=monitor.url,
        DATABASE_URL=url,
        DBOPS_BACKUP_DIR=str(not_a_directory),
        HEALTH_TOKEN="health-token-" + "x" * 20,
    )

    assert done.returncode == 0, done.stderr
    assert failed.returncode == 1
    assert [request[:2] for request in monitor.requests] == [
        ("GET", f"/ping/{CHECK_UUID}"),
        ("POST", f"/ping/{CHECK_UUID}/fail"),
    ]
    body = monitor.requests[1][2].decode()
    assert "dbbackup failed" in body
    assert password not in body and "x" * 20 not in body
    assert BackupRecord.objects.filter(status="failed").exists()


# Off-site credentials with the characters that trip masking: '%', '@', '/', a space, a '+'.
ACCESS_KEY = "AKIA/odd key@1"
SECRET_ACCESS_KEY = "s3/Se%cret @key+x"


class TalkativeStorage(FileSystemStorage):
    """An off-site storage whose client logs its credentials, raw and URL-encoded (as some
    S3 and SFTP clients do), under dbbackup's logger, and then refuses the upload."""

    def __init__(self, location, access_key, secret_key):
        super().__init__(location=location)
        self.access_key, self.secret_key = access_key, secret_key

    def _save(self, name, content):
        logging.getLogger("dbbackup.storage").warning(
            "PUT %s refused: key %s secret %s (https://%s:%s@s3.example/%s)",
            name,
            self.access_key,
            self.secret_key,
            quote(self.access_key, safe=""),
            quote(self.secret_key, safe=""),
            quote(self.secret_key),
        )
        raise OSError("403 Forbidden")


def test_a_failed_backup_s_fail_body_masks_the_off_site_storage_s_secrets(
    settings, monitor, tmp_path
):
    settings.STORAGES = {
        **settings.STORAGES,
        "dbbackup_remote": {
            "BACKEND": f"{__name__}.TalkativeStorage",
            "OPTIONS": {
                "location": str(tmp_path / "off-site"),
                "access_key": ACCESS_KEY,
                "secret_key": SECRET_ACCESS_KEY,
            },
        },
    }
    settings.DBOPS_BACKUP_PING_URL = monitor.url

    with pytest.raises(CommandError) as raised:
        call_command("dbbackup", verbosity=1)

    assert raised.value.returncode == 1
    [(method, path, body)] = monitor.requests
    assert (method, path) == ("POST", f"/ping/{CHECK_UUID}/fail")
    text = body.decode()
    assert "PUT " in text and "refused: key ********" in text, text
    assert "off-site copy" in text
    for secret in (ACCESS_KEY, SECRET_ACCESS_KEY):
        for form in (secret, quote(secret, safe=""), quote(secret)):
            assert form not in text, form
    for fragment in ("AKIA", "Se%cret", "Se%25cret"):
        assert fragment not in text


def test_the_body_is_the_last_10_kB_with_every_secret_masked(settings, monkeypatch):
    password = "pw-" + "s3cr3t" * 4
    monkeypatch.setitem(connection.settings_dict, "PASSWORD", password)
    settings.SECRET_KEY = STRONG_SECRET_KEY
    settings.DBOPS_METRICS_TOKEN = "metrics-token-" + "m" * 20
    settings.DBOPS_BACKUP_PING_URL = "https://hc-ping.com/" + CHECK_UUID
    lines = [f"line {n} {'.' * 60}" for n in range(400)]
    lines.append(
        f"pg_dump: postgres://caloria:{password}@db/caloria {STRONG_SECRET_KEY} "
        f"{'metrics-token-' + 'm' * 20} https://hc-ping.com/{CHECK_UUID}"
    )

    body = pings.masked_body("\n".join(lines))

    assert len(body) <= 10_000
    assert body.startswith(b"line ") and body.decode().splitlines()[-1].startswith("pg_dump: ")
    for secret in (password, STRONG_SECRET_KEY, "m" * 20, CHECK_UUID):
        assert secret.encode() not in body


def test_a_monitor_that_does_not_answer_is_given_up_on_and_the_run_succeeds(settings, caplog):
    hung = Monitor(delay=60)
    settings.DBOPS_CONSISTENCY_PING_URL = hung.url
    settings.DBOPS_PING_TIMEOUT_SECONDS = 1
    try:
        with caplog.at_level(logging.WARNING, logger="dbops.pings"):
            consistency()
    finally:
        hung.close()

    assert len(hung.requests) == 1
    [record] = caplog.records
    assert record.levelno == logging.WARNING
    assert record.getMessage() == (
        f"dbops: the success ping to http://127.0.0.1:{hung.server.server_address[1]} failed "
        "(no answer within 1 s); the run's own outcome is unchanged"
    )
    assert CHECK_UUID not in record.getMessage()


@pytest.mark.parametrize("broken", ["refused", "error"])
def test_a_ping_that_fails_is_logged_and_never_fails_the_run(settings, caplog, broken):
    server = Monitor(status=500)
    url = server.url if broken == "error" else f"http://127.0.0.1:{closed_port()}/ping/x"
    settings.DBOPS_CONSISTENCY_PING_URL = url
    try:
        with caplog.at_level(logging.WARNING, logger="dbops.pings"):
            consistency()
    finally:
        server.close()

    [record] = caplog.records
    reason = "HTTP 500" if broken == "error" else "ConnectionRefusedError"
    assert f"failed ({reason})" in record.getMessage()


def test_no_ping_without_a_url_and_none_for_a_dry_run(settings, monitor):
    call_command("check_consistency", verbosity=0)
    settings.DBOPS_BACKUP_PING_URL = monitor.url
    call_command("dbbackup", "--clean", "--dry-run", verbosity=0)

    assert monitor.requests == []


def test_a_malformed_ping_url_never_fails_a_backup_nor_replaces_its_error(tmp_path):
    malformed = "hc-ping.com/" + CHECK_UUID  # no scheme: urllib refuses it
    done = run_manage("dbbackup", DBOPS_BACKUP_PING_URL=malformed)
    not_a_directory = tmp_path / "file"
    not_a_directory.write_text("")
    failed = run_manage(
        "dbbackup", DBOPS_BACKUP_PING_URL=malformed, DBOPS_BACKUP_DIR=str(not_a_directory)
    )

    assert done.returncode == 0, done.stderr
    assert failed.returncode == 1
    for run in (done, failed):
        assert "Traceback" not in run.stderr
        assert "dbops.W002" in run.stderr
        assert CHECK_UUID not in run.stdout + run.stderr
    assert "the success ping to a malformed URL failed (not an http:// or https:// URL)" in (
        done.stderr
    )
    assert "the fail ping to a malformed URL failed" in failed.stderr
    assert "dbbackup failed" in failed.stderr
    assert BackupRecord.objects.filter(status="succeeded").count() == 1


def test_a_malformed_ping_url_never_fails_a_consistency_run(settings, caplog):
    settings.DBOPS_CONSISTENCY_PING_URL = "hc-ping.com/" + CHECK_UUID

    with caplog.at_level(logging.WARNING, logger="dbops.pings"):
        consistency()

    [record] = caplog.records
    assert record.getMessage() == (
        "dbops: the success ping to a malformed URL failed (not an http:// or https:// URL); "
        "the run's own outcome is unchanged"
    )


@pytest.mark.parametrize("broken", ["hangs", "error"])
def test_a_backup_whose_ping_hangs_or_errs_still_succeeds_with_a_warning(broken):
    server = Monitor(delay=60) if broken == "hangs" else Monitor(status=500)
    try:
        done = run_manage(
            "dbbackup", DBOPS_BACKUP_PING_URL=server.url, DBOPS_PING_TIMEOUT_SECONDS="1"
        )
    finally:
        server.close()

    assert done.returncode == 0, done.stderr
    assert [request[:2] for request in server.requests] == [("GET", f"/ping/{CHECK_UUID}")]
    reason = "no answer within 1 s" if broken == "hangs" else "HTTP 500"
    assert (
        f"dbops: the success ping to http://127.0.0.1:{server.server.server_address[1]} failed "
        f"({reason}); the run's own outcome is unchanged"
    ) in done.stderr
    assert CHECK_UUID not in done.stderr
    assert BackupRecord.objects.get().status == "succeeded"


class RetryingStorage(FileSystemStorage):
    """An off-site storage whose client logs every one of its many retries, then gives up:
    far more than 10 kB of log before the run fails."""

    def _save(self, name, content):
        for attempt in range(1, 301):
            logging.getLogger("dbbackup.storage").warning(
                "PUT %s attempt %d of 300: 503 Slow Down, retrying", name, attempt
            )
        raise OSError("503 Slow Down: gave up after 300 attempts")


def test_a_fail_body_of_a_long_log_is_its_last_10_kB_cut_at_a_line(settings, monitor, tmp_path):
    settings.STORAGES = {
        **settings.STORAGES,
        "dbbackup_remote": {
            "BACKEND": f"{__name__}.RetryingStorage",
            "OPTIONS": {"location": str(tmp_path / "off-site")},
        },
    }
    settings.DBOPS_BACKUP_PING_URL = monitor.url

    with pytest.raises(CommandError):
        call_command("dbbackup", verbosity=1)

    [(method, path, body)] = monitor.requests
    assert (method, path) == ("POST", f"/ping/{CHECK_UUID}/fail")
    assert 9_000 < len(body) <= 10_000
    lines = [line for line in body.decode().splitlines() if line]
    assert lines[0].startswith("WARNING dbbackup.storage: PUT "), lines[0]
    assert "attempt 300 of 300" in lines[-2]
    assert lines[-1].startswith("CommandError: ") and "gave up after 300 attempts" in lines[-1]
    assert "attempt 1 of 300" not in body.decode()
