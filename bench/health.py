"""How fast the database health probe and /metrics answer, and whether their cost grows with
the data.

Issue 5 promises that `/health/database/` (the probe a load balancer polls many times a
minute) costs little more than a trivial Django view, and costs the same with a million users
as with a thousand: no probe counts a big table. Claims like that are only worth something
next to a baseline measured on the same machine in the same run, so this script:

  1. creates two PostgreSQL databases, migrates them and fills `caloria_user` with 1,000 and
     1,000,000 users in SQL (`generate_series`), then ANALYZE;
  2. serves each with gunicorn as gunicorn.conf.py configures it (2 gthread workers of 4
     threads by default), production settings and persistent connections, on loopback (and
     each once more with the 1 s result reuse off), and loads it with wrk (`-t2 -c16 -d10s`
     by default) after a short warm-up: `/health/database/` (JSON) on each server and
     `/health/live/` (a plain HttpResponse, no database; the baseline) on the 1k-user one;
     every measurement is taken once per round (`--rounds`, 5 by default), the rounds one
     after another, and each figure is that of its best round (see `summarise`), with the
     median rate beside it;
     `/metrics` (issue 18; with the bearer token) is measured on both servers too, and the
     databases also hold one run of history (backups, imports, consistency checks) per 10
     users, so that the 1M-user one has 100,000 of each;
  3. prints requests/s, p50 and p99 latency and the count of responses that were not 200,
     then the issues' targets: the probe at least 70% of the baseline's throughput, /metrics
     at least 50%, and the 1M-user figures within 20% of the 1k-user ones.

On a 2-core machine any other busy process (a test run, another benchmark) halves the figures
of whichever measurement it overlaps and makes every ratio meaningless, so each measurement
also records the CPU that processes other than its own gunicorn, PostgreSQL backends and wrk
used meanwhile (from /proc), and the report flags a run where that exceeded 10%.

Without wrk (Debian package `wrk`, installed when missing and running as root) a bounded
Python client (threads, http.client keep-alive) stands in; it is much weaker than wrk on a
small machine, and the report says so.

    .venv/bin/python bench/health.py [--duration 10] [--connections 16] [--rounds 3]
        [--markdown FILE]

The `bench_health_*` databases, the temporary folder and the gunicorn processes are removed
at the end, also on failure, Ctrl-C and SIGTERM. Traffic goes to 127.0.0.1 only.
"""

from __future__ import annotations

import argparse
import http.client
import os
import platform
import re
import secrets
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from pathlib import Path

import psycopg2

PROJECT = Path(__file__).resolve().parent.parent
PYTHON = PROJECT / ".venv/bin/python"
GUNICORN = PROJECT / ".venv/bin/gunicorn"
DEFAULT_SERVER = "postgres://postgres@127.0.0.1:5432"
DATABASE_PREFIX = "bench_health_"
HOST = "127.0.0.1"
LIVE, DATABASE, METRICS = "/health/live/", "/health/database/", "/metrics"
METRICS_TOKEN = secrets.token_urlsafe(32)  # never printed
# Headers each path is requested with (besides Accept: application/json).
PATH_HEADERS = {METRICS: {"Authorization": f"Bearer {METRICS_TOKEN}"}}
SMALL, LARGE = 1_000, 1_000_000
WORKERS = 2
WRK_THREADS = 2
WARM_UP_SECONDS = 2
START_TIMEOUT_SECONDS = 60
STOP_TIMEOUT_SECONDS = 35

# Variables that would make a child process read the developer's configuration.
PRIVATE_ENV_PREFIXES = ("CALORIA_", "DATABASE_", "DBOPS_")
PRIVATE_ENV_NAMES = ("SECRET_KEY", "DEBUG", "ALLOWED_HOSTS", "DJANGO_SETTINGS_MODULE")

TARGET_VS_BASELINE = 0.70
TARGET_METRICS_VS_BASELINE = 0.50
HISTORY_PER_USERS = 10
TARGET_SCALE_DRIFT = 0.20
QUIET_MACHINE_SHARE = 0.10
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


class BenchError(Exception):
    """A step of the benchmark itself failed; the message says which and why."""


