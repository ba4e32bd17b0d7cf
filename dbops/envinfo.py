"""Where the configuration came from, and how to show it without leaking a secret.

The incident dbops was built after was a process that *said* PostgreSQL but ran on SQLite,
and nobody could tell which `.env` file or which variable had won. This module reads the one
explicit `.env` file, remembers for every variable whether its value came from the process
environment, the file or a default, and collects every configuration problem so the process
stops once with the whole list. It shows URLs through dbops.masking.

It is imported by a project's settings module, so it must not import anything that needs
configured settings. The settings module then hands what it learnt to dbops through the
DBOPS_ENV_FILE, DBOPS_SETTING_SOURCES, ... settings (see dbops.conf).
"""

from __future__ import annotations

import os
import re
import sys
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import environ
from django.core.exceptions import ImproperlyConfigured

from dbops.masking import MASK, mask_url

# Set by manage.py for validate_environment only: report configuration problems as failed
# checks (beside the database checks) instead of stopping at settings import.
DEFER_PROBLEMS = False

SOURCE_ENVIRONMENT = "process environment"
SOURCE_FILE = ".env file"
SOURCE_DEFAULT = "default"

# Options that django-environ would take from a DATABASE_URL query string as strings (so
# "false" is truthy); they are read from their own variables instead.
URL_OPTIONS_WITH_OWN_VARIABLE = {
    "conn_max_age": "DATABASE_CONN_MAX_AGE",
    "conn_health_checks": "DATABASE_CONN_HEALTH_CHECKS",
    "connect_timeout": "DATABASE_CONNECT_TIMEOUT",
}


class ConfigurationError(ImproperlyConfigured):
    """Every problem found in the configuration, reported together."""

    def __init__(self, problems: list[str], env_file: Path, env_file_exists: bool):
        self.problems = problems
        self.env_file = env_file
        looked_at = f"{env_file}" if env_file_exists else f"{env_file} (not found)"
        lines = [f"Invalid configuration (.env file looked at: {looked_at}):"]
        lines += [f"  - {problem}" for problem in problems]
        super().__init__("\n".join(lines))


def shorten(value: object, limit: int = 40) -> str:
    """A value as it may appear in a report: short, and undecodable bytes shown safely."""
    if isinstance(value, bytes):
        value = value.decode("utf-8", "backslashreplace")
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 1] + "…"


def describe_location(settings_dict: dict) -> str:
    """Where a database is: a SQLite path, or host:port/name with its user; password masked."""
    name = settings_dict.get("NAME") or ""
    if settings_dict.get("ENGINE", "").endswith("sqlite3"):
        return str(name)
    host = settings_dict.get("HOST") or "local socket"
    port = settings_dict.get("PORT") or "5432"
    user = settings_dict.get("USER") or "(none)"
    password = f" password={MASK}" if settings_dict.get("PASSWORD") else ""
    return f"{host}:{port}/{name} user={user}{password}"


def describe_database(settings_dict: dict) -> str:
    """One line naming a database: engine and location; never the password."""
    engine = settings_dict.get("ENGINE", "").rsplit(".", 1)[-1]
    return f"{engine} {describe_location(settings_dict)}"


# --------------------------------------------------------------------------- the .env file


@dataclass(frozen=True)
class EnvFileLine:
    """One assignment in a .env file, as written (before django-environ interprets it)."""

    lineno: int
    key: str
    raw_value: str


# django-environ's in-memory SQLite URLs: sqlite:// and sqlite://:memory:.
IN_MEMORY = ("", ":memory:")

_SCHEME_NAME = re.compile(r"[A-Za-z][A-Za-z0-9+.\-]*")

_ASSIGNMENT = re.compile(r"\A(?:export )?([A-Za-z_0-9]+)=(.*)\Z")


def read_env_file_lines(path: Path) -> list[EnvFileLine]:
    """The assignments of a .env file, parsed the way django-environ recognises them."""
    if not path.is_file():
        return []
    lines = []
    for lineno, line in enumerate(path.read_text(encoding="utf8").splitlines(), start=1):
        match = _ASSIGNMENT.match(line)
        if match:
            lines.append(EnvFileLine(lineno, match.group(1), match.group(2)))
    return lines


def env_file_pitfalls(path: Path) -> list[str]:
    """Lines that django-environ reads differently from what their author meant."""
    pitfalls = []
    for line in read_env_file_lines(path):
        value = line.raw_value
        quoted = len(value) >= 2 and value[0] == value[-1] and value[0] in "'\""
        unquoted = value if not quoted else ""
        inner = value[1:-1] if quoted else value
        where = f"{path}:{line.lineno} {line.key}"
        if inner.startswith("$"):
            pitfalls.append(
                f"{where}: the value starts with '$', which django-environ reads as the name "
                f"of another variable; write '\\$' for a literal dollar sign"
            )
        if " #" in unquoted or "\t#" in unquoted:
            pitfalls.append(
                f"{where}: an unquoted ' #' does not start a comment here, it becomes part of "
                f"the value; quote the value or move the comment to its own line"
            )
    return pitfalls


# --------------------------------------------------------------------------- strict reading


