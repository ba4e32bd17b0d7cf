"""The search index: a model whose column differs by backend, and on SQLite a full-text
virtual table beside it (with the shadow tables SQLite makes for it), as search backends do."""

from django.db import migrations, models

import tests.otherproject.shop.models


def create_full_text_table(apps, schema_editor):
    if schema_editor.connection.vendor == "sqlite":
        schema_editor.execute("CREATE VIRTUAL TABLE shop_product_fts USING fts5(name, slug)")


def drop_full_text_table(apps, schema_editor):
    if schema_editor.connection.vendor == "sqlite":
        schema_editor.execute("DROP TABLE shop_product_fts")


class Migration(migrations.Migration):
    dependencies = [("shop", "0002_starting_rows")]

    operations = [
        migrations.CreateModel(
            name="SearchEntry",
            fields=[
                (
                    "product",
                    models.OneToOneField(
                        on_delete=models.deletion.CASCADE,
                        primary_key=True,
                        serialize=False,
                        to="shop.product",
                    ),
                ),
                ("body", tests.otherproject.shop.models.SearchVectorField(null=True)),
            ],
        ),
        migrations.RunPython(create_full_text_table, drop_full_text_table),
    ]
