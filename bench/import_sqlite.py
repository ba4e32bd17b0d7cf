"""How fast, and in how much memory, `import_sqlite` moves a SQLite database into PostgreSQL.

Issue 3 promises that `import_sqlite` copies a development SQLite database into PostgreSQL at
close to COPY speed, faster than pgloader, far faster than `dumpdata` + `loaddata`, and in
bounded memory. Claims like that are only worth something next to a baseline measured on the
same machine in the same run, so this script measures, each into its own freshly migrated
PostgreSQL database:

  (a) the ceiling: the rows pre-exported to CSV (timed apart) and loaded with `psql \\copy` in
      one transaction, sequences set by hand;
  (b) `manage.py import_sqlite SOURCE --noinput`, its own verification included (skipped
      when the command does not exist yet);
  (c) pgloader, data only, into the Django schema (when the Debian package installs);
  (d) `dumpdata` + `loaddata` on a tenth of the data, its time scaled by ten;
  (e) the physical reference: the same rows restored by `pg_restore -j 2` from a
      directory-format dump into an empty database (tables, COPY, indexes and constraints in
      parallel, nothing checked): what PostgreSQL itself needs to load them;
  (f) with `--baseline TREE`, `import_sqlite` of another checkout of this project (a git
      worktree of an earlier commit), so a change is measured against the code before it;

and prints wall time, rows/s, peak memory (the largest resident set of the child process
tree, from os.wait4, the call GNU time uses; the PostgreSQL server's own memory is not
counted for any method) and the ratio to the ceiling, then the issue's targets. After each
load it checks the target independently (row counts, sequences, foreign keys, a sample of
values), because a fast copy that loses data is not a result.

(a), (b), (c), (e) and (f) take about as long as each other, so one slow moment of the
machine could decide which is faster: they run in `--rounds` interleaved rounds (default 3)
and the median run of each counts. Before every measured run the server is settled: every
bench database is vacuumed, no autovacuum worker runs and a CHECKPOINT has written the dirty
buffers (when the role may: superuser or pg_checkpoint), so no method pays for cleaning up
after another.

The source is generated through this project's migrations, then filled with the stdlib
`sqlite3` module, deterministically. `--scale-check` also imports a database with five times
the food entries (users and weights unchanged) to show whether peak memory stays flat.

    .venv/bin/python bench/import_sqlite.py [--food-entries 1000000] [--users 20000]
        [--weights 200000] [--rounds 3] [--scale-check] [--baseline TREE] [--no-dumpdata]
        [--markdown FILE]

Temporary files and the `bench_import_*` databases are removed at the end, also on failure.
"""

from __future__ import annotations

import argparse
import csv
import os
import platform
import random
import shutil
import signal
import sqlite3
import string
import subprocess
import sys
import tempfile
import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from decimal import Decimal
from pathlib import Path

import psycopg2
import psycopg2.errors

PROJECT = Path(__file__).resolve().parent.parent
GNU_TIME = "/usr/bin/time"  # Debian package "time"; installed by ensure_debian_package()
DEFAULT_SERVER = "postgres://postgres@127.0.0.1:5432"
DATABASE_PREFIX = "bench_import_"
DATA_TABLES = ("caloria_user", "caloria_foodentry", "caloria_weightentry")
SEED = 20261124
DUMPDATA_FRACTION = 10
SCALE_CHECK_FACTOR = 5
SAMPLE_ROWS_PER_TABLE = 500
SETTLE_TIMEOUT_SECONDS = 120

# Variables that would make a child process read the developer's configuration.
PRIVATE_ENV_PREFIXES = ("CALORIA_", "DATABASE_", "DBOPS_")
PRIVATE_ENV_NAMES = ("SECRET_KEY", "DEBUG", "ALLOWED_HOSTS", "DJANGO_SETTINGS_MODULE")

TARGET_CEILING_RATIO = 2.0
TARGET_DUMPDATA_RATIO = 50.0
TARGET_PEAK_MIB = 200.0
TARGET_FLATNESS = 0.10
TARGET_BASELINE_RATIO = 1.2  # a change may cost at most this against the code before it
GOAL_PG_RESTORE_RATIO = 1.5  # the long-term goal against pg_restore -j 2
RESTORE_JOBS = 2


class BenchError(Exception):
    """A step of the benchmark itself failed; the message says which and why."""


# --------------------------------------------------------------------------- child processes


@dataclass
class Run:
    """What one measured child process did."""

    seconds: float
    peak_kib: int
    returncode: int
    stdout: str
    stderr: str

    def tail(self, lines: int = 15) -> str:
        text = (self.stderr.strip() or self.stdout.strip()).splitlines()
        return "\n".join(text[-lines:])


def run_measured(cmd: list[str], env: dict[str, str], workdir: Path) -> Run:
    """Run a command and return its wall time and peak RSS (largest process in its tree).

    The peak comes from GNU time (`/usr/bin/time -f %M`), which forks from a tiny process:
    os.wait4 on a child forked from this (large) Python would report this process's size,
    because a forked child's high-water mark starts at its parent's. Output goes to files so
    no pipe can fill up and stall the child.
    """
    out_path, err_path = workdir / "child.out", workdir / "child.err"
    peak_path = workdir / "child.maxrss"
    timed = [GNU_TIME, "-f", "%M", "-o", str(peak_path), *cmd]
    with out_path.open("w") as out, err_path.open("w") as err:
        started = time.perf_counter()
        proc = subprocess.Popen(
            timed, cwd=PROJECT, env=env, stdin=subprocess.DEVNULL, stdout=out, stderr=err
        )
        try:
            proc.wait()
        except BaseException:
            proc.kill()
            proc.wait()
            raise
        seconds = time.perf_counter() - started
    peak_lines = peak_path.read_text().split() if peak_path.exists() else []
    return Run(
        seconds=seconds,
        peak_kib=int(peak_lines[-1]) if peak_lines and peak_lines[-1].isdigit() else 0,
        returncode=proc.returncode,
        stdout=out_path.read_text(errors="replace"),
        stderr=err_path.read_text(errors="replace"),
    )