@dataclass
class StrictEnv:
    """Reads typed variables, records where each came from, and collects problems.

    Helpers never raise on a bad value: they record a problem naming the variable and return
    a harmless placeholder, so that `raise_if_invalid()` can report every problem at once.
    """

    env_file: Path
    env_file_exists: bool
    file_keys: frozenset[str]
    environment_keys: frozenset[str]
    file_variable: str
    sources: dict[str, str] = field(default_factory=dict)
    problems: list[str] = field(default_factory=list)
    _env: environ.Env = field(default_factory=environ.Env)

    @classmethod
    def load(cls, project_root: Path, file_variable: str) -> StrictEnv:
        """Read the file the variable `file_variable` names (which must exist), or else
        `<project root>/.env` (which may not)."""
        environment_keys = frozenset(os.environ)
        explicit = os.environ.get(file_variable, "")
        env_file = Path(explicit).expanduser() if explicit else project_root / ".env"
        if not env_file.is_absolute():
            env_file = (Path.cwd() / env_file).resolve()
        env_file_exists = env_file.is_file()
        problems = []
        if explicit and not env_file_exists:
            problems.append(
                f"{file_variable}: names {env_file}, which does not exist or is not a file"
            )
        file_keys: frozenset[str] = frozenset()
        if env_file_exists:
            try:
                environ.Env.read_env(env_file, overwrite=False)
                file_keys = frozenset(line.key for line in read_env_file_lines(env_file))
            except (OSError, UnicodeDecodeError) as exc:
                problems.append(f"{file_variable}: {env_file} cannot be read ({exc.strerror})")
        env = cls(
            env_file, env_file_exists, file_keys, environment_keys, file_variable, problems=problems
        )
        env._env.escape_proxy = True
        return env

    # -- bookkeeping

    def source_of(self, name: str) -> str:
        if name in self.environment_keys:
            return SOURCE_ENVIRONMENT
        if name in self.file_keys:
            return SOURCE_FILE
        return SOURCE_DEFAULT

    def is_set(self, name: str) -> bool:
        return os.environ.get(name, "") != ""

    def problem(self, name: str, message: str) -> None:
        self.problems.append(f"{name}: {message} (from {self.source_of(name)})")

    def raise_if_invalid(self) -> None:
        if self.problems and not DEFER_PROBLEMS:
            raise ConfigurationError(self.problems, self.env_file, self.env_file_exists)

    def _raw(self, name: str, default):
        self.sources[name] = self.source_of(name) if self.is_set(name) else SOURCE_DEFAULT
        if not self.is_set(name):
            return default
        raw = os.environ[name]
        if raw.startswith("$") and not self.is_set(raw.lstrip("$")):
            # django-environ would quietly read the (missing) variable named after the '$'
            # and hand back the default instead of what was written.
            self.problem(
                name,
                "the value starts with '$', which django-environ reads as the name of another "
                "variable, and no such variable is set; write '\\$' for a literal dollar sign",
            )
            return default
        return self._env.get_value(name, default=default)

    # -- typed readers

    def str(self, name: str, default: str = "", *, required: bool = False) -> str:
        if required and not self.is_set(name):
            self.problems.append(f"{name}: is required but not set")
            self.sources[name] = SOURCE_DEFAULT
            return default
        return str(self._raw(name, default))

    def choice(self, name: str, choices: tuple[str, ...], default: str) -> str:
        value = self.str(name, default)
        if value not in choices:
            self.problem(name, f"must be one of {', '.join(choices)}; got {value!r}")
            return default
        return value

    def bool(self, name: str, default: bool) -> bool:
        value = self.str(name, "")
        if value == "":
            return default
        lowered = value.strip().lower()
        if lowered in {"1", "true", "yes", "on"}:
            return True
        if lowered in {"0", "false", "no", "off"}:
            return False
        self.problem(name, f"must be true or false (also 1/0, yes/no, on/off); got {value!r}")
        return default

    def int(self, name: str, default: int, *, minimum: int | None = None) -> int:
        value = self.str(name, "")
        if value == "":
            return default
        try:
            number = int(value)
        except ValueError:
            self.problem(name, f"must be a whole number; got {value!r}")
            return default
        if minimum is not None and number < minimum:
            self.problem(name, f"must be at least {minimum}; got {number}")
            return default
        return number

    def list(self, name: str, default: list[str] | None = None) -> list[str]:
        value = self.str(name, "")
        if value == "":
            return list(default or [])
        return [item.strip() for item in value.split(",") if item.strip()]

    def database_url(self, name: str) -> dict | None:
        """Parse a database URL into a Django DATABASES entry, or None when it is not set."""
        url = self.str(name, "")
        if not url:
            return None
        masked = mask_url(url)
        scheme, separator, rest = url.partition("://")
        if not separator or not _SCHEME_NAME.fullmatch(scheme):
            self.problem(
                name, f"is not a URL of the form scheme://user:password@host:port/name: {masked}"
            )
            return None
        if scheme.lower() not in environ.Env.DB_SCHEMES:
            self.problem(
                name,
                f"has an unknown scheme {scheme!r} (postgres:// for PostgreSQL, sqlite:/// for "
                f"SQLite): {masked}",
            )
            return None
        if scheme.lower() == "sqlite" and not rest.startswith("/") and rest not in IN_MEMORY:
            self.problem(name, f"names a host; a SQLite URL is sqlite:////absolute/path: {masked}")
            return None
        try:
            # django-environ warns with the parsed settings, password included.
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                config = environ.Env.db_url_config(url)
        except Exception:  # noqa: BLE001 - any parse failure is a configuration problem
            self.problem(
                name,
                f"cannot be parsed as a database URL (is the port a number? is a '/', '?' or "
                f"'#' in the password percent-encoded as %2F, %3F, %23?): {masked}",
            )
            return None
        query_keys = {key.lower() for key in parse_qs(urlsplit(url).query, keep_blank_values=True)}
        for option, variable in URL_OPTIONS_WITH_OWN_VARIABLE.items():
            if option in query_keys:
                self.problem(
                    name,
                    f"sets {option} in its query string, where it would be read as text; "
                    f"use the {variable} variable instead",
                )
        return config


def warn_once(message: str) -> None:
    """Write one warning line to stderr, once per command (not again in runserver's child)."""
    if os.environ.get("RUN_MAIN") == "true":
        return
    sys.stderr.write(f"WARNING: {message}\n")