def run_checked(cmd: list[str], env: dict[str, str], what: str) -> str:
    """Run a preparation step that must succeed; return its stdout."""
    done = subprocess.run(
        cmd, cwd=PROJECT, env=env, stdin=subprocess.DEVNULL, capture_output=True, text=True
    )
    if done.returncode != 0:
        detail = (done.stderr.strip() or done.stdout.strip())[-2000:]
        raise BenchError(f"{what} failed (exit {done.returncode}):\n{detail}")
    return done.stdout


@contextmanager
def postgres(url: str):
    """An autocommit cursor on `url` (CREATE/DROP DATABASE cannot run in a transaction)."""
    connection = psycopg2.connect(url)
    connection.autocommit = True
    try:
        yield connection.cursor()
    finally:
        connection.close()


# --------------------------------------------------------------------------- workspace


class Workspace:
    """The temporary folder and the bench databases of one run, removed in `close()`."""

    def __init__(self, server: str):
        self.server = server.rstrip("/")
        self.dir = Path(tempfile.mkdtemp(prefix=DATABASE_PREFIX))
        self.env_file = self.dir / "empty.env"
        self.env_file.touch()
        self.backup_dir = self.dir / "backups"
        self.backup_dir.mkdir()
        self.secret_key = secrets.token_urlsafe(48)  # 64 characters, never printed
        self.databases: list[str] = []

    def django_env(self, database_url: str) -> dict[str, str]:
        """Production settings on this database; nothing from the developer's configuration."""
        env = {
            name: value
            for name, value in os.environ.items()
            if not name.startswith(PRIVATE_ENV_PREFIXES) and name not in PRIVATE_ENV_NAMES
        }
        env.update(
            CALORIA_ENV="production",
            CALORIA_ENV_FILE=str(self.env_file),
            SECRET_KEY=self.secret_key,
            ALLOWED_HOSTS="127.0.0.1,localhost",
            DATABASE_URL=database_url,
            DATABASE_CONN_MAX_AGE="600",
            DBOPS_BACKUP_DIR=str(self.backup_dir),
            DBOPS_BACKUP_CHECK="false",
            METRICS_TOKEN=METRICS_TOKEN,
        )
        return env

    def url(self, database: str) -> str:
        return f"{self.server}/{database}"

    def create_database(self, users: int, suffix: str = "") -> str:
        """Create, migrate and fill a database with `users` users; return its URL."""
        name = f"{DATABASE_PREFIX}{os.getpid()}_{users}{suffix}"
        with postgres(self.url("postgres")) as cursor:
            cursor.execute(f'DROP DATABASE IF EXISTS "{name}"')
            cursor.execute(f'CREATE DATABASE "{name}"')
        self.databases.append(name)
        url = self.url(name)
        migrate = [str(PYTHON), "manage.py", "migrate", "--noinput"]
        run_checked(migrate, self.django_env(url), f"migrate {name}")
        fill_users(url, users)
        fill_history(url, users // HISTORY_PER_USERS)
        return url

    def close(self) -> None:
        for name in self.databases:
            try:
                with postgres(self.url("postgres")) as cursor:
                    cursor.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
            except psycopg2.Error as error:
                print(f"warning: could not drop database {name}: {error}", file=sys.stderr)
        shutil.rmtree(self.dir, ignore_errors=True)


FILL_USERS = """
INSERT INTO caloria_user (
    password, last_login, is_superuser, username, first_name, last_name, email,
    is_staff, is_active, date_joined, is_vip, daily_calorie_goal
)
SELECT '!', NULL, false, 'user' || i, '', '', 'user' || i || '@example.com',
       false, true, now(), false, NULL
FROM generate_series(1, %s) AS i
"""


FILL_HISTORY = """
INSERT INTO dbops_backuprecord (
    started_at, finished_at, status, host, pid, error, duration_seconds, database, engine,
    filename, size, sha256, migrations, table_counts, verification, verified_at,
    verification_detail, table_checksums, encrypted, encryption_key, remote_copy, remote_name,
    remote_copied_at, remote_detail, pinned, dumped_from
)
SELECT now() - (%(n)s - i) * interval '1 hour', now() - (%(n)s - i) * interval '1 hour',
       CASE WHEN i %% 7 = 3 THEN 'failed' ELSE 'succeeded' END, 'bench', 1, '', 5.0,
       'default', 'postgresql', 'backup-' || i || '.psql.bin.gz', 1000 + i, '', '{}', '{}',
       CASE WHEN i %% 5 = 0 THEN 'passed' ELSE '' END, now(), '', '{}', false, '',
       CASE WHEN i %% 3 = 0 THEN 'copied' ELSE '' END, '', now(), '', false, ''
FROM generate_series(1, %(n)s) AS i;
INSERT INTO dbops_importrun (
    started_at, finished_at, status, host, pid, error, database, source_path, source_sha256,
    snapshot_path, mapping, options, tables, total_rows, duration_seconds
)
SELECT now() - (%(n)s - i) * interval '1 hour', now(), 'succeeded', 'bench', 1, '',
       'default', '/tmp/x.sqlite3', '', '', '', '{}', '[]', i, 1.0
FROM generate_series(1, %(n)s) AS i;
INSERT INTO dbops_consistencyrun (
    started_at, finished_at, status, host, pid, error, database, against, findings,
    findings_total, fixed, duration_seconds
)
SELECT now() - (%(n)s - i) * interval '1 hour', now(), 'succeeded', 'bench', 1, '',
       'default', '', '{}', 0, 0, 1.0
FROM generate_series(1, %(n)s) AS i;
ANALYZE dbops_backuprecord, dbops_importrun, dbops_consistencyrun;
"""


def fill_history(url: str, runs: int) -> None:
    """`runs` recorded backups, imports and consistency checks, an hour apart."""
    with postgres(url) as cursor:
        cursor.execute(FILL_HISTORY, {"n": runs})


def fill_users(url: str, users: int) -> None:
    """Users in one statement, then fresh planner statistics (reltuples) for the table."""
    with postgres(url) as cursor:
        cursor.execute(FILL_USERS, [users])
        cursor.execute("ANALYZE caloria_user")


# --------------------------------------------------------------------------- gunicorn


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind((HOST, 0))
        return sock.getsockname()[1]


def request_headers(path: str) -> dict[str, str]:
    return {"Accept": "application/json", **PATH_HEADERS.get(path, {})}


def get(port: int, path: str, timeout: float = 5.0) -> tuple[int, bytes]:
    connection = http.client.HTTPConnection(HOST, port, timeout=timeout)
    try:
        connection.request("GET", path, headers=request_headers(path))
        response = connection.getresponse()
        return response.status, response.read()
    finally:
        connection.close()


@contextmanager
def gunicorn(workspace: Workspace, database_url: str, workers: int = WORKERS, **extra_env: str):
    """A gunicorn serving Caloria on a free loopback port; yields the port, then stops it."""
    port = free_port()
    log_path = workspace.dir / f"gunicorn-{port}.log"
    cmd = [
        str(GUNICORN),
        "caloria.wsgi:application",
        "--workers",
        str(workers),
        "--bind",
        f"{HOST}:{port}",
    ]
    with log_path.open("w") as log:
        process = subprocess.Popen(
            cmd,
            cwd=PROJECT,
            env={**workspace.django_env(database_url), **extra_env},
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=log,
        )
    try:
        wait_until_answering(process, port, log_path)
        yield port
    finally:
        stop(process)


def wait_until_answering(process: subprocess.Popen, port: int, log_path: Path) -> None:
    deadline = time.monotonic() + START_TIMEOUT_SECONDS
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise BenchError(f"gunicorn exited ({process.returncode}):\n{tail(log_path)}")
        try:
            if get(port, LIVE, timeout=1)[0] == 200:
                return
        except OSError:
            pass
        time.sleep(0.1)
    raise BenchError(f"gunicorn did not answer within {START_TIMEOUT_SECONDS} s")


def stop(process: subprocess.Popen) -> None:
    """SIGTERM (gunicorn's graceful shutdown), then SIGKILL if it takes too long."""
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(STOP_TIMEOUT_SECONDS)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def tail(path: Path, lines: int = 15) -> str:
    return "\n".join(path.read_text(errors="replace").strip().splitlines()[-lines:])


# --------------------------------------------------------------------------- load


@dataclass
class Load:
    """What one load run measured."""

    requests: int
    requests_per_second: float
    p50_ms: float
    p99_ms: float
    not_200: int
    socket_errors: int
    other_cpu: float = 0.0  # share of all CPUs used by processes not in this measurement
    median_requests_per_second: float = 0.0  # over the rounds (summarise), for the record


def ensure_wrk() -> str | None:
    """Path to wrk, installing the Debian package if missing; None if it cannot be had."""
    if shutil.which("wrk") is None and os.geteuid() == 0 and shutil.which("apt-get"):
        print("wrk is missing; apt-get install -y wrk ...", flush=True)
        for step in (["apt-get", "update"], ["apt-get", "install", "-y", "wrk"]):
            subprocess.run(step, stdin=subprocess.DEVNULL, capture_output=True, check=False)
    return shutil.which("wrk")


# Counts every status but 200 (wrk's own "Non-2xx or 3xx" line counts only >= 400).
WRK_SCRIPT = """\
wrk.headers["Accept"] = "application/json"
local threads = {}
function setup(thread) table.insert(threads, thread) end
function init(args) not_200 = 0 end
function response(status, headers, body)
  if status ~= 200 then not_200 = not_200 + 1 end
end
function done(summary, latency, requests)
  local total = 0
  for _, thread in ipairs(threads) do total = total + thread:get("not_200") end
  io.write(string.format("Not 200: %d\\n", total))
end
"""

UNITS_MS = {"us": 0.001, "ms": 1.0, "s": 1000.0, "m": 60_000.0, "h": 3_600_000.0}


def run_wrk(wrk: str, script: Path, url: str, connections: int, seconds: int) -> Load:
    cmd = [wrk, "--latency", f"-t{WRK_THREADS}", f"-c{connections}", f"-d{seconds}s"]
    cmd += ["-s", str(script), url]
    process = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        output, _ = process.communicate(timeout=seconds + 30)
    except BaseException:
        process.kill()
        process.wait()
        raise
    if process.returncode != 0:
        raise BenchError(f"wrk failed (exit {process.returncode}):\n{output[-2000:]}")
    return parse_wrk(output)


def parse_wrk(output: str) -> Load:
    def number(pattern: str) -> str:
        match = re.search(pattern, output, re.MULTILINE)
        if match is None:
            raise BenchError(f"no {pattern!r} in wrk output:\n{output}")
        return match.group(1)

    def latency(percent: str) -> float:
        value, unit = re.search(rf"^\s+{percent}%\s+([\d.]+)(\w+)", output, re.MULTILINE).groups()
        return float(value) * UNITS_MS[unit]

    socket_errors = re.search(r"Socket errors: (.*)", output)
    return Load(
        requests=int(number(r"^\s+(\d+) requests in")),
        requests_per_second=float(number(r"^Requests/sec:\s+([\d.]+)")),
        p50_ms=latency("50"),
        p99_ms=latency("99"),
        not_200=int(number(r"^Not 200: (\d+)")),
        socket_errors=sum(map(int, re.findall(r"\d+", socket_errors.group(1))))
        if socket_errors
        else 0,
    )


def run_python_client(port: int, path: str, connections: int, seconds: int) -> Load:
    """The fallback: one thread per keep-alive connection until the deadline."""
    latencies: list[float] = []
    counts = {"not_200": 0, "errors": 0}
    lock = threading.Lock()
    deadline = time.monotonic() + seconds

    def client() -> None:
        connection = http.client.HTTPConnection(HOST, port, timeout=10)
        mine, not_200, errors = [], 0, 0
        while time.monotonic() < deadline:
            started = time.perf_counter()
            try:
                connection.request("GET", path, headers=request_headers(path))
                response = connection.getresponse()
                response.read()
            except (OSError, http.client.HTTPException):
                errors += 1
                connection.close()
                continue
            mine.append((time.perf_counter() - started) * 1000)
            not_200 += response.status != 200
        connection.close()
        with lock:
            latencies.extend(mine)
            counts["not_200"] += not_200
            counts["errors"] += errors

    started = time.monotonic()
    threads = [threading.Thread(target=client, daemon=True) for _ in range(connections)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(seconds + 15)
    elapsed = time.monotonic() - started
    latencies.sort()
    if not latencies:
        raise BenchError(f"the Python client got no response from {path}")
    return Load(
        requests=len(latencies),
        requests_per_second=len(latencies) / elapsed,
        p50_ms=latencies[len(latencies) // 2],
        p99_ms=latencies[min(len(latencies) - 1, int(len(latencies) * 0.99))],
        not_200=counts["not_200"],
        socket_errors=counts["errors"],
    )


@dataclass
class LoadGenerator:
    """wrk when it can be had, else the Python client; same figures either way."""

    wrk: str | None
    scripts: Path  # a folder: one wrk script per path (its own headers)
    connections: int
    seconds: int

    def describe(self) -> str:
        settings = f"{self.connections} connections, {self.seconds} s after a warm-up"
        if self.wrk:
            version = subprocess.run([self.wrk, "--version"], capture_output=True, text=True)
            name = version.stdout.split(" [")[0].strip() or "wrk"
            return f"{name} `--latency -t{WRK_THREADS} -c{self.connections} -d{self.seconds}s`"
        return (
            f"Python client (threads + http.client keep-alive; wrk could not be installed), "
            f"{settings}: a weak generator on a small machine, so the figures understate the "
            f"server"
        )

    def script(self, path: str) -> Path:
        script = self.scripts / (re.sub(r"\W+", "_", path).strip("_") + ".lua")
        if not script.exists():
            headers = "".join(
                f'wrk.headers["{name}"] = "{value}"\n'
                for name, value in PATH_HEADERS.get(path, {}).items()
            )
            script.write_text(headers + WRK_SCRIPT)
        return script

    def measure(self, port: int, path: str, also_ours: tuple[str, ...] = ()) -> Load:
        """Load `path`; `also_ours` marks more processes of this measurement (a pooler) by a
        piece of their command line, so their CPU does not count as another process's."""
        status, body = get(port, path)
        if status != 200:
            raise BenchError(f"{path} answered {status} before the load:\n{body[:500]!r}")
        warm_up = min(WARM_UP_SECONDS, self.seconds)
        url = f"http://{HOST}:{port}{path}"
        if self.wrk:
            run_wrk(self.wrk, self.script(path), url, self.connections, warm_up)
        else:
            run_python_client(port, path, self.connections, warm_up)
        before, started = cpu_ticks_by_process(), time.monotonic()
        if self.wrk:
            load = run_wrk(self.wrk, self.script(path), url, self.connections, self.seconds)
        else:
            load = run_python_client(port, path, self.connections, self.seconds)
        ours = (f"{HOST}:{port}", f"{DATABASE_PREFIX}{os.getpid()}_", *also_ours)
        seconds = time.monotonic() - started
        load.other_cpu = other_cpu_share(before, cpu_ticks_by_process(), seconds, ours)
        return load


def cpu_ticks_by_process() -> dict[int, tuple[str, int]]:
    """Each process's command line and CPU time so far (utime + stime, in clock ticks)."""
    processes = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
            cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:  # the process ended meanwhile
            continue
        fields = stat.rsplit(")", 1)[1].split()  # after the command name, which may hold spaces
        processes[int(entry.name)] = (cmdline, int(fields[11]) + int(fields[12]))
    return processes


def other_cpu_share(before: dict, after: dict, seconds: float, ours: tuple[str, ...]) -> float:
    """Share of all CPUs used by processes other than this measurement's own.

    Ours: this script, the gunicorn whose command line names the port, and the PostgreSQL
    backends whose process title names a bench database. wrk starts and ends between the two
    snapshots, so it is never seen; neither is another process that short-lived.
    """
    used = sum(
        ticks - before[pid][1]
        for pid, (cmdline, ticks) in after.items()
        if pid in before and pid != os.getpid() and not any(mark in cmdline for mark in ours)
    )
    return used / CLOCK_TICKS / max(seconds, 0.001) / (os.cpu_count() or 1)


# --------------------------------------------------------------------------- measuring


@dataclass
class Row:
    path: str
    users: int
    load: Load


def summarise(loads: list[Load]) -> Load:
    """One figure per field from several rounds: the best round's rate and latencies (the
    highest req/s, its p50 and p99 with it), the median rate beside them, every failure
    counted, the busiest round's other CPU.

    The best round, because this machine (a VM on a shared host) has spells of 10 s and more
    in which everything, `/health/live/` included, runs at a third of its speed, with no other
    process of its own busy: the log prints every round, and one path's rounds range from
    about 950 to 3,400 req/s. Such noise only ever slows a round down, so the fastest of
    several interleaved rounds is the closest to what the endpoint itself costs; the median
    still depends on how many rounds a spell happened to hit."""
    best = max(loads, key=lambda load: load.requests_per_second)
    return Load(
        requests=sum(load.requests for load in loads),
        requests_per_second=best.requests_per_second,
        p50_ms=best.p50_ms,
        p99_ms=best.p99_ms,
        not_200=sum(load.not_200 for load in loads),
        socket_errors=sum(load.socket_errors for load in loads),
        other_cpu=max(load.other_cpu for load in loads),
        median_requests_per_second=statistics.median(load.requests_per_second for load in loads),
    )


# What is measured, in the order of each round: (path, users, with the 1 s result reuse).
# The result reuse off is for the record: every probe querying the database.
PLAN = [
    (LIVE, SMALL, True),
    (DATABASE, SMALL, True),
    (DATABASE, LARGE, True),
    (METRICS, SMALL, True),
    (METRICS, LARGE, True),
    (DATABASE, SMALL, False),
    (DATABASE, LARGE, False),
    (METRICS, SMALL, False),
    (METRICS, LARGE, False),
]


def measure_all(workspace: Workspace, generator: LoadGenerator, rounds: int) -> list[Row]:
    """Every measurement of PLAN once per round, the rounds one after another, so that a
    spell of noise on the machine falls on the 1,000- and the 1,000,000-user figures alike
    instead of on whichever was measured then; each row is its best round (summarise)."""
    urls = {}
    for users in (SMALL, LARGE):
        print(f"database with {users:,} users: create, migrate, fill ...", flush=True)
        started = time.perf_counter()
        urls[users] = workspace.create_database(users)
        print(f"  ready in {time.perf_counter() - started:.1f} s", flush=True)
    loads: dict[tuple[str, int, bool], list[Load]] = {step: [] for step in PLAN}
    with ExitStack() as servers:
        ports = {
            (users, reuse): servers.enter_context(
                gunicorn(
                    workspace, urls[users], **({} if reuse else {"DBOPS_HEALTH_CACHE_SECONDS": "0"})
                )
            )
            for users in (SMALL, LARGE)
            for reuse in (True, False)
        }
        print("warm-up: fresh workers, imports, connections ...", flush=True)
        for path, users, reuse in PLAN:
            generator.measure(ports[users, reuse], path)
        for round_number in range(1, rounds + 1):
            for path, users, reuse in PLAN:
                label = path if reuse else f"{path} with the result reuse off"
                load = generator.measure(ports[users, reuse], path)
                loads[path, users, reuse].append(load)
                print(
                    f"  round {round_number}/{rounds}: {label}, {users:,} users: "
                    f"{load.requests_per_second:,.0f} req/s, p50 {load.p50_ms:.2f} ms",
                    flush=True,
                )
    rows = [
        Row(path if reuse else f"{path} (no reuse)", users, summarise(loads[path, users, reuse]))
        for path, users, reuse in PLAN
    ]
    return sorted(rows, key=lambda row: (row.path != LIVE, row.users, row.path))


# --------------------------------------------------------------------------- reporting

HEADERS = [
    "endpoint",
    "users",
    "req/s",
    "median req/s",
    "p50 ms",
    "p99 ms",
    "vs live",
    "not 200",
    "sock err",
    "other CPU",
]


def table_rows(rows: list[Row]) -> list[list[str]]:
    baseline = find(rows, LIVE, SMALL).load.requests_per_second
    return [
        [
            row.path,
            f"{row.users:,}",
            f"{row.load.requests_per_second:,.0f}",
            f"{row.load.median_requests_per_second:,.0f}",
            f"{row.load.p50_ms:.2f}",
            f"{row.load.p99_ms:.2f}",
            f"{row.load.requests_per_second / baseline:.0%}",
            f"{row.load.not_200:,}",
            f"{row.load.socket_errors:,}",
            f"{row.load.other_cpu:.0%}",
        ]
        for row in rows
    ]


def find(rows: list[Row], path: str, users: int) -> Row:
    return next(row for row in rows if row.path == path and row.users == users)


def text_table(rows: list[list[str]]) -> str:
    widths = [max(len(row[i]) for row in [HEADERS, *rows]) for i in range(len(HEADERS))]
    lines = [HEADERS, ["-" * width for width in widths], *rows]
    return "\n".join(
        "  ".join(cell.ljust(width) for cell, width in zip(line, widths, strict=True)).rstrip()
        for line in lines
    )


def markdown_table(rows: list[list[str]]) -> str:
    def line(cells):
        return "| " + " | ".join(cells) + " |"

    return "\n".join([line(HEADERS), "|" + "---|" * len(HEADERS), *map(line, rows)])


def verdict(passed: bool) -> str:
    return "PASS" if passed else "FAIL"


def targets(rows: list[Row]) -> list[str]:
    """The issue's targets, each with the figures behind its verdict."""
    live = find(rows, LIVE, SMALL).load
    small = find(rows, DATABASE, SMALL).load
    large = find(rows, DATABASE, LARGE).load
    share = small.requests_per_second / live.requests_per_second
    rate_drift = large.requests_per_second / small.requests_per_second - 1
    p50_drift = large.p50_ms / small.p50_ms - 1
    lines = [
        f"{verdict(share >= TARGET_VS_BASELINE)} {DATABASE} at least "
        f"{TARGET_VS_BASELINE:.0%} of {LIVE}'s throughput ({SMALL:,} users): "
        f"{small.requests_per_second:,.0f} vs {live.requests_per_second:,.0f} req/s = {share:.0%}",
        f"{verdict(abs(rate_drift) <= TARGET_SCALE_DRIFT)} {DATABASE} req/s with {LARGE:,} "
        f"users within {TARGET_SCALE_DRIFT:.0%} of {SMALL:,}: "
        f"{large.requests_per_second:,.0f} vs {small.requests_per_second:,.0f} ({rate_drift:+.1%})",
        f"{verdict(abs(p50_drift) <= TARGET_SCALE_DRIFT)} {DATABASE} p50 with {LARGE:,} "
        f"users within {TARGET_SCALE_DRIFT:.0%} of {SMALL:,}: "
        f"{large.p50_ms:.2f} vs {small.p50_ms:.2f} ms ({p50_drift:+.1%})",
    ]
    lines += metrics_targets(rows, live)
    failures = sum(row.load.not_200 + row.load.socket_errors for row in rows)
    lines.append(f"{verdict(failures == 0)} every response 200, no socket errors: {failures:,}")
    busiest = max(rows, key=lambda row: row.load.other_cpu)
    lines.append(
        f"{verdict(busiest.load.other_cpu <= QUIET_MACHINE_SHARE)} a quiet machine: other "
        f"processes used at most {QUIET_MACHINE_SHARE:.0%} of the CPUs during each measurement "
        f"(most: {busiest.load.other_cpu:.0%}, {busiest.path} {busiest.users:,} users); "
        f"otherwise rerun, the figures above are not comparable"
    )
    return lines


def metrics_targets(rows: list[Row], live: Load) -> list[str]:
    small = find(rows, METRICS, SMALL).load
    large = find(rows, METRICS, LARGE).load
    share = small.requests_per_second / live.requests_per_second
    rate_drift = large.requests_per_second / small.requests_per_second - 1
    p50_drift = large.p50_ms / small.p50_ms - 1
    return [
        f"{verdict(share >= TARGET_METRICS_VS_BASELINE)} {METRICS} at least "
        f"{TARGET_METRICS_VS_BASELINE:.0%} of {LIVE}'s throughput ({SMALL:,} users): "
        f"{small.requests_per_second:,.0f} vs {live.requests_per_second:,.0f} req/s = {share:.0%}",
        f"{verdict(abs(rate_drift) <= TARGET_SCALE_DRIFT)} {METRICS} req/s with {LARGE:,} "
        f"users and {LARGE // HISTORY_PER_USERS:,} runs of history within "
        f"{TARGET_SCALE_DRIFT:.0%} of {SMALL:,}: "
        f"{large.requests_per_second:,.0f} vs {small.requests_per_second:,.0f} ({rate_drift:+.1%})",
        f"{verdict(abs(p50_drift) <= TARGET_SCALE_DRIFT)} {METRICS} p50 with {LARGE:,} "
        f"users within {TARGET_SCALE_DRIFT:.0%} of {SMALL:,}: "
        f"{large.p50_ms:.2f} vs {small.p50_ms:.2f} ms ({p50_drift:+.1%})",
    ]


def machine_description() -> str:
    with postgres(f"{DEFAULT_SERVER}/postgres") as cursor:
        cursor.execute("SHOW server_version")
        version = cursor.fetchone()[0]
    gunicorn_version = run_checked([str(GUNICORN), "--version"], dict(os.environ), "gunicorn")
    gunicorn_version = re.sub(r"[^\d.]", "", gunicorn_version)
    return (
        f"{os.cpu_count()} CPUs, Python {platform.python_version()}, "
        f"gunicorn {gunicorn_version} ({WORKERS} gthread workers x "
        f"{os.environ.get('GUNICORN_THREADS', '4')} threads, CONN_MAX_AGE 600), "
        f"PostgreSQL {version} on {DEFAULT_SERVER.split('@')[-1]}; server, database and "
        f"load generator share the machine"
    )


def text_report(rows: list[Row], generator: str) -> str:
    lines = [f"Load: {generator}", "", text_table(table_rows(rows)), "", "Targets:"]
    return "\n".join([*lines, *targets(rows)])


def markdown_report(rows: list[Row], machine: str, generator: str) -> str:
    command = " ".join(["`.venv/bin/python bench/health.py", *sys.argv[1:]]) + "`"
    return (
        "\n".join(
            [
                f"## Health endpoints ({time.strftime('%Y-%m-%d')})",
                "",
                command,
                "",
                f"Machine: {machine}. Load: {generator}, `Accept: application/json`.",
                "",
                markdown_table(table_rows(rows)),
                "",
                "Targets:",
                "",
                *[f"- {line}" for line in targets(rows)],
            ]
        )
        + "\n"
    )


# --------------------------------------------------------------------------- main


def parse_arguments() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--duration", type=int, default=10, help="seconds per measurement")
    parser.add_argument("--connections", type=int, default=16, help="concurrent connections")
    parser.add_argument("--markdown", type=Path, help="also write the Markdown report here")
    parser.add_argument(
        "--rounds",
        type=int,
        default=5,
        help="rounds of every measurement (the best reported, the median beside it)",
    )
    parser.add_argument(
        "--pgbouncer",
        action="store_true",
        help="measure /health/database/ through PgBouncer in transaction mode instead "
        "(bench/health_pgbouncer.py: 8 workers, the server's sessions sampled)",
    )
    arguments = parser.parse_args()
    if not 1 <= arguments.duration <= 300 or not 1 <= arguments.connections <= 256:
        parser.error("--duration must be 1-300 seconds and --connections 1-256")
    if not 1 <= arguments.rounds <= 20:
        parser.error("--rounds must be 1-20")
    return arguments


def main() -> int:
    arguments = parse_arguments()
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    if arguments.pgbouncer:
        import health_pgbouncer

        return health_pgbouncer.run(arguments)
    workspace = Workspace(DEFAULT_SERVER)
    try:
        generator = LoadGenerator(
            ensure_wrk(), workspace.dir, arguments.connections, arguments.duration
        )
        if generator.wrk is None:
            print("wrk cannot be had; falling back to the Python client", flush=True)
        description = (
            f"{generator.describe()}, each figure the best of {arguments.rounds} interleaved "
            f"rounds (median req/s beside it)"
        )
        rows = measure_all(workspace, generator, arguments.rounds)
    except BenchError as error:
        print(f"benchmark failed: {error}", file=sys.stderr)
        return 1
    finally:
        workspace.close()
    print()
    print(text_report(rows, description))
    markdown = markdown_report(rows, machine_description(), description)
    print("\n--- Markdown (for docs/benchmarks.md) ---\n")
    print(markdown, end="")
    if arguments.markdown:
        arguments.markdown.write_text(markdown)
    return 0


if __name__ == "__main__":
    sys.exit(main())
