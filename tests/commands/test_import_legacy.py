"""import_sqlite --mapping: the legacy Flask database, mapped tables, and passwords that work."""

import shutil
import sqlite3
from datetime import UTC, datetime
from decimal import Decimal
from io import StringIO
from pathlib import Path

import pytest
from django.contrib.auth import authenticate
from django.core.management import CommandError, call_command

import caloria.settings as project_settings
from caloria.hashers import WerkzeugPasswordHasher
from caloria.models import FoodEntry, User
from dbops.models import ImportRun
from tests.importing import failed_import

pytestmark = pytest.mark.django_db(transaction=True)

FIXTURE = Path(__file__).resolve().parents[1] / "fixtures" / "legacy-flask-caloria.db"


@pytest.fixture
def legacy_source(tmp_path) -> Path:
    """A copy of the legacy Flask database (importing must never touch the original)."""
    if not FIXTURE.is_file():
        pytest.fail(f"the legacy fixture is missing: {FIXTURE}")
    path = tmp_path / "caloria.db"
    shutil.copyfile(FIXTURE, path)
    return path


@pytest.fixture
def real_password_hashers(settings):
    settings.PASSWORD_HASHERS = project_settings.PASSWORD_HASHERS


def import_legacy(path, *args):
    stdout, stderr = StringIO(), StringIO()
    try:
        call_command(
            "import_sqlite", str(path), "--noinput", "--mapping", "flask-caloria", *args,
            stdout=stdout, stderr=stderr,
        )  # fmt: skip
    except CommandError as error:
        raise AssertionError(stderr.getvalue()) from error
    return stdout.getvalue()


def test_the_legacy_users_arrive_field_by_field(legacy_source):
    output = import_legacy(legacy_source)

    assert "every table verified" in output
    users = {user.id: user for user in User.objects.all()}
    assert len(users) == 3
    admin, maria, jurgen = users[1], users[2], users[3]
    assert (admin.username, admin.email) == ("admin", "admin@caloria.example")
    assert (admin.is_staff, admin.is_superuser, admin.is_vip) == (True, True, True)
    assert admin.daily_calorie_goal == 2200
    assert admin.date_joined == datetime(2025, 1, 4, 9, 15, 2, 123456, tzinfo=UTC)
    assert (maria.username, maria.email) == ("maria", "maria.garcia@caloria.example")
    assert (maria.is_staff, maria.is_superuser, maria.is_vip) == (False, False, True)
    assert maria.daily_calorie_goal == 1800
    assert maria.date_joined == datetime(2025, 2, 11, 18, 40, 55, tzinfo=UTC)
    assert (jurgen.username, jurgen.email) == ("jürgen", "juergen@caloria.example")
    assert (jurgen.is_staff, jurgen.is_superuser, jurgen.is_vip) == (False, False, False)
    assert jurgen.daily_calorie_goal is None
    assert jurgen.date_joined == datetime(2025, 3, 30, 23, 59, 59, 999999, tzinfo=UTC)
    assert all(user.is_active for user in users.values())
    assert not jurgen.has_usable_password()


def test_the_legacy_food_log_arrives_field_by_field(legacy_source):
    import_legacy(legacy_source)

    rows = [
        (e.id, e.user_id, e.name, e.calories, e.protein, e.carbs, e.fat, e.meal, e.eaten_at)
        for e in FoodEntry.objects.order_by("id")
    ]
    D = Decimal
    assert rows == [
        (1, 1, "Oatmeal with blueberries", 320, D("11.50"), D("54.25"), D("6.00"), "breakfast",
         datetime(2025, 3, 1, 7, 30, tzinfo=UTC)),
        (2, 1, "Grilled chicken salad", 450, D("38.00"), D("12.00"), D("22.50"), "lunch",
         datetime(2025, 3, 1, 12, 45, 10, 500000, tzinfo=UTC)),
        (3, 2, "Café con leche ☕", 120, D("6.00"), D("9.00"), D("6.50"), "breakfast",
         datetime(2025, 3, 2, 8, 5, tzinfo=UTC)),
        (4, 2, "Paella valenciana", 780, D("35.20"), D("85.00"), D("28.10"), "dinner",
         datetime(2025, 3, 2, 21, 10, tzinfo=UTC)),
        (5, 2, "Apple", 95, None, D("25.00"), None, "snack",
         datetime(2025, 3, 3, 16, 0, tzinfo=UTC)),
        (6, 3, "Brezel mit Butter", 310, D("8.00"), D("48.00"), D("9.50"), "",
         datetime(2025, 3, 4, 10, 20, tzinfo=UTC)),
    ]  # fmt: skip
    assert all(entry.created_at == entry.eaten_at for entry in FoodEntry.objects.all())


