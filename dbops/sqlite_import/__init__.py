"""import_sqlite's engine: a SQLite database of a Django project copied into PostgreSQL, all
or nothing, and proven by checksums.

The public entry point is `SqliteImport(ImportOptions(...), progress).run()`, which returns
each table's `TableResult` or raises `ImportFailed` (every problem found) or `Interrupted`
(SIGTERM, Ctrl-C). importer.py says in which order the phases run; each phase has a module.
"""

from dbops.sqlite_import.importer import SqliteImport
from dbops.sqlite_import.results import ImportFailed, ImportOptions, NullProgress, TableResult
from dbops.sqlite_import.workers import Interrupted

__all__ = [
    "ImportFailed",
    "ImportOptions",
    "Interrupted",
    "NullProgress",
    "SqliteImport",
    "TableResult",
]
