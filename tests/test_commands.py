"""What every management command of this project shares."""

import pytest

COMMANDS = [
    ["validate_environment"],
    ["import_sqlite", "db.sqlite3"],
    ["check_consistency"],
    ["dbbackup"],
    ["verify_backup", "--latest"],
    ["seed_demo"],
    ["runserver"],
]


@pytest.fixture
def development(tmp_path):
    """Development settings on a SQLite file of the test's own (never the project's)."""
    return {"CALORIA_ENV": "development", "DATABASE_URL": f"sqlite:///{tmp_path}/db.sqlite3"}


@pytest.mark.parametrize("command", COMMANDS, ids=[command[0] for command in COMMANDS])
def test_an_unknown_option_is_a_clear_error_with_exit_code_1(manage, development, command):
    completed = manage(*command, "--no-such-option", **development)

    assert completed.returncode == 1, completed.output
    assert "unrecognized arguments: --no-such-option" in completed.stderr
    assert "Traceback" not in completed.output


def test_an_invalid_choice_names_the_option_and_the_choices(manage, development):
    completed = manage("import_sqlite", "db.sqlite3", "--integrity-check", "bogus", **development)

    assert completed.returncode == 1, completed.output
    assert "argument --integrity-check: invalid choice: 'bogus'" in completed.stderr
    assert "choose from 'quick', 'full'" in completed.stderr
