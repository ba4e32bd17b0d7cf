"""A Django project of dbops alone, on dbops' defaults: no Caloria, no DBOPS_* setting.

It proves dbops installs into another project: tests run it in child processes
(DJANGO_SETTINGS_MODULE=tests.minimal_settings, `python -m django ...`), and tests of single
system checks derive a settings module from it that changes one thing. DATABASE_URL and
MINIMAL_BACKUP_DIR come from the environment.
"""

import os

import environ

SECRET_KEY = "minimal-dbops-project-" + "k3y" * 15
DEBUG = False
ALLOWED_HOSTS = ["testserver", "127.0.0.1"]

INSTALLED_APPS = [
    "dbops",  # before dbbackup: its dbbackup command records every run
    "dbbackup",
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "health_check",
]
MIDDLEWARE = [
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
]
ROOT_URLCONF = "tests.minimal_urls"
TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
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

DATABASES = {"default": environ.Env.db_url_config(os.environ["DATABASE_URL"])}
STORAGES = {
    "default": {"BACKEND": "django.core.files.storage.FileSystemStorage"},
    "staticfiles": {"BACKEND": "django.contrib.staticfiles.storage.StaticFilesStorage"},
    "dbbackup": {
        "BACKEND": "django.core.files.storage.FileSystemStorage",
        "OPTIONS": {"location": os.environ["MINIMAL_BACKUP_DIR"]},
    },
}

STATIC_URL = "static/"
USE_TZ = True
TIME_ZONE = "UTC"
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"
