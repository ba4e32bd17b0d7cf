"""Each failing health check is logged at WARNING with its name and fixed reason, once per
change of state in a process (not once per probe), and its recovery once at INFO."""

import dataclasses
import logging
import threading

import pytest
from health_check import HealthCheck
from health_check.exceptions import ServiceUnavailable

from dbops.health_runner import run_checks
from tests.test_health import Hangs

pytestmark = [
    pytest.mark.django_db(transaction=True),
    pytest.mark.usefixtures("fresh_health_results"),
]


@pytest.fixture
def health_settings(settings, tmp_path):
    settings.DBOPS_HEALTH_CACHE_SECONDS = 0
    settings.DBOPS_BACKUP_DIR = tmp_path
    settings.DBOPS_BACKUP_CHECK = False
    return settings


@dataclasses.dataclass
class Switch(HealthCheck):
    """Fails with the reason it is given, or passes when that is None."""

    name: str
    reason: list = dataclasses.field(repr=False, default_factory=lambda: [None])

    def run(self):
        if self.reason[0] == "boom":
            raise RuntimeError("driver text: password=SECRETPW host=db.internal")
        if self.reason[0]:
            raise ServiceUnavailable(self.reason[0])


def lines(caplog) -> list[tuple[int, str]]:
    return [(r.levelno, r.getMessage()) for r in caplog.records if r.name == "health_check"]


def test_a_failure_is_logged_once_per_change_of_state(health_settings, caplog):
    reason = [None]
    check = Switch("disk", reason)
    with caplog.at_level(logging.INFO, logger="health_check"):
        run_checks([check])
        reason[0] = "less than 1024 MiB free"
        for _ in range(5):
            run_checks([check])
        reason[0] = "no backup found"
        run_checks([check])
        reason[0] = None
        run_checks([check])
        run_checks([check])

    assert lines(caplog) == [
        (
            logging.WARNING,
            "Health check Switch(name='disk') failed: Unavailable: less than 1024 MiB free",
        ),
        (logging.WARNING, "Health check Switch(name='disk') failed: Unavailable: no backup found"),
        (logging.INFO, "Health check Switch(name='disk') passes again"),
    ]


def test_a_timeout_is_logged_once_with_the_fixed_reason(health_settings, caplog):
    health_settings.DBOPS_HEALTH_DEADLINE_SECONDS = 1
    release = threading.Event()
    check = Hangs("frozen", release)
    try:
        with caplog.at_level(logging.INFO, logger="health_check"):
            for _ in range(3):
                run_checks([check])
    finally:
        release.set()

    assert lines(caplog) == [
        (
            logging.WARNING,
            "Health check Hangs(name='frozen') failed: Unavailable: Timed out after 1 s",
        )
    ]


def test_an_unexpected_exception_is_logged_by_its_type_never_its_text(health_settings, caplog):
    check = Switch("bug", ["boom"])
    with caplog.at_level(logging.INFO, logger="health_check"):
        [result] = run_checks([check])
        run_checks([check])

    assert lines(caplog) == [
        (
            logging.WARNING,
            "Health check Switch(name='bug') failed: Unknown Error: unexpected RuntimeError",
        )
    ]
    assert "SECRETPW" not in caplog.text and "SECRETPW" not in str(result.error)


def test_the_real_endpoint_logs_a_stale_backup_once_however_often_it_is_probed(
    client, health_settings, caplog
):
    health_settings.DBOPS_BACKUP_CHECK = True
    with caplog.at_level(logging.WARNING, logger="health_check"):
        for _ in range(4):
            assert client.get("/health/?format=json").status_code == 500

    assert lines(caplog) == [
        (logging.WARNING, "Health check BackupFresh() failed: Unavailable: no backup found")
    ]
