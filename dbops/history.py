"""dbops' history goes with the service, not with the data.

Records of backups, imports and restores live in the database they were done to. A swap
replaces the live database with a backup's older contents, whose history ends at the backup
(and shows that backup's own run as still going); if that were all, the admin would forget
every backup taken since (and retention the files it must delete or keep), and the restore
that put the database in place would leave no trace. So just before a swap (or a rollback),
the history tables of the database coming into service are replaced by the live database's,
which hold everything up to the backup and everything after: the history is always the
complete one, on whichever database serves. The database set aside keeps its own.
"""

from __future__ import annotations

import tempfile

from django.apps import apps
from django.core.management.color import no_style
from django.db import transaction

from dbops import pgcopy

SPOOL_BYTES = 8 << 20  # history larger than this goes through a temporary file


def history_models() -> list:
    """dbops' models, those others point at first (a restore points at its backup)."""
    models = list(apps.get_app_config("dbops").get_models())
    return sorted(models, key=lambda model: len(model._meta.related_objects) == 0)


def carry_history(source, target) -> dict[str, int]:
    """Replace `target`'s history tables with `source`'s rows (columns both have), in one
    transaction on `target` (a connection of its own, dbops.database.session_of_its_own),
    read in one snapshot of `source`; rows per table."""
    models = history_models()
    copied: dict[str, int] = {}
    with transaction.atomic(using=source.alias):
        with source.cursor() as cursor:
            cursor.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY")
        with transaction.atomic(using=target.alias), target.cursor() as cursor:
            tables = set(target.introspection.table_names(cursor))
            present = [model for model in models if model._meta.db_table in tables]
            if present:
                names = ", ".join(target.ops.quote_name(m._meta.db_table) for m in present)
                cursor.execute(f"TRUNCATE {names}")
            for model in present:
                copied[model._meta.db_table] = _copy_table(source, target, cursor, model)
            for statement in target.ops.sequence_reset_sql(no_style(), present):
                cursor.execute(statement)
    return copied


def _copy_table(source, target, target_cursor, model) -> int:
    table = model._meta.db_table
    with source.cursor() as cursor:
        source_columns = [c.name for c in source.introspection.get_table_description(cursor, table)]
    target_columns = {
        c.name for c in target.introspection.get_table_description(target_cursor, table)
    }
    columns = ", ".join(
        target.ops.quote_name(name) for name in source_columns if name in target_columns
    )
    quoted_table = target.ops.quote_name(table)
    with tempfile.SpooledTemporaryFile(max_size=SPOOL_BYTES) as spool:
        with source.cursor() as cursor:
            pgcopy.copy_to(source, cursor, f"COPY {quoted_table} ({columns}) TO STDOUT", spool)
        spool.seek(0)
        pgcopy.copy_from(
            target, target_cursor, f"COPY {quoted_table} ({columns}) FROM STDIN", spool
        )
    target_cursor.execute(f"SELECT count(*) FROM {quoted_table}")
    return target_cursor.fetchone()[0]
