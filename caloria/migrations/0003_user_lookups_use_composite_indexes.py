"""Drop the foreign keys' own indexes on user: the composite indexes starting with user serve
every lookup by user, so these only slowed inserts. State and database are changed separately
so the database only drops two indexes, instead of Django's drop-and-revalidate of the keys."""

import django.db.models.deletion
from django.conf import settings
from django.db import migrations, models

REDUNDANT_INDEXES = {
    "caloria_foodentry_user_id_de9ec470": "caloria_foodentry",
    "caloria_weightentry_user_id_a61d9400": "caloria_weightentry",
}


class Migration(migrations.Migration):
    dependencies = [
        ("caloria", "0002_longer_password_for_imported_hashes"),
    ]

    operations = [
        migrations.SeparateDatabaseAndState(
            state_operations=[
                migrations.AlterField(
                    model_name="foodentry",
                    name="user",
                    field=models.ForeignKey(
                        db_index=False,
                        on_delete=django.db.models.deletion.CASCADE,
                        related_name="food_entries",
                        to=settings.AUTH_USER_MODEL,
                    ),
                ),
                migrations.AlterField(
                    model_name="weightentry",
                    name="user",
                    field=models.ForeignKey(
                        db_index=False,
                        on_delete=django.db.models.deletion.CASCADE,
                        related_name="weight_entries",
                        to=settings.AUTH_USER_MODEL,
                    ),
                ),
            ],
            database_operations=[
                migrations.RunSQL(
                    sql=f'DROP INDEX IF EXISTS "{index}"',
                    reverse_sql=f'CREATE INDEX "{index}" ON "{table}" ("user_id")',
                )
                for index, table in REDUNDANT_INDEXES.items()
            ],
        ),
    ]