def run_checked(cmd: list[str], env: dict[str, str], what: str) -> str:
    """Run a preparation step that must succeed; return its stdout."""
    done = subprocess.run(
        cmd, cwd=PROJECT, env=env, stdin=subprocess.DEVNULL, capture_output=True, text=True
    )
    if done.returncode != 0:
        detail = (done.stderr.strip() or done.stdout.strip())[-2000:]
        raise BenchError(f"{what} failed (exit {done.returncode}):\n{detail}")
    return done.stdout


def manage(*args: str, tree: Path = PROJECT) -> list[str]:
    return [sys.executable, str(tree / "manage.py"), *args]


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
        self.databases: list[str] = []

    def django_env(self, database_url: str) -> dict[str, str]:
        """Environment for manage.py: development settings, this database, no developer .env."""
        env = {
            name: value
            for name, value in os.environ.items()
            if not name.startswith(PRIVATE_ENV_PREFIXES) and name not in PRIVATE_ENV_NAMES
        }
        env.update(
            CALORIA_ENV="development",
            CALORIA_ENV_FILE=str(self.env_file),
            DATABASE_URL=database_url,
            DBOPS_BACKUP_DIR=str(self.backup_dir),
        )
        return env

    def url(self, database: str) -> str:
        return f"{self.server}/{database}"

    def create_database(self, label: str) -> str:
        """Create and migrate an empty database; return its URL."""
        name = f"{DATABASE_PREFIX}{os.getpid()}_{label}"
        with postgres(self.url("postgres")) as cursor:
            cursor.execute(f'DROP DATABASE IF EXISTS "{name}"')
            cursor.execute(f'CREATE DATABASE "{name}"')
        if name not in self.databases:
            self.databases.append(name)
        url = self.url(name)
        run_checked(manage("migrate", "--noinput"), self.django_env(url), f"migrate {name}")
        return url

    def settle(self) -> None:
        """Vacuum every bench database, wait until no autovacuum worker runs, checkpoint.

        A load of 1.2M rows makes autovacuum visit that database soon after, and leaves
        hundreds of MiB of dirty buffers and WAL behind; unchecked, the next method's
        measurement would pay for the vacuum and the checkpoint of the one before.
        """
        started = time.perf_counter()
        for name in self.databases:
            with postgres(self.url(name)) as cursor:
                cursor.execute("VACUUM (ANALYZE)")
        deadline = time.monotonic() + SETTLE_TIMEOUT_SECONDS
        with postgres(self.url("postgres")) as cursor:
            while time.monotonic() < deadline:
                cursor.execute(
                    "SELECT count(*) FROM pg_stat_activity WHERE backend_type = 'autovacuum worker'"
                )
                if cursor.fetchone()[0] == 0:
                    break
                time.sleep(0.5)
            try:
                cursor.execute("CHECKPOINT")
            except psycopg2.errors.InsufficientPrivilege:
                print("  (no CHECKPOINT: it needs a superuser or pg_checkpoint)", flush=True)
        print(f"  (server settled in {time.perf_counter() - started:.1f} s)", flush=True)

    def close(self) -> None:
        for name in self.databases:
            try:
                with postgres(self.url("postgres")) as cursor:
                    cursor.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
            except psycopg2.Error as error:
                print(f"warning: could not drop database {name}: {error}", file=sys.stderr)
        shutil.rmtree(self.dir, ignore_errors=True)


@contextmanager
def postgres(url: str):
    """An autocommit cursor on `url` (CREATE/DROP DATABASE cannot run in a transaction)."""
    connection = psycopg2.connect(url)
    connection.autocommit = True
    try:
        yield connection.cursor()
    finally:
        connection.close()


# --------------------------------------------------------------------------- the source


