"""What the unit tests of dbops.sqlite_import share: small SQLite tables in memory."""

import sqlite3


def table_with(rows: int, definition: str) -> sqlite3.Connection:
    """A table `t` in memory, of two columns and `rows` rows (1, 1), (2, 2), ..."""
    connection = sqlite3.connect(":memory:")
    connection.execute(f"CREATE TABLE t {definition}")
    connection.executemany("INSERT INTO t VALUES (?, ?)", ((n, n) for n in range(1, rows + 1)))
    return connection
