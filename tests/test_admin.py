"""The admin staff work in: what the lists show, and that they cost the same at any size.

Query counts are compared between a short and a long list in the same test, so a per-row
query (an N+1) shows up as a difference, whatever the fixed cost of a page is.
"""

import re
from datetime import UTC, date, datetime
from decimal import Decimal

import pytest
from django.core.management import CommandError, call_command
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from caloria.models import FoodEntry, User, WeightEntry
from dbops.models import BackupRecord, ConsistencyRun, ImportRun

USER_LIST = "/admin/caloria/user/"
FOOD_LIST = "/admin/caloria/foodentry/"
WEIGHT_LIST = "/admin/caloria/weightentry/"

pytestmark = pytest.mark.django_db


def create_users(count, *, start=0, entries_each=2):
    """`count` users named person-<n>, each with `entries_each` food entries."""
    users = User.objects.bulk_create(
        User(username=f"person-{number:04d}", email=f"person-{number:04d}@example.com")
        for number in range(start, start + count)
    )
    FoodEntry.objects.bulk_create(
        FoodEntry(user=user, name=f"Meal {index}", calories=300 + index)
        for user in users
        for index in range(entries_each)
    )
    return users


def create_weight_entries(count, *, start=0):
    """`count` weight entries, one per user, so that every row names a different user."""
    users = create_users(count, start=start, entries_each=0)
    WeightEntry.objects.bulk_create(
        WeightEntry(user=user, measured_on=date(2026, 1, 1), weight_kg=Decimal("70.50"))
        for user in users
    )


def get_counting_queries(client, url):
    """GET `url`; return the response and the number of queries it made."""
    with CaptureQueriesContext(connection) as queries:
        response = client.get(url)
    assert response.status_code == 200
    return response, len(queries)


def table_row(html, text):
    """The changelist table row (`<tr>…</tr>`) that contains `text`."""
    rows = [row.split("</tr>")[0] for row in html.split("<tr")[1:]]
    matching = [row for row in rows if text in row]
    assert len(matching) == 1, f"expected one row containing {text!r}, found {len(matching)}"
    return matching[0]


def shown_usernames(response):
    return {user.username for user in response.context["cl"].result_list}


def test_user_list_shows_the_columns_staff_need(admin_client):
    alice = User.objects.create_user(
        "alice", email="alice@example.com", is_vip=True, daily_calorie_goal=2100
    )
    html = admin_client.get(USER_LIST).content.decode()

    for column in (
        "username",
        "email",
        "is_vip",
        "daily_calorie_goal",
        "date_joined",
        "last_login",
        "food_entry_count",
    ):
        assert re.search(rf'<th scope="col" class="[^"]*\bcolumn-{column}\b', html), column
    row = table_row(html, f"/admin/caloria/user/{alice.pk}/change/")
    assert '<td class="field-email">alice@example.com</td>' in row
    assert 'alt="True"' in row  # the VIP tick
    assert '<td class="field-daily_calorie_goal">2100</td>' in row
    assert '<td class="field-date_joined nowrap">' in row
    assert '<td class="field-last_login nowrap">-</td>' in row
    assert '<td class="field-food_entry_count">0</td>' in row


def test_user_list_shows_each_users_number_of_food_entries(admin_client):
    alice = User.objects.create_user("alice")
    bob = User.objects.create_user("bob")
    User.objects.create_user("carol")
    for index in range(3):
        FoodEntry.objects.create(user=alice, name=f"Apple {index}", calories=95)
    for index in range(5):
        FoodEntry.objects.create(user=bob, name=f"Pear {index}", calories=100)

    html = admin_client.get(USER_LIST).content.decode()

    assert '<td class="field-food_entry_count">3</td>' in table_row(html, ">alice</a>")
    assert '<td class="field-food_entry_count">5</td>' in table_row(html, ">bob</a>")
    assert '<td class="field-food_entry_count">0</td>' in table_row(html, ">carol</a>")


def test_user_list_query_count_does_not_grow_with_rows(admin_client):
    create_users(10)
    short, short_queries = get_counting_queries(admin_client, USER_LIST)
    create_users(90, start=10)
    long, long_queries = get_counting_queries(admin_client, USER_LIST)

    assert len(short.context["cl"].result_list) == 11  # with the admin user
    assert len(long.context["cl"].result_list) == 100  # a full page
    assert long_queries == short_queries


def test_food_entry_list_query_count_does_not_grow_with_rows(admin_client):
    create_users(5)  # 10 entries
    short, short_queries = get_counting_queries(admin_client, FOOD_LIST)
    create_users(45, start=5)  # 100 entries
    long, long_queries = get_counting_queries(admin_client, FOOD_LIST)

    assert len(short.context["cl"].result_list) == 10
    assert len(long.context["cl"].result_list) == 100
    assert long_queries == short_queries


