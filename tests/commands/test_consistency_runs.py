"""check_consistency records each run (dbops.ConsistencyRun), for /metrics and the status page:
its findings by kind, or why no check could run."""

import pytest
from django.core.management import CommandError

from caloria.models import FoodEntry, User
from dbops.models import ConsistencyRun
from tests.commands.test_check_consistency import check_consistency, insert_food

pytestmark = pytest.mark.django_db


def test_a_clean_run_is_recorded_as_succeeded_with_no_findings():
    check_consistency()

    run = ConsistencyRun.objects.get()
    assert run.status == "succeeded"
    assert run.findings == {} and run.findings_total == 0
    assert run.finished_at is not None and run.duration_seconds >= 0
    assert run.database == "default" and run.pid


def test_findings_are_recorded_by_kind_and_fix_counts_what_it_repaired():
    user = User.objects.create(username="ana")
    insert_food(FoodEntry.objects.create(user=user, name="Toast", calories=1).pk + 1000, user.pk)

    with pytest.raises(CommandError):
        check_consistency()
    check_consistency("--fix")

    found, fixed = ConsistencyRun.objects.order_by("id")
    assert found.status == "failed" and found.findings == {"sequence": 1}
    assert found.findings_total == 1 and found.fixed == 0
    assert fixed.status == "succeeded" and fixed.findings == {} and fixed.fixed == 1


def test_a_run_whose_checks_could_not_run_records_why_and_no_findings():
    with pytest.raises(CommandError) as raised:
        check_consistency("--exclude", "nosuchapp")

    run = ConsistencyRun.objects.get()
    assert run.status == "failed" and run.findings is None
    assert run.error == str(raised.value)


def test_a_bad_against_file_is_refused_before_the_database_and_not_recorded(tmp_path):
    with pytest.raises(CommandError):
        check_consistency("--against", str(tmp_path / "missing.sqlite3"))

    assert not ConsistencyRun.objects.exists()
