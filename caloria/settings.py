"""Caloria's only settings module: strict, explicit, and honest about where values came from.

Every value comes from the process environment or from one explicit `.env` file (see
`dbops.envinfo`). Nothing falls back silently: when DATABASE_URL is set it is used exactly, and
SQLite is the database only in development (or test) when DATABASE_URL is unset, with a warning.
Every problem is collected and reported together, naming the variable and the `.env` path.

dbops reads only its own DBOPS_* settings (dbops/conf.py lists them): this module sets them
from Caloria's variables, whose names stay Caloria's (CALORIA_ENV, HEALTH_TOKEN, ...).
"""

from pathlib import Path

from dbops.envinfo import StrictEnv, warn_once
from dbops.pooler import POOLERS, direct_database, pooled_database
from dbops.remote_config import sftp_storage

BASE_DIR = Path(__file__).resolve().parent.parent

ENVIRONMENTS = ("development", "test", "production")
DEVELOPMENT_SECRET_KEY = "django-insecure-caloria-development-key-never-use-in-production-0123"
MIN_PRODUCTION_SECRET_KEY_LENGTH = 50

env = StrictEnv.load(BASE_DIR, "CALORIA_ENV_FILE")

CALORIA_ENV = env.choice("CALORIA_ENV", ENVIRONMENTS, default="development")
IS_PRODUCTION = CALORIA_ENV == "production"
# dbops: production must be PostgreSQL, development on SQLite is a warning, test neither.
DBOPS_ENVIRONMENT = CALORIA_ENV
DBOPS_ENVIRONMENT_VARIABLE = "CALORIA_ENV"

# --- secrets and hosts

SECRET_KEY = env.str("SECRET_KEY", DEVELOPMENT_SECRET_KEY, required=IS_PRODUCTION)
if IS_PRODUCTION and env.is_set("SECRET_KEY"):
    if SECRET_KEY == DEVELOPMENT_SECRET_KEY:
        env.problem("SECRET_KEY", "is the development default; generate a new one")
    elif len(SECRET_KEY) < MIN_PRODUCTION_SECRET_KEY_LENGTH:
        env.problem(
            "SECRET_KEY",
            f"is {len(SECRET_KEY)} characters long; production needs at least "
            f"{MIN_PRODUCTION_SECRET_KEY_LENGTH}",
        )

DEBUG = env.bool("DEBUG", default=CALORIA_ENV == "development")
if IS_PRODUCTION and DEBUG:
    env.problem("DEBUG", "must be off in production")

if IS_PRODUCTION:
    ALLOWED_HOSTS = env.list("ALLOWED_HOSTS")
    if not ALLOWED_HOSTS and env.is_set("ALLOWED_HOSTS"):
        env.problem("ALLOWED_HOSTS", "names no host")
    elif "*" in ALLOWED_HOSTS:
        # A bare '*' turns off Django's Host header validation (cache poisoning, password
        # reset links to an attacker's host); a '.example.com' pattern keeps it.
        env.problem(
            "ALLOWED_HOSTS",
            "must not be '*' in production; name the hosts (a '.example.com' entry allows "
            "every subdomain)",
        )
    elif not env.is_set("ALLOWED_HOSTS"):
        env.str("ALLOWED_HOSTS", required=True)
else:
    ALLOWED_HOSTS = env.list("ALLOWED_HOSTS", ["127.0.0.1", "localhost", "[::1]"])
    if CALORIA_ENV == "test":
        ALLOWED_HOSTS.append("testserver")

# Security for deployments: on in production, each switchable for a TLS-terminating proxy.
SECURE_SSL_REDIRECT = env.bool("SECURE_SSL_REDIRECT", IS_PRODUCTION)
SESSION_COOKIE_SECURE = env.bool("SESSION_COOKIE_SECURE", IS_PRODUCTION)
CSRF_COOKIE_SECURE = env.bool("CSRF_COOKIE_SECURE", IS_PRODUCTION)
SECURE_HSTS_SECONDS = env.int("SECURE_HSTS_SECONDS", 31_536_000 if IS_PRODUCTION else 0, minimum=0)
SECURE_HSTS_INCLUDE_SUBDOMAINS = env.bool("SECURE_HSTS_INCLUDE_SUBDOMAINS", IS_PRODUCTION)
SECURE_HSTS_PRELOAD = env.bool("SECURE_HSTS_PRELOAD", IS_PRODUCTION)
if env.bool("SECURE_PROXY_SSL_HEADER", False):
    # Only behind a proxy that sets X-Forwarded-Proto itself and strips it from clients.
    SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https")
