"""Strict settings: every bad or missing variable stops the process, naming it and the .env."""

import json
import sys

import pytest

from tests.conftest import PROJECT_ROOT, STRONG_SECRET_KEY

PRINT_SETTINGS = (
    "import json, django; from django.conf import settings; django.setup(); "
    "db = settings.DATABASES['default']; "
    "print(json.dumps({'engine': db['ENGINE'], 'name': str(db['NAME']), "
    "'options': db.get('OPTIONS', {}), 'conn_max_age': db['CONN_MAX_AGE'], "
    "'conn_health_checks': db['CONN_HEALTH_CHECKS'], 'debug': settings.DEBUG, "
    "'time_zone': settings.TIME_ZONE, 'use_tz': settings.USE_TZ, "
    "'env': settings.CALORIA_ENV, 'sources': settings.DBOPS_SETTING_SOURCES, "
    "'env_file': str(settings.DBOPS_ENV_FILE), 'allowed_hosts': settings.ALLOWED_HOSTS, "
    "'password': db.get('PASSWORD')}))"
)


@pytest.fixture
def print_settings(run):
    """Import the settings in a child process and return them as a dict (or the failure)."""

    def load(**variables):
        variables.setdefault("DJANGO_SETTINGS_MODULE", "caloria.settings")
        completed = run([sys.executable, "-c", PRINT_SETTINGS], **variables)
        if completed.returncode != 0:
            return None, completed
        return json.loads(completed.stdout.strip().splitlines()[-1]), completed

    return load


def production(**overrides):
    variables = {
        "CALORIA_ENV": "production",
        "SECRET_KEY": STRONG_SECRET_KEY,
        "DATABASE_URL": "postgres://caloria:SECRETPW@127.0.0.1:5432/caloria",
        "ALLOWED_HOSTS": "caloria.example.com",
    }
    variables.update(overrides)
    return {key: value for key, value in variables.items() if value is not None}


def test_unknown_caloria_env_stops_and_lists_the_allowed_values(manage):
    completed = manage("check", CALORIA_ENV="staging")

    assert completed.returncode == 1
    assert "CALORIA_ENV: must be one of development, test, production; got 'staging'" in (
        completed.stderr
    )
    assert "Traceback" not in completed.stderr


def test_caloria_env_file_that_does_not_exist_stops_the_process(manage, tmp_path):
    missing = tmp_path / "nowhere" / "prod.env"

    completed = manage("check", CALORIA_ENV_FILE=str(missing))

    assert completed.returncode == 1
    assert f"CALORIA_ENV_FILE: names {missing}, which does not exist" in completed.stderr


@pytest.mark.parametrize("variable", ["SECRET_KEY", "DATABASE_URL", "ALLOWED_HOSTS"])
def test_production_stops_without_a_required_variable_naming_it_and_the_env_file(
    manage, env_file, variable
):
    completed = manage("check", **production(**{variable: None}))

    assert completed.returncode == 1
    assert f"{variable}: is required but not set" in completed.stderr
    assert f".env file looked at: {env_file}" in completed.stderr
    assert "SECRETPW" not in completed.output
    assert STRONG_SECRET_KEY not in completed.output


def test_production_reports_every_missing_variable_at_once(manage):
    completed = manage("check", CALORIA_ENV="production")

    assert completed.returncode == 1
    for variable in ("SECRET_KEY", "DATABASE_URL", "ALLOWED_HOSTS"):
        assert f"{variable}: is required but not set" in completed.stderr


def test_production_rejects_a_short_secret_key_without_printing_it(manage):
    short_key = "tooShortSecretValue"

    completed = manage("check", **production(SECRET_KEY=short_key))

    assert completed.returncode == 1
    assert "SECRET_KEY: is 19 characters long; production needs at least 50" in completed.stderr
    assert short_key not in completed.output


def test_production_rejects_the_development_secret_key(manage):
    from caloria.settings import DEVELOPMENT_SECRET_KEY

    completed = manage("check", **production(SECRET_KEY=DEVELOPMENT_SECRET_KEY))

    assert completed.returncode == 1
    assert "SECRET_KEY: is the development default" in completed.stderr
    assert DEVELOPMENT_SECRET_KEY not in completed.output


