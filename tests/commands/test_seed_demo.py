"""seed_demo: the asked amount of demo data, the same every time, and never in production."""

from io import StringIO

import pytest
from django.core.management import call_command
from django.core.management.base import CommandError

from caloria.models import FoodEntry, User, WeightEntry

pytestmark = pytest.mark.django_db

SMALL = {"users": 4, "entries": 30, "weight_days": 3}


def seed(*args, **options):
    """Run seed_demo with a small data set; return what it printed."""
    stdout = StringIO()
    call_command("seed_demo", *args, stdout=stdout, **{**SMALL, **options})
    return stdout.getvalue()


def demo_users():
    return User.objects.filter(username__startswith="demo-")


def snapshot():
    """Everything a run chose at random, in a stable order, without database ids."""
    users = list(
        demo_users().order_by("username").values_list("username", "is_vip", "daily_calorie_goal")
    )
    entries = sorted(
        FoodEntry.objects.values_list(
            "user__username", "eaten_at", "name", "calories", "protein", "carbs", "fat", "meal"
        ),
        key=repr,
    )
    weights = sorted(
        WeightEntry.objects.values_list("user__username", "measured_on", "weight_kg"), key=repr
    )
    return users, entries, weights


def test_it_creates_the_asked_numbers_of_users_entries_and_weights():
    seed(users=5, entries=40, weight_days=3)

    assert demo_users().count() == 5
    assert FoodEntry.objects.count() == 40
    assert WeightEntry.objects.count() == 5 * 3
    assert set(FoodEntry.objects.values_list("user__username", flat=True)) == set(
        demo_users().values_list("username", flat=True)
    )


def test_it_creates_a_development_superuser_whose_password_works():
    output = seed()

    admin = User.objects.get(username="admin")
    assert admin.is_superuser
    assert admin.is_staff
    assert admin.check_password("caloria-dev-admin")
    assert "caloria-dev-admin" in output


def test_it_leaves_out_the_superuser_when_asked():
    seed("--no-superuser")

    assert not User.objects.filter(username="admin").exists()
    assert demo_users().count() == SMALL["users"]


def test_reset_recreates_exactly_the_same_data():
    seed("--reset")
    first_ids = set(demo_users().values_list("pk", flat=True))
    first = snapshot()

    output = seed("--reset")

    assert f"Deleted {SMALL['users']} earlier demo users" in output
    assert first_ids.isdisjoint(demo_users().values_list("pk", flat=True))  # really recreated
    assert snapshot() == first
    assert len(first[1]) == SMALL["entries"]


def test_a_different_seed_gives_different_data():
    seed()
    first = snapshot()

    seed("--reset", seed=7)

    assert snapshot() != first


def test_a_second_run_without_reset_leaves_the_data_as_it_was():
    seed()
    before = snapshot()
    ids_before = set(demo_users().values_list("pk", flat=True))

    output = seed()

    assert "Demo data already present" in output
    assert snapshot() == before
    assert set(demo_users().values_list("pk", flat=True)) == ids_before
    assert FoodEntry.objects.count() == SMALL["entries"]
    assert User.objects.filter(username="admin").count() == 1


def test_it_is_refused_in_production(settings):
    settings.CALORIA_ENV = "production"

    with pytest.raises(CommandError, match="refused in production"):
        seed()

    assert not User.objects.exists()
    assert not FoodEntry.objects.exists()
    assert not WeightEntry.objects.exists()


def test_a_negative_number_of_users_is_an_error():
    with pytest.raises(CommandError, match="--users must be 0 or more"):
        seed(users=-1)

    assert not User.objects.exists()
