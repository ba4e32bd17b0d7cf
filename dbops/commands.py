"""What the dbops commands share: the `--database` option and the `--json` report.

Every command keeps one exit-code contract (README, "Operations"): 0 done; 1 refused or
failed (bad data, bad environment, problems found), raised as `CommandError(returncode=1)`;
2 a bad command line, reported by argparse itself before anything runs.

The `--json [FILE]` convention, for cron and scripts alike: `--json` (or `--json -`) prints
the report on stdout and nothing else there, so that `manage.py COMMAND --json | jq .ok`
works; `--json FILE` writes the report to FILE and prints the usual lines, so that cron mails
the lines and a monitor reads the file. A report is a JSON object whose first key is the
boolean "ok" (the exit code is 0 exactly when it is true), then the command's own keys; it is
written whenever the command gets past its command line, failures included, so that a file
from an earlier run is never mistaken for this one's.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from django.core.management.base import CommandError, OutputWrapper
from django.db import connections

STDOUT = "-"


def add_database_argument(parser, help: str, *short_flags: str) -> None:
    """`--database ALIAS`, one of the configured aliases (argparse refuses any other)."""
    parser.add_argument(
        *short_flags, "--database", default="default", choices=tuple(connections), help=help
    )


def add_json_argument(parser, keys: str, note: str = "") -> None:
    """`--json [FILE]`; `keys` names what the report holds beside "ok"."""
    parser.add_argument(
        "--json",
        nargs="?",
        const=STDOUT,
        type=json_destination,
        dest="json_report",
        metavar="FILE",
        help=f'Write a JSON report {{"ok": true|false, {keys}}}: to stdout alone with no FILE '
        f"or '-', else to FILE (the usual lines still print). {note}".rstrip(),
    )


def json_destination(value: str) -> str | Path:
    """'-' or a file in a directory that exists: a report that cannot be written is a bad
    command line, found before the command does anything (for import_sqlite, before it
    commits an import whose report would then be lost)."""
    if value == STDOUT:
        return STDOUT
    path = Path(value).expanduser().absolute()
    if not path.parent.is_dir():
        raise argparse.ArgumentTypeError(f"{value}: {path.parent} is not a directory")
    if path.is_dir():
        raise argparse.ArgumentTypeError(f"{value} is a directory")
    return path


def report_on_stdout(destination: str | Path | None) -> bool:
    """Whether stdout belongs to the report (the command then prints no lines there)."""
    return destination == STDOUT


def write_json_report(
    stdout: OutputWrapper, destination: str | Path | None, ok: bool, **report
) -> None:
    """Write the report where `--json` asked ("ok" first); nothing without `--json`."""
    if destination is None:
        return
    text = json.dumps({"ok": ok, **report}, indent=2)
    if destination == STDOUT:
        stdout.write(text)
        return
    try:
        destination.write_text(text + "\n")
    except OSError as exc:
        raise CommandError(
            f"--json {destination}: cannot write the report ({exc.strerror})", returncode=1
        ) from None