def test_production_refuses_sqlite(manage, tmp_path):
    completed = manage("check", **production(DATABASE_URL=f"sqlite:///{tmp_path}/prod.sqlite3"))

    assert completed.returncode == 1
    assert "DATABASE_URL: production needs PostgreSQL, not sqlite3" in completed.stderr


def test_production_refuses_debug(manage):
    completed = manage("check", **production(DEBUG="true"))

    assert completed.returncode == 1
    assert "DEBUG: must be off in production" in completed.stderr


def test_production_refuses_a_bare_star_in_allowed_hosts(manage):
    completed = manage("check", **production(ALLOWED_HOSTS="caloria.example.com,*"))

    assert completed.returncode == 1
    assert "ALLOWED_HOSTS: must not be '*' in production" in completed.stderr


def test_production_accepts_a_subdomain_pattern_in_allowed_hosts(print_settings):
    values, completed = print_settings(**production(ALLOWED_HOSTS=".example.com"))

    assert values is not None, completed.stderr
    assert values["allowed_hosts"] == [".example.com"]


def test_production_turns_debug_off_by_default(print_settings):
    values, completed = print_settings(**production())

    assert values is not None, completed.stderr
    assert values["debug"] is False
    assert values["allowed_hosts"] == ["caloria.example.com"]


def test_a_database_url_password_never_appears_in_a_configuration_error(manage):
    completed = manage(
        "check", **production(DATABASE_URL="mysql://caloria:SECRETPW@db/caloria", DEBUG="maybe")
    )

    assert completed.returncode == 1
    assert "DEBUG: must be true or false" in completed.stderr
    assert "SECRETPW" not in completed.output


# Database URLs that URL parsers split in the wrong place, or that name no known engine; the
# password (SECRETPW plus what surrounds it) must never be printed.
UNPARSEABLE_DATABASE_URLS = {
    "slash in password": "postgres://caloria:SECRETPW/x@db/caloria",
    "question mark in password": "postgres://caloria:SECRETPW?x@db/caloria",
    "misspelt scheme": "postgress://caloria:SECRETPW@db/caloria",
    "unknown scheme": "http://caloria:SECRETPW@db/caloria",
    "one slash after the scheme": "postgres:/caloria:SECRETPW@db/caloria",
    "no colon after the scheme": "postgres//caloria:SECRETPW@db/caloria",
    "port out of range": "postgres://caloria:SECRETPW@db:99999/caloria",
    "broken IPv6 host": "postgres://caloria:SECRETPW@[::1/caloria",
    "SQLite URL with a host": "sqlite://caloria:SECRETPW@db/caloria.sqlite3",
    "one slash, and a query": "postgres:/caloria:SECRETPW@db/caloria?sslmode=require",
    "one slash, and a base64 password": "postgres:/caloria:U0VDUkVUUFc=@db/caloria",
}


@pytest.mark.parametrize("url", UNPARSEABLE_DATABASE_URLS.values(), ids=UNPARSEABLE_DATABASE_URLS)
def test_an_unusable_database_url_is_refused_naming_it_without_its_password(manage, url):
    completed = manage("check", **production(DATABASE_URL=url))

    assert completed.returncode == 1
    assert "DATABASE_URL: " in completed.stderr
    assert "caloria:********@" in completed.stderr
    assert "SECRETPW" not in completed.output
    assert "U0VDUkVUUFc" not in completed.output
    assert "Traceback" not in completed.output


@pytest.mark.parametrize("url", ["sqlite://", "sqlite://:memory:"])
def test_an_in_memory_sqlite_url_is_accepted(print_settings, url):
    values, completed = print_settings(CALORIA_ENV="development", DATABASE_URL=url)

    assert values is not None, completed.stderr
    assert values["name"] == ":memory:"


def test_a_database_url_that_forgot_its_host_is_refused_without_its_password(manage):
    completed = manage("check", **production(DATABASE_URL="postgres://caloria:SECRETPW/caloria"))

    assert completed.returncode == 1
    assert "DATABASE_URL: cannot be parsed" in completed.stderr
    assert "postgres://caloria:********/caloria" in completed.stderr
    assert "SECRETPW" not in completed.output


