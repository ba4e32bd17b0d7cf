"""Caloria's settings, with a backup storage that damages what it writes."""

from caloria.settings import *  # noqa: F403
from caloria.settings import DBOPS_BACKUP_DIR, STORAGES

STORAGES = {
    **STORAGES,
    "dbbackup": {
        "BACKEND": "tests.corrupting_storage.CorruptingStorage",
        "OPTIONS": {"location": str(DBOPS_BACKUP_DIR)},
    },
}
