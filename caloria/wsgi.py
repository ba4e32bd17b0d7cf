"""WSGI entry point; in production it refuses to start without its PostgreSQL database."""

import os

import django

from dbops.startup import WORKER_BOOT_ERROR, load_settings_or_exit, refuse_to_start_without_database

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "caloria.settings")
load_settings_or_exit(exit_code=WORKER_BOOT_ERROR, program="caloria")
django.setup(set_prefix=False)
# Before the handler loads its middleware: a refusal is the first and only line on stderr.
refuse_to_start_without_database(program="caloria")

from django.core.wsgi import get_wsgi_application  # noqa: E402

application = get_wsgi_application()
