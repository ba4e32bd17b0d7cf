"""The one masking helper, and the .env pitfalls validate_environment reports."""

import pytest

from dbops.envinfo import describe_database, env_file_pitfalls
from dbops.masking import MASK, mask_dsn, mask_text, mask_url


def test_mask_url_hides_the_password_and_keeps_everything_else():
    masked = mask_url("postgres://caloria:S3cr%40t@db.internal:6432/caloria?sslmode=require")

    assert masked == f"postgres://caloria:{MASK}@db.internal:6432/caloria?sslmode=require"


def test_mask_url_leaves_a_url_without_password_alone():
    assert mask_url("postgres://caloria@db/caloria") == "postgres://caloria@db/caloria"


def test_mask_url_hides_passwords_in_the_query_string():
    masked = mask_url("postgres://u@db/caloria?password=hunter22&sslmode=require")

    assert "hunter22" not in masked
    assert "sslmode=require" in masked


@pytest.mark.parametrize(
    "url",
    [
        "postgres://caloria:pa/SECRET@db/caloria",
        "postgres://caloria:pa#SECRET@db/caloria",
        "postgres://caloria:pa@SECRET@db/caloria",
        "postgres://caloria:pa?SECRET@db/caloria",
        "postgres://caloria:pa:SECRET@db/caloria",
        "postgres://caloria:pa SECRET@db/caloria",
        "postgress://caloria:SECRET@db/caloria",
        "postgres:/caloria:SECRET@db/caloria",
        "postgres//caloria:SECRET@db/caloria",
        "caloria:SECRET@db/caloria",
        "postgres://caloria:SECRET@[::1/caloria",
        "postgres:/caloria:SECRET@db/caloria?sslmode=require",
        "postgres:/caloria:SECRET==@db/caloria",
    ],
)
def test_mask_url_hides_the_password_of_a_malformed_url_and_keeps_the_user(url):
    masked = mask_url(url)

    assert "SECRET" not in masked
    assert f"caloria:{MASK}@" in masked


@pytest.mark.parametrize(
    "text",
    [
        "could not connect to 'postgres://caloria:pa/SECRET@db/caloria': refused",
        "could not connect to postgres://caloria:pa@SECRET@db/caloria (refused)",
        "could not connect to postgres://caloria:pa SECRET@db/caloria (refused)",
        "could not connect to caloria:SECRET@db",
    ],
)
def test_mask_text_hides_the_password_of_a_malformed_url_in_free_text(text):
    masked = mask_text(text)

    assert "SECRET" not in masked
    assert "could not connect to" in masked


@pytest.mark.parametrize(
    "url, masked",
    [
        ("postgres://caloria:SECRET/caloria", f"postgres://caloria:{MASK}/caloria"),
        ("postgres://caloria:SECRET", f"postgres://caloria:{MASK}"),
        ("postgres://db:5432/caloria", "postgres://db:5432/caloria"),
        ("postgres://[::1]:5432/caloria", "postgres://[::1]:5432/caloria"),
        ("postgres://[::1]/caloria", "postgres://[::1]/caloria"),
    ],
)
def test_mask_url_hides_what_stands_for_a_port_when_it_is_not_a_number(url, masked):
    assert mask_url(url) == masked


def test_mask_text_leaves_email_addresses_and_times_alone():
    text = "mail admin@example.com at 12:30"

    assert mask_text(text) == text


def test_mask_dsn_hides_plain_and_quoted_passwords():
    assert mask_dsn("host=db user=u password=hunter22 dbname=x") == (
        f"host=db user=u password={MASK} dbname=x"
    )
    assert "two words" not in mask_dsn("host=db password='two words' dbname=x")


def test_mask_text_removes_known_secrets_and_url_passwords_from_free_text():
    text = 'failed for postgres://u:hunter22@db/x and key SECRETPW and password=abc123 "x"'

    masked = mask_text(text, secrets=["SECRETPW"])

    assert "hunter22" not in masked
    assert "SECRETPW" not in masked
    assert "abc123" not in masked


def test_mask_text_removes_a_secret_in_its_url_encoded_forms_too_but_not_one_too_short():
    secret = "p@ss/w%rd x+y"
    text = f"raw {secret} | path p%40ss/w%25rd%20x%2By | query p%40ss%2Fw%25rd+x%2By | pw ab"

    masked = mask_text(text, secrets=[secret, "ab"])

    assert masked == f"raw {MASK} | path {MASK} | query {MASK} | pw ab"


def test_describe_database_names_host_port_name_and_user_but_never_the_password():
    described = describe_database(
        {
            "ENGINE": "django.db.backends.postgresql",
            "NAME": "caloria",
            "USER": "app",
            "PASSWORD": "SECRETPW",
            "HOST": "db",
            "PORT": 6432,
        }
    )

    assert described == f"postgresql db:6432/caloria user=app password={MASK}"


def test_env_file_pitfalls_flag_dollar_values_and_unquoted_comments(tmp_path):
    env_file = tmp_path / ".env"
    env_file.write_text(
        "SECRET_KEY=$ecret\n"
        "ALLOWED_HOSTS=caloria.example.com # the public name\n"
        "DEBUG='off # quoted is fine'\n"
        "DATABASE_URL=postgres://u@db/x\n"
    )

    pitfalls = env_file_pitfalls(env_file)

    assert len(pitfalls) == 2
    assert pitfalls[0].startswith(f"{env_file}:1 SECRET_KEY: the value starts with '$'")
    assert pitfalls[1].startswith(f"{env_file}:2 ALLOWED_HOSTS: an unquoted ' #'")
    assert "ecret" not in pitfalls[0].split("SECRET_KEY", 1)[1]


def test_safe_error_puts_a_failure_on_one_line_without_any_secret(settings):
    from dbops.masking import safe_error

    settings.DBOPS_HEALTH_TOKEN = "health-token-that-is-long-enough"
    error = RuntimeError(
        f"pg_dump --dbname=postgresql://caloria:hunter22@db/x failed\n"
        f"key {settings.SECRET_KEY} token {settings.DBOPS_HEALTH_TOKEN}"
    )

    text = safe_error(error)

    assert "\n" not in text
    for secret in ("hunter22", settings.SECRET_KEY, settings.DBOPS_HEALTH_TOKEN):
        assert secret not in text
    assert "failed" in text
