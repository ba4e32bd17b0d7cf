"""The schema's indexes: each one earns its place."""

import pytest
from django.apps import apps
from django.db import connection

from caloria.models import FoodEntry, WeightEntry

pytestmark = pytest.mark.django_db


def indexes(table: str) -> dict[str, tuple[tuple[str, ...], bool]]:
    """Each index (unique constraints included) of a table: its columns, and whether unique."""
    with connection.cursor() as cursor:
        constraints = connection.introspection.get_constraints(cursor, table)
    return {
        name: (tuple(info["columns"]), info["unique"])
        for name, info in constraints.items()
        if info["index"] or info["unique"]
    }


@pytest.mark.parametrize("model", list(apps.get_app_config("caloria").get_models()))
def test_no_plain_index_is_the_leading_part_of_another(model):
    # A plain index on (a) is redundant next to one on (a, b): it only slows every insert.
    # (A unique one is not: it enforces something.)
    found = indexes(model._meta.db_table)

    redundant = [
        f"{name} {columns} starts {other} {other_columns}"
        for name, (columns, unique) in found.items()
        for other, (other_columns, _) in found.items()
        if not unique
        and len(columns) < len(other_columns)
        and other_columns[: len(columns)] == columns
    ]

    assert redundant == []


@pytest.mark.parametrize(
    ("model", "index"),
    [(FoodEntry, "food_user_eaten_at"), (WeightEntry, "weight_one_per_user_and_day")],
)
def test_a_users_entries_are_read_through_the_composite_index(model, index):
    query = model.objects.filter(user_id=1).query
    sql, params = query.sql_with_params()
    with connection.cursor() as cursor:
        cursor.execute("SET LOCAL enable_seqscan = off")  # the test tables are tiny
        cursor.execute(f"EXPLAIN {sql}", params)
        plan = "\n".join(row[0] for row in cursor.fetchall())

    assert index in plan
