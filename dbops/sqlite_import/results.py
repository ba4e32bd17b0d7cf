"""What an import is asked to do and what it reports: the types every phase, the command and
the report share (so that none of them depends on the importer itself)."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from dbops.sqlite_import import source


class ImportFailed(Exception):
    """The import stopped; nothing was committed. `problems` lists every reason found."""

    def __init__(self, summary: str, problems: list[str] | None = None):
        super().__init__(summary)
        self.summary = summary
        self.problems = problems or []


@dataclass
class TableResult:
    table: str
    source_rows: int = 0
    target_rows: int | None = None
    source_checksum: str = ""
    target_checksum: str | None = None
    seconds: float = 0.0
    replaced: bool = False

    @property
    def matches(self) -> bool | None:
        if self.target_checksum is None:
            return None
        return self.source_rows == self.target_rows and (
            self.source_checksum == self.target_checksum
        )

    @property
    def rows_per_second(self) -> float:
        return self.source_rows / self.seconds if self.seconds > 0 else 0.0

    def as_dict(self) -> dict:
        return {
            "table": self.table,
            "source_rows": self.source_rows,
            "target_rows": self.target_rows,
            "source_checksum": self.source_checksum,
            "target_checksum": self.target_checksum,
            "checksum_match": self.matches,
            "seconds": round(self.seconds, 3),
            "rows_per_second": round(self.rows_per_second, 1),
        }


@dataclass
class ImportOptions:
    source_path: Path
    database: str = "default"
    dry_run: bool = False
    truncate: bool = False
    excludes: list[str] = field(default_factory=list)
    snapshot_dir: Path | None = None
    mapping: str | None = None
    source_timezone: str = "UTC"
    integrity_check: str = source.QUICK_CHECK
    keep_snapshot: bool = False  # a dry run's; a real run's is always kept


class NullProgress:
    """Progress reporting interface; the command supplies a real one."""

    def phase(self, message: str) -> None:
        pass

    def start(self, label: str, table: str, total: int) -> None:
        pass

    def advance(self, rows: int) -> None:
        pass

    def finish(self) -> None:
        pass
