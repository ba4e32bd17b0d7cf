"""dbops' own settings (dbops/conf.py): read when used, documented, and all it needs.

dbops installs into any Django project: it reads no Caloria setting and imports nothing of
Caloria, and a project of dbops alone (tests/minimal_settings.py, no DBOPS_* setting at all)
passes its checks, serves its health endpoints and status page, and runs
validate_environment, in child processes against the real PostgreSQL server.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys

import pytest

from dbops import conf
from tests.conftest import PROJECT_ROOT, clean_environment, database_url
from tests.minimal_project import run_django

DBOPS = PROJECT_ROOT / "dbops"


# --------------------------------------------------------------------------- conf


def test_a_setting_is_read_from_the_project_when_it_is_used(settings):
    settings.DBOPS_BACKUP_KEEP_DAYS = 2
    overridden = conf.BACKUP_KEEP_DAYS
    del settings.DBOPS_BACKUP_KEEP_DAYS

    assert overridden == 2
    assert conf.BACKUP_KEEP_DAYS == 0


def test_an_unknown_setting_is_an_attribute_error_that_names_it():
    with pytest.raises(AttributeError, match="dbops has no setting DBOPS_BACKUP_KEEP_WEEKS"):
        conf.BACKUP_KEEP_WEEKS  # noqa: B018


def test_the_backup_dir_defaults_to_the_location_of_the_dbbackup_storage(settings, tmp_path):
    del settings.DBOPS_BACKUP_DIR
    settings.STORAGES = {
        **settings.STORAGES,
        "dbbackup": {
            "BACKEND": "django.core.files.storage.FileSystemStorage",
            "OPTIONS": {"location": str(tmp_path / "dumps")},
        },
    }

    backup_dir = conf.BACKUP_DIR

    assert backup_dir == tmp_path / "dumps"


def test_without_a_backup_dir_or_a_local_storage_there_is_no_backup_dir(settings):
    del settings.DBOPS_BACKUP_DIR
    settings.STORAGES = {
        **settings.STORAGES,
        "dbbackup": {"BACKEND": "django.core.files.storage.InMemoryStorage"},
    }

    assert conf.BACKUP_DIR is None


def test_the_readme_documents_every_dbops_setting():
    readme = (PROJECT_ROOT / "README.md").read_text()
    section = readme.split("## Using dbops in your own project", 1)[1].split("\n## ", 1)[0]

    documented = set(re.findall(r"^\| `(DBOPS_[A-Z_]+)` \|", section, flags=re.MULTILINE))

    assert documented == {conf.PREFIX + name for name in conf.SETTINGS}


# --------------------------------------------------------------------------- no Caloria


def dbops_sources():
    return sorted(path for path in DBOPS.rglob("*") if path.suffix in {".py", ".html", ".txt"})


def test_dbops_never_names_caloria():
    """The word in any case: a setting, an environment variable, a message or a docstring
    that names Caloria would be wrong in every other project (migrations included)."""
    offenders = [
        f"{path.relative_to(PROJECT_ROOT)}:{number}: {line.strip()}"
        for path in dbops_sources()
        for number, line in enumerate(path.read_text().splitlines(), start=1)
        if "caloria" in line.lower()
    ]

    assert dbops_sources(), "no dbops sources found"
    assert offenders == []


def test_dbops_never_imports_caloria():
    imports = re.compile(r"^\s*(import\s+caloria|from\s+caloria[\s.])", re.MULTILINE)

    offenders = [
        str(path.relative_to(PROJECT_ROOT))
        for path in dbops_sources()
        if path.suffix == ".py" and imports.search(path.read_text())
    ]

    assert offenders == []


# --------------------------------------------------------------------------- envinfo

READ_ENV = """
import json, sys
from pathlib import Path
from dbops.envinfo import StrictEnv
env = StrictEnv.load(Path(sys.argv[1]), "OTHER_PROJECT_ENV_FILE")
print(json.dumps({"file": str(env.env_file), "exists": env.env_file_exists,
                  "problems": env.problems, "value": env.str("OTHER_PROJECT_NAME", "unset"),
                  "source": env.sources.get("OTHER_PROJECT_NAME")}))
