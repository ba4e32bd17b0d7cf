"""What the off-site copy costs: `dbbackup` to an SFTP server and `verify_backup --remote`
next to the shell commands an operator would otherwise run, at two sizes of data.

Issue 17 asks for `dbbackup` with its off-site copy within 1.5x of `pg_dump -Fc | gzip` then
`scp` to the same SFTP server, and for peak memory under 100 MiB and flat from 1M to 5M rows
(the upload streams, the read-back and the download go one bounded window at a time). So
this script, for each size given (`--food-entries 1000000,5000000`):

  1. creates, migrates and fills a database as bench/backup.py does (its helpers are reused);
  2. starts a throwaway OpenSSH server (tests/sshd.py: Debian's sshd on a free 127.0.0.1
     port, its own host and client keys);
  3. measures --runs times, interleaved, and reports the median:
     (a) `pg_dump --format=custom | gzip > FILE && scp FILE` to the server (baseline for b),
     (b) `manage.py dbbackup -v 0` with DBOPS_BACKUP_REMOTE_URL (dump, gzip, hash, record,
         upload under a temporary name, read back and compare, rename),
     (c) `scp` the file back, then `createdb`, `gunzip | pg_restore`, `dropdb` (baseline for d),
     (d) `manage.py verify_backup --latest --remote -v 0` (download into a private file, check
         the sha256, restore into a scratch database, compare counts);
  4. prints wall time and peak memory (GNU time, the measured process tree), the ratios and
     the targets, and Markdown for docs/benchmarks.md.

    .venv/bin/python bench/offsite.py [--food-entries 1000000,5000000] [--runs 3]
        [--markdown FILE]

Databases, the SSH server and the temporary folders are removed at the end.
"""

from __future__ import annotations

import argparse
import shlex
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import backup as base

from tests.sshd import running_sshd

TARGET_RATIO = 1.5
TARGET_PEAK_MIB = 100


@dataclass
class SizeResult:
    sizes: base.Sizes
    data: str
    results: list[base.Result]


class OffsiteMethods:
    def __init__(self, workspace: base.Workspace, server, remote: Path):
        self.workspace, self.server, self.remote = workspace, server, remote
        self.dump = workspace.dumps_dir / "baseline.custom.gz"
        self.fetched = workspace.dumps_dir / "fetched.custom.gz"
        self.scp_up = base.Result("(a) pg_dump -Fc | gzip, then scp to the server")
        self.dbbackup = base.Result("(b) manage.py dbbackup (off-site copy read back)")
        self.scp_down = base.Result("(c) scp back, createdb, gunzip | pg_restore, dropdb")
        self.verify = base.Result("(d) manage.py verify_backup --latest --remote")

    def scp(self, source: str, target: str) -> str:
        options = (
            f"-q -B -P {self.server.port} -i {shlex.quote(str(self.server.client_key))} "
            f"-o UserKnownHostsFile={shlex.quote(str(self.server.known_hosts))} "
            f"-o StrictHostKeyChecking=yes"
        )
        return f"scp {options} {source} {target}"

    def remote_path(self, name: str) -> str:
        return f"{self.server.user}@127.0.0.1:{shlex.quote(str(self.remote / name))}"

    def env(self) -> dict[str, str]:
        return {
            **self.workspace.django_env(),
            "DBOPS_BACKUP_REMOTE_URL": (
                f"sftp://{self.server.user}@127.0.0.1:{self.server.port}{self.remote}"
            ),
            "DBOPS_BACKUP_REMOTE_KEY_FILE": str(self.server.client_key),
            "DBOPS_BACKUP_REMOTE_KNOWN_HOSTS": str(self.server.known_hosts),
        }

    def measure(self, result: base.Result, cmd: list[str], env: dict[str, str]) -> base.Run:
        run = base.run_measured(cmd, env, self.workspace.dir)
        result.runs.append(run)
        print(
            f"  {result.method}: {run.seconds:.1f} s, {run.peak_kib / 1024:.0f} MiB, "
            f"exit {run.returncode}",
            flush=True,
        )
        return run

    def run_scp_up(self) -> None:
        dump = shlex.quote(str(self.dump))
        script = (
            f"pg_dump --format=custom {self.workspace.database} | gzip > {dump} && "
            f"{self.scp(dump, self.remote_path('baseline.custom.gz'))}"
        )
        if self.measure(self.scp_up, base.shell(script), self.workspace.libpq_env()).returncode:
            return
        self.scp_up.file_bytes = self.dump.stat().st_size

    def run_dbbackup(self) -> None:
        run = self.measure(self.dbbackup, base.manage("dbbackup", "-v", "0"), self.env())
        if run.returncode == 0:
            record = remote_copy_of_latest(self.workspace)
            self.dbbackup.file_bytes = record["size"]
            self.dbbackup.outcome = f"off-site copy {record['remote_copy']}"

    def run_scp_down(self) -> None:
        empty = f"{self.workspace.database}_restore"
        fetched = shlex.quote(str(self.fetched))
        script = (
            f"{self.scp(self.remote_path('baseline.custom.gz'), fetched)} && "
            f"createdb {empty} && "
            f"gunzip -c {fetched} | pg_restore --no-owner --no-privileges -d {empty}; "
            f"status=$?; dropdb --if-exists {empty}; rm -f {fetched}; exit $status"
        )
        self.measure(self.scp_down, base.shell(script), self.workspace.libpq_env())
        self.scp_down.file_bytes = self.dump.stat().st_size

    def run_verify(self) -> None:
        cmd = base.manage("verify_backup", "--latest", "--remote", "-v", "0")
        if self.measure(self.verify, cmd, self.env()).returncode == 0:
            record = remote_copy_of_latest(self.workspace)
            self.verify.file_bytes = record["size"]
            self.verify.outcome = f"verification {record['verification']}"

    def results(self) -> list[base.Result]:
        return [self.scp_up, self.dbbackup, self.scp_down, self.verify]


