"""Run Django in a child process as a project of dbops alone (tests/minimal_settings.py), or a
variant of it that changes a few settings, to see what another project would see."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

from tests.conftest import PROJECT_ROOT, Completed, clean_environment

# Beside this interpreter's virtualenv (.venv), the one without psycopg2 (make test builds both).
PSYCOPG3_PYTHON = str(Path(sys.executable).parents[1].with_name(".venv-psycopg3") / "bin/python")

# Never connected to by the tests that use it: plain `check` opens no connection.
UNUSED_DATABASE_URL = "postgres://nobody@127.0.0.1:1/unused"


def write_variant(directory: Path, changes: str, name: str = "variant_settings") -> str:
    """A settings module in `directory` made of tests.minimal_settings plus `changes`
    (Python statements); returns its module name (`directory` goes on PYTHONPATH)."""
    source = "from tests.minimal_settings import *  # noqa: F403\n\n" + textwrap.dedent(changes)
    (directory / f"{name}.py").write_text(source)
    return name


def run_django(
    *args: str,
    backup_dir: Path,
    database_url: str = UNUSED_DATABASE_URL,
    settings_module: str = "tests.minimal_settings",
    pythonpath: Path | None = None,
    python: tuple[str, ...] = ("-m", "django"),
    timeout: float = 120,
    interpreter: str = sys.executable,
) -> Completed:
    """`python -m django ARGS` (or `python -c ...` through `python`) with only the
    environment the project of dbops alone reads: no CALORIA_*, no DBOPS_*."""
    variables = {
        "DJANGO_SETTINGS_MODULE": settings_module,
        "DATABASE_URL": database_url,
        "MINIMAL_BACKUP_DIR": str(backup_dir),
    }
    if pythonpath is not None:
        variables["PYTHONPATH"] = str(pythonpath)
    completed = subprocess.run(
        [interpreter, *python, *args],
        cwd=PROJECT_ROOT,
        env=clean_environment(**variables),
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
    return Completed(completed.returncode, completed.stdout, completed.stderr)
