"""Rows the project's migrations create, as real projects' do (a root page, a site, groups):
a freshly migrated target is never empty."""

from django.db import migrations


def create_starting_rows(apps, schema_editor):
    apps.get_model("shop", "Category").objects.create(path="0001", depth=1, numchild=0, name="All")
    apps.get_model("shop", "Supplier").objects.create(name="In-house")
    apps.get_model("shop", "Place").objects.create(name="Warehouse", address="Dock 1")
    apps.get_model("auth", "Group").objects.create(name="editors")


class Migration(migrations.Migration):
    dependencies = [("shop", "0001_initial"), ("auth", "0012_alter_user_first_name_max_length")]

    operations = [migrations.RunPython(create_starting_rows, migrations.RunPython.noop)]