"""


def read_env(tmp_path, **variables) -> dict:
    completed = subprocess.run(
        [sys.executable, "-c", READ_ENV, str(tmp_path)],
        cwd=PROJECT_ROOT,
        env=clean_environment(**variables),
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    return json.loads(completed.stdout)


def test_strict_env_reads_the_file_named_by_the_variable_it_is_given(tmp_path):
    chosen = tmp_path / "chosen.env"
    chosen.write_text("OTHER_PROJECT_NAME=from-the-chosen-file\n")
    (tmp_path / ".env").write_text("OTHER_PROJECT_NAME=from-the-project-root\n")

    named = read_env(tmp_path, OTHER_PROJECT_ENV_FILE=str(chosen), CALORIA_ENV_FILE="/nowhere")
    unnamed = read_env(tmp_path, CALORIA_ENV_FILE=str(chosen))

    assert (named["file"], named["exists"], named["problems"]) == (str(chosen), True, [])
    assert (named["value"], named["source"]) == ("from-the-chosen-file", ".env file")
    assert unnamed["file"] == str(tmp_path / ".env")
    assert unnamed["value"] == "from-the-project-root"


def test_strict_env_names_its_own_variable_when_the_file_is_missing(tmp_path):
    missing = tmp_path / "missing.env"

    result = read_env(tmp_path, OTHER_PROJECT_ENV_FILE=str(missing))

    assert result["problems"] == [
        f"OTHER_PROJECT_ENV_FILE: names {missing}, which does not exist or is not a file"
    ]


# ----------------------------------------------------------------- a project of dbops alone

# The tests below mark `django_db` only so that pytest-django sets up the test database, beside
# which their own database is made.
dbops_alone = pytest.mark.django_db


@pytest.fixture(scope="module")
def minimal_backup_dir(tmp_path_factory):
    directory = tmp_path_factory.mktemp("minimal") / "backups"
    directory.mkdir(mode=0o700)
    return directory


@pytest.fixture(scope="module")
def minimal_database_url(django_db_setup, django_db_blocker, minimal_backup_dir):
    """A database beside the test database, migrated by the project of dbops alone; dropped
    afterwards."""
    from django.db import connection

    with django_db_blocker.unblock():
        name = f"{connection.settings_dict['NAME']}_dbops_alone"
        server = connection.get_new_connection(connection.get_connection_params())
        server.autocommit = True
        try:
            with server.cursor() as cursor:
                cursor.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
                cursor.execute(f'CREATE DATABASE "{name}"')
            url = database_url({**connection.settings_dict, "NAME": name})
            migrated = run_django(
                "migrate", "--noinput", "-v", "0", backup_dir=minimal_backup_dir, database_url=url
            )
            assert migrated.returncode == 0, migrated.output
            yield url
            with server.cursor() as cursor:
                cursor.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        finally:
            server.close()


@dbops_alone
def test_a_project_of_dbops_alone_passes_the_database_checks(
    minimal_database_url, minimal_backup_dir
):
    completed = run_django(
        "check", "--database", "default",
        backup_dir=minimal_backup_dir, database_url=minimal_database_url,
    )  # fmt: skip

    assert completed.returncode == 0, completed.output
    assert "System check identified no issues" in completed.stdout


GET_PAGES = """
import json
import django
django.setup()
from django.contrib.auth.models import User
from django.test import Client

client = Client()
pages = {}
for url in ("/health/live/", "/health/?format=json", "/health/database/?format=json",
            "/admin/database/"):
    response = client.get(url)
    pages[url] = {"status": response.status_code, "body": response.content.decode()}
client.force_login(User.objects.create_user("oncall", is_staff=True))
for url in ("/health/?format=json", "/admin/database/"):
    response = client.get(url)
    pages["staff " + url] = {"status": response.status_code, "body": response.content.decode()}
print(json.dumps(pages))
"""


@dbops_alone
def test_a_project_of_dbops_alone_serves_its_health_endpoints_and_status_page(
    minimal_database_url, minimal_backup_dir
):
    completed = run_django(
        backup_dir=minimal_backup_dir, database_url=minimal_database_url, python=("-c", GET_PAGES)
    )

    assert completed.returncode == 0, completed.output
    pages = json.loads(completed.stdout)
    assert pages["/health/live/"] == {"status": 200, "body": "OK\n"}
    anonymous = json.loads(pages["/health/?format=json"]["body"])
    assert pages["/health/?format=json"]["status"] == 200, anonymous
    assert set(anonymous.values()) == {"OK"} and "details" not in anonymous
    assert pages["/health/database/?format=json"]["status"] == 200
    assert pages["/admin/database/"]["status"] == 302  # to the admin's login
    staff = json.loads(pages["staff /health/?format=json"]["body"])
    assert staff["details"]["user_count"] == 1
    status_page = pages["staff /admin/database/"]
    assert status_page["status"] == 200
    assert "Database status" in status_page["body"]
    assert "not reported" in status_page["body"]
    assert str(minimal_backup_dir) in status_page["body"]


@dbops_alone
def test_validate_environment_in_a_project_of_dbops_alone_passes_and_says_what_is_unreported(
    minimal_database_url, minimal_backup_dir
):
    completed = run_django(
        "validate_environment", "--json",
        backup_dir=minimal_backup_dir, database_url=minimal_database_url,
    )  # fmt: skip

    assert completed.returncode == 0, completed.output
    report = json.loads(completed.stdout)
    checks = {check["name"]: check for check in report["checks"]}
    assert report["environment"] == "development"
    assert report["env_file"] is None
    assert checks[".env file"]["status"] == "skipped"
    assert "not reported" in checks[".env file"]["detail"]
    assert checks["engine"]["detail"] == "postgresql fits DBOPS_ENVIRONMENT=development"
    assert checks["backup directory"]["status"] == "passed"
    assert str(minimal_backup_dir) in checks["backup directory"]["detail"]


@dbops_alone
def test_a_project_of_dbops_alone_records_and_verifies_its_backup_in_the_storage_directory(
    minimal_database_url, minimal_backup_dir
):
    completed = run_django(
        "dbbackup", "--verify",
        backup_dir=minimal_backup_dir, database_url=minimal_database_url,
    )  # fmt: skip

    assert completed.returncode == 0, completed.output
    assert "Verified " in completed.stdout
    backups = [path.name for path in minimal_backup_dir.glob("*.psql.bin.gz")]
    assert len(backups) == 1
    assert f"Backed up to {backups[0]}" in completed.stdout
