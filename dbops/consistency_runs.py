"""Records of `check_consistency` runs, so that /metrics and the status page can say when the
database was last checked and what was found, by kind.

Recording is best effort: the database being checked may lack dbops' own tables (that is one
of the things the command finds), or may be inside a transaction a failed check aborted; the
checks and their exit code never depend on the record.
"""

from __future__ import annotations

import time
from collections import Counter

from django.db import DatabaseError
from django.utils import timezone

from dbops import runs
from dbops.masking import safe_error
from dbops.models import ConsistencyRun


def start(alias: str, against) -> ConsistencyRun | None:
    """A `running` record holding its run lock, or None when it cannot be written."""
    try:
        runs.mark_abandoned(ConsistencyRun, alias)
        record = runs.start_run(ConsistencyRun, alias, database=alias, against=str(against or ""))
    except DatabaseError:
        return None
    record.started_monotonic = time.monotonic()
    return record


def finish(record: ConsistencyRun | None, findings, fixed, error: str = "") -> None:
    """Write the outcome: findings by kind (None when no check ran), one attempt only."""
    if record is None:
        return
    record.finished_at = timezone.now()
    record.duration_seconds = time.monotonic() - record.started_monotonic
    record.fixed = len(fixed)
    if findings is None:
        record.status = ConsistencyRun.Status.FAILED
        record.error = error
    else:
        record.findings = dict(Counter(finding.check for finding in findings))
        record.findings_total = len(findings)
        record.status = (
            ConsistencyRun.Status.FAILED if findings else ConsistencyRun.Status.SUCCEEDED
        )
    try:
        record.save()
    except DatabaseError as exc:
        # The connection is left as it is: closing it here would also end a caller's
        # transaction (a test's, an atomic block's), and Django reconnects when it must.
        record.save_problem = safe_error(exc, limit=200)
        return
    runs.release(record)
