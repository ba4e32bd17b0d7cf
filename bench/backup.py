"""How long `dbbackup` and `verify_backup` take next to the raw PostgreSQL tools they wrap.

Issue 6 promised that Caloria's backup commands cost little more than the tools underneath,
and issue 17 (every table's checksum in the dump's snapshot, the file read back with
`pg_restore --list`, verification by counts and checksums) set the targets this script
checks: `manage.py dbbackup` within 1.5x of `pg_dump --format=custom | gzip`, and `manage.py
verify_backup` within 1.5x of `pg_restore` into an empty database. The commands do more than
the tools (dbbackup counts and checksums every table in the snapshot pg_dump reads, gzips,
hashes the file, lists it with pg_restore and records a BackupRecord; verify_backup hashes
the file, restores into a scratch database it creates and drops, and compares every table's
count and checksum), and a claim about what that costs is
only worth something next to a baseline measured on the same machine, in the same run, on the
same database. So this script:

  1. creates a PostgreSQL database, migrates it and fills it in SQL (generate_series): 20,000
     users, 1,000,000 food entries and 200,000 weight entries by default, then VACUUM ANALYZE;
  2. measures each of these --runs times (3 by default), the pairs interleaved so that a
     burst of load from elsewhere hits both sides, and reports the median:
     (a) `pg_dump --format=custom DB | gzip > FILE`, a shell pipeline (baseline for b),
     (b) `manage.py dbbackup -v 0`,
     (c) `createdb`, `gunzip -c FILE | pg_restore --no-owner --no-privileges -d EMPTY`,
         `dropdb` (baseline for d),
     (d) `manage.py verify_backup --latest -v 0`;
  3. times the phases of (b) and (d) one at a time, once each, so that a missed target points
     at its cause, and one what-if: the dump gzipped and hashed while pg_dump runs;
  4. prints wall time, peak memory (the largest resident set in the measured process tree,
     from GNU time; the server's memory is not counted), file sizes and the targets, then
     Markdown for docs/benchmarks.md.

    .venv/bin/python bench/backup.py [--food-entries 1000000] [--users 20000]
        [--weights 200000] [--runs 3] [--no-phases] [--markdown FILE]

The `bench_backup_<pid>*` databases (with the scratch databases verify_backup and the
baseline create) and the temporary folder are removed at the end, also on failure, Ctrl-C and
SIGTERM; databases left by an earlier run that was killed outright are dropped at the start.
"""

from __future__ import annotations

import argparse
import gzip
import hashlib
import os
import platform
import re
import shlex
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import psycopg2

PROJECT = Path(__file__).resolve().parent.parent
MANAGE = PROJECT / "manage.py"
GNU_TIME = "/usr/bin/time"  # Debian package "time"
HOST, PORT, USER = "127.0.0.1", 5432, "postgres"
SERVER = f"postgres://{USER}@{HOST}:{PORT}"
DATABASE_PREFIX = "bench_backup_"
SEED = 0.2026

# Variables that would make a child process read the developer's configuration.
PRIVATE_ENV_PREFIXES = ("CALORIA_", "DATABASE_", "DBOPS_", "PG")
PRIVATE_ENV_NAMES = ("SECRET_KEY", "DEBUG", "ALLOWED_HOSTS", "DJANGO_SETTINGS_MODULE")

TARGET_RATIO = 1.5  # issue 17 (issue 6 asked 1.3x before the checksums)
MIB = 1024 * 1024


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
    """Run a command; return its wall time and peak RSS (the largest process in its tree).

    The peak comes from GNU time (`/usr/bin/time -f %M`), which forks from a tiny process:
    os.wait4 on a child forked from this Python would start at this process's size. The child
    gets its own process group so that an interrupt takes down the whole pipeline, not only
    GNU time. Output goes to files so that no pipe can fill up and stall the child.
    """
    out_path, err_path = workdir / "child.out", workdir / "child.err"
    peak_path = workdir / "child.maxrss"
    peak_path.unlink(missing_ok=True)
    timed = [GNU_TIME, "-f", "%M", "-o", str(peak_path), *cmd]
    with out_path.open("w") as out, err_path.open("w") as err:
        started = time.perf_counter()
        proc = subprocess.Popen(
            timed,
            cwd=PROJECT,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=err,
            start_new_session=True,
        )
        try:
            proc.wait()
        except BaseException:
            os.killpg(proc.pid, signal.SIGKILL)
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