@dataclass(frozen=True)
class Sizes:
    users: int
    food_entries: int
    weights: int

    @property
    def total(self) -> int:
        return self.users + self.food_entries + self.weights

    def divided(self, by: int) -> Sizes:
        return Sizes(max(1, self.users // by), max(1, self.food_entries // by), self.weights // by)

    def label(self) -> str:
        return (
            f"{self.users:,} users, {self.food_entries:,} food entries, "
            f"{self.weights:,} weight entries"
        )


EPOCH = datetime(2024, 1, 1)
SPAN_MICROSECONDS = 2 * 365 * 24 * 3600 * 10**6
FIRST_DAY = date(2024, 1, 1)
FIRST_NAMES = ("Ana", "Björn", "Chloé", "Dmitri", "Emeka", "Fatima", "Giulia", "Hiro", "Inés")
LAST_NAMES = ("Nakamura", "Okafor", "Müller", "García", "Smith", "Kowalska", "Dubois", "")
FOODS = (
    "Oatmeal with berries",
    "Café con leche ☕",
    "Brezel mit Butter",
    "Chicken salad",
    "Lentil soup",
    "Salmon with rice",
    "Spaghetti bolognese",
    "Greek yoghurt",
    "Handful of almonds",
)
MEALS = ("breakfast", "lunch", "dinner", "snack", "")


def timestamp(rng: random.Random) -> str:
    """A UTC datetime as Django stores it in SQLite (always with microseconds here)."""
    moment = EPOCH + timedelta(microseconds=rng.randrange(SPAN_MICROSECONDS))
    return moment.isoformat(" ", "microseconds")


def decimal_text(rng: random.Random, low_cents: int, high_cents: int) -> str:
    cents = rng.randint(low_cents, high_cents)
    return f"{cents // 100}.{cents % 100:02d}"


def user_rows(rng: random.Random, count: int):
    alphabet = string.ascii_letters + string.digits
    for pk in range(1, count + 1):
        yield (
            pk,
            "!" + "".join(rng.choices(alphabet, k=40)),
            timestamp(rng) if rng.random() < 0.7 else None,
            0,
            f"user{pk:07d}",
            rng.choice(FIRST_NAMES),
            rng.choice(LAST_NAMES),
            f"user{pk:07d}@example.com",
            int(rng.random() < 0.01),
            int(rng.random() < 0.97),
            timestamp(rng),
            int(rng.random() < 0.1),
            rng.randint(1500, 3000) if rng.random() < 0.6 else None,
        )


USER_COLUMNS = (
    "id, password, last_login, is_superuser, username, first_name, last_name, email, "
    "is_staff, is_active, date_joined, is_vip, daily_calorie_goal"
)


def food_rows(rng: random.Random, count: int, users: int):
    def grams():
        return decimal_text(rng, 0, 20_000) if rng.random() < 0.8 else None

    for pk in range(1, count + 1):
        yield (
            pk,
            rng.randint(1, users),
            timestamp(rng),
            rng.choice(FOODS),
            rng.randint(0, 5000),
            grams(),
            grams(),
            grams(),
            rng.choice(MEALS),
            "",
            timestamp(rng),
        )


FOOD_COLUMNS = "id, user_id, eaten_at, name, calories, protein, carbs, fat, meal, notes, created_at"


def weight_rows(rng: random.Random, count: int, users: int):
    """One weight per user and day: entry i belongs to user i % users on day i // users."""
    for index in range(count):
        day = FIRST_DAY + timedelta(days=index // users)
        yield (index + 1, index % users + 1, day.isoformat(), decimal_text(rng, 4500, 14999))


WEIGHT_COLUMNS = "id, user_id, measured_on, weight_kg"


def generate_source(workspace: Workspace, path: Path, sizes: Sizes) -> float:
    """Create a SQLite database through the migrations and fill it; return seconds taken."""
    started = time.perf_counter()
    run_checked(
        manage("migrate", "--noinput"),
        workspace.django_env(f"sqlite:///{path.resolve()}"),
        f"migrate {path.name}",
    )
    rng = random.Random(SEED)
    connection = sqlite3.connect(path, isolation_level=None)
    try:
        connection.execute("PRAGMA synchronous = OFF")
        connection.execute("PRAGMA journal_mode = MEMORY")
        connection.execute("PRAGMA cache_size = -262144")  # 256 MiB: indexes stay in memory
        tables = (
            ("caloria_user", USER_COLUMNS, user_rows(rng, sizes.users)),
            ("caloria_foodentry", FOOD_COLUMNS, food_rows(rng, sizes.food_entries, sizes.users)),
            ("caloria_weightentry", WEIGHT_COLUMNS, weight_rows(rng, sizes.weights, sizes.users)),
        )
        for table, columns, rows in tables:
            placeholders = ", ".join("?" * len(columns.split(",")))
            connection.execute("BEGIN")
            connection.executemany(f"INSERT INTO {table} ({columns}) VALUES ({placeholders})", rows)
            connection.execute("COMMIT")
        problems = connection.execute("PRAGMA foreign_key_check").fetchall()
        if problems:
            raise BenchError(f"generated source has broken foreign keys: {problems[:5]}")
    finally:
        connection.close()
    return time.perf_counter() - started


@dataclass(frozen=True)
class Table:
    """A source table's columns and their Django SQLite types, read from the file itself."""

    name: str
    columns: tuple[str, ...]
    types: tuple[str, ...]


@contextmanager
def sqlite_readonly(path: Path):
    connection = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    try:
        yield connection
    finally:
        connection.close()


def read_tables(path: Path) -> list[Table]:
    tables = []
    with sqlite_readonly(path) as connection:
        for name in DATA_TABLES:
            info = connection.execute(f"PRAGMA table_info({name})").fetchall()
            columns, types = tuple(row[1] for row in info), tuple(row[2].lower() for row in info)
            tables.append(Table(name, columns, types))
    return tables


def count_source_rows(path: Path) -> dict[str, int]:
    with sqlite_readonly(path) as connection:
        return {
            t: connection.execute(f"SELECT count(*) FROM {t}").fetchone()[0] for t in DATA_TABLES
        }


# --------------------------------------------------------------------------- checking a target


def foreign_keys(url: str) -> set[str]:
    """Validated foreign keys in the database, to notice a tool that drops some."""
    with postgres(url) as cursor:
        cursor.execute(
            "SELECT conrelid::regclass || '.' || conname FROM pg_constraint "
            "WHERE contype = 'f' AND convalidated"
        )
        return {name for (name,) in cursor.fetchall()}


def sample_step(rows: int) -> int:
    return max(1, rows // SAMPLE_ROWS_PER_TABLE)


def normalise(kind: str, value):
    """One comparable form for a value read from either side."""
    if value is None:
        return None
    if kind == "bool":
        return bool(value)
    if kind == "decimal":
        return Decimal(str(value))
    if kind == "datetime" and "." not in value:
        return value + ".000000"
    return value


def sqlite_sample(source: Path, table: Table, step: int) -> list[tuple]:
    columns = ", ".join(table.columns)
    with sqlite_readonly(source) as connection:
        rows = connection.execute(
            f"SELECT {columns} FROM {table.name} WHERE id % ? = 0 ORDER BY id", (step,)
        ).fetchall()
    return [tuple(map(normalise, table.types, row)) for row in rows]


def postgres_select(column: str, kind: str) -> str:
    if kind == "datetime":
        return f"to_char({column} AT TIME ZONE 'UTC', 'YYYY-MM-DD HH24:MI:SS.US')"
    if kind in ("date", "decimal"):
        return f"{column}::text"
    return column


def postgres_sample(cursor, table: Table, step: int) -> list[tuple]:
    select = ", ".join(map(postgres_select, table.columns, table.types))
    cursor.execute(f"SELECT {select} FROM {table.name} WHERE id %% %s = 0 ORDER BY id", (step,))
    return [tuple(map(normalise, table.types, row)) for row in cursor.fetchall()]


def check_target(source: Path, url: str, foreign_keys_before: set[str]) -> list[str]:
    """What is wrong with a loaded target: row counts, sequences, foreign keys, sampled values.

    Done by the benchmark itself, the same way for every method, because a fast copy that
    loses data or leaves the database unusable is not a result.
    """
    expected = count_source_rows(source)
    problems = []
    with postgres(url) as cursor:
        for table in read_tables(source):
            cursor.execute(f"SELECT count(*), coalesce(max(id), 0) FROM {table.name}")
            count, max_id = cursor.fetchone()
            if count != expected[table.name]:
                problems.append(f"{table.name} has {count:,} of {expected[table.name]:,} rows")
            problems += sequence_problems(cursor, table.name, max_id)
            problems += sample_problems(source, cursor, table, sample_step(expected[table.name]))
    missing = sorted(foreign_keys_before - foreign_keys(url))
    if missing:
        problems.append(
            f"{len(missing)} of {len(foreign_keys_before)} foreign keys gone: {', '.join(missing)}"
        )
    return problems


def sequence_problems(cursor, table: str, max_id: int) -> list[str]:
    """The next id the table's sequence hands out must be past the largest id."""
    cursor.execute("SELECT pg_get_serial_sequence(%s, 'id')", (table,))
    cursor.execute(f"SELECT last_value, is_called FROM {cursor.fetchone()[0]}")
    last_value, is_called = cursor.fetchone()
    next_value = last_value + 1 if is_called else last_value
    if next_value <= max_id:
        return [f"{table} sequence behind (next id {next_value:,}, largest {max_id:,})"]
    return []


def sample_problems(source: Path, cursor, table: Table, step: int) -> list[str]:
    """Every `step`-th row by id must hold the same values on both sides."""
    expected = {row[0]: row for row in sqlite_sample(source, table, step)}
    found = {row[0]: row for row in postgres_sample(cursor, table, step)}
    differing = sorted(
        pk for pk in expected.keys() | found.keys() if expected.get(pk) != found.get(pk)
    )
    if not differing:
        return []
    pk = differing[0]
    return [
        f"{table.name}: {len(differing)} of {len(expected)} sampled rows differ, e.g. id {pk} "
        f"{describe_difference(table, expected.get(pk), found.get(pk))}"
    ]


def describe_difference(table: Table, source_row: tuple | None, target_row: tuple | None) -> str:
    if source_row is None:
        return "is not in the source"
    if target_row is None:
        return "is missing"
    for column, a, b in zip(table.columns, source_row, target_row, strict=True):
        if a != b:
            return f"{column}: {a!s} became {b!s}"
    return ""


# --------------------------------------------------------------------------- the methods


@dataclass
class Result:
    """One method's line in the report, and what its checks found.

    `scale` > 1 means the rows and seconds were measured on 1/scale of the data; the report
    multiplies both (rows/s and memory stay as measured).
    """

    method: str
    rows: int
    seconds: float | None = None
    peak_kib: int | None = None
    status: str = ""
    problems: list[str] = field(default_factory=list)
    log: str = ""
    scale: int = 1
    detail: bool = False  # shown for information, not compared with the ceiling

    @property
    def measured(self) -> bool:
        return self.seconds is not None

    @property
    def scaled_seconds(self) -> float | None:
        return None if self.seconds is None else self.seconds * self.scale

    @property
    def rows_per_second(self) -> float | None:
        return self.rows / self.seconds if self.seconds else None

    @property
    def peak_mib(self) -> float | None:
        return None if self.peak_kib is None else self.peak_kib / 1024


def not_measured(method: str, rows: int, why: str, log: str = "") -> Result:
    return Result(method, rows, status=why, log=log)


def measured(method: str, rows: int, run: Run, problems: list[str] | None, **extra) -> Result:
    """A finished run; `problems` None means the target was not checked after this step.

    A failed run keeps no time: a quick failure is no speed.
    """
    if run.returncode != 0:
        status = f"FAILED (exit {run.returncode})"
        return Result(method, rows, status=status, problems=problems or [], log=run.tail(), **extra)
    status = "exit 0"
    if problems is not None:
        status += ", checks passed" if not problems else f", {len(problems)} check(s) failed"
    return Result(method, rows, run.seconds, run.peak_kib, status, problems or [], **extra)


def export_csv(source: Path, folder: Path) -> dict[str, Path]:
    """Write each data table as PostgreSQL CSV: booleans t/f, datetimes marked UTC, NULL as \\N.

    NULL gets its own marker because an unquoted empty field would otherwise be read as NULL
    and `notes = ''` would violate NOT NULL.
    """
    files = {}
    with sqlite_readonly(source) as connection:
        for table in read_tables(source):
            converters = [column_converter(kind) for kind in table.types]
            path = folder / f"{table.name}.csv"
            with path.open("w", newline="", encoding="utf-8") as handle:
                writer = csv.writer(handle)
                rows = connection.execute(f"SELECT {', '.join(table.columns)} FROM {table.name}")
                writer.writerows(
                    [convert(value) for convert, value in zip(converters, row, strict=True)]
                    for row in rows
                )
            files[table.name] = path
    return files


def column_converter(kind: str):
    def convert(value):
        if value is None:
            return r"\N"
        if kind == "bool":
            return "t" if value else "f"
        if kind == "datetime":
            return f"{value}+00"
        return value

    return convert


def ceiling_commands(source: Path, files: dict[str, Path]) -> list[str]:
    """psql -c arguments: one \\copy per table, then each sequence set past the largest id."""
    commands = []
    for table in read_tables(source):
        columns = ", ".join(table.columns)
        path = files[table.name]
        commands += ["-c", rf"\copy {table.name} ({columns}) from '{path}' csv null '\N'"]
    for table in DATA_TABLES:
        commands += [
            "-c",
            f"SELECT setval(pg_get_serial_sequence('{table}', 'id'), "
            f"coalesce(max(id), 1), max(id) IS NOT NULL) FROM {table}",
        ]
    return commands


def export_ceiling_csv(source: Path, folder: Path, rows: int) -> tuple[Result, dict[str, Path]]:
    """The CSV files the ceiling loads, made once (their export is reported, not timed in)."""
    started = time.perf_counter()
    files = export_csv(source, folder)
    export = Result(
        "step: CSV export from SQLite (not in the ceiling)",
        rows,
        time.perf_counter() - started,
        status="python csv, in this process",
        detail=True,
    )
    return export, files


def measure_ceiling(
    workspace: Workspace, source: Path, files: dict[str, Path], rows: int
) -> Result:
    """(a) one psql session and transaction of \\copy from the exported CSV files."""
    url = workspace.create_database("ceiling")
    keys_before = foreign_keys(url)
    psql = ["psql", "-X", "-q", "-v", "ON_ERROR_STOP=1", "--single-transaction", "-d", url]
    run = run_measured([*psql, *ceiling_commands(source, files)], os.environ.copy(), workspace.dir)
    if run.returncode != 0:
        raise BenchError(f"the ceiling load failed:\n{run.tail()}")
    problems = check_target(source, url, keys_before)
    return measured("ceiling: psql \\copy of CSV", rows, run, problems)


def median_of(results: list[Result]) -> Result:
    """The run with the median time, its status listing every run's time; a failure wins."""
    failed = [result for result in results if not result.measured]
    if failed or len(results) == 1:
        return (failed or results)[0]
    middle = sorted(results, key=lambda result: result.seconds)[len(results) // 2]
    times = ", ".join(f"{result.seconds:.1f}" for result in results)
    middle.status += f"; median of {len(results)} runs: {times} s"
    return middle


def import_sqlite_available(workspace: Workspace, source: Path) -> bool:
    commands = run_checked(
        manage("help", "--commands"),
        workspace.django_env(f"sqlite:///{source.resolve()}"),
        "manage.py help --commands",
    )
    return "import_sqlite" in commands.split()


def measure_import_sqlite(
    workspace: Workspace,
    source: Path,
    rows: int,
    method: str = "import_sqlite",
    tree: Path = PROJECT,
) -> Result:
    """(b) the command under test, its own verification included; (f) from another tree."""
    label = "baseline" if tree != PROJECT else "import"
    url = workspace.create_database(f"{label}_{rows}")
    keys_before = foreign_keys(url)
    run = run_measured(
        manage("import_sqlite", str(source), "--noinput", tree=tree),
        workspace.django_env(url),
        workspace.dir,
    )
    if "Unknown command" in run.stderr:
        return not_measured(method, rows, "not available (Unknown command)")
    problems = check_target(source, url, keys_before) if run.returncode == 0 else None
    return measured(method, rows, run, problems)


def dump_reference(workspace: Workspace, source: Path, files: dict[str, Path]) -> Path:
    """A directory-format dump of the rows, loaded once by the ceiling's commands (untimed)."""
    url = workspace.create_database("reference")
    psql = ["psql", "-X", "-q", "-v", "ON_ERROR_STOP=1", "--single-transaction", "-d", url]
    run_checked([*psql, *ceiling_commands(source, files)], os.environ.copy(), "the reference")
    folder = workspace.dir / "reference.dump"
    run_checked(
        ["pg_dump", "--format=directory", f"--jobs={RESTORE_JOBS}", "-f", str(folder), url],
        os.environ.copy(),
        "pg_dump of the reference",
    )
    return folder


def measure_pg_restore(workspace: Workspace, source: Path, dump: Path, rows: int) -> Result:
    """(e) pg_restore -j 2 of the reference dump into an empty database (not migrated)."""
    name = f"{DATABASE_PREFIX}{os.getpid()}_restore"
    with postgres(workspace.url("postgres")) as cursor:
        cursor.execute(f'DROP DATABASE IF EXISTS "{name}"')
        cursor.execute(f'CREATE DATABASE "{name}"')
    if name not in workspace.databases:
        workspace.databases.append(name)
    url = workspace.url(name)
    run = run_measured(
        ["pg_restore", f"--jobs={RESTORE_JOBS}", "--no-owner", "--exit-on-error", "-d", url,
         str(dump)],
        os.environ.copy(),
        workspace.dir,
    )  # fmt: skip
    keys = foreign_keys(url)
    problems = check_target(source, url, keys) if run.returncode == 0 else None
    return measured(f"reference: pg_restore -j {RESTORE_JOBS} (no checks)", rows, run, problems)


def ensure_debian_package(command: str, package: str) -> str | None:
    """Path to a command, installing its Debian package if missing; None if it cannot be had."""
    if shutil.which(command) is None and os.geteuid() == 0 and shutil.which("apt-get"):
        print(f"{command} is missing; apt-get install -y {package} ...", flush=True)
        for step in (["apt-get", "update"], ["apt-get", "install", "-y", package]):
            subprocess.run(step, stdin=subprocess.DEVNULL, capture_output=True, check=False)
    return shutil.which(command)


def ensure_pgloader() -> str | None:
    return ensure_debian_package("pgloader", "pgloader")


PGLOADER_COMMAND = """\
LOAD DATABASE
    FROM sqlite://{source}
    INTO {target}
WITH data only, truncate
SET timezone TO 'UTC', work_mem TO '64MB'
INCLUDING ONLY TABLE NAMES LIKE {tables};
"""


def measure_pgloader(workspace: Workspace, source: Path, rows: int) -> Result:
    """(c) pgloader loading data only into the tables `migrate` created."""
    method = "pgloader (data only)"
    pgloader = ensure_pgloader()
    if pgloader is None:
        return not_measured(method, rows, "not available (pgloader does not install)")
    url = workspace.create_database("pgloader")
    keys_before = foreign_keys(url)
    command_file = workspace.dir / "load.pgloader"
    tables = ", ".join(f"'{name}'" for name in DATA_TABLES)
    command_file.write_text(
        PGLOADER_COMMAND.format(source=source.resolve(), target=url, tables=tables)
    )
    run = run_measured(
        [pgloader, "--root-dir", str(workspace.dir / "pgloader"), str(command_file)],
        os.environ.copy(),
        workspace.dir,
    )
    return measured(method, rows, run, check_target(source, url, keys_before))


def measure_dumpdata_loaddata(workspace: Workspace, tenth: Path, rows: int) -> list[Result]:
    """(d) Django's own round trip through a JSON fixture, on a tenth of the rows."""
    scale = DUMPDATA_FRACTION
    method = f"dumpdata + loaddata (1/{scale} of the rows, x{scale})"
    fixture = workspace.dir / "fixture.json"
    dump = run_measured(
        manage("dumpdata", "caloria", "auth.group", "--natural-foreign", "-o", str(fixture)),
        workspace.django_env(f"sqlite:///{tenth.resolve()}"),
        workspace.dir,
    )
    if dump.returncode != 0:
        return [
            not_measured(method, rows, f"dumpdata FAILED (exit {dump.returncode})", dump.tail())
        ]
    url = workspace.create_database("loaddata")
    keys_before = foreign_keys(url)
    load = run_measured(manage("loaddata", str(fixture)), workspace.django_env(url), workspace.dir)
    fixture.unlink()
    problems = check_target(tenth, url, keys_before) if load.returncode == 0 else None
    both = Run(
        dump.seconds + load.seconds,
        max(dump.peak_kib, load.peak_kib),
        load.returncode,
        load.stdout,
        load.stderr,
    )
    return [
        measured(method, rows, both, problems, scale=scale),
        measured(f"step: dumpdata (1/{scale})", rows, dump, None, detail=True),
        measured(f"step: loaddata (1/{scale})", rows, load, None, detail=True),
    ]


# --------------------------------------------------------------------------- the report

HEADERS = ["method", "rows", "seconds", "rows/s", "peak MiB", "vs ceiling", "outcome"]


def fmt(value: float | None, pattern: str) -> str:
    return "-" if value is None else format(value, pattern)


@dataclass
class Measurements:
    ceiling: Result
    import_sqlite: Result
    pgloader: Result
    dumpdata: Result
    pg_restore: Result
    baseline: Result | None = None
    scale_check: Result | None = None
    details: list[Result] = field(default_factory=list)

    def results(self) -> list[Result]:
        main = [self.ceiling, self.import_sqlite, self.pgloader, self.dumpdata, self.pg_restore]
        main += [self.baseline] if self.baseline else []
        return main + ([self.scale_check] if self.scale_check else []) + self.details

    def table_rows(self) -> list[list[str]]:
        rows = []
        for result in self.results():
            ratio = None
            if result.measured and not result.detail:
                ratio = result.scaled_seconds / self.ceiling.seconds
            rows.append(
                [
                    result.method,
                    f"{result.rows * result.scale:,}",
                    fmt(result.scaled_seconds, ".1f"),
                    fmt(result.rows_per_second, ",.0f"),
                    fmt(result.peak_mib, ".0f"),
                    fmt(ratio, ".2f") + ("x" if ratio else ""),
                    result.status,
                ]
            )
        return rows

    def notes(self) -> list[str]:
        """Every failed check and failure log, by method."""
        lines = []
        for result in self.results():
            lines += [f"{result.method}: {problem}" for problem in result.problems]
        return lines

    def logs(self) -> list[tuple[str, str]]:
        return [(r.method, r.log) for r in self.results() if r.log]


def text_table(rows: list[list[str]]) -> str:
    widths = [max(len(row[i]) for row in [HEADERS, *rows]) for i in range(len(HEADERS))]
    lines = [HEADERS, ["-" * width for width in widths], *rows]
    return "\n".join(
        "  ".join(cell.ljust(width) for cell, width in zip(line, widths, strict=True)).rstrip()
        for line in lines
    )


def markdown_table(rows: list[list[str]]) -> str:
    def line(cells):
        return "| " + " | ".join(cell.replace("|", "\\|") for cell in cells) + " |"

    return "\n".join([line(HEADERS), "|" + "---|" * len(HEADERS), *map(line, rows)])


def verdict(passed: bool) -> str:
    return "PASS" if passed else "FAIL"


def targets(m: Measurements) -> list[str]:
    """The issue's targets, each with the figures behind its verdict."""
    imp = m.import_sqlite
    if not imp.measured:
        return [f"n/a  every target: import_sqlite was not measured ({imp.status})"]
    ratio = imp.seconds / m.ceiling.seconds
    lines = [
        f"{verdict(ratio <= TARGET_CEILING_RATIO)} within {TARGET_CEILING_RATIO:g}x of the "
        f"ceiling: {imp.seconds:.1f} s vs {m.ceiling.seconds:.1f} s = {ratio:.2f}x"
    ]
    if m.pgloader.measured:
        lines.append(
            f"{verdict(imp.seconds < m.pgloader.seconds)} faster than pgloader: "
            f"{imp.seconds:.1f} s vs {m.pgloader.seconds:.1f} s"
        )
    else:
        lines.append(f"n/a  faster than pgloader: pgloader {m.pgloader.status}")
    if m.dumpdata.measured:
        speedup = m.dumpdata.scaled_seconds / imp.seconds
        lines.append(
            f"{verdict(speedup >= TARGET_DUMPDATA_RATIO)} at least {TARGET_DUMPDATA_RATIO:g}x "
            f"faster than dumpdata + loaddata (scaled): {m.dumpdata.scaled_seconds:.1f} s vs "
            f"{imp.seconds:.1f} s = {speedup:.1f}x"
        )
    else:
        lines.append(f"n/a  faster than dumpdata + loaddata: {m.dumpdata.status}")
    lines.append(
        f"{verdict(imp.peak_mib < TARGET_PEAK_MIB)} peak memory under {TARGET_PEAK_MIB:g} MiB: "
        f"{imp.peak_mib:.0f} MiB"
    )
    if m.baseline is not None and m.baseline.measured:
        against = imp.seconds / m.baseline.seconds
        lines.append(
            f"{verdict(against <= TARGET_BASELINE_RATIO)} within {TARGET_BASELINE_RATIO:g}x of "
            f"the baseline tree: {imp.seconds:.1f} s vs {m.baseline.seconds:.1f} s = "
            f"{against:.2f}x"
        )
    elif m.baseline is not None:
        lines.append(f"n/a  within {TARGET_BASELINE_RATIO:g}x of the baseline: {m.baseline.status}")
    if m.pg_restore.measured:
        physical = imp.seconds / m.pg_restore.seconds
        lines.append(
            f"info against pg_restore -j {RESTORE_JOBS}: {imp.seconds:.1f} s vs "
            f"{m.pg_restore.seconds:.1f} s = {physical:.2f}x (the long-term goal: "
            f"{GOAL_PG_RESTORE_RATIO:g}x)"
        )
    big = m.scale_check
    if big is not None and big.measured:
        growth = (big.peak_kib - imp.peak_kib) / imp.peak_kib
        lines.append(
            f"{verdict(abs(growth) <= TARGET_FLATNESS)} peak memory flat within "
            f"{TARGET_FLATNESS:.0%}, {imp.rows:,} vs {big.rows:,} rows: {imp.peak_mib:.0f} MiB "
            f"vs {big.peak_mib:.0f} MiB ({growth:+.1%})"
        )
    elif big is not None:
        lines.append(f"n/a  peak memory flat: the large import was not measured ({big.status})")
    return lines


def machine_description() -> str:
    with postgres(f"{DEFAULT_SERVER}/postgres") as cursor:
        cursor.execute("SHOW server_version")
        version = cursor.fetchone()[0]
    return (
        f"{os.cpu_count()} CPUs, Python {platform.python_version()}, PostgreSQL {version} "
        f"on {DEFAULT_SERVER.split('@')[-1]}"
    )


def text_report(m: Measurements) -> str:
    lines = [text_table(m.table_rows()), "", "Targets:", *targets(m)]
    if m.notes():
        lines += ["", "Checks that failed:", *m.notes()]
    for method, log in m.logs():
        lines += ["", f"{method}, end of its output:", log]
    return "\n".join(lines)


def markdown_report(m: Measurements, sizes: Sizes, machine: str, generation: str) -> str:
    command = " ".join(["`.venv/bin/python bench/import_sqlite.py", *sys.argv[1:]]) + "`"
    lines = [
        f"## import_sqlite ({time.strftime('%Y-%m-%d')})",
        "",
        command,
        "",
        f"Source: {sizes.label()} ({sizes.total:,} rows), {generation}. Machine: {machine}.",
        "Peak MiB: the largest resident set in the measured process tree (not the server's).",
        "",
        markdown_table(m.table_rows()),
        "",
        "Targets:",
        "",
        *[f"- {line}" for line in targets(m)],
    ]
    if m.notes():
        lines += ["", "Checks that failed (row counts, sequences, foreign keys, sampled values):"]
        lines += ["", *[f"- {note}" for note in m.notes()]]
    for method, log in m.logs():
        lines += ["", f"{method}, end of its output:", "", "```", log, "```"]
    return "\n".join(lines) + "\n"


# --------------------------------------------------------------------------- main


def parse_arguments() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--food-entries", type=int, default=1_000_000)
    parser.add_argument("--users", type=int, default=20_000)
    parser.add_argument("--weights", type=int, default=200_000)
    parser.add_argument(
        "--scale-check",
        action="store_true",
        help=f"also import {SCALE_CHECK_FACTOR}x the food entries and compare peak memory",
    )
    parser.add_argument(
        "--rounds",
        type=int,
        default=3,
        help="runs of the ceiling, import_sqlite and pgloader, interleaved; the median counts "
        "(default 3)",
    )
    parser.add_argument(
        "--baseline",
        type=Path,
        metavar="TREE",
        help="also measure import_sqlite of this checkout of the project (e.g. `git worktree "
        "add /tmp/before HEAD~3`), interleaved with the others",
    )
    parser.add_argument(
        "--no-dumpdata",
        action="store_true",
        help="leave out (d), dumpdata + loaddata (minutes), for a quick comparison",
    )
    parser.add_argument("--markdown", type=Path, help="also write the Markdown report here")
    arguments = parser.parse_args()
    if arguments.baseline is not None:
        arguments.baseline = arguments.baseline.resolve()
        if not (arguments.baseline / "manage.py").is_file():
            parser.error(f"--baseline {arguments.baseline}: no manage.py there")
    if arguments.rounds < 1:
        parser.error("--rounds must be at least 1")
    if arguments.users < DUMPDATA_FRACTION or arguments.food_entries < 0 or arguments.weights < 0:
        parser.error(f"--users must be at least {DUMPDATA_FRACTION}; the other sizes at least 0")
    return arguments


def measure_all(
    workspace: Workspace,
    sizes: Sizes,
    scale_check: bool,
    rounds: int,
    baseline: Path | None,
    dumpdata: bool = True,
) -> tuple[Measurements, str]:
    source = workspace.dir / "source.sqlite3"
    tenth = workspace.dir / "tenth.sqlite3"
    tenth_sizes = sizes.divided(DUMPDATA_FRACTION)
    seconds = generate_source(workspace, source, sizes)
    print(f"source: {sizes.label()}, generated in {seconds:.1f} s", flush=True)
    if dumpdata:
        generate_source(workspace, tenth, tenth_sizes)

    # The three fast methods run in interleaved rounds, each on a settled server, so that
    # a slow moment of the machine does not fall on one method only; the median run counts.
    print("(a) ceiling: CSV export ...", flush=True)
    export, files = export_ceiling_csv(source, workspace.dir, sizes.total)
    available = import_sqlite_available(workspace, source)
    print("(e) reference: a directory-format dump of the rows ...", flush=True)
    dump = dump_reference(workspace, source, files)
    ceilings, imports, pgloads, restores, baselines = [], [], [], [], []
    for round_number in range(1, rounds + 1):
        workspace.settle()
        print(f"round {round_number}/{rounds}: (a) ceiling, psql \\copy ...", flush=True)
        ceilings.append(measure_ceiling(workspace, source, files, sizes.total))
        workspace.settle()
        print(f"round {round_number}/{rounds}: (b) import_sqlite ...", flush=True)
        if available:
            imports.append(measure_import_sqlite(workspace, source, sizes.total))
        else:
            imports.append(
                not_measured("import_sqlite", sizes.total, "not available (Unknown command)")
            )
        workspace.settle()
        print(f"round {round_number}/{rounds}: (c) pgloader ...", flush=True)
        pgloads.append(measure_pgloader(workspace, source, sizes.total))
        workspace.settle()
        print(f"round {round_number}/{rounds}: (e) pg_restore -j {RESTORE_JOBS} ...", flush=True)
        restores.append(measure_pg_restore(workspace, source, dump, sizes.total))
        if baseline is not None:
            workspace.settle()
            print(f"round {round_number}/{rounds}: (f) import_sqlite of {baseline} ...", flush=True)
            baselines.append(
                measure_import_sqlite(
                    workspace, source, sizes.total, f"import_sqlite (baseline: {baseline.name})",
                    baseline,
                )
            )  # fmt: skip
    for path in files.values():
        path.unlink()
    shutil.rmtree(dump)
    ceiling, imported, pgloaded = median_of(ceilings), median_of(imports), median_of(pgloads)
    if dumpdata:
        workspace.settle()
        print(f"(d) dumpdata + loaddata on 1/{DUMPDATA_FRACTION} ...", flush=True)
        dumped, *steps = measure_dumpdata_loaddata(workspace, tenth, tenth_sizes.total)
    else:
        dumped, steps = not_measured("dumpdata + loaddata", sizes.total, "left out"), []
    measurements = Measurements(
        ceiling,
        imported,
        pgloaded,
        dumped,
        median_of(restores),
        median_of(baselines) if baselines else None,
        details=[export, *steps],
    )
    if scale_check:
        measurements.scale_check = measure_scale_check(workspace, sizes, imported)
    return measurements, f"generated in {seconds:.1f} s"


def measure_scale_check(workspace: Workspace, sizes: Sizes, first: Result) -> Result:
    """import_sqlite again on five times the food entries, for its peak memory."""
    big_sizes = Sizes(sizes.users, sizes.food_entries * SCALE_CHECK_FACTOR, sizes.weights)
    method = f"import_sqlite ({big_sizes.food_entries:,} food entries)"
    if not first.measured:
        return not_measured(method, big_sizes.total, "not measured: the first import was not")
    print(f"scale check: {method} ...", flush=True)
    big = workspace.dir / "big.sqlite3"
    generate_source(workspace, big, big_sizes)
    workspace.settle()
    result = measure_import_sqlite(workspace, big, big_sizes.total, method)
    result.detail = True
    return result


def main() -> int:
    if ensure_debian_package(GNU_TIME, "time") is None:
        print("GNU time (/usr/bin/time) is needed to measure peak memory", file=sys.stderr)
        return 1
    arguments = parse_arguments()
    sizes = Sizes(arguments.users, arguments.food_entries, arguments.weights)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    workspace = Workspace(DEFAULT_SERVER)
    try:
        measurements, generation = measure_all(
            workspace,
            sizes,
            arguments.scale_check,
            arguments.rounds,
            arguments.baseline,
            not arguments.no_dumpdata,
        )
    except BenchError as error:
        print(f"benchmark failed: {error}", file=sys.stderr)
        return 1
    finally:
        workspace.close()
    print()
    print(text_report(measurements))
    markdown = markdown_report(measurements, sizes, machine_description(), generation)
    print("\n--- Markdown (for docs/benchmarks.md) ---\n")
    print(markdown, end="")
    if arguments.markdown:
        arguments.markdown.write_text(markdown)
    return 0


if __name__ == "__main__":
    sys.exit(main())