def test_skipped_tables_are_reported_and_the_run_recorded(legacy_source):
    with sqlite3.connect(legacy_source) as source:
        source.execute("CREATE TABLE stray_notes (id INTEGER PRIMARY KEY, body TEXT)")
    source.close()

    output = import_legacy(legacy_source)

    assert "Skipped (not in the mapping): alembic_version, stray_notes" in output
    run = ImportRun.objects.get()
    assert (run.status, run.mapping, run.total_rows) == ("succeeded", "flask-caloria", 9)


def test_a_full_text_table_is_one_skipped_table_not_its_shadow_tables(legacy_source):
    with sqlite3.connect(legacy_source) as source:
        source.execute("CREATE VIRTUAL TABLE food_search USING fts5(food_name)")
    source.close()

    output = import_legacy(legacy_source)

    assert "Skipped (not in the mapping): alembic_version, food_search\n" in output


def test_sequences_continue_after_the_imported_ids(legacy_source):
    import_legacy(legacy_source)

    assert User.objects.create(username="new-user").id == 4
    assert FoodEntry.objects.create(user_id=1, name="Tea", calories=2).id == 7


def test_a_second_import_without_truncate_is_refused(legacy_source):
    import_legacy(legacy_source)

    output = failed_import(legacy_source, "--mapping", "flask-caloria")

    assert "target tables are not empty: caloria_user, caloria_foodentry" in output
    assert User.objects.count() == 3


def test_without_a_mapping_the_command_suggests_the_built_in_one(legacy_source):
    output = failed_import(legacy_source)

    assert "has no django_migrations table" in output
    assert "try --mapping flask-caloria" in output


def test_the_admin_lists_the_imported_users(legacy_source, client, real_password_hashers):
    import_legacy(legacy_source)
    client.force_login(User.objects.get(username="admin"))

    page = client.get("/admin/caloria/user/").content.decode()

    for username in ("admin", "maria", "jürgen"):
        assert f">{username}</a>" in page


# --------------------------------------------------------------------------- passwords


def test_maria_logs_in_with_her_old_password_and_her_hash_is_upgraded(
    legacy_source, client, real_password_hashers
):
    import_legacy(legacy_source)
    assert User.objects.get(username="maria").password.startswith("werkzeug$pbkdf2:sha256:")

    response = client.post("/accounts/login/", {"username": "maria", "password": "maria-2025"})

    assert response.status_code == 302
    assert response.url == "/"
    assert client.get("/").context["user"].username == "maria"
    assert User.objects.get(username="maria").password.startswith("pbkdf2_sha256$")


def test_admin_logs_in_to_the_admin_with_the_old_scrypt_password(
    legacy_source, client, real_password_hashers
):
    import_legacy(legacy_source)
    assert User.objects.get(username="admin").password.startswith("werkzeug$scrypt:")

    response = client.post(
        "/admin/login/?next=/admin/", {"username": "admin", "password": "Adm1n-pass!"}
    )

    assert response.status_code == 302
    assert client.get("/admin/").status_code == 200
    assert User.objects.get(username="admin").password.startswith("pbkdf2_sha256$")


def test_a_wrong_password_fails_and_leaves_the_hash_alone(legacy_source, real_password_hashers):
    import_legacy(legacy_source)
    before = User.objects.get(username="maria").password

    assert authenticate(username="maria", password="maria-2024") is None
    assert authenticate(username="admin", password="adm1n-pass!") is None
    assert User.objects.get(username="maria").password == before


def test_jurgen_cannot_log_in_with_any_password(legacy_source, client, real_password_hashers):
    import_legacy(legacy_source)
    unusable = User.objects.get(username="jürgen").password

    for password in ("", "jürgen", unusable, "!no-password-imported-3", "None"):
        assert authenticate(username="jürgen", password=password) is None
    response = client.post("/accounts/login/", {"username": "jürgen", "password": "x"})
    assert response.status_code == 200
    assert "didn't match" in response.content.decode()


def test_the_werkzeug_hasher_rejects_malformed_hashes():
    hasher = WerkzeugPasswordHasher()

    assert not hasher.verify("x", "werkzeug$nonsense")
    assert not hasher.verify("x", "werkzeug$md4:1$salt$abcd")
    assert not hasher.verify("x", "werkzeug$pbkdf2:sha256:notanumber$salt$abcd")


# --------------------------------------------------------------------------- mappings


def write_mapping(tmp_path, text: str) -> Path:
    path = tmp_path / "mapping.toml"
    path.write_text(text)
    return path


USER_TABLE = """
[[tables]]
source = "user"
model = "caloria.User"
[tables.fields]
id = "id"
username = "username"
email = "email"
date_joined = { from = "created_at", transform = "naive_datetime" }
"""


