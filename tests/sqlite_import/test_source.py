"""dbops.sqlite_import.source: which column is a table's rowid, the chunks of rows SQLite
joins in rowid order, and the seal that makes a snapshot durable (the file and its directory
synced, and only a file that cannot be synced fails it).
"""

import errno
import hashlib
import os
import sqlite3

import pytest

from dbops.sqlite_import import source
from tests.sqlite_import.conftest import table_with


@pytest.mark.parametrize(
    "definition, rowid",
    [
        ("(id INTEGER PRIMARY KEY, rowid)", '"id"'),
        ("(id INTEGER PRIMARY KEY DESC, v)", "rowid"),  # SQLite's exception: not the rowid
        ("(id INT PRIMARY KEY, v)", "rowid"),
        ("(id INTEGER, v, PRIMARY KEY (id, v))", "rowid"),
    ],
)
def test_the_rowid_is_read_through_the_integer_primary_key_that_is_it(definition, rowid):
    connection = table_with(3, definition)

    assert source.rowid_column(connection, "t") == rowid


def test_joined_chunks_hold_every_row_once_in_rowid_order():
    connection = sqlite3.connect(":memory:")
    connection.text_factory = bytes
    connection.execute("CREATE TABLE t (v)")
    rowids = [-(2**62), -5, 0, 7, 8, 9, 2**62]
    connection.executemany("INSERT INTO t (rowid, v) VALUES (?, ?)", ((r, str(r)) for r in rowids))
    connection.execute("INSERT INTO t (rowid, v) VALUES (3, NULL)")  # counted, not joined

    chunks = list(source.joined_chunks(connection, "t", "v", "rowid", 3, "char(10)", "v IS NULL"))

    assert chunks == [
        (b"-4611686018427387904\n-5\n0", 3, None, 0, 0, 0),
        (b"7\n8", 3, 0, 8, 1, 1),
        (b"9\n4611686018427387904", 2, 8, 2**62, 0, 0),
    ]


def test_joined_chunks_follow_a_key_column_whose_name_is_an_alias_of_the_query():
    # ORDER BY "text" would sort by the joined texts, and the chunks would skip rows.
    connection = sqlite3.connect(":memory:")
    connection.text_factory = bytes
    connection.execute('CREATE TABLE t ("text" INTEGER PRIMARY KEY, v)')
    connection.executemany("INSERT INTO t VALUES (?, ?)", [(1, "z"), (2, "a"), (3, "m")])
    rowid = source.rowid_column(connection, "t")

    chunks = list(source.joined_chunks(connection, "t", "v", rowid, 2, "char(10)"))

    assert (rowid, [chunk[:2] for chunk in chunks]) == ('"text"', [(b"z\na", 2), (b"m", 1)])


@pytest.mark.parametrize("failing, raises", [("directory", False), ("file", True)])
def test_a_directory_that_cannot_be_synced_does_not_fail_the_seal(
    tmp_path, monkeypatch, failing, raises
):
    # Network and FUSE file systems may refuse to fsync a directory; never a file.
    snapshot = tmp_path / "snapshot.sqlite3"
    snapshot.write_bytes(b"SQLite format 3\x00")
    directory = tmp_path.stat().st_ino
    sync = os.fsync

    def refuse(fd):
        is_directory = os.fstat(fd).st_ino == directory
        if is_directory == (failing == "directory"):
            raise OSError(errno.EINVAL, "Invalid argument")
        sync(fd)

    monkeypatch.setattr(os, "fsync", refuse)

    if raises:
        with pytest.raises(OSError):
            source.seal(snapshot)
    else:
        assert source.seal(snapshot) == hashlib.sha256(snapshot.read_bytes()).hexdigest()


def test_sealing_a_snapshot_syncs_it_and_its_directory(tmp_path, monkeypatch):
    snapshot = tmp_path / "snapshot.sqlite3"
    snapshot.write_bytes(b"SQLite format 3\x00 and more")
    synced = []
    sync = os.fsync
    monkeypatch.setattr(os, "fsync", lambda fd: synced.append(os.fstat(fd).st_ino) or sync(fd))

    digest = source.seal(snapshot)

    assert digest == hashlib.sha256(snapshot.read_bytes()).hexdigest()
    assert synced == [snapshot.stat().st_ino, tmp_path.stat().st_ino]
