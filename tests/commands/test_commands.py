"""What every management command of this project shares: argparse's exit code 2 for a bad
command line (README, "Operations": 0 done, 1 refused or failed, 2 bad command line)."""

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

JSON_COMMANDS = [
    ["validate_environment"],
    ["import_sqlite", "db.sqlite3"],
    ["check_consistency"],
]


@pytest.fixture
def development(tmp_path):
    """Development settings on a SQLite file of the test's own (never the project's)."""
    return {"CALORIA_ENV": "development", "DATABASE_URL": f"sqlite:///{tmp_path}/db.sqlite3"}


def assert_bad_command_line(completed, message: str) -> None:
    assert completed.returncode == 2, completed.output
    assert message in completed.stderr
    assert "usage: manage.py" in completed.stderr
    assert "Traceback" not in completed.output


@pytest.mark.parametrize("command", COMMANDS, ids=[command[0] for command in COMMANDS])
def test_an_unknown_option_is_a_clear_error_with_exit_code_2(manage, development, command):
    completed = manage(*command, "--no-such-option", **development)

    assert_bad_command_line(completed, "unrecognized arguments: --no-such-option")


def test_an_invalid_choice_names_the_option_and_the_choices(manage, development):
    completed = manage("import_sqlite", "db.sqlite3", "--integrity-check", "bogus", **development)

    assert_bad_command_line(completed, "argument --integrity-check: invalid choice: 'bogus'")
    assert "choose from 'quick', 'full'" in completed.stderr


@pytest.mark.parametrize("command", JSON_COMMANDS, ids=[command[0] for command in JSON_COMMANDS])
def test_a_json_report_in_a_missing_directory_is_refused_before_the_command_runs(
    manage, development, tmp_path, command
):
    report = tmp_path / "no-such-directory" / "report.json"

    completed = manage(*command, "--json", str(report), **development)

    assert_bad_command_line(completed, f"argument --json: {report}: ")
    assert "is not a directory" in completed.stderr
    assert not report.parent.exists()


@pytest.mark.parametrize("command", ["dbbackup", "check_consistency", "validate_environment"])
def test_an_unknown_database_alias_is_a_bad_command_line(manage, development, command):
    completed = manage(command, "--database", "nosuch", **development)

    assert_bad_command_line(completed, "invalid choice: 'nosuch' (choose from 'default')")


def test_dbbackup_refuses_a_comma_separated_list_of_aliases(manage, development):
    completed = manage("dbbackup", "--database", "default,default", **development)

    assert_bad_command_line(completed, "argument -d/--database: invalid choice")


@pytest.mark.parametrize(
    "arguments, message",
    [
        ([], "one of the arguments name --latest is required"),
        (["nightly.psql.bin.gz", "--latest"], "argument --latest: not allowed with argument name"),
    ],
    ids=["neither", "both"],
)
def test_verify_backup_takes_a_name_or_latest_exactly_once(manage, development, arguments, message):
    completed = manage("verify_backup", *arguments, **development)

    assert_bad_command_line(completed, message)