def test_validate_environment_reports_an_unparseable_database_url_without_its_password(manage):
    url = UNPARSEABLE_DATABASE_URLS["slash in password"]

    completed = manage("validate_environment", **production(DATABASE_URL=url))

    assert completed.returncode == 1
    assert "failed   DATABASE_URL: cannot be parsed" in completed.stdout
    assert "SECRETPW" not in completed.output
    assert "Traceback" not in completed.output


@pytest.mark.parametrize(
    "password", ["SECRETPW#x", "SECRETPW@x", "SECRETPW%x", "SECRETPW x"], ids=repr
)
def test_a_password_holding_a_hash_at_percent_or_space_is_read_whole(print_settings, password):
    values, completed = print_settings(
        **production(DATABASE_URL=f"postgres://caloria:{password}@db/caloria")
    )

    assert values is not None, completed.stderr
    assert values["password"] == password


def test_development_without_database_url_uses_sqlite_in_the_project_root_and_says_so_once(
    print_settings,
):
    values, completed = print_settings(CALORIA_ENV="development")

    assert values["engine"] == "django.db.backends.sqlite3"
    assert values["name"] == str(PROJECT_ROOT / "db.sqlite3")
    warnings = [line for line in completed.stderr.splitlines() if line.startswith("WARNING")]
    assert warnings == [
        f"WARNING: DATABASE_URL is not set, so this development process uses SQLite at "
        f"{PROJECT_ROOT / 'db.sqlite3'} (set DATABASE_URL to use PostgreSQL)"
    ]


def test_test_environment_requires_database_url_instead_of_falling_back(manage):
    completed = manage("check", CALORIA_ENV="test")

    assert completed.returncode == 1
    assert "DATABASE_URL: is required but not set" in completed.stderr


def test_an_unreachable_database_url_is_never_replaced_by_sqlite(
    manage, print_settings, unreachable_database_url
):
    values, _ = print_settings(CALORIA_ENV="development", DATABASE_URL=unreachable_database_url)
    completed = manage(
        "check", "--database", "default", CALORIA_ENV="development",
        DATABASE_URL=unreachable_database_url,
    )  # fmt: skip

    assert values["engine"] == "django.db.backends.postgresql"
    assert completed.returncode == 1
    assert "dbops.E001" in completed.stderr
    assert "sqlite" not in completed.output.lower()


def test_process_environment_wins_over_the_env_file_and_sources_are_recorded(
    print_settings, env_file
):
    env_file.write_text(
        "DATABASE_URL=postgres://from-file@127.0.0.1:5432/file_db\nDEBUG=true\n"
        "DATABASE_CONN_MAX_AGE=5\n"
    )

    values, completed = print_settings(
        CALORIA_ENV="development", DATABASE_URL="postgres://from-env@127.0.0.1:5432/env_db"
    )

    assert values is not None, completed.stderr
    assert values["name"] == "env_db"
    assert values["env_file"] == str(env_file)
    assert values["sources"]["DATABASE_URL"] == "process environment"
    assert values["sources"]["DEBUG"] == ".env file"
    assert values["sources"]["DATABASE_CONN_MAX_AGE"] == ".env file"
    assert values["sources"]["SECRET_KEY"] == "default"
    assert values["conn_max_age"] == 5


def test_connection_settings_come_from_their_own_variables(print_settings):
    values, completed = print_settings(
        CALORIA_ENV="development",
        DATABASE_URL="postgres://caloria@127.0.0.1:5432/caloria",
        DATABASE_CONNECT_TIMEOUT="3",
        DATABASE_CONN_MAX_AGE="0",
        DATABASE_CONN_HEALTH_CHECKS="false",
    )

    assert values is not None, completed.stderr
    assert values["options"]["connect_timeout"] == 3
    assert values["conn_max_age"] == 0
    assert values["conn_health_checks"] is False
    assert values["time_zone"] == "UTC"
    assert values["use_tz"] is True


def test_connect_timeout_defaults_to_five_seconds(print_settings):
    values, _ = print_settings(
        CALORIA_ENV="development", DATABASE_URL="postgres://caloria@127.0.0.1:5432/caloria"
    )

    assert values["options"]["connect_timeout"] == 5
    # A vanished server is given up within 25 s, whether or not data is on the way to it.
    assert values["options"]["keepalives_idle"] + 5 * 3 == 25
    assert values["options"]["tcp_user_timeout"] == 25_000


