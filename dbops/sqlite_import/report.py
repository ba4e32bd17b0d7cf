"""What an import tells people while it runs and after: progress lines and the summary table.

On a terminal progress rewrites one line; in a cron log it prints a plain line every few
seconds and one per finished table, so a log shows where a long run was when it stopped.
"""

from __future__ import annotations

import time

from dbops.sqlite_import.results import NullProgress, TableResult

PLAIN_INTERVAL_SECONDS = 10.0
TERMINAL_INTERVAL_SECONDS = 0.2


class Progress(NullProgress):
    def __init__(self, stream, verbosity: int, is_terminal: bool):
        self.stream = stream
        self.verbosity = verbosity
        self.is_terminal = is_terminal
        self.interval = TERMINAL_INTERVAL_SECONDS if is_terminal else PLAIN_INTERVAL_SECONDS
        self.label = self.table = ""
        self.total = self.done = 0
        self.started = self.last = 0.0
        self.run_started = time.monotonic()

    def phase(self, message: str) -> None:
        if self.verbosity >= 2:
            self.stream.write(f"[{time.monotonic() - self.run_started:7.1f} s] {message}")
        elif self.verbosity >= 1:
            self.stream.write(message)

    def start(self, label: str, table: str, total: int) -> None:
        self.label, self.table, self.total, self.done = label, table, total, 0
        self.started = self.last = time.monotonic()

    def advance(self, rows: int) -> None:
        self.done = rows
        now = time.monotonic()
        if self.verbosity < 1 or now - self.last < self.interval:
            return
        self.last = now
        if self.is_terminal:
            write_without_newline(self.stream, "\r" + self.line(now))
        else:
            self.stream.write(self.line(now))

    def finish(self) -> None:
        if self.verbosity < 1:
            return
        now = time.monotonic()
        seconds = now - self.started
        rate = self.done / seconds if seconds > 0 else 0
        line = (
            f"{self.label} {self.table}: {self.done:,} rows in {seconds:.1f} s ({rate:,.0f} rows/s)"
        )
        if self.is_terminal:
            self.stream.write("\r" + line + " " * 20)
        elif self.verbosity >= 2 or self.done:
            self.stream.write(line)

    def line(self, now: float) -> str:
        seconds = now - self.started
        rate = self.done / seconds if seconds > 0 else 0
        remaining = (self.total - self.done) / rate if rate > 0 else 0
        return (
            f"{self.label} {self.table}: {self.done:,}/{self.total:,} rows, "
            f"{rate:,.0f} rows/s, {remaining:.0f} s left"
        )


def write_without_newline(stream, text: str) -> None:
    """Django's OutputWrapper takes `ending`; a plain text stream just writes."""
    try:
        stream.write(text, ending="")
    except TypeError:
        stream.write(text)
    stream.flush()


def summary_lines(results: list[TableResult], total_seconds: float) -> list[str]:
    width = max([len(result.table) for result in results] + [len("total")])
    header = (
        f"{'table':<{width}}  {'source rows':>12}  {'target rows':>12}  checksum  "
        f"{'seconds':>8}  {'rows/s':>10}"
    )
    lines = [header, "-" * len(header)]
    for result in results:
        match = {True: "match", False: "DIFFERS", None: "-"}[result.matches]
        target = "-" if result.target_rows is None else f"{result.target_rows:,}"
        lines.append(
            f"{result.table:<{width}}  {result.source_rows:>12,}  {target:>12}  {match:<8}  "
            f"{result.seconds:>8.2f}  {result.rows_per_second:>10,.0f}"
        )
    source_rows = sum(result.source_rows for result in results)
    target_rows = sum(result.target_rows or 0 for result in results)
    rate = source_rows / total_seconds if total_seconds > 0 else 0
    all_match = all(result.matches for result in results)
    lines.append("-" * len(header))
    lines.append(
        f"{'total':<{width}}  {source_rows:>12,}  {target_rows:>12,}  "
        f"{'match' if all_match else 'DIFFERS':<8}  {total_seconds:>8.2f}  {rate:>10,.0f}"
    )
    return lines