def remote_copy_of_latest(workspace: base.Workspace) -> dict:
    with base.postgres(workspace.database) as cursor:
        cursor.execute(
            "SELECT size, remote_copy, verification FROM dbops_backuprecord "
            "WHERE status = 'succeeded' ORDER BY started_at DESC, id DESC"
        )
        row = cursor.fetchone()
    if row is None:
        raise base.BenchError("dbbackup exited 0 but left no successful BackupRecord")
    return dict(zip(("size", "remote_copy", "verification"), row, strict=True))


def measure_size(sizes: base.Sizes, runs: int, server) -> SizeResult:
    workspace = base.Workspace()
    try:
        seconds = base.fill_database(workspace, sizes)
        size = base.database_size(workspace) / base.MIB
        data = f"{sizes.total:,} rows (database {size:,.0f} MiB, filled in {seconds:.0f} s)"
        print(f"data: {data}", flush=True)
        remote = Path(tempfile.mkdtemp(prefix="bench-offsite-remote-"))
        methods = OffsiteMethods(workspace, server, remote)
        base.interleaved(runs, methods.run_scp_up, methods.run_dbbackup)
        base.interleaved(runs, methods.run_scp_down, methods.run_verify)
        base.shutil.rmtree(remote, ignore_errors=True)
        return SizeResult(sizes, data, methods.results())
    finally:
        workspace.close()


HEADERS = ["data", "method", "runs", "median s", "range s", "peak MiB", "vs baseline", "outcome"]


def rows(measured: list[SizeResult]) -> list[list[str]]:
    lines = []
    for size in measured:
        scp_up, dbbackup, scp_down, verify = size.results
        baselines = {dbbackup.method: scp_up, verify.method: scp_down}
        for result in size.results:
            baseline = baselines.get(result.method)
            against = base.ratio(result, baseline) if baseline else None
            lines.append(
                [
                    f"{size.sizes.total:,} rows",
                    result.method,
                    str(len(result.runs)),
                    base.fmt(result.seconds, ".1f"),
                    result.spread,
                    base.fmt(result.peak_mib, ".0f"),
                    "1.00x" if baseline is None else base.fmt(against, ".2f") + "x",
                    result.status(),
                ]
            )
    return lines


def targets(measured: list[SizeResult]) -> list[str]:
    lines = []
    for size in measured:
        scp_up, dbbackup, _, verify = size.results
        against = base.ratio(dbbackup, scp_up)
        label = f"{size.sizes.total:,} rows"
        if against is None:
            lines.append(f"n/a  {label}: a run failed")
            continue
        verdict = "PASS" if against <= TARGET_RATIO else "FAIL"
        lines.append(
            f"{verdict} {label}: dbbackup with its off-site copy within {TARGET_RATIO:g}x of "
            f"pg_dump | gzip + scp: {dbbackup.seconds:.1f} s vs {scp_up.seconds:.1f} s = "
            f"{against:.2f}x"
        )
        for result in (dbbackup, verify):
            peak = result.peak_mib or 0
            verdict = "PASS" if peak < TARGET_PEAK_MIB else "FAIL"
            lines.append(
                f"{verdict} {label}: {result.method} peak {peak:.0f} MiB "
                f"(under {TARGET_PEAK_MIB} MiB)"
            )
    return lines


def parse_arguments() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--food-entries",
        default="1000000,5000000",
        help="comma-separated sizes; users and weight entries scale with them",
    )
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--markdown", type=Path)
    arguments = parser.parse_args()
    try:
        arguments.sizes = [int(value) for value in arguments.food_entries.split(",")]
    except ValueError:
        parser.error("--food-entries: comma-separated whole numbers")
    if arguments.runs < 1 or any(value < 1 for value in arguments.sizes):
        parser.error("--runs and every size must be at least 1")
    return arguments


def main() -> int:
    arguments = parse_arguments()
    base.signal.signal(base.signal.SIGTERM, lambda *_: sys.exit(143))
    base.drop_stale_databases()
    load = " ".join(f"{value:.2f}" for value in base.os.getloadavg())
    measured = []
    try:
        with running_sshd() as server:
            for food_entries in arguments.sizes:
                sizes = base.Sizes(
                    max(1, food_entries // 50), food_entries, max(0, food_entries // 5)
                )
                measured.append(measure_size(sizes, arguments.runs, server))
    except base.BenchError as error:
        print(f"benchmark failed: {error}", file=sys.stderr)
        return 1
    table = rows(measured)
    print()
    print(base.text_table(HEADERS, table))
    print("\nTargets:")
    print("\n".join(targets(measured)))
    command = " ".join(["`.venv/bin/python bench/offsite.py", *sys.argv[1:]]) + "`"
    markdown = "\n".join(
        [
            f"## Off-site copies (bench/offsite.py, {time.strftime('%Y-%m-%d')})",
            "",
            command,
            "",
            f"Machine: {base.machine_description(load)}. The SFTP server is a local sshd "
            "(tests/sshd.py), so the network costs nothing here and the figures show "
            "dbops' own overhead; peak MiB: the measured process tree (not sshd's, not the "
            "database server's).",
            "",
            *[f"- {size.data}" for size in measured],
            "",
            base.markdown_table(HEADERS, table),
            "",
            "Targets:",
            "",
            *[f"- {line}" for line in targets(measured)],
        ]
    )
    print("\n--- Markdown (for docs/benchmarks.md) ---\n")
    print(markdown)
    if arguments.markdown:
        arguments.markdown.write_text(markdown + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