# The health probes and the Prometheus scrape answer over plain HTTP on the private network.
SECURE_REDIRECT_EXEMPT = [r"^health/", r"^metrics$"]

# --- the database

DBOPS_DIRECT_DATABASE = "direct"
DBOPS_CONNECT_TIMEOUT = env.int("DATABASE_CONNECT_TIMEOUT", 5, minimum=1)
# PgBouncer in transaction mode in front of DATABASE_URL (dbops.pooler): server-side cursors
# off, no prepared statements, and CONN_MAX_AGE 0 unless set (PgBouncer keeps the server
# connections; a worker's own connection to it lasts one request). The commands that need a
# session of their own use DATABASE_DIRECT_URL, the server without PgBouncer.
DBOPS_POOLER = env.str("DATABASE_POOLER", "") or None
if DBOPS_POOLER not in (None, *POOLERS):
    env.problem("DATABASE_POOLER", f"must be pgbouncer (or unset); got {DBOPS_POOLER!r}")
    DBOPS_POOLER = None
DBOPS_DIRECT_DATABASE_VARIABLE = "DATABASE_DIRECT_URL"
DATABASE_CONN_MAX_AGE = env.int("DATABASE_CONN_MAX_AGE", 0 if DBOPS_POOLER else 60, minimum=0)
DATABASE_CONN_HEALTH_CHECKS = env.bool("DATABASE_CONN_HEALTH_CHECKS", True)

_database = env.database_url("DATABASE_URL")
_postgresql_options = {
    "connect_timeout": DBOPS_CONNECT_TIMEOUT,
    # Notice a dead peer within seconds instead of the kernel's default of minutes:
    # keepalives while waiting for an answer, tcp_user_timeout while data is unanswered.
    "keepalives": 1,
    "keepalives_idle": 10,
    "keepalives_interval": 5,
    "keepalives_count": 3,
    "tcp_user_timeout": 25_000,
}
DBOPS_DATABASE_IS_DEFAULT_SQLITE = False
if _database is None and not env.is_set("DATABASE_URL"):
    if CALORIA_ENV == "development":
        DBOPS_DATABASE_IS_DEFAULT_SQLITE = True
        _database = {"ENGINE": "django.db.backends.sqlite3", "NAME": str(BASE_DIR / "db.sqlite3")}
    else:
        env.str("DATABASE_URL", required=True)
if _database is not None and IS_PRODUCTION and "postgresql" not in _database["ENGINE"]:
    env.problem(
        "DATABASE_URL",
        f"production needs PostgreSQL, not {_database['ENGINE'].rsplit('.', 1)[-1]}",
    )
if _database is None:
    _database = {"ENGINE": "django.db.backends.dummy"}
elif "postgresql" in _database["ENGINE"]:
    _database.setdefault("OPTIONS", {}).update(_postgresql_options)
elif "sqlite3" in _database["ENGINE"]:
    _database.setdefault("OPTIONS", {}).setdefault("timeout", DBOPS_CONNECT_TIMEOUT)
_database["CONN_MAX_AGE"] = DATABASE_CONN_MAX_AGE
_database["CONN_HEALTH_CHECKS"] = DATABASE_CONN_HEALTH_CHECKS
DATABASES = {"default": _database}

_direct = env.database_url("DATABASE_DIRECT_URL")
if DBOPS_POOLER and _database["ENGINE"].endswith(("sqlite3", "mysql", "oracle")):
    env.problem("DATABASE_POOLER", "PgBouncer pools PostgreSQL; DATABASE_URL is not PostgreSQL")
elif DBOPS_POOLER:
    DATABASES["default"] = pooled_database(_database)
