"""Move a SQLite database into PostgreSQL: the order of the phases, and nothing else.

Every dbops command flows one way: snapshot the source (source.py), find the problems before
writing anything (preflight.py), write it all in one transaction (load.py), prove each table
arrived intact with checksums computed independently on both sides (verify.py), and only then
commit. What PostgreSQL refuses by itself, loudly, preflight leaves to the load on a real
import, and lists once the load was refused: every problem is reported either way, and nothing
is committed. The snapshot is synced to disk and hashed by a child process while preflight
runs, and its own checksums computed by another while the load runs (workers.py).
"""

from __future__ import annotations

import sqlite3
from contextlib import suppress

from django.db import DataError, IntegrityError, connections, transaction

from dbops.sqlite_import import source, verify
from dbops.sqlite_import.fields import UnsupportedField
from dbops.sqlite_import.load import Load
from dbops.sqlite_import.mapping import (
    Mapping,
    MappingError,
    load_mapping,
    mapped_plans,
    resolve_models,
)
from dbops.sqlite_import.plan import PlanError, TablePlan, build_plan
from dbops.sqlite_import.preflight import Preflight
from dbops.sqlite_import.results import ImportFailed, ImportOptions, NullProgress, TableResult
from dbops.sqlite_import.workers import ChildFailed, ForkedRead, Workers, signals_raise_interrupted


class VerificationFailed(ImportFailed):
    """A table's count or checksum differs between the snapshot and the target."""


