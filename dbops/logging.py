"""Logging helpers for dbops."""

import logging


class HealthFailureWithoutTraceback(logging.Filter):
    """django-health-check logs every failed check with its traceback; a check that reports
    "database unreachable" has failed as designed, so one line is enough in the log."""

    def filter(self, record: logging.LogRecord) -> bool:
        if record.levelno < logging.ERROR:
            record.exc_info = None
            record.exc_text = None
        return True
