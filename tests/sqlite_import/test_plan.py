"""dbops.sqlite_import.plan: what a table's plan knows of its CHECK constraints, so that a row
breaking one is shown by the columns the constraint reads."""

from django.test.utils import isolate_apps

from dbops.sqlite_import import plan


@isolate_apps("caloria")
def test_a_check_constraint_names_the_columns_it_reads_or_shows_the_whole_row():
    from django.db import models
    from django.db.models import F, Q
    from django.db.models.lookups import GreaterThan

    class Owner(models.Model):  # noqa: DJ008 - a model for one test
        class Meta:
            app_label = "caloria"

    class Checked(models.Model):  # noqa: DJ008 - a model for one test
        owner = models.ForeignKey(Owner, models.CASCADE)
        amount = models.IntegerField()

        class Meta:
            app_label = "caloria"
            constraints = [
                models.CheckConstraint(condition=Q(owner_id__gt=0), name="by_attname"),
                models.CheckConstraint(condition=GreaterThan(F("amount"), 0), name="expression"),
            ]

    checks = {check.name: check.columns for check in plan.check_constraints(Checked)}

    assert checks == {"by_attname": ("owner_id",), "expression": ("id", "owner_id", "amount")}
