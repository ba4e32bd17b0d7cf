#!/usr/bin/env bash
# Run the whole test suite against a real PostgreSQL server.
#
# Which server: TEST_DATABASE_URL if set; else the one listening on 127.0.0.1:5432 (user
# postgres); else, when PostgreSQL's server binaries are installed, a throwaway cluster in a
# temporary folder on a free port, stopped and removed afterwards. Otherwise it stops with a
# clear message. With no arguments, the whole suite on psycopg2 and then dbops' tests on
# psycopg 3; arguments are passed to pytest for one pass (CALORIA_TEST_DRIVER=psycopg: on
# psycopg 3).
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=.venv/bin/python

listening() { (exec 3<>"/dev/tcp/$1/$2") 2>/dev/null; }

find_server_bindir() {
  local candidate
  for candidate in "$(command -v initdb 2>/dev/null || true)" /usr/lib/postgresql/*/bin/initdb; do
    if [[ -x "$candidate" ]]; then dirname "$candidate"; return 0; fi
  done
  return 1
}

start_throwaway_cluster() {
  local port as_user=()
  PG_BINDIR=$(find_server_bindir) || {
    echo "make test: no PostgreSQL server listens on 127.0.0.1:5432, TEST_DATABASE_URL is not" >&2
    echo "set, and no PostgreSQL server binaries (initdb) are installed to start one." >&2
    echo "Install PostgreSQL (Debian: apt-get install postgresql) or set TEST_DATABASE_URL." >&2
    exit 1
  }
  THROWAWAY_DIR=$(mktemp -d /tmp/caloria-test-pg.XXXXXX)
  if [[ $(id -u) -eq 0 ]]; then
    chown postgres "$THROWAWAY_DIR"
    as_user=(runuser -u postgres --)
  fi
  port=$("$PYTHON" -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
  echo "make test: starting a throwaway PostgreSQL cluster ($PG_BINDIR) on 127.0.0.1:$port"
  "${as_user[@]}" "$PG_BINDIR/initdb" -D "$THROWAWAY_DIR/data" -U postgres -A trust -E UTF8 >/dev/null
  "${as_user[@]}" "$PG_BINDIR/pg_ctl" -D "$THROWAWAY_DIR/data" -l "$THROWAWAY_DIR/log" -w \
    -o "-p $port -k $THROWAWAY_DIR -c listen_addresses=127.0.0.1 -c fsync=off" start >/dev/null
  trap stop_throwaway_cluster EXIT
  DATABASE_URL="postgres://postgres@127.0.0.1:$port/caloria"
}

stop_throwaway_cluster() {
  local as_user=()
  [[ $(id -u) -eq 0 ]] && as_user=(runuser -u postgres --)
  "${as_user[@]}" "$PG_BINDIR/pg_ctl" -D "$THROWAWAY_DIR/data" -m immediate stop >/dev/null 2>&1 || true
  rm -rf "$THROWAWAY_DIR"
}

if [[ -n "${TEST_DATABASE_URL:-}" ]]; then
  DATABASE_URL=$TEST_DATABASE_URL
elif listening 127.0.0.1 5432; then
  DATABASE_URL="postgres://postgres@127.0.0.1:5432/caloria"
else
  start_throwaway_cluster
fi

scripts/install-chromium.sh
scripts/install-test-packages.sh
scripts/install-prometheus.sh

# dbops' tests where the driver makes a difference, run a second time under psycopg 3
# (.venv-psycopg3, without psycopg2): COPY in and out (the importer, checksums), sessions of
# dbops' own (backups, verification, restores and swaps, locks, check_consistency), the
# driver's errors under faults (signals, a server gone), and what health, /metrics and the
# status page read. Tests of SQLite alone, of files, keys, SSH, HTTP pings and the browser,
# and Caloria's own, run once, on psycopg2 which Caloria pins; so do the importer's bad-input,
# big-table and filled-target cases and its sequence faults (the same COPY, signals and lost
# connections as test_import_faults), consistency against a remote copy, and settings, whose
# COPY and sessions are those the tests below already run on psycopg 3. (The pooler's psycopg
# 3 settings are checked by tests/test_pooler.py and tests/test_pooled_queries.py in the first
# pass, through .venv-psycopg3.)
DRIVER_TESTS=(
  tests/sqlite_import tests/faults/test_import_faults.py tests/faults/test_backup_faults.py
  tests/faults/test_health_faults.py tests/faults/test_metrics_faults.py
  tests/test_drivers.py tests/test_table_checksums.py tests/commands/test_import_sqlite.py
  tests/commands/test_other_project.py tests/commands/test_backups.py
  tests/commands/test_backup_checksums.py tests/commands/test_check_consistency.py
  tests/commands/test_consistency_runs.py
  tests/commands/test_restore_backup.py tests/commands/test_validate_environment.py
  tests/test_health.py tests/test_metrics.py tests/test_status_page.py
)

status=0
run_pass() {
  local python=$1 driver=$2 backup_dir
  shift 2
  echo "make test: the $driver pass ($python -m pytest $*)"
  backup_dir=$(mktemp -d /tmp/caloria-test-backups.XXXXXX)
  CALORIA_ENV=test CALORIA_ENV_FILE="$PWD/tests/test.env" DATABASE_URL="$DATABASE_URL" \
    DBOPS_BACKUP_DIR="$backup_dir" CALORIA_TEST_DRIVER="$driver" \
    "$python" -m pytest "$@" || status=$?
  rm -rf "$backup_dir"
}

if [[ $# -gt 0 ]]; then
  # Chosen tests run once, on psycopg2 unless CALORIA_TEST_DRIVER=psycopg asks for psycopg 3.
  if [[ ${CALORIA_TEST_DRIVER:-psycopg2} == psycopg ]]; then
    run_pass .venv-psycopg3/bin/python psycopg "$@"
  else
    run_pass "$PYTHON" psycopg2 "$@"
  fi
else
  run_pass "$PYTHON" psycopg2
  run_pass .venv-psycopg3/bin/python psycopg "${DRIVER_TESTS[@]}"
fi
exit "$status"