def manage(*args: str) -> list[str]:
    return [sys.executable, str(MANAGE), *args]


def shell(script: str) -> list[str]:
    """A bash pipeline that fails when any of its commands fails."""
    return ["bash", "-o", "pipefail", "-c", script]


# --------------------------------------------------------------------------- workspace


@contextmanager
def postgres(database: str = "postgres"):
    """An autocommit cursor (CREATE/DROP DATABASE and VACUUM cannot run in a transaction)."""
    connection = psycopg2.connect(host=HOST, port=PORT, user=USER, dbname=database)
    connection.autocommit = True
    try:
        yield connection.cursor()
    finally:
        connection.close()


def databases_starting_with(prefix: str) -> list[str]:
    with postgres() as cursor:
        cursor.execute("SELECT datname FROM pg_database WHERE starts_with(datname, %s)", (prefix,))
        return sorted(name for (name,) in cursor.fetchall())


def drop_database(name: str) -> None:
    try:
        with postgres() as cursor:
            cursor.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    except psycopg2.Error as error:
        print(f"warning: could not drop database {name}: {error}", file=sys.stderr)


def process_exists(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def drop_stale_databases() -> None:
    """Drop `bench_backup_<pid>*` databases whose run was killed before it could clean up."""
    for name in databases_starting_with(DATABASE_PREFIX):
        match = re.match(rf"{DATABASE_PREFIX}(\d+)", name)
        if match and not process_exists(int(match.group(1))):
            print(f"dropping {name}, left by an earlier run", flush=True)
            drop_database(name)


class Workspace:
    """The temporary folder and the databases of one run, removed in `close()`.

    Every database of the run starts with `self.database`: verify_backup names its scratch
    databases `<name>_verify_<hex>`, and the restore baseline uses `<name>_restore`.
    """

    def __init__(self):
        self.database = f"{DATABASE_PREFIX}{os.getpid()}"
        self.dir = Path(tempfile.mkdtemp(prefix=DATABASE_PREFIX))
        self.env_file = self.dir / "empty.env"
        self.env_file.touch()
        self.backup_dir = self.dir / "backups"
        self.backup_dir.mkdir()
        self.dumps_dir = self.dir / "dumps"
        self.dumps_dir.mkdir()

    def base_env(self) -> dict[str, str]:
        return {
            name: value
            for name, value in os.environ.items()
            if not name.startswith(PRIVATE_ENV_PREFIXES) and name not in PRIVATE_ENV_NAMES
        }

    def django_env(self) -> dict[str, str]:
        """manage.py: development settings, the bench database, no developer .env."""
        return {
            **self.base_env(),
            "CALORIA_ENV": "development",
            "CALORIA_ENV_FILE": str(self.env_file),
            "DATABASE_URL": f"{SERVER}/{self.database}",
            "DBOPS_BACKUP_DIR": str(self.backup_dir),
        }

    def libpq_env(self) -> dict[str, str]:
        """pg_dump, pg_restore, createdb, dropdb: the bench server, nothing inherited."""
        return {**self.base_env(), "PGHOST": HOST, "PGPORT": str(PORT), "PGUSER": USER}

    def create_database(self) -> None:
        with postgres() as cursor:
            cursor.execute(f'CREATE DATABASE "{self.database}"')
        run_checked(manage("migrate", "--noinput"), self.django_env(), "manage.py migrate")

    def close(self) -> None:
        for name in databases_starting_with(self.database):
            drop_database(name)
        shutil.rmtree(self.dir, ignore_errors=True)


# --------------------------------------------------------------------------- the data


@dataclass(frozen=True)
class Sizes:
    users: int
    food_entries: int
    weights: int

    @property
    def total(self) -> int:
        return self.users + self.food_entries + self.weights

    def label(self) -> str:
        return (
            f"{self.users:,} users, {self.food_entries:,} food entries, "
            f"{self.weights:,} weight entries"
        )


FIRST_NAMES = ["Ana", "Björn", "Chloé", "Dmitri", "Emeka", "Fatima", "Giulia", "Hiro", "Inés"]
LAST_NAMES = ["Nakamura", "Okafor", "Müller", "García", "Smith", "Kowalska", "Dubois", ""]
FOODS = [
    "Oatmeal with berries",
    "Café con leche ☕",
    "Brezel mit Butter",
    "Chicken salad",
    "Lentil soup",
    "Salmon with rice",
    "Spaghetti bolognese",
    "Greek yoghurt",
    "Handful of almonds",
]
MEALS = ["breakfast", "lunch", "dinner", "snack", ""]

# Timestamps fall in the two years from 2024-01-01 UTC. `pick(list)` is a random element.
FILL_USERS = """
INSERT INTO caloria_user (id, password, last_login, is_superuser, username, first_name,
    last_name, email, is_staff, is_active, date_joined, is_vip, daily_calorie_goal)
SELECT i,
    'pbkdf2_sha256$870000$' || left(md5(i::text), 22) || '$' || md5((-i)::text),
    CASE WHEN random() < 0.7 THEN '2024-01-01 00:00+00'::timestamptz
        + random() * interval '730 days' END,
    i = 1,
    'user' || lpad(i::text, 7, '0'),
    (%(first_names)s)[1 + floor(random() * %(first_count)s)::int],
    (%(last_names)s)[1 + floor(random() * %(last_count)s)::int],
    'user' || lpad(i::text, 7, '0') || '@example.com',
    random() < 0.01,
    random() < 0.97,
    '2024-01-01 00:00+00'::timestamptz + random() * interval '730 days',
    random() < 0.1,
    CASE WHEN random() < 0.6 THEN 1500 + floor(random() * 1500)::int END
FROM generate_series(1, %(users)s) AS i
"""

FILL_FOOD_ENTRIES = """
INSERT INTO caloria_foodentry (id, user_id, eaten_at, name, calories, protein, carbs, fat,
    meal, notes, created_at)
SELECT i, user_id, eaten_at, name, calories, protein, carbs, fat, meal, notes,
    eaten_at + random() * interval '6 hours'
FROM (
    SELECT i,
        1 + floor(random() * %(users)s)::int AS user_id,
        '2024-01-01 00:00+00'::timestamptz + random() * interval '730 days' AS eaten_at,
        (%(foods)s)[1 + floor(random() * %(food_count)s)::int] AS name,
        floor(random() * 1200)::int AS calories,
        CASE WHEN random() < 0.8 THEN round((random() * 80)::numeric, 2) END AS protein,
        CASE WHEN random() < 0.8 THEN round((random() * 150)::numeric, 2) END AS carbs,
        CASE WHEN random() < 0.8 THEN round((random() * 60)::numeric, 2) END AS fat,
        (%(meals)s)[1 + floor(random() * %(meal_count)s)::int] AS meal,
        CASE WHEN random() < 0.05 THEN 'after the gym' ELSE '' END AS notes
    FROM generate_series(1, %(food_entries)s) AS i
) AS entry
"""

# One weight per user and day: entry i belongs to user i %% users on day i / users.
FILL_WEIGHTS = """
INSERT INTO caloria_weightentry (id, user_id, measured_on, weight_kg)
SELECT i + 1, i %% %(users)s + 1, date '2024-01-01' + i / %(users)s,
    round((50 + random() * 70)::numeric, 2)
FROM generate_series(0, %(weights)s - 1) AS i
"""

DATA_TABLES = ("caloria_user", "caloria_foodentry", "caloria_weightentry")


def fill_database(workspace: Workspace, sizes: Sizes) -> float:
    """Create, migrate and fill the bench database; return the seconds it took."""
    started = time.perf_counter()
    workspace.create_database()
    parameters = {
        "users": sizes.users,
        "food_entries": sizes.food_entries,
        "weights": sizes.weights,
        "first_names": FIRST_NAMES,
        "first_count": len(FIRST_NAMES),
        "last_names": LAST_NAMES,
        "last_count": len(LAST_NAMES),
        "foods": FOODS,
        "food_count": len(FOODS),
        "meals": MEALS,
        "meal_count": len(MEALS),
    }
    with postgres(workspace.database) as cursor:
        cursor.execute("SELECT setseed(%s)", (SEED,))
        for statement in (FILL_USERS, FILL_FOOD_ENTRIES, FILL_WEIGHTS):
            cursor.execute(statement, parameters)
        for table in DATA_TABLES:
            cursor.execute(
                f"SELECT setval(pg_get_serial_sequence('{table}', 'id'), "
                f"coalesce(max(id), 1), max(id) IS NOT NULL) FROM {table}"
            )
        # Settled like a database that has lived a while: hint bits set, statistics fresh,
        # so that the first measured pg_dump does not pay for writing them.
        cursor.execute("VACUUM (ANALYZE)")
    return time.perf_counter() - started


def database_size(workspace: Workspace) -> int:
    with postgres(workspace.database) as cursor:
        cursor.execute("SELECT pg_database_size(current_database())")
        return cursor.fetchone()[0]


# --------------------------------------------------------------------------- the methods


@dataclass
class Result:
    """One method's line in the report: every run's time and peak, the file it produced."""

    method: str
    runs: list[Run] = field(default_factory=list)
    file_bytes: int | None = None
    outcome: str = ""

    @property
    def failed(self) -> list[Run]:
        return [run for run in self.runs if run.returncode != 0]

    @property
    def measured(self) -> bool:
        return bool(self.runs) and not self.failed

    @property
    def seconds(self) -> float | None:
        """The median wall time; none when any run failed (a quick failure is no speed)."""
        return statistics.median(run.seconds for run in self.runs) if self.measured else None

    @property
    def spread(self) -> str:
        if not self.measured:
            return "-"
        times = [run.seconds for run in self.runs]
        return f"{min(times):.1f}-{max(times):.1f}"

    @property
    def peak_mib(self) -> float | None:
        return max(run.peak_kib for run in self.runs) / 1024 if self.measured else None

    def status(self) -> str:
        if self.failed:
            return f"FAILED (exit {self.failed[0].returncode}) in {len(self.failed)} run(s)"
        return "exit 0" + (f", {self.outcome}" if self.outcome else "")


class Methods:
    """The four measured commands, each run against the same database and files."""

    def __init__(self, workspace: Workspace):
        self.workspace = workspace
        self.dump = workspace.dumps_dir / "pg_dump.custom.gz"
        self.pg_dump = Result("(a) pg_dump --format=custom | gzip")
        self.dbbackup = Result("(b) manage.py dbbackup")
        self.pg_restore = Result("(c) createdb, gunzip | pg_restore, dropdb")
        self.verify = Result("(d) manage.py verify_backup --latest")

    def measure(self, result: Result, cmd: list[str], env: dict[str, str]) -> Run:
        run = run_measured(cmd, env, self.workspace.dir)
        result.runs.append(run)
        print(
            f"  {result.method}: {run.seconds:.1f} s, {run.peak_kib / 1024:.0f} MiB, "
            f"exit {run.returncode}",
            flush=True,
        )
        return run

    def run_pg_dump(self) -> None:
        database, target = self.workspace.database, shlex.quote(str(self.dump))
        script = f"pg_dump --format=custom {database} | gzip > {target}"
        if self.measure(self.pg_dump, shell(script), self.workspace.libpq_env()).returncode == 0:
            self.pg_dump.file_bytes = self.dump.stat().st_size

    def run_dbbackup(self) -> None:
        run = self.measure(
            self.dbbackup, manage("dbbackup", "-v", "0"), self.workspace.django_env()
        )
        if run.returncode == 0:
            record = latest_backup_record(self.workspace)
            self.dbbackup.file_bytes = record["size"]
            self.dbbackup.outcome = f"{len(record['table_counts'])} tables counted, sha256 recorded"

    def run_pg_restore(self) -> None:
        if not self.dump.exists():
            raise BenchError("the pg_dump baseline wrote no file to restore")
        empty = f"{self.workspace.database}_restore"
        dump = shlex.quote(str(self.dump))
        script = (
            f"createdb {empty} && "
            f"gunzip -c {dump} | pg_restore --no-owner --no-privileges -d {empty}; "
            f"status=$?; dropdb --if-exists {empty}; exit $status"
        )
        self.measure(self.pg_restore, shell(script), self.workspace.libpq_env())
        self.pg_restore.file_bytes = self.dump.stat().st_size

    def run_verify_backup(self) -> None:
        cmd = manage("verify_backup", "--latest", "-v", "0")
        if self.measure(self.verify, cmd, self.workspace.django_env()).returncode == 0:
            record = latest_backup_record(self.workspace)
            self.verify.outcome = f"verification {record['verification']}"
            self.verify.file_bytes = record["size"]

    def results(self) -> list[Result]:
        return [self.pg_dump, self.dbbackup, self.pg_restore, self.verify]


def latest_backup_record(workspace: Workspace) -> dict:
    with postgres(workspace.database) as cursor:
        cursor.execute(
            "SELECT filename, size, table_counts, verification, verification_detail "
            "FROM dbops_backuprecord WHERE status = 'succeeded' ORDER BY started_at DESC, id DESC"
        )
        row = cursor.fetchone()
    if row is None:
        raise BenchError("dbbackup exited 0 but left no successful BackupRecord")
    keys = ("filename", "size", "table_counts", "verification", "verification_detail")
    return dict(zip(keys, row, strict=True))


def interleaved(runs: int, first: Callable[[], None], second: Callable[[], None]) -> None:
    """first, second; second, first; ... so that neither always runs on a warmer cache."""
    for number in range(runs):
        for step in (first, second) if number % 2 == 0 else (second, first):
            step()


# --------------------------------------------------------------------------- the phases


@dataclass
class Phase:
    """One part of a command's work, timed on its own (once) to explain the totals."""

    part_of: str
    what: str
    seconds: float
    note: str = ""


def timed(action: Callable[[], object]) -> float:
    started = time.perf_counter()
    action()
    return time.perf_counter() - started


def gzip_file(source: Path, target: Path, level: int) -> None:
    """As django-dbbackup compresses (gzip.GzipFile, whose default level is 9), 1 MB reads."""
    with source.open("rb") as raw, gzip.GzipFile(target, "wb", compresslevel=level) as packed:
        shutil.copyfileobj(raw, packed, 1024 * 1000)


def gunzip_to_nowhere(source: Path) -> None:
    """As verify_backup feeds pg_restore: gzip.open read in 1 MiB chunks."""
    with gzip.open(source, "rb") as packed:
        while packed.read(MIB):
            pass


def sha256_of(path: Path) -> None:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        while chunk := handle.read(MIB):
            digest.update(chunk)


def count_every_table(database: str) -> int:
    """count(*) of every table in one repeatable-read transaction, as the commands count."""
    with postgres(database) as cursor:
        cursor.execute("BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY")
        cursor.execute("SELECT tablename FROM pg_tables WHERE schemaname = 'public'")
        total = 0
        for (table,) in cursor.fetchall():
            cursor.execute(f'SELECT count(*) FROM "{table}"')
            total += cursor.fetchone()[0]
        cursor.execute("COMMIT")
        return total


class HashingWriter:
    """A file wrapper that hashes what is written through it (for the streamed what-if)."""

    def __init__(self, handle):
        self.handle, self.digest = handle, hashlib.sha256()

    def write(self, data) -> int:
        self.digest.update(data)
        return self.handle.write(data)

    def flush(self) -> None:
        self.handle.flush()


def stream_dump(database: str, env: dict[str, str], target: Path) -> str:
    """pg_dump's output gzipped and hashed while pg_dump runs, in one pass; return the sha256.

    Not what dbbackup does (dump to a temporary file, then gzip it, then copy it into the
    storage, then read it again for the sha256): a sketch of the cheaper order, to show what
    it would save.
    """
    dump = subprocess.Popen(
        ["pg_dump", "--format=custom", database], stdout=subprocess.PIPE, env=env
    )
    with target.open("wb") as handle:
        hashing = HashingWriter(handle)
        with gzip.GzipFile(fileobj=hashing, mode="wb", compresslevel=9) as packed:
            shutil.copyfileobj(dump.stdout, packed, MIB)
    if dump.wait() != 0:
        raise BenchError("pg_dump failed in the streamed what-if")
    return hashing.digest.hexdigest()


def child_seconds(cmd: list[str], env: dict[str, str], workspace: Workspace) -> float:
    run = run_measured(cmd, env, workspace.dir)
    if run.returncode != 0:
        raise BenchError(f"phase {shlex.join(cmd)} failed:\n{run.tail()}")
    return run.seconds


def measure_phases(workspace: Workspace) -> list[Phase]:
    return backup_phases(workspace) + restore_phases(workspace)


def backup_phases(workspace: Workspace) -> list[Phase]:
    """dbbackup's parts, in its order: start, count, dump, gzip, store, hash."""
    env, folder, database = workspace.libpq_env(), workspace.dumps_dir, workspace.database
    raw, packed = folder / "pg_dump.custom", folder / "python-9.gz"
    quoted = shlex.quote(str(raw))
    startup = child_seconds(manage("check"), workspace.django_env(), workspace)
    phases = [
        Phase("dbbackup", "Django start-up and system checks (manage.py check)", startup),
        Phase(
            "dbbackup",
            "count(*) of every table (repeatable read)",
            timed(lambda: count_every_table(database)),
        ),
        Phase(
            "dbbackup",
            "pg_dump --format=custom to a file",
            child_seconds(shell(f"pg_dump --format=custom {database} > {quoted}"), env, workspace),
        ),
    ]
    for level in (9, 6, 1):
        target = folder / f"python-{level}.gz"
        seconds = timed(lambda level=level, target=target: gzip_file(raw, target, level))
        note = f"{raw.stat().st_size / MIB:.1f} MiB to {target.stat().st_size / MIB:.1f} MiB"
        label = "as dbbackup does" if level == 9 else "not what dbbackup does"
        phases.append(Phase("dbbackup", f"Python gzip level {level} ({label})", seconds, note))
    copy = folder / "copy.gz"
    phases += [
        Phase(
            "dbbackup",
            "copy the .gz into the storage",
            timed(lambda: shutil.copyfile(packed, copy)),
        ),
        Phase("dbbackup", "sha256 of the .gz", timed(lambda: sha256_of(packed))),
        Phase(
            "(baseline)",
            "gzip -6 of the dump, alone (overlaps pg_dump in (a))",
            child_seconds(shell(f"gzip -6 -c {quoted} > /dev/null"), env, workspace),
        ),
        Phase(
            "(what if)",
            "pg_dump streamed into Python gzip 9 + sha256, one pass",
            timed(lambda: stream_dump(database, env, folder / "streamed.gz")),
            "dump, gzip, hash overlap; no temporary file, no copy",
        ),
    ]
    return phases


def restore_phases(workspace: Workspace) -> list[Phase]:
    """verify_backup's parts: hash, gunzip, create, restore, count, drop."""
    env, folder = workspace.libpq_env(), workspace.dumps_dir
    raw, packed = folder / "pg_dump.custom", folder / "python-9.gz"
    empty = f"{workspace.database}_phases"
    restore = (
        f"createdb {empty} && "
        f"pg_restore --no-owner --no-privileges --exit-on-error -d {empty} {shlex.quote(str(raw))}"
    )
    phases = [
        Phase("verify_backup", "sha256 of the .gz", timed(lambda: sha256_of(packed))),
        Phase(
            "verify_backup",
            "Python gunzip (gzip.open, 1 MiB reads)",
            timed(lambda: gunzip_to_nowhere(packed)),
        ),
        Phase(
            "verify_backup",
            "create and drop an empty database",
            child_seconds(shell(f"createdb {empty} && dropdb {empty}"), env, workspace),
        ),
        Phase(
            "verify_backup",
            "createdb + pg_restore of the dump, no gunzip",
            child_seconds(shell(restore), env, workspace),
        ),
        # The first scan after a load also sets hint bits, as verify_backup's count does.
        Phase(
            "verify_backup",
            "count(*) of every table, just restored",
            timed(lambda: count_every_table(empty)),
        ),
    ]
    drop_database(empty)
    return phases


# --------------------------------------------------------------------------- the report

HEADERS = [
    "method",
    "runs",
    "median s",
    "range s",
    "peak MiB",
    "file MiB",
    "vs baseline",
    "outcome",
]


def fmt(value: float | None, pattern: str) -> str:
    return "-" if value is None else format(value, pattern)


def ratio(result: Result, baseline: Result) -> float | None:
    if result.seconds is None or baseline.seconds is None:
        return None
    return result.seconds / baseline.seconds


def table_rows(methods: Methods) -> list[list[str]]:
    baselines = {
        methods.dbbackup.method: methods.pg_dump,
        methods.verify.method: methods.pg_restore,
    }
    rows = []
    for result in methods.results():
        baseline = baselines.get(result.method)
        against = ratio(result, baseline) if baseline else None
        rows.append(
            [
                result.method,
                str(len(result.runs)),
                fmt(result.seconds, ".1f"),
                result.spread,
                fmt(result.peak_mib, ".0f"),
                fmt(None if result.file_bytes is None else result.file_bytes / MIB, ".1f"),
                "1.00x" if baseline is None and result.measured else fmt(against, ".2f") + "x",
                result.status(),
            ]
        )
    return rows


PHASE_HEADERS = ["part of", "phase (each alone, once)", "seconds", "note"]


def phase_rows(phases: list[Phase]) -> list[list[str]]:
    return [[p.part_of, p.what, f"{p.seconds:.2f}", p.note] for p in phases]


def targets(methods: Methods) -> list[str]:
    """The issue's two targets, each with the figures behind its verdict."""
    pairs = (
        (methods.dbbackup, methods.pg_dump, "dbbackup", "pg_dump --format=custom | gzip"),
        (methods.verify, methods.pg_restore, "verify_backup", "pg_restore into an empty database"),
    )
    lines = []
    for ours, theirs, name, tool in pairs:
        against = ratio(ours, theirs)
        if against is None:
            lines.append(f"n/a  {name} within {TARGET_RATIO:g}x of {tool}: a run failed")
            continue
        lines.append(
            f"{'PASS' if against <= TARGET_RATIO else 'FAIL'} {name} within {TARGET_RATIO:g}x "
            f"of {tool}: {ours.seconds:.1f} s vs {theirs.seconds:.1f} s = {against:.2f}x"
        )
    return lines


def text_table(headers: list[str], rows: list[list[str]]) -> str:
    widths = [max(len(row[i]) for row in [headers, *rows]) for i in range(len(headers))]
    lines = [headers, ["-" * width for width in widths], *rows]
    return "\n".join(
        "  ".join(cell.ljust(width) for cell, width in zip(line, widths, strict=True)).rstrip()
        for line in lines
    )


def markdown_table(headers: list[str], rows: list[list[str]]) -> str:
    def line(cells):
        return "| " + " | ".join(cell.replace("|", "\\|") for cell in cells) + " |"

    return "\n".join([line(headers), "|" + "---|" * len(headers), *map(line, rows)])


def failure_logs(methods: Methods) -> list[tuple[str, str]]:
    return [(r.method, r.failed[0].tail()) for r in methods.results() if r.failed]


def machine_description(load: str) -> str:
    with postgres() as cursor:
        cursor.execute("SHOW server_version")
        version = cursor.fetchone()[0]
    memory = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 1024**3
    return (
        f"{os.cpu_count()} CPUs, {memory:.0f} GiB, Python {platform.python_version()}, "
        f"PostgreSQL {version} on {HOST}:{PORT}; load average before the run {load}"
    )


@dataclass
class Report:
    methods: Methods
    phases: list[Phase]
    data: str
    machine: str

    def text(self) -> str:
        lines = [
            text_table(HEADERS, table_rows(self.methods)),
            "",
            "Targets:",
            *targets(self.methods),
        ]
        if self.phases:
            lines += [
                "",
                "Where the time goes:",
                text_table(PHASE_HEADERS, phase_rows(self.phases)),
            ]
        for method, log in failure_logs(self.methods):
            lines += ["", f"{method}, end of its output:", log]
        return "\n".join(lines)

    def markdown(self) -> str:
        command = " ".join(["`.venv/bin/python bench/backup.py", *sys.argv[1:]]) + "`"
        lines = [
            f"## Backups ({time.strftime('%Y-%m-%d')})",
            "",
            command,
            "",
            f"Data: {self.data}. Machine: {self.machine}.",
            "Median of the runs; peak MiB: the largest resident set in the measured process "
            "tree (not the server's); (c) includes creating and dropping the empty database, "
            "as (d) does.",
            "",
            markdown_table(HEADERS, table_rows(self.methods)),
            "",
            "Targets:",
            "",
            *[f"- {line}" for line in targets(self.methods)],
        ]
        if self.phases:
            lines += [
                "",
                "Where the time goes (each phase alone, once, on the same database):",
                "",
                markdown_table(PHASE_HEADERS, phase_rows(self.phases)),
            ]
        for method, log in failure_logs(self.methods):
            lines += ["", f"{method}, end of its output:", "", "```", log, "```"]
        return "\n".join(lines) + "\n"


# --------------------------------------------------------------------------- main


def parse_arguments() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--food-entries", type=int, default=1_000_000)
    parser.add_argument("--users", type=int, default=20_000)
    parser.add_argument("--weights", type=int, default=200_000)
    parser.add_argument("--runs", type=int, default=3, help="runs of each method (median)")
    parser.add_argument("--no-phases", action="store_true", help="skip timing the phases")
    parser.add_argument("--markdown", type=Path, help="also write the Markdown report here")
    arguments = parser.parse_args()
    if arguments.users < 1 or arguments.food_entries < 0 or arguments.weights < 0:
        parser.error("--users must be at least 1; the other sizes at least 0")
    if arguments.runs < 1:
        parser.error("--runs must be at least 1")
    return arguments


def measure_all(workspace: Workspace, sizes: Sizes, runs: int, phases: bool) -> Report:
    load = " ".join(f"{value:.2f}" for value in os.getloadavg())
    seconds = fill_database(workspace, sizes)
    size = database_size(workspace) / MIB
    data = (
        f"{sizes.label()} ({sizes.total:,} rows, database {size:,.0f} MiB), "
        f"filled in {seconds:.1f} s"
    )
    print(f"data: {data}", flush=True)
    methods = Methods(workspace)
    print(f"backups, {runs} run(s) each ...", flush=True)
    interleaved(runs, methods.run_pg_dump, methods.run_dbbackup)
    print(f"restores, {runs} run(s) each ...", flush=True)
    interleaved(runs, methods.run_pg_restore, methods.run_verify_backup)
    timed_phases = []
    if phases:
        print("phases ...", flush=True)
        timed_phases = measure_phases(workspace)
    return Report(methods, timed_phases, data, machine_description(load))


def main() -> int:
    arguments = parse_arguments()
    if shutil.which(GNU_TIME) is None:
        print("GNU time (/usr/bin/time, Debian package time) is needed", file=sys.stderr)
        return 1
    sizes = Sizes(arguments.users, arguments.food_entries, arguments.weights)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    drop_stale_databases()
    workspace = Workspace()
    try:
        report = measure_all(workspace, sizes, arguments.runs, not arguments.no_phases)
    except BenchError as error:
        print(f"benchmark failed: {error}", file=sys.stderr)
        return 1
    finally:
        workspace.close()
    print()
    print(report.text())
    markdown = report.markdown()
    print("\n--- Markdown (for docs/benchmarks.md) ---\n")
    print(markdown, end="")
    if arguments.markdown:
        arguments.markdown.write_text(markdown)
    return 0


if __name__ == "__main__":
    sys.exit(main())
