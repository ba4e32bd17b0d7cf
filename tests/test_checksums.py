"""The table checksum: the SQLite side must write rows exactly as PostgreSQL's COPY TO does."""

import hashlib
from io import BytesIO

import pytest
from django.db import connection

from dbops.sqlite_import.checksums import TableDigest, copy_out_escaped

pytestmark = pytest.mark.django_db

EVERY_CHARACTER = "".join(chr(code) for code in range(1, 128)) + "é☕\U0001f600"


def postgresql_copy_output(*values: str) -> bytes:
    """What COPY TO STDOUT writes for one text column holding each value, in order."""
    output = BytesIO()
    with connection.cursor() as cursor:
        rows = cursor.cursor.mogrify(
            "SELECT value FROM unnest(%s::text[]) WITH ORDINALITY AS t (value, n) ORDER BY n",
            [list(values)],
        )
        cursor.cursor.copy_expert(f"COPY ({rows.decode()}) TO STDOUT", output)
    return output.getvalue()


def source_digest(*texts: bytes) -> TableDigest:
    digest = TableDigest()
    digest.add_canonical_texts(list(texts))
    return digest


def test_every_character_is_escaped_as_postgresqls_copy_to_escapes_it():
    expected = postgresql_copy_output(EVERY_CHARACTER)

    assert copy_out_escaped(EVERY_CHARACTER.encode()) + b"\n" == expected


def test_both_sides_digest_the_same_rows_to_the_same_checksum():
    values = ["plain", "tab\there", "back\\slash \\N", EVERY_CHARACTER, ""]
    target = TableDigest()
    target.add_copy_output(postgresql_copy_output(*values))

    source = source_digest(*(value.encode() for value in values))

    assert (source.rows, source.outer.hexdigest()) == (target.rows, target.outer.hexdigest())
    assert source.rows == len(values)


def test_a_nul_inside_a_value_cannot_pass_for_a_row_boundary():
    # Rows are joined by NUL while they are escaped; a NUL of a value must not split it.
    assert source_digest(b"a\x00b").outer.hexdigest() != source_digest(b"a", b"b").outer.hexdigest()


def test_a_row_holding_a_nul_is_one_row_and_leaves_the_others_as_copy_writes_them():
    digest = source_digest(b"x\ty", b"a\x00b", b"z")

    expected = hashlib.sha256(b"x\\ty\n" + b"a\x00b\n" + b"z\n").hexdigest()
    assert (digest.rows, digest.outer.hexdigest()) == (3, expected)
