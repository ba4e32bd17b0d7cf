"""A dead man's switch for the scheduled commands (`dbbackup`, `check_consistency`).

A monitor that only hears about failures never hears about a job that stopped running at all
(cron gone, timer disabled, machine replaced). So, with `DBOPS_BACKUP_PING_URL` (or
`DBOPS_CONSISTENCY_PING_URL`) set, every run tells a monitor of the healthchecks.io kind that
it ran: a GET to the URL when it succeeded, a POST to `<url>/fail` when it failed, carrying the
last lines of its output and log (10 kB at most, every secret masked). The monitor raises the
alarm when the pings stop as well as when one says "fail".

A ping is the monitor's business, never the run's: it gives up after
DBOPS_PING_TIMEOUT_SECONDS (the whole request, not each read), and a ping that fails is one
WARNING line in the log (naming the monitor's host, never the URL's path, which is the
secret of a healthchecks.io check); the run's outcome and exit code are unchanged.
"""

from __future__ import annotations

import collections
import io
import logging
import sys
import threading
import urllib.error
import urllib.request
from urllib.parse import urlsplit

from dbops import conf

logger = logging.getLogger("dbops.pings")

BODY_LIMIT = 10_000  # bytes: healthchecks.io keeps the first 10 kB (100 kB on some plans)
TAIL_LINES = 200
# The loggers whose records go into a failure's body, beside the command's own output.
LOGGERS = ("dbops", "dbbackup")


class Tail:
    """The newest lines written through it (output and log records alike)."""

    def __init__(self):
        self.lines: collections.deque[str] = collections.deque(maxlen=TAIL_LINES)
        self.partial = ""
        self.lock = threading.Lock()

    def add(self, text: str) -> None:
        with self.lock:
            *complete, self.partial = (self.partial + text).split("\n")
            self.lines.extend(complete)

    def text(self) -> str:
        with self.lock:
            return "\n".join([*self.lines, self.partial]).strip("\n")


class Tee(io.TextIOBase):
    """A stream that writes through to another and keeps the tail of what was written."""

    def __init__(self, stream, tail: Tail):
        self.stream = stream
        self.tail = tail

    def write(self, text: str) -> int:
        self.tail.add(text)
        return self.stream.write(text)

    def flush(self) -> None:
        self.stream.flush()

    def isatty(self) -> bool:
        return hasattr(self.stream, "isatty") and self.stream.isatty()


class TailHandler(logging.Handler):
    def __init__(self, tail: Tail):
        super().__init__(logging.INFO)
        self.tail = tail
        self.setFormatter(logging.Formatter("%(levelname)s %(name)s: %(message)s"))

    def emit(self, record: logging.LogRecord) -> None:
        try:
            self.tail.add(self.format(record) + "\n")
        except Exception:  # noqa: BLE001 - a log line must never break the run
            self.handleError(record)


def masked_body(text: str) -> bytes:
    """The last BODY_LIMIT bytes of `text`, secrets masked, cut at a line where possible."""
    from dbops.masking import known_secrets, mask_text

    data = mask_text(text, known_secrets()).encode()
    if len(data) <= BODY_LIMIT:
        return data
    data = data[-BODY_LIMIT:]
    newline = data.find(b"\n")
    if 0 <= newline < len(data) - 1:
        data = data[newline + 1 :]
    return data.decode("utf-8", "ignore").encode()


def url_problem(url: str) -> str:
    """Why `url` cannot be pinged ("" when it can): urllib refuses anything but an absolute
    http(s) URL, and a URL without a scheme ("hc-ping.com/<uuid>") is the usual slip. Names
    no part of the URL, whose path is the secret of a healthchecks.io check."""
    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018 - raises ValueError for a port that is not a number
    except ValueError:
        return "not a URL"
    if parts.scheme.lower() not in ("http", "https"):
        return "not an http:// or https:// URL"
    if not parts.hostname:
        return "no host in the URL"
    return ""


def where(url: str) -> str:
    """The monitor as a log line may name it: scheme and host, no credentials, no path."""
    if url_problem(url):
        return "a malformed URL"
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.hostname}" + (f":{parts.port}" if parts.port else "")


def ping(url: str, failed: bool, log: str = "") -> bool:
    """GET `url` (success) or POST the masked log to `url/fail`; whether the monitor took it.

    The request runs in a daemon thread waited on for DBOPS_PING_TIMEOUT_SECONDS, so a
    monitor that accepts the connection and then trickles or says nothing cannot hold the
    run longer than that.
    """
    timeout = float(conf.PING_TIMEOUT_SECONDS)
    outcome: list[str] = []

    def send():
        try:
            target = url.rstrip("/") + "/fail" if failed else url
            request = urllib.request.Request(
                target,
                data=masked_body(log) if failed else None,
                method="POST" if failed else "GET",
                headers={"Content-Type": "text/plain; charset=utf-8", "User-Agent": "dbops-ping"},
            )
            with urllib.request.urlopen(request, timeout=timeout) as response:
                response.read(1024)
            outcome.append("")
        except urllib.error.HTTPError as exc:
            outcome.append(f"HTTP {exc.code}")
        except Exception as exc:  # noqa: BLE001 - whatever goes wrong, the run goes on
            # The class alone: urllib's own words may quote the URL, and so its secret.
            outcome.append(type(getattr(exc, "reason", exc)).__name__)

    problem = url_problem(url)
    if not problem:
        thread = threading.Thread(target=send, name="dbops-ping", daemon=True)
        thread.start()
        thread.join(timeout)
        problem = outcome[0] if outcome else f"no answer within {timeout:g} s"
    if problem:
        logger.warning(
            "dbops: the %s ping to %s failed (%s); the run's own outcome is unchanged",
            "fail" if failed else "success",
            where(url),
            problem,
        )
    return not problem


class PingsMonitor:
    """Mixin for a management command: ping `conf.<ping_setting>` when the run ends.

    Success is `handle` returning; failure is anything it raises (CommandError, exit 1).
    A bad command line never gets this far (argparse exits 2 first): it is not a run.
    """

    ping_setting = ""

    def pings_this_run(self, options: dict) -> bool:
        return True

    def execute(self, *args, **options):
        url = getattr(conf, self.ping_setting)
        if not url or not self.pings_this_run(options):
            return super().execute(*args, **options)
        tail = Tail()
        options["stdout"] = Tee(options.get("stdout") or sys.stdout, tail)
        options["stderr"] = Tee(options.get("stderr") or sys.stderr, tail)
        handler = TailHandler(tail)
        for name in LOGGERS:
            logging.getLogger(name).addHandler(handler)
        try:
            result = super().execute(*args, **options)
        except BaseException as exc:
            tail.add(f"\n{type(exc).__name__}: {exc}\n")
            unhook(handler)
            ping(url, failed=True, log=tail.text())
            raise
        unhook(handler)
        ping(url, failed=False)
        return result


def unhook(handler: logging.Handler) -> None:
    for name in LOGGERS:
        logging.getLogger(name).removeHandler(handler)
