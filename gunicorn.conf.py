"""gunicorn settings for Caloria: `gunicorn caloria.wsgi:application` (or `-c gunicorn.conf.py`).

The application is loaded once in the master (`preload_app`), so in production the start-up
validation (database reachable and PostgreSQL) runs once, and a failure stops the master with
one line on stderr and a non-zero exit instead of workers respawning in a loop.
"""

import os

bind = os.environ.get("GUNICORN_BIND", "127.0.0.1:8000")
workers = int(os.environ.get("WEB_CONCURRENCY", "2"))
preload_app = True
timeout = int(os.environ.get("GUNICORN_TIMEOUT", "30"))
graceful_timeout = 30
accesslog = "-"
errorlog = "-"
forwarded_allow_ips = os.environ.get("FORWARDED_ALLOW_IPS", "127.0.0.1")
