"""Fixtures of the end-to-end tests that more than one module of commands uses."""

from tests.restoring import site  # noqa: F401 - fixtures of the restore_backup tests (template: ../)