def test_weight_entry_list_query_count_does_not_grow_with_rows(admin_client):
    create_weight_entries(10)
    short, short_queries = get_counting_queries(admin_client, WEIGHT_LIST)
    create_weight_entries(90, start=10)
    long, long_queries = get_counting_queries(admin_client, WEIGHT_LIST)

    assert len(short.context["cl"].result_list) == 10
    assert len(long.context["cl"].result_list) == 100
    assert long_queries == short_queries


def test_user_list_search_finds_users_by_username(admin_client):
    User.objects.create_user("alice")
    User.objects.create_user("alicia")
    User.objects.create_user("bob")

    response = admin_client.get(USER_LIST, {"q": "ali"})

    assert response.status_code == 200
    assert shown_usernames(response) == {"alice", "alicia"}


def test_user_list_vip_filter_shows_only_vips_or_only_the_others(admin_client):
    User.objects.create_user("vip", is_vip=True)
    User.objects.create_user("regular", is_vip=False)

    offered = admin_client.get(USER_LIST).content.decode()
    assert 'data-filter-title="VIP"' in offered
    assert 'href="?is_vip__exact=1"' in offered

    vips = admin_client.get(USER_LIST, {"is_vip__exact": "1"})
    others = admin_client.get(USER_LIST, {"is_vip__exact": "0"})

    assert shown_usernames(vips) == {"vip"}
    assert shown_usernames(others) == {"regular", "admin"}


def test_food_entry_list_drills_down_by_date(admin_client):
    user = User.objects.create_user("alice")
    for year in (2024, 2025):
        FoodEntry.objects.create(
            user=user,
            name=f"Soup of {year}",
            calories=200,
            eaten_at=datetime(year, 3, 1, tzinfo=UTC),
        )

    html = admin_client.get(FOOD_LIST).content.decode()
    assert "?eaten_at__year=2024" in html
    assert "?eaten_at__year=2025" in html

    drilled = admin_client.get(FOOD_LIST, {"eaten_at__year": "2024"})
    assert [entry.name for entry in drilled.context["cl"].result_list] == ["Soup of 2024"]


def test_anonymous_visitor_to_user_list_is_sent_to_login(client):
    response = client.get(USER_LIST)

    assert response.status_code == 302
    assert response["Location"] == f"/admin/login/?next={USER_LIST}"


@pytest.mark.django_db(transaction=True)  # import_sqlite commits
def test_import_runs_are_listed_newest_first_and_read_only_in_the_admin(filled_source, client):
    call_command("import_sqlite", str(filled_source), "--dry-run", verbosity=0)
    call_command("import_sqlite", str(filled_source), "--noinput", verbosity=0)
    with pytest.raises(CommandError):
        call_command("import_sqlite", str(filled_source), "--noinput", verbosity=0)
    client.force_login(User.objects.create_superuser("staff", "staff@example.com", "pw"))

    page = client.get("/admin/dbops/importrun/")
    add = client.get("/admin/dbops/importrun/add/")

    assert page.status_code == 200
    content = page.content.decode()
    assert content.index("Failed") < content.index("Succeeded")
    assert add.status_code == 403
    run = ImportRun.objects.first()
    change = client.get(f"/admin/dbops/importrun/{run.pk}/change/")
    assert change.status_code == 200
    assert 'name="_save"' not in change.content.decode()


def test_consistency_runs_are_listed_read_only_with_their_findings(admin_client):
    with pytest.raises(CommandError):
        call_command("check_consistency", "--exclude", "nosuchapp", verbosity=0)
    ConsistencyRun.objects.create(
        started_at=timezone.now(), status="failed", findings={"sequence": 2}, findings_total=2
    )

    listing = admin_client.get("/admin/dbops/consistencyrun/")
    add = admin_client.get("/admin/dbops/consistencyrun/add/")

    assert listing.status_code == 200
    assert b"sequence" in listing.content and b"Failed" in listing.content
    assert add.status_code == 403


def test_backup_records_show_whether_their_verification_compared_checksums(admin_client):
    def recorded(name, verification, checksums):
        return BackupRecord.objects.create(
            started_at=timezone.now(), status="succeeded", filename=name,
            verification=verification, table_counts={"caloria_user": 1},
            table_checksums=checksums,
        )  # fmt: skip

    checksums = {"caloria_user": {"rows": 1, "sha256": "ab" * 32}}
    proven = recorded("proven.psql.bin.gz", "passed", checksums)
    recorded("older.psql.bin.gz", "passed", {})
    recorded("failed.psql.bin.gz", "failed", checksums)
    recorded("unverified.psql.bin.gz", "", checksums)

    page = admin_client.get("/admin/dbops/backuprecord/").content.decode()
    detail = admin_client.get(f"/admin/dbops/backuprecord/{proven.pk}/change/").content.decode()

    assert "counts and checksums" in table_row(page, "proven.psql.bin.gz")
    assert "counts only" in table_row(page, "older.psql.bin.gz")
    assert "counts and checksums" in table_row(page, "failed.psql.bin.gz")
    unverified = table_row(page, "unverified.psql.bin.gz")
    assert "counts" not in unverified
    assert "Compared:" in detail and "counts and checksums" in detail
