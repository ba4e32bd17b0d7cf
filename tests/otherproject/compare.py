"""Print, as JSON, whether every model of the shop holds the same rows in the source (SQLite)
and in the target (PostgreSQL), read through the ORM: run with the shop's settings, the
target in DATABASE_URL and the source in SOURCE_DATABASE_URL."""

import json
import os

import environ
from django.conf import settings

settings.DATABASES["source"] = environ.Env.db_url_config(os.environ["SOURCE_DATABASE_URL"])

import django  # noqa: E402

django.setup()

from django.apps import apps  # noqa: E402

LEFT_OUT = set(os.environ.get("LEFT_OUT", "").split(","))


def text(value) -> str:
    """A value as both databases' rows can be compared: JSON by its content, not its key
    order (jsonb orders keys its own way)."""
    if isinstance(value, dict | list):
        return json.dumps(value, sort_keys=True)
    return str(value)


def rows(model, alias: str) -> list:
    values = model.objects.using(alias).order_by("pk").values()
    return [{key: text(value) for key, value in row.items()} for row in values]


differences, compared = {}, {}
for model in apps.get_models(include_auto_created=True):
    label = model._meta.label
    if model._meta.app_label == "dbops" or label in LEFT_OUT:
        continue
    source, target = rows(model, "source"), rows(model, "default")
    compared[label] = len(source)
    if source != target:
        differences[label] = {"source": source[:3], "target": target[:3]}
print(json.dumps({"compared": compared, "differences": differences}))