def test_an_invalid_number_names_its_variable(manage):
    completed = manage("check", DATABASE_CONNECT_TIMEOUT="soon")

    assert completed.returncode == 1
    assert "DATABASE_CONNECT_TIMEOUT: must be a whole number; got 'soon'" in completed.stderr


def test_connection_options_in_the_database_url_query_are_refused(manage):
    completed = manage(
        "check",
        CALORIA_ENV="development",
        DATABASE_URL="postgres://caloria@127.0.0.1/caloria?conn_health_checks=false",
    )

    assert completed.returncode == 1
    assert "use the DATABASE_CONN_HEALTH_CHECKS variable instead" in completed.stderr


def test_a_value_starting_with_dollar_stops_with_an_explanation(manage, env_file):
    env_file.write_text("CALORIA_ENV=production\nSECRET_KEY=$ecret-but-read-as-a-variable-name\n")

    completed = manage("check", **production(CALORIA_ENV=None, SECRET_KEY=None))

    assert completed.returncode == 1
    assert "SECRET_KEY: the value starts with '$'" in completed.stderr
    assert f"{env_file}" in completed.stderr
    assert "ecret-but-read-as-a-variable-name" not in completed.output


def test_an_escaped_dollar_is_read_literally(print_settings, env_file):
    env_file.write_text("DATABASE_URL=postgres://caloria:\\$pw@127.0.0.1:5432/caloria\n")

    values, completed = print_settings(CALORIA_ENV="development")

    assert values is not None, completed.stderr
    assert values["engine"] == "django.db.backends.postgresql"


REPLICA_SETTINGS = (
    "import json, django; from django.conf import settings; django.setup(); "
    "replica = settings.DATABASES.get('replica'); "
    "print(json.dumps({'replica': replica and {key: replica[key] for key in "
    "('ENGINE', 'HOST', 'PORT', 'NAME', 'OPTIONS', 'TEST', 'CONN_MAX_AGE')}, "
    "'alias': getattr(settings, 'DBOPS_REPLICA_DATABASE', None), "
    "'routers': settings.DATABASE_ROUTERS, 'backed_up': settings.DBBACKUP_DATABASES}))"
)


def test_a_replica_url_becomes_a_standby_alias_no_query_or_test_database_goes_to(run):
    completed = run(
        [sys.executable, "-c", REPLICA_SETTINGS],
        CALORIA_ENV="test",
        DJANGO_SETTINGS_MODULE="caloria.settings",
        DATABASE_URL="postgres://caloria@127.0.0.1:5432/caloria",
        DATABASE_REPLICA_URL="postgres://reader:SECRETPW@10.0.0.12:5433/caloria",
        DATABASE_CONNECT_TIMEOUT="2",
    )
    values = json.loads(completed.stdout.strip().splitlines()[-1])
    unset = run(
        [sys.executable, "-c", REPLICA_SETTINGS],
        CALORIA_ENV="test",
        DJANGO_SETTINGS_MODULE="caloria.settings",
        DATABASE_URL="postgres://caloria@127.0.0.1:5432/caloria",
    )

    replica = values["replica"]
    assert (replica["HOST"], replica["PORT"], replica["NAME"]) == ("10.0.0.12", 5433, "caloria")
    assert replica["OPTIONS"]["connect_timeout"] == 2
    assert replica["TEST"]["MIRROR"] == "default"
    assert values["alias"] == "replica"
    assert values["routers"] == [] and values["backed_up"] == ["default"]
    assert json.loads(unset.stdout.strip().splitlines()[-1]) == {
        "replica": None, "alias": None, "routers": [], "backed_up": ["default"],
    }  # fmt: skip


def test_a_replica_url_that_is_not_postgresql_is_refused_without_its_password(manage, tmp_path):
    completed = manage(
        "check",
        CALORIA_ENV="test",
        DATABASE_URL="postgres://caloria@127.0.0.1:5432/caloria",
        DATABASE_REPLICA_URL="mysql://reader:SECRETPW@10.0.0.12/caloria",
    )

    assert completed.returncode != 0
    assert "DATABASE_REPLICA_URL: must be a PostgreSQL standby" in completed.output
    assert "SECRETPW" not in completed.output
