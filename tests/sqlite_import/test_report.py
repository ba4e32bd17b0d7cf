"""dbops.sqlite_import.report: progress lines, one line each off a terminal (the table, the
rate and the time left), one line rewritten on it."""

import time
from io import StringIO

from dbops.sqlite_import.report import Progress


def test_plain_progress_lines_name_the_table_rate_and_time_left():
    stream = StringIO()
    progress = Progress(stream, verbosity=1, is_terminal=False)
    progress.interval = 0
    progress.start("copying", "caloria_foodentry", total=1000)
    time.sleep(0.01)

    progress.advance(250)

    line = stream.getvalue().splitlines()[-1]
    assert line.startswith("copying caloria_foodentry: 250/1,000 rows, ")
    assert "rows/s" in line and "s left" in line


def test_terminal_progress_rewrites_one_line():
    stream = StringIO()
    progress = Progress(stream, verbosity=1, is_terminal=True)
    progress.interval = 0
    progress.start("copying", "caloria_user", total=10)

    progress.advance(5)
    progress.finish()

    assert stream.getvalue().startswith("\rcopying caloria_user: 5/10 rows")
