"""dbops.sqlite_import.load: a chunk of rows as SQLite joined them, escaped at once into the
text format COPY reads, or given back when a value holds a joining byte.
"""

import pytest

from dbops.sqlite_import import load


def test_copy_text_escapes_a_chunk_as_copys_text_format_reads_it():
    joined = b"1\x1fa\\b\tc\x1f\x1e\x00" + b"2\x1fline\r\nbreak\x1f\\N\x00"

    text = load.copy_text(joined, rows=2, nulls=1, width=3)

    assert text == b"1\ta\\\\b\\tc\t\\N\n" + b"2\tline\\r\\nbreak\t\\\\N\n"


@pytest.mark.parametrize(
    "joined",
    [
        b"1\x1fa\x1fb\x1fc\x00",  # a value holds the value joiner
        b"1\x1fa\x1eb\x1fc\x00",  # or the NULL mark
        b"1\x1fa\x00b\x1fc\x00",  # or the row joiner
    ],
)
def test_copy_text_gives_up_on_a_chunk_whose_values_hold_a_joining_byte(joined):
    assert load.copy_text(joined, rows=1, nulls=0, width=3) is None
