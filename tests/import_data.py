"""Rows written through Django's ORM into a SQLite database, for import_sqlite's tests.

`create_rows()` runs in a child process whose DATABASE_URL is the SQLite file, so the file
holds exactly what Django writes there; the tests then compare what PostgreSQL holds after
the import with the same definitions.
"""

import uuid
from datetime import UTC, date, datetime, time, timedelta
from decimal import Decimal

EVERY_FIELD_ROWS = [
    {
        "flag": True,
        "maybe": None,
        "small": -32768,
        "big": 2**63 - 1,
        "positive": 2**31 - 1,
        "amount": Decimal("12345678.9012"),
        "ratio": 0.1,
        "moment": datetime(2024, 2, 29, 23, 59, 59, 999999, tzinfo=UTC),
        "day": date(1999, 12, 31),
        "clock": time(7, 8, 9, 123456),
        "span": timedelta(days=3, seconds=7, microseconds=11),
        "token": uuid.UUID("12345678-1234-5678-1234-567812345678"),
        "data": {
            "b": [1, 2.5, None, True],
            "a": "ünïcode ☕",
            "nested": {"k": "v"},
            "control": '\b\x01\x7f \\ "',
        },
        "blob": b"\x00\x01binary\xff",
        "address": "2001:db8::1",
        "label": "tab\there",
        "body": "line one\nline two\r\nback\\slash \\N \b\f\v \x01\x1e\x7f end",
        # COPY's own word for NULL, as a value: it must arrive as text, not as NULL.
        "remark": "\\N",
    },
    {
        "flag": False,
        "maybe": False,
        "small": 32767,
        "big": -(2**63),
        "positive": 0,
        "amount": Decimal("-0.0001"),
        "ratio": 1e300,
        "moment": datetime(1970, 1, 1, 0, 0, 0, tzinfo=UTC),
        "day": date(2024, 2, 29),
        "clock": time(23, 59, 59),
        "span": timedelta(microseconds=-1),
        "token": uuid.UUID("ffffffff-ffff-ffff-ffff-ffffffffffff"),
        "data": [],
        "blob": b"",
        "address": "192.168.0.1",
        "label": "",
        "body": "",
        "remark": "",
    },
    {
        "flag": True,
        "maybe": True,
        "small": None,
        "big": None,
        "positive": None,
        "amount": None,
        "ratio": None,
        "moment": None,
        "day": None,
        "clock": None,
        "span": None,
        "token": None,
        "data": None,
        "blob": None,
        "address": None,
        "label": "NULLs",
        "body": "everything else is NULL",
        "remark": None,
    },
]
TAGS = [("b-tag", "Bee"), ("A-tag", "Upper"), ("a-tag", "lower"), ("ä-tag", "umlaut")]

USERS = [
    # username, email, is_vip, goal, date_joined
    ("ana", "ana@example.com", True, 1800, datetime(2025, 1, 2, 3, 4, 5, 678901, tzinfo=UTC)),
    ("jürgen", "j@example.com", False, None, datetime(2025, 6, 1, 12, 0, 0, tzinfo=UTC)),
    ("bob", "bob@example.com", False, 2500, datetime(2025, 7, 1, 8, 30, 0, 1, tzinfo=UTC)),
]
FOOD = [
    # username, eaten_at, name, calories, protein, carbs, fat, meal
    ("ana", datetime(2025, 3, 1, 7, 30, 0, 123456, tzinfo=UTC), "Café con leche ☕", 90,
     Decimal("3.40"), Decimal("9.00"), Decimal("3.5"), "breakfast"),
    ("ana", datetime(2025, 3, 1, 12, 0, tzinfo=UTC), "Salad", 350, None, None, None, ""),
    ("bob", datetime(2025, 3, 2, 19, 0, tzinfo=UTC), "Brezel mit Butter", 310,
     Decimal("8.25"), Decimal("45.10"), Decimal("11.00"), "snack"),
]  # fmt: skip
WEIGHTS = [("ana", date(2025, 3, 1), Decimal("61.30")), ("bob", date(2025, 3, 1), Decimal("88"))]


def create_rows():
    """Write the rows above through the ORM (run with DATABASE_URL pointing at SQLite)."""
    from django.contrib.admin.models import ADDITION, LogEntry
    from django.contrib.auth.models import Group, Permission
    from django.contrib.contenttypes.models import ContentType

    from caloria.models import FoodEntry, User, WeightEntry
    from tests.fieldtypes.models import EveryField, Tag

    users = {}
    for username, email, is_vip, goal, joined in USERS:
        user = User(
            username=username,
            email=email,
            is_vip=is_vip,
            daily_calorie_goal=goal,
            date_joined=joined,
            password="pbkdf2_sha256$1000000$salt$notarealhash=",
        )
        user.save()
        users[username] = user
    for username, eaten_at, name, calories, protein, carbs, fat, meal in FOOD:
        FoodEntry.objects.create(
            user=users[username], eaten_at=eaten_at, name=name, calories=calories,
            protein=protein, carbs=carbs, fat=fat, meal=meal,
        )  # fmt: skip
    for username, measured_on, weight in WEIGHTS:
        WeightEntry.objects.create(user=users[username], measured_on=measured_on, weight_kg=weight)
    tags = [Tag.objects.create(code=code, title=title) for code, title in TAGS]
    for values in EVERY_FIELD_ROWS:
        row = EveryField.objects.create(**values)
        row.tags.set(tags[:2])
    group = Group.objects.create(name="Coaches")
    group.permissions.set(Permission.objects.filter(codename__endswith="foodentry"))
    users["ana"].groups.add(group)
    LogEntry.objects.create(
        user=users["ana"],
        content_type=ContentType.objects.get_for_model(User),
        object_id=str(users["bob"].pk),
        object_repr="bob",
        action_flag=ADDITION,
        change_message="[]",
    )
