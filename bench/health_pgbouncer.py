"""`/health/database/` through PgBouncer in transaction mode, next to `/health/live/` on the
same server, and how many sessions the PostgreSQL server sees meanwhile.

Issue 19's targets: the probe through PgBouncer at least 70% of `/health/live/`'s throughput,
and with 8 gunicorn workers under load the server sees no more sessions than the pool. So
this script (bench/health.py's helpers, `health.py --pgbouncer` runs it):

  1. creates one `bench_health_*` database with 1,000 users, as bench/health.py does;
  2. starts Debian's pgbouncer (tests/pgbouncer.py: transaction mode, a wildcard database,
     `default_pool_size` POOL_SIZE) in front of the server, and gunicorn with 8 workers,
     production settings, `DATABASE_URL` at PgBouncer, `DATABASE_POOLER=pgbouncer`,
     `DATABASE_DIRECT_URL` at the server, and Caloria's pooler default CONN_MAX_AGE 0;
  3. loads `/health/live/` (the baseline), then `/health/database/` with wrk while a thread
     samples `pg_stat_activity` on the server (client backends on the bench database) every
     0.1 s, and PgBouncer's `SHOW POOLS` (its clients) at the end; for reference, the probe
     on the same 8 workers straight to the server (persistent connections, no pooler); each
     measurement once per round (`--rounds`, 5), the rounds one after another, the best
     round (bench/health.py's `summarise`), the median rate beside it;
  4. prints requests/s, latencies and the targets, with bench/health.py's check that no other
     process used more than 10% of the CPUs meanwhile (PgBouncer counts as ours).

    .venv/bin/python bench/health.py --pgbouncer [--duration 10] [--connections 16] [--rounds 5]
"""

from __future__ import annotations

import sys
import threading
import time
from contextlib import ExitStack, contextmanager
from pathlib import Path
from urllib.parse import urlsplit

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import health as base

from tests.pgbouncer import running_pgbouncer

WORKERS = 8
POOL_SIZE = 4
SAMPLE_SECONDS = 0.1


class SessionSampler:
    """The most client sessions the server had on one database, sampled in a thread."""

    def __init__(self, server_url: str, database: str):
        self.server_url, self.database = server_url, database
        self.most = 0
        self.samples = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)

    def _sample(self) -> None:
        with base.postgres(self.server_url) as cursor:
            while not self._stop.is_set():
                cursor.execute(
                    "SELECT count(*) FROM pg_stat_activity WHERE datname = %s "
                    "AND backend_type = 'client backend' AND pid <> pg_backend_pid()",
                    [self.database],
                )
                self.most = max(self.most, cursor.fetchone()[0])
                self.samples += 1
                time.sleep(SAMPLE_SECONDS)

    @contextmanager
    def running(self):
        self._thread.start()
        try:
            yield self
        finally:
            self._stop.set()
            self._thread.join(timeout=5)


def measure(workspace, generator, rounds: int) -> dict:
    """Every figure of this benchmark (see the module's docstring): each measurement once per
    round, the rounds one after another, the best of the rounds (bench/health.py's
    `summarise`: on this machine single 10 s runs of the same path differ by a factor of
    two or three)."""
    print(f"database with {base.SMALL:,} users: create, migrate, fill ...", flush=True)
    direct_url = workspace.create_database(base.SMALL)
    database = urlsplit(direct_url).path.lstrip("/")
    server = urlsplit(direct_url)
    # The reference server gets a twin database, so that the sessions sampled on the pooled
    # one are PgBouncer's alone (both gunicorns run throughout).
    twin_url = workspace.create_database(base.SMALL, suffix="_twin")
    databases = {base.LIVE: database, base.DATABASE: database, "direct": twin_url.rsplit("/", 1)[1]}
    loads: dict[str, list] = {base.LIVE: [], base.DATABASE: [], "direct": []}
    most_sessions = dict.fromkeys(loads, 0)
    samples = dict.fromkeys(loads, 0)
    with ExitStack() as stack:
        pgbouncer = stack.enter_context(
            running_pgbouncer(
                server.hostname, server.port or 5432, server.username or "postgres", POOL_SIZE
            )
        )
        pooled_env = {
            "DATABASE_POOLER": "pgbouncer",
            "DATABASE_DIRECT_URL": direct_url,
            "DATABASE_CONN_MAX_AGE": "0",
        }
        ours = (str(pgbouncer.folder),)  # pgbouncer's command line names its ini there
        pooled_port = stack.enter_context(
            base.gunicorn(workspace, pgbouncer.url(database), WORKERS, **pooled_env)
        )
        direct_port = stack.enter_context(base.gunicorn(workspace, twin_url, WORKERS))
        plan = [
            (base.LIVE, pooled_port, base.LIVE, "through PgBouncer"),
            (base.DATABASE, pooled_port, base.DATABASE, "through PgBouncer"),
            ("direct", direct_port, base.DATABASE, "straight to the server"),
        ]
        print(f"  warm-up: {WORKERS} workers on each server ...", flush=True)
        for _, port, path, _ in plan:
            generator.measure(port, path, ours)
        for round_number in range(1, rounds + 1):
            for key, port, path, how in plan:
                sampler = SessionSampler(workspace.url("postgres"), databases[key])
                with sampler.running():
                    load = generator.measure(port, path, ours)
                loads[key].append(load)
                print(
                    f"  round {round_number}/{rounds}: {path} {how}: "
                    f"{load.requests_per_second:,.0f} req/s, p50 {load.p50_ms:.2f} ms, "
                    f"at most {sampler.most} server sessions",
                    flush=True,
                )
                most_sessions[key] = max(most_sessions[key], sampler.most)
                samples[key] += sampler.samples
        [pool] = [p for p in pgbouncer.admin("SHOW POOLS") if p["database"] == database]
    figures: dict = {key: base.summarise(runs) for key, runs in loads.items()}
    for key in (base.LIVE, base.DATABASE):
        figures[f"{key} sessions"] = most_sessions[key], samples[key]
    figures["direct sessions"] = most_sessions["direct"], samples["direct"]
    figures["clients"] = int(pool["cl_active"]) + int(pool["cl_waiting"])
    return figures