if _direct is not None and not DBOPS_POOLER:
    env.problem(
        "DATABASE_DIRECT_URL", "is only used with DATABASE_POOLER=pgbouncer; set that or unset it"
    )
elif _direct is not None and "postgresql" not in _direct["ENGINE"]:
    env.problem("DATABASE_DIRECT_URL", "must be a postgres:// URL (the server behind PgBouncer)")
elif _direct is not None:
    _direct.setdefault("OPTIONS", {}).update(_postgresql_options)
    DATABASES[DBOPS_DIRECT_DATABASE] = direct_database(
        {**_direct, "CONN_MAX_AGE": 0, "CONN_HEALTH_CHECKS": False}
    )

# A streaming standby of the default database (optional), for dbops to watch and to back up
# from (`dbbackup --from-replica`). It is an alias no query goes to by itself: there is no
# router, and tests mirror it onto the default test database instead of creating one on the
# standby, which is read-only.
_replica = env.database_url("DATABASE_REPLICA_URL")
if _replica is not None and "postgresql" not in _replica["ENGINE"]:
    env.problem("DATABASE_REPLICA_URL", "must be a PostgreSQL standby (postgres://...)")
elif _replica is not None:
    _replica.setdefault("OPTIONS", {}).update(_postgresql_options)
    _replica.update(
        CONN_MAX_AGE=DATABASE_CONN_MAX_AGE,
        CONN_HEALTH_CHECKS=DATABASE_CONN_HEALTH_CHECKS,
        TEST={"MIRROR": "default"},
    )
    DATABASES["replica"] = _replica
    DBOPS_REPLICA_DATABASE = "replica"
DBOPS_REPLICA_LAG_WARN_SECONDS = env.int("DBOPS_REPLICA_LAG_WARN_SECONDS", 60, minimum=1)
DBOPS_REPLICA_LAG_FAIL_SECONDS = env.int("DBOPS_REPLICA_LAG_FAIL_SECONDS", 300, minimum=1)
DBOPS_REPLICA_LAG_WARN_BYTES = env.int("DBOPS_REPLICA_LAG_WARN_BYTES", 64 << 20, minimum=1)
DBOPS_REPLICA_LAG_FAIL_BYTES = env.int("DBOPS_REPLICA_LAG_FAIL_BYTES", 1 << 30, minimum=1)
DBOPS_REPLICA_BACKUP_MAX_LAG_SECONDS = env.int(
    "DBOPS_REPLICA_BACKUP_MAX_LAG_SECONDS", 300, minimum=0
)

# --- operations (dbops)

DBOPS_BACKUP_DIR = Path(env.str("DBOPS_BACKUP_DIR", str(BASE_DIR / "backups")))
if IS_PRODUCTION and not DBOPS_BACKUP_DIR.is_absolute():
    env.problem(
        "DBOPS_BACKUP_DIR", f"must be an absolute path in production; got {DBOPS_BACKUP_DIR}"
    )
elif not DBOPS_BACKUP_DIR.is_absolute():
    DBOPS_BACKUP_DIR = (BASE_DIR / DBOPS_BACKUP_DIR).resolve()

# Backups (django-dbbackup): only the default database, gzip, private files, no e-mail.
DBOPS_BACKUP_KEEP_DAILY = env.int("DBOPS_BACKUP_KEEP_DAILY", 7, minimum=0)
DBOPS_BACKUP_KEEP_WEEKLY = env.int("DBOPS_BACKUP_KEEP_WEEKLY", 4, minimum=0)
DBOPS_BACKUP_KEEP_MONTHLY = env.int("DBOPS_BACKUP_KEEP_MONTHLY", 12, minimum=0)
DBOPS_BACKUP_KEEP_MIN = env.int("DBOPS_BACKUP_KEEP_MIN", 3, minimum=1)
DBOPS_BACKUP_KEEP_DAYS = env.int("DBOPS_BACKUP_KEEP_DAYS", 0, minimum=0)
DBBACKUP_DATABASES = ["default"]
DBBACKUP_SEND_EMAIL = False
STORAGES = {
    "default": {"BACKEND": "django.core.files.storage.FileSystemStorage"},
    # WhiteNoise serves the admin's static files from gunicorn; hashed names in production
    # (run collectstatic on release), plain names elsewhere so tests need no collectstatic.
    "staticfiles": {
        "BACKEND": "whitenoise.storage.CompressedManifestStaticFilesStorage"
        if IS_PRODUCTION
        else "whitenoise.storage.CompressedStaticFilesStorage"
    },
    "dbbackup": {
        "BACKEND": "django.core.files.storage.FileSystemStorage",
        "OPTIONS": {
            "location": str(DBOPS_BACKUP_DIR),
            "file_permissions_mode": 0o600,
            "directory_permissions_mode": 0o700,
        },
    },
}

