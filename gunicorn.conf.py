"""gunicorn settings for Caloria: `gunicorn caloria.wsgi:application` (or `-c gunicorn.conf.py`).

The application is loaded once in the master (`preload_app`), so in production the start-up
validation (database reachable and PostgreSQL) runs once, and a failure stops the master with
one line on stderr and a non-zero exit instead of workers respawning in a loop.

Threaded workers (`gthread`), so liveness survives a hung database. A sync worker serves one
request at a time: with the database server hung, two monitors polling `/health/` (each
answer up to DBOPS_HEALTH_DEADLINE_SECONDS, 4 s) kept both default workers busy, and
`/health/live/` waited 18 s behind them, far past a 1 s liveness timeout, so every instance
would be restarted for a database outage. A gthread worker serves `threads` requests at once
(GUNICORN_THREADS, default 4): two hung probes landing on the same worker still leave two
threads for liveness and the load balancer. Ordinary pages that query a hung database hold
their thread too; once all of a worker's threads are stuck, liveness waits as well. Each
thread keeps its own persistent connection: plan PostgreSQL's `max_connections` for
`workers x (threads + 5 health threads: checks, details, /metrics)` per server.
"""

import os

bind = os.environ.get("GUNICORN_BIND", "127.0.0.1:8000")
workers = int(os.environ.get("WEB_CONCURRENCY", "2"))
worker_class = "gthread"
threads = int(os.environ.get("GUNICORN_THREADS", "4"))
preload_app = True
timeout = int(os.environ.get("GUNICORN_TIMEOUT", "30"))
graceful_timeout = 30
accesslog = "-"
errorlog = "-"
forwarded_allow_ips = os.environ.get("FORWARDED_ALLOW_IPS", "127.0.0.1")
