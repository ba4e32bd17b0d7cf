"""What `validate_environment` and the status page say about a pooler (dbops.pooler).

Both show the same facts: which pooler the default database goes through, the settings in
force that transaction pooling depends on (server-side cursors, CONN_MAX_AGE, psycopg 3's
prepare threshold), and whether the direct connection the session-bound commands use answers.
Nothing here is shown without a pooler (DBOPS_POOLER unset), and never a password: the direct
connection is described by `describe_database` and its failure through `safe_error` (dbops.masking).
"""

from __future__ import annotations

from dataclasses import dataclass

from django.db import connections

from dbops import conf, pooler
from dbops.database import probe_connection
from dbops.envinfo import describe_database

PASSED, FAILED, WARNING = "passed", "failed", "warning"  # validate_environment's statuses


@dataclass(frozen=True)
class DirectConnection:
    """The direct connection, as probed now (`configured` False: DATABASES lacks it)."""

    configured: bool
    description: str = ""
    reachable: bool = False
    elapsed_ms: float = 0.0
    error: str = ""

    @property
    def summary(self) -> str:
        if not self.configured:
            return f"not configured ({pooler.direct_setting_name()} unset)"
        if self.reachable:
            return f"{self.description}: answered in {self.elapsed_ms:.0f} ms"
        return f"{self.description}: unreachable ({self.error})"


def probe_direct() -> DirectConnection:
    """Open the direct connection, run SELECT 1, close it."""
    alias = pooler.direct_alias()
    if alias is None:
        return DirectConnection(configured=False)
    connection = connections[alias]
    description = describe_database(connection.settings_dict)
    probe = probe_connection(connection)
    connection.close()
    error = f"{probe.error_class}: {probe.error}" if not probe.reachable else ""
    return DirectConnection(True, description, probe.reachable, probe.elapsed_ms, error)


def settings_line() -> str:
    return ", ".join(f"{name} {value}" for name, value in pooler.settings_in_force()[1:])


def environment_checks() -> list[tuple[str, str, str, str]]:
    """validate_environment's lines (name, status, detail, hint); none without a pooler."""
    if not conf.POOLER:
        return []
    problems = pooler.pooled_database_problems()
    lines = [
        (
            "pooler",
            FAILED if problems else PASSED,
            f"{conf.POOLER} in transaction mode; " + ("; ".join(problems) or settings_line()),
            "'manage.py check' says what to set (dbops.E012)." if problems else "",
        )
    ]
    direct = probe_direct()
    commands = ", ".join(pooler.SESSION_COMMANDS)
    if not direct.configured:
        lines.append(
            (
                "direct connection",
                WARNING,
                f"not configured: {commands} refuse to run through the pooler",
                f"Set {pooler.direct_setting_name()} to the server without the pooler.",
            )
        )
    elif direct.reachable:
        lines.append(("direct connection", PASSED, f"{direct.summary} (used by {commands})", ""))
    else:
        lines.append(
            (
                "direct connection",
                FAILED,
                direct.summary,
                f"Is the server running, and does {pooler.direct_setting_name()} name its "
                f"host, port, user and password (not the pooler's)?",
            )
        )
    return lines


def status_rows() -> list[tuple[str, object]]:
    """The status page's rows of the Database table (none without a pooler)."""
    if not conf.POOLER:
        return []
    rows = [row for row in pooler.settings_in_force() if row[0] != "CONN_MAX_AGE"]
    rows += [("problem (dbops.E012)", problem) for problem in pooler.pooled_database_problems()]
    rows.append(("direct connection", probe_direct().summary))
    return rows