# Off-site copies of every backup (dbops.offsite): an SFTP server whose host key the
# known-hosts file already holds (default ~/.ssh/known_hosts), logged in with a key file.
_remote_url = env.str("DBOPS_BACKUP_REMOTE_URL", "")
if _remote_url:
    try:
        STORAGES["dbbackup_remote"] = sftp_storage(
            _remote_url,
            key_file=env.str("DBOPS_BACKUP_REMOTE_KEY_FILE", ""),
            known_hosts=env.str("DBOPS_BACKUP_REMOTE_KNOWN_HOSTS", ""),
        )
    except ValueError as exc:
        env.problem("DBOPS_BACKUP_REMOTE_URL", str(exc))
# OpenSSH's client moves the copies' bytes (empty: dbops' paramiko session, slower).
DBOPS_BACKUP_REMOTE_SFTP_PROGRAM = env.str("DBOPS_BACKUP_REMOTE_SFTP_PROGRAM", "sftp")
# Encryption to a public key (the private key is kept off the server; see docs/operations.md).
DBOPS_BACKUP_ENCRYPT = env.bool("DBOPS_BACKUP_ENCRYPT", False)
DBOPS_BACKUP_GPG_PUBLIC_KEY = env.str("DBOPS_BACKUP_GPG_PUBLIC_KEY", "") or None
if DBOPS_BACKUP_ENCRYPT and not DBOPS_BACKUP_GPG_PUBLIC_KEY:
    env.problem("DBOPS_BACKUP_ENCRYPT", "needs DBOPS_BACKUP_GPG_PUBLIC_KEY (a public key file)")

# Health: backups must be fresh in production (off elsewhere unless asked for).
DBOPS_BACKUP_CHECK = env.bool("DBOPS_BACKUP_CHECK", IS_PRODUCTION)
DBOPS_BACKUP_MAX_AGE_HOURS = env.int("DBOPS_BACKUP_MAX_AGE_HOURS", 26, minimum=1)
DBOPS_BACKUP_MIN_FREE_MB = env.int("DBOPS_BACKUP_MIN_FREE_MB", 1024, minimum=0)
DBOPS_HEALTH_EXACT_COUNT_BELOW = 100_000
DBOPS_HEALTH_CACHE_SECONDS = env.int("DBOPS_HEALTH_CACHE_SECONDS", 1, minimum=0)
# /health/ answers within this, whatever hangs: under common probe timeouts (5-10 s).
DBOPS_HEALTH_DEADLINE_SECONDS = env.int("DBOPS_HEALTH_DEADLINE_SECONDS", 4, minimum=1)
DBOPS_HEALTH_TOKEN = env.str("HEALTH_TOKEN", "")
if DBOPS_HEALTH_TOKEN and len(DBOPS_HEALTH_TOKEN) < 20:
    env.problem("HEALTH_TOKEN", "must be at least 20 characters (or unset)")
DBOPS_METRICS_TOKEN = env.str("METRICS_TOKEN", "")
if DBOPS_METRICS_TOKEN and len(DBOPS_METRICS_TOKEN) < 20:
    env.problem("METRICS_TOKEN", "must be at least 20 characters (or unset)")
# Dead man's switch URLs (healthchecks.io and its clones); a ping's timeout in seconds.
DBOPS_BACKUP_PING_URL = env.str("DBOPS_BACKUP_PING_URL", "")
DBOPS_CONSISTENCY_PING_URL = env.str("DBOPS_CONSISTENCY_PING_URL", "")
DBOPS_PING_TIMEOUT_SECONDS = env.int("DBOPS_PING_TIMEOUT_SECONDS", 5, minimum=1)