@pytest.mark.parametrize(
    "text, expected",
    [
        (USER_TABLE.replace("caloria.User", "caloria.Nobody"), "no model caloria.Nobody"),
        (USER_TABLE + 'nickname = "username"\n', "caloria.User has no field 'nickname'"),
        (USER_TABLE.replace('source = "user"', 'source = "members"'), "no table 'members'"),
        (USER_TABLE.replace('email = "email"', 'email = "mail"'), "has no column 'mail'"),
        (
            USER_TABLE.replace('transform = "naive_datetime"', 'transform = "magic"'),
            "unknown transform 'magic'",
        ),
        ("[[tables]]\nsource = 1\n", "needs 'source' (text)"),
        ("this is = not toml", "not valid TOML"),
    ],
)
def test_a_wrong_mapping_is_an_error_before_any_row_is_read(
    legacy_source, tmp_path, text, expected
):
    mapping = write_mapping(tmp_path, text)

    output = failed_import(legacy_source, "--mapping", str(mapping))

    assert expected in output
    assert not User.objects.exists()


def test_an_unknown_mapping_name_lists_the_built_in_ones(legacy_source):
    output = failed_import(legacy_source, "--mapping", "django-1.0")

    assert "neither a built-in mapping (known: flask-caloria) nor a file" in output


def test_naive_datetimes_are_read_in_the_source_time_zone(legacy_source):
    import_legacy(legacy_source, "--source-timezone", "Europe/Berlin")

    # 2025-03-01 07:30 in Berlin (UTC+1 in winter) is 06:30 UTC.
    assert FoodEntry.objects.get(id=1).eaten_at == datetime(2025, 3, 1, 6, 30, tzinfo=UTC)
    # 2025-03-30 23:59:59.999999 in Berlin is summer time already (UTC+2).
    jurgen = User.objects.get(username="jürgen")
    assert jurgen.date_joined == datetime(2025, 3, 30, 21, 59, 59, 999999, tzinfo=UTC)


def test_a_float_that_would_be_rounded_is_refused_by_default(legacy_source):
    with sqlite3.connect(legacy_source) as source:
        source.execute("UPDATE food_log SET protein = 11.125 WHERE id = 1")
    source.close()

    output = failed_import(legacy_source, "--mapping", "flask-caloria")

    assert (
        "food_log (into caloria_foodentry).protein: 1 value(s) more than 2 decimal places: "
        "pk 1: 11.125" in output
    )
    assert not FoodEntry.objects.exists()


def rounding_mapping(tmp_path):
    builtin = (project_settings.BASE_DIR / "caloria/import_mappings/flask-caloria.toml").read_text()
    return write_mapping(
        tmp_path,
        builtin.replace(
            'protein = { from = "protein", transform = "decimal", on_rounding = "refuse" }',
            'protein = { from = "protein", transform = "decimal", on_rounding = "round" }',
        ),
    )


def test_rounding_can_be_allowed_in_the_mapping(legacy_source, tmp_path):
    with sqlite3.connect(legacy_source) as source:
        source.execute("UPDATE food_log SET protein = 11.125 WHERE id = 1")
    source.close()
    mapping = rounding_mapping(tmp_path)

    call_command(
        "import_sqlite", str(legacy_source), "--noinput", "--mapping", str(mapping), verbosity=0
    )

    assert FoodEntry.objects.get(id=1).protein == Decimal("11.13")


def test_rounding_never_turns_text_into_a_number(legacy_source, tmp_path):
    # SQLite's round('n/a', 2) is 0.0: text must be refused, not imported as zero.
    with sqlite3.connect(legacy_source) as source:
        source.execute("UPDATE food_log SET protein = 'n/a' WHERE id = 1")
    source.close()

    output = failed_import(legacy_source, "--mapping", str(rounding_mapping(tmp_path)))

    assert "protein: 1 value(s) text in a decimal column: pk 1: 'n/a'" in output
    assert not FoodEntry.objects.exists()


PASSWORD = (
    'password = { from = "password_hash", transform = "password_hash", hasher = "werkzeug" }\n'
)


@pytest.mark.parametrize("dry_run", [True, False], ids=["dry run", "import"])
def test_duplicates_in_the_column_a_mapping_makes_the_key_are_listed(
    legacy_source, tmp_path, dry_run
):
    # A Django source's key is unique by its schema; a mapped one can come from any column.
    table = USER_TABLE.replace('id = "id"', 'id = "is_vip"') + PASSWORD
    mapping = write_mapping(tmp_path, table)

    output = failed_import(
        legacy_source, "--mapping", str(mapping), *(["--dry-run"] if dry_run else [])
    )

    assert "problem(s); nothing was" in output
    assert "id: 1 value(s) duplicated, breaking a unique constraint: pk 1: 1" in output
    assert not User.objects.exists()
