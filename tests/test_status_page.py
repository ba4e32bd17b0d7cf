"""The admin's database status page and the panel on the admin index."""

import re

import pytest
from django.conf import settings
from django.db import connection
from django.utils import timezone

from caloria.models import User
from dbops.models import BackupRecord, ImportRun

pytestmark = [
    pytest.mark.django_db(transaction=True),
    pytest.mark.usefixtures("fresh_health_results"),
]


@pytest.fixture
def staff_client(client):
    client.force_login(User.objects.create_user("oncall", password="x", is_staff=True))
    return client


def test_anonymous_and_non_staff_visitors_are_sent_to_the_login_page(client):
    anonymous = client.get("/admin/database/")
    client.force_login(User.objects.create_user("member"))
    member = client.get("/admin/database/")

    for response in (anonymous, member):
        assert response.status_code == 302
        assert response.url.startswith("/admin/login/")


def test_staff_see_the_database_its_tables_backups_imports_and_health(staff_client):
    now = timezone.now()
    BackupRecord.objects.create(
        started_at=now, finished_at=now, status="succeeded", filename="nightly.psql.bin.gz",
        verification="passed", verified_at=now,
    )  # fmt: skip
    ImportRun.objects.create(started_at=now, source_path="/srv/old/db.sqlite3", status="failed")

    response = staff_client.get("/admin/database/")

    page = response.content.decode()
    assert response.status_code == 200
    assert re.search(r"postgresql \d+\.\d+", page)
    assert connection.settings_dict["NAME"] in page
    assert "caloria_foodentry" in page
    assert "nightly.psql.bin.gz" in page and "Passed" in page
    assert "/srv/old/db.sqlite3" in page
    assert "DatabaseReachable(alias=&#x27;default&#x27;)" in page
    assert str(settings.DBOPS_ENV_FILE) in page
    assert settings.SECRET_KEY not in page


def test_the_admin_index_shows_the_database_panel(staff_client, settings):
    settings.DBOPS_BACKUP_CHECK = True

    page = staff_client.get("/admin/").content.decode()

    assert 'id="database-panel"' in page
    assert "none recorded" in page
    assert "BackupFresh(): Unavailable: no backup found" in page
    assert 'href="/admin/database/"' in page


def test_staff_are_told_when_the_backup_directory_is_open_to_others(
    staff_client, settings, tmp_path
):
    directory = tmp_path / "shared-backups"
    directory.mkdir()
    directory.chmod(0o750)
    settings.DBOPS_BACKUP_DIR = directory

    page = staff_client.get("/admin/database/").content.decode()

    assert f"{directory} is mode 0750: group can open it" in page
    assert f"chmod 700 {directory}" in page


def test_a_private_backup_directory_gets_no_warning(staff_client, settings, tmp_path):
    directory = tmp_path / "private-backups"
    directory.mkdir(mode=0o700)
    settings.DBOPS_BACKUP_DIR = directory

    page = staff_client.get("/admin/database/").content.decode()

    assert "chmod 700" not in page