# Mappings import_sqlite --mapping knows by name.
DBOPS_IMPORT_MAPPINGS = {"flask-caloria": BASE_DIR / "caloria/import_mappings/flask-caloria.toml"}

# Stop now, with every problem at once, rather than half-configured.
env.raise_if_invalid()

# Where every setting came from, for validate_environment and the status page.
DBOPS_ENV_FILE = env.env_file
DBOPS_ENV_FILE_EXISTS = env.env_file_exists
DBOPS_ENV_FILE_VARIABLE = env.file_variable
DBOPS_ENV_FILE_KEYS = sorted(env.file_keys)
DBOPS_SETTING_SOURCES = dict(env.sources)
DBOPS_CONFIGURATION_PROBLEMS = list(env.problems)
# The variables validate_environment reports one line each.
DBOPS_KEY_VARIABLES = ["CALORIA_ENV", "SECRET_KEY", "DATABASE_URL", "ALLOWED_HOSTS", "DEBUG"]

if DBOPS_POOLER:
    DBOPS_KEY_VARIABLES += ["DATABASE_POOLER", "DATABASE_DIRECT_URL"]

if DBOPS_DATABASE_IS_DEFAULT_SQLITE:
    warn_once(
        f"DATABASE_URL is not set, so this development process uses SQLite at "
        f"{DATABASES['default']['NAME']} (set DATABASE_URL to use PostgreSQL)"
    )

# --- Django

INSTALLED_APPS = [
    "dbops",  # before dbbackup: its dbbackup command records every run
    "dbbackup",
    "caloria",
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "health_check",
]
if CALORIA_ENV == "test":
    # Every field type import_sqlite converts, so its tests cover more than Caloria's models.
    INSTALLED_APPS.append("tests.fieldtypes")

MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    "whitenoise.middleware.WhiteNoiseMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
]

ROOT_URLCONF = "caloria.urls"
WSGI_APPLICATION = "caloria.wsgi.application"

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [BASE_DIR / "templates"],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
            ],
        },
    },
]

AUTH_USER_MODEL = "caloria.User"
# Django's default first (new and upgraded hashes), then the Flask app's werkzeug hashes,
# which are only verified and replaced at the user's next login.
PASSWORD_HASHERS = [
    "django.contrib.auth.hashers.PBKDF2PasswordHasher",
    "django.contrib.auth.hashers.PBKDF2SHA1PasswordHasher",
    "django.contrib.auth.hashers.Argon2PasswordHasher",
    "django.contrib.auth.hashers.BCryptSHA256PasswordHasher",
    "django.contrib.auth.hashers.ScryptPasswordHasher",
    "caloria.hashers.WerkzeugPasswordHasher",
]
AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.UserAttributeSimilarityValidator"},
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator"},
    {"NAME": "django.contrib.auth.password_validation.CommonPasswordValidator"},
    {"NAME": "django.contrib.auth.password_validation.NumericPasswordValidator"},
]

LANGUAGE_CODE = "en-us"
TIME_ZONE = "UTC"
USE_I18N = True
USE_TZ = True

LOGIN_URL = "login"
LOGIN_REDIRECT_URL = "home"
LOGOUT_REDIRECT_URL = "login"

STATIC_URL = "static/"
# Production serves collected files (`collectstatic` on release) through WhiteNoise; elsewhere
# WhiteNoise and runserver find them in the apps, so there is nothing to collect.
STATIC_ROOT = Path(env.str("STATIC_ROOT", str(BASE_DIR / "staticfiles"))) if IS_PRODUCTION else None
WHITENOISE_USE_FINDERS = not IS_PRODUCTION
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "filters": {"one_line": {"()": "dbops.logging.HealthFailureWithoutTraceback"}},
    "handlers": {"console": {"class": "logging.StreamHandler"}},
    "root": {"handlers": ["console"], "level": "WARNING"},
    "loggers": {
        "health_check": {"filters": ["one_line"]},
        # dbbackup prints through a handler of its own (its --quiet and -v work on that).
        "dbbackup": {"propagate": False},
    },
}