def report(figures: dict, generator: str) -> str:
    live, pooled, direct = figures[base.LIVE], figures[base.DATABASE], figures["direct"]
    rows = [
        (f"{base.LIVE} (PgBouncer site)", live, figures[f"{base.LIVE} sessions"][0]),
        (f"{base.DATABASE} through PgBouncer", pooled, figures[f"{base.DATABASE} sessions"][0]),
        (f"{base.DATABASE} straight to the server", direct, figures["direct sessions"][0]),
    ]
    headers = [
        "endpoint", "req/s", "median", "p50 ms", "p99 ms", "vs live", "not 200", "sessions",
        "other",
    ]  # fmt: skip
    table = [headers] + [
        [
            name,
            f"{load.requests_per_second:,.0f}",
            f"{load.median_requests_per_second:,.0f}",
            f"{load.p50_ms:.2f}",
            f"{load.p99_ms:.2f}",
            f"{load.requests_per_second / live.requests_per_second:.0%}",
            f"{load.not_200 + load.socket_errors:,}",
            str(sessions),
            f"{load.other_cpu:.0%}",
        ]
        for name, load, sessions in rows
    ]
    widths = [max(len(row[i]) for row in table) for i in range(len(headers))]
    lines = ["  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)) for row in table]
    share = pooled.requests_per_second / live.requests_per_second
    most, samples = figures[f"{base.DATABASE} sessions"]
    busiest = max(load.other_cpu for _, load, _ in rows)
    failures = sum(load.not_200 + load.socket_errors for _, load, _ in rows)
    verdict = base.verdict
    targets = [
        f"{verdict(share >= base.TARGET_VS_BASELINE)} {base.DATABASE} through PgBouncer at least "
        f"{base.TARGET_VS_BASELINE:.0%} of {base.LIVE}: {pooled.requests_per_second:,.0f} vs "
        f"{live.requests_per_second:,.0f} req/s = {share:.0%}",
        f"{verdict(most <= POOL_SIZE)} with {WORKERS} workers under load the server had at most "
        f"{most} sessions on the database ({samples} samples of pg_stat_activity; pool size "
        f"{POOL_SIZE}; {figures['clients']} clients connected to PgBouncer at the end)",
        f"{verdict(failures == 0)} every response 200, no socket errors: {failures:,}",
        f"{verdict(busiest <= base.QUIET_MACHINE_SHARE)} a quiet machine: other processes used "
        f"at most {base.QUIET_MACHINE_SHARE:.0%} of the CPUs (most: {busiest:.0%}); otherwise "
        f"rerun, the figures are not comparable",
    ]
    return "\n".join([f"Load: {generator}", "", *lines, "", "Targets:", *targets])


def run(arguments) -> int:
    """`health.py --pgbouncer`: measure, print the report; 1 if the benchmark itself failed."""
    workspace = base.Workspace(base.DEFAULT_SERVER)
    try:
        generator = base.LoadGenerator(
            base.ensure_wrk(), workspace.dir, arguments.connections, arguments.duration
        )
        description = (
            f"{generator.describe()}, each figure the best of {arguments.rounds} interleaved "
            f"rounds (median req/s beside it)"
        )
        figures = measure(workspace, generator, arguments.rounds)
    except (base.BenchError, RuntimeError) as error:
        print(f"benchmark failed: {error}", file=sys.stderr)
        return 1
    finally:
        workspace.close()
    text = report(figures, description)
    print()
    print(text)
    if arguments.markdown:
        arguments.markdown.write_text(f"```\n{text}\n```\n")
    return 0


if __name__ == "__main__":
    sys.argv.insert(1, "--pgbouncer")
    sys.exit(base.main())
