"""import_sqlite into targets that are not empty: what `migrate` filled, and what --truncate
replaces. A table left out of the import that points into what the import empties is found
before anything is written, by a dry run and a real run alike."""

import pytest
from django.contrib.admin.models import ADDITION, LogEntry
from django.contrib.contenttypes.models import ContentType

from caloria.models import FoodEntry, User
from tests.importing import failed_import, import_sqlite

pytestmark = pytest.mark.django_db(transaction=True)


def log_entry_about(user: User) -> LogEntry:
    """A row of the admin log (left out of the imports below) pointing at a user."""
    return LogEntry.objects.create(
        user=user,
        content_type=ContentType.objects.get_for_model(User),
        object_id=str(user.pk),
        object_repr=user.username,
        action_flag=ADDITION,
    )


def test_truncate_replaces_every_imported_table_in_one_statement(filled_source):
    import_sqlite(filled_source)
    User.objects.create(username="only-in-target")

    import_sqlite(filled_source, "--truncate")

    assert not User.objects.filter(username="only-in-target").exists()
    assert User.objects.count() == 3
    assert FoodEntry.objects.count() > 0


def test_truncate_empties_a_table_left_out_that_points_into_it_when_that_one_is_empty(
    filled_source,
):
    # TRUNCATE refuses a table another points into, unless both are emptied; the admin log
    # was left out of both imports and has no rows, so emptying it too loses nothing.
    import_sqlite(filled_source, "--exclude", "admin")

    import_sqlite(filled_source, "--truncate", "--exclude", "admin")

    assert User.objects.count() == 3
    assert not LogEntry.objects.exists()


@pytest.mark.parametrize("dry_run", [True, False], ids=["dry run", "import"])
def test_truncate_refuses_a_table_left_out_with_rows_pointing_into_it(filled_source, dry_run):
    import_sqlite(filled_source, "--exclude", "admin")
    kept = log_entry_about(User.objects.first())

    output = failed_import(
        filled_source, "--truncate", "--exclude", "admin", *(["--dry-run"] if dry_run else [])
    )

    assert (
        "django_admin_log (model admin.LogEntry, not imported) has rows and refers to "
        "caloria_user, whose rows the import replaces" in output
    )
    assert "import it too (no --exclude admin.LogEntry)" in output
    assert "--exclude caloria.User" in output
    assert LogEntry.objects.filter(pk=kept.pk).exists()
    assert User.objects.count() == 3


@pytest.mark.parametrize("dry_run", [True, False], ids=["dry run", "import"])
def test_rows_left_out_pointing_at_the_content_types_it_replaces_are_refused(
    filled_source, dry_run
):
    # Without --truncate the import still replaces the content types migrate made (so their
    # ids are the source's); an admin log left out, with rows, points at them.
    user = User.objects.create(username="admin-in-target")
    log_entry_about(user)

    output = failed_import(filled_source, "--exclude", "admin", *(["--dry-run"] if dry_run else []))

    assert "django_admin_log (model admin.LogEntry, not imported) has rows and refers to " in (
        output
    )
    assert "django_content_type, whose rows the import replaces" in output
