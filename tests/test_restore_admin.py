"""The restore history in the admin, and what the status page says of restores and of the
newest backup that is both off-site and verified."""

from datetime import timedelta

import pytest
from django.utils import timezone

from caloria.models import User
from dbops.models import BackupRecord, RestoreRun

pytestmark = [pytest.mark.django_db, pytest.mark.usefixtures("fresh_health_results")]


@pytest.fixture
def staff_client(client):
    client.force_login(User.objects.create_superuser("oncall", "oncall@example.com", "x"))
    return client


def backup(filename, age, **fields):
    started = timezone.now() - age
    return BackupRecord.objects.create(
        started_at=started, finished_at=started, status="succeeded", filename=filename, **fields
    )


def swap_run(record):
    now = timezone.now()
    return RestoreRun.objects.create(
        started_at=now, finished_at=now, status="succeeded", action="swap", backup=record,
        restored_database="caloria_restored_20261203021500",
        previous_database="caloria_previous_20261203021503", duration_seconds=4.2,
        steps=[
            {"name": "rows", "outcome": "passed", "detail": "18 tables <b>match</b>", "seconds": 1},
            {"name": "swap", "outcome": "passed", "detail": "renamed", "seconds": 0.02},
        ],
    )  # fmt: skip


def test_restore_runs_are_listed_and_shown_read_only_with_their_steps(staff_client):
    record = backup("nightly.psql.bin.gz", timedelta(hours=3))
    run = swap_run(record)
    RestoreRun.objects.create(started_at=timezone.now(), status="failed", error="rows: differ")

    listing = staff_client.get("/admin/dbops/restorerun/")
    detail = staff_client.get(f"/admin/dbops/restorerun/{run.pk}/change/")
    add = staff_client.get("/admin/dbops/restorerun/add/")

    assert listing.status_code == 200
    page = listing.content.decode()
    assert "caloria_previous_20261203021503" in page and "nightly.psql.bin.gz" in page
    assert page.index("Failed") < page.index("Succeeded")  # newest first
    assert detail.status_code == 200
    shown = detail.content.decode()
    assert 'name="_save"' not in shown
    assert "<td>rows</td><td>passed</td><td>18 tables &lt;b&gt;match&lt;/b&gt;</td>" in shown
    assert "restore, check and swap in" in shown
    assert add.status_code == 403


def test_the_status_page_shows_the_newest_restore_and_the_newest_offsite_verified_backup(
    staff_client,
):
    verified = backup(
        "two-days.psql.bin.gz", timedelta(days=2), remote_copy="copied",
        remote_copied_at=timezone.now() - timedelta(days=2), verification="passed",
    )  # fmt: skip
    backup("newer-not-verified.psql.bin.gz", timedelta(hours=5), remote_copy="copied")
    backup("newer-local-only.psql.bin.gz", timedelta(hours=4), verification="passed")
    swap_run(verified)

    page = staff_client.get("/admin/database/").content.decode()

    assert "Newest off-site, verified backup</th><td>2\xa0days old: two-days.psql.bin.gz" in page
    assert "restore, check and swap in: Succeeded from two-days.psql.bin.gz" in page
    assert "kept as caloria_previous_20261203021503" in page


def test_the_status_page_says_when_no_backup_is_off_site_and_verified_and_none_restored(
    staff_client,
):
    backup("local.psql.bin.gz", timedelta(hours=1), verification="passed")

    page = staff_client.get("/admin/database/").content.decode()

    assert "none: no backup is both copied off-site and verified" in page
    assert "no restore recorded" in page