class SqliteImport:
    def __init__(self, options: ImportOptions, progress: NullProgress | None = None):
        self.options = options
        self.progress = progress or NullProgress()
        self.connection = connections[options.database]
        self.snapshot: source.Snapshot | None = None
        self.workers: Workers | None = None
        self.sealing: ForkedRead | None = None
        self.sqlite: sqlite3.Connection | None = None
        self.rows: source.RowCounts | None = None
        self.plans: list[TablePlan] = []
        self.skipped: list[str] = []
        self.results: dict[str, TableResult] = {}
        self.mapping: Mapping | None = None
        self.received_signals: list[str] = []

    def run(self) -> list[TableResult]:
        """Preflight, then (unless a dry run) load, verify and commit. Raises ImportFailed."""
        try:
            with signals_raise_interrupted() as self.received_signals:
                self.prepare()
                preflight = Preflight(
                    self.options, self.plans, self.mapping, self.sqlite, self.connection,
                    self.rows, self.workers, self.progress,
                )  # fmt: skip
                preflight.run(complete=self.options.dry_run)
                if self.options.dry_run:
                    self.seal_snapshot()
                else:
                    self.load_verify_commit(preflight)
        finally:
            try:
                # A failed run is recorded with its snapshot's sha256 too; an interrupted one
                # does not wait for it.
                unsealed = self.snapshot is not None and not self.snapshot.sha256
                if unsealed and not self.received_signals:
                    with suppress(ImportFailed):
                        self.seal_snapshot()
            finally:
                self.close()
        return list(self.results.values())

    def close(self) -> None:
        if self.workers is not None:
            self.workers.stop()
        if self.sqlite is not None:
            self.sqlite.close()
        if self.options.dry_run and not self.options.keep_snapshot and self.snapshot:
            # A dry run changes nothing, so it leaves nothing either (a full copy of the
            # source each time filled the backup disk).
            source.remove_snapshot_files(self.snapshot.path)
            self.snapshot.removed = True

    def prepare(self) -> None:
        """The plan (or the mapping, which is checked before anything is read), then the
        snapshot everything after reads."""
        mapping = None
        try:
            if self.options.mapping:
                if self.options.excludes:
                    raise PlanError("--exclude does not apply to a mapped import")
                mapping = load_mapping(self.options.mapping)
                resolve_models(mapping)
            else:
                self.plans, self.skipped = build_plan(self.options.excludes)
        except PlanError as exc:
            raise ImportFailed(exc.summary, exc.problems) from None
        except (UnsupportedField, MappingError) as exc:
            raise ImportFailed(str(exc)) from None
        self.progress.phase(f"Taking a snapshot of {self.options.source_path}")
        try:
            self.snapshot = source.take_snapshot(
                self.options.source_path, self.options.snapshot_dir
            )
        except source.SourceError as exc:
            raise ImportFailed(str(exc)) from None
        self.workers = Workers(self.snapshot)
        self.sealing = self.workers.read(lambda _: source.seal(self.snapshot.path))
        self.sqlite = source.open_snapshot(self.snapshot)
        self.rows = source.RowCounts(self.sqlite)
        if mapping is not None:
            self.mapping = mapping
            try:
                self.plans, self.skipped = mapped_plans(
                    mapping, source.schema(self.sqlite), self.options.source_timezone
                )
            except MappingError as exc:
                raise ImportFailed(str(exc)) from None

    def seal_snapshot(self) -> None:
        """Wait for the child that syncs the snapshot to disk and computes its sha256.

        Only a child that never got to seal it (it died, or could not open the snapshot) is
        replaced by a seal here. One whose fsync failed is not retried: Linux reports lost
        writes once, so a second fsync would pass while the snapshot is not on disk.
        """
        if self.snapshot.sha256:
            return
        if self.sealing is not None:
            try:
                self.snapshot.sha256 = self.sealing.result()
                return
            except ChildFailed as failure:
                if not failure.died:
                    raise self.unsealed(failure.reason) from None
            except sqlite3.DatabaseError:
                pass
        try:
            self.snapshot.sha256 = source.seal(self.snapshot.path)
        except OSError as exc:
            raise self.unsealed(exc.strerror or str(exc)) from None

    def unsealed(self, reason: str) -> ImportFailed:
        return ImportFailed(
            f"the snapshot {self.snapshot.path} could not be written to disk ({reason}); "
            f"nothing was committed"
        )

    def load_verify_commit(self, preflight: Preflight) -> None:
        """Load, verify and commit; a load PostgreSQL refused is explained by the problems
        preflight left to it (see Preflight.run), every one of them, once rolled back."""
        try:
            self.load_and_verify()
        except (IntegrityError, DataError, VerificationFailed) as refused:
            problems = preflight.problems_postgresql_refuses()
            if not problems:
                raise
            what = "verification" if isinstance(refused, VerificationFailed) else "PostgreSQL"
            raise ImportFailed(
                f"{what} refused the load; the snapshot has {len(problems)} problem(s); "
                f"nothing was committed",
                problems,
            ) from None
        self.progress.phase("Committing")

    def load_and_verify(self) -> None:
        plans = self.plans
        with transaction.atomic(using=self.options.database):
            # The snapshot's own checksums, in a child from the start of the load: the copy
            # is a pipeline that leaves a core part-idle, while the index builds and the
            # server's checksums after it keep both cores busy.
            source_checksums = self.workers.read(
                lambda sqlite: {
                    plan.table: verify.sqlite_table_checksum(sqlite, verify.layout_of(plan))
                    for plan in plans
                }
            )
            self.results = Load(
                self.connection, plans, self.sqlite, self.rows, self.progress,
                self.options.truncate, self.received_signals,
            ).run()  # fmt: skip
            self.progress.phase("Verifying row counts and checksums")
            self.verify(source_checksums)
            self.seal_snapshot()  # the run's record names it

    def verify(self, source_checksums: ForkedRead) -> None:
        """Compare each table's count and checksum, computed independently on both sides."""
        targets = {
            plan.table: verify.postgresql_table_checksum(self.connection, verify.layout_of(plan))
            for plan in self.plans
        }
        try:
            sources = source_checksums.result()
        except sqlite3.DatabaseError as exc:
            raise ImportFailed(
                f"the snapshot could not be read for its checksums ({exc}); rolled back"
            ) from None
        for plan in self.plans:
            result, target, checksum = (
                self.results[plan.table],
                targets[plan.table],
                sources[plan.table],
            )
            result.source_checksum = checksum.digest
            result.target_rows = target.rows
            result.target_checksum = target.digest
            rows = self.rows.of(plan.source_table)
            if not result.matches or {checksum.rows, result.source_rows} != {rows}:
                first = verify.first_difference(
                    self.sqlite, self.connection, verify.layout_of(plan)
                )
                raise VerificationFailed(
                    f"verification failed for {plan.table}: {checksum.rows} rows in the "
                    f"source, {target.rows} in the target, checksums "
                    f"{'match' if checksum.digest == target.digest else 'differ'}; "
                    f"first differing key: {first}; rolled back"
                )
