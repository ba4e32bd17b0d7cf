"""Running health checks: all at once, each in a thread of its own, within one deadline.

A query on a hung database server (stopped with SIGSTOP, or behind a network that keeps TCP
alive while nothing answers) blocks until the server answers, perhaps never: the kernel
acknowledges every packet, so no socket timeout fires. The caller cannot stop the query, only
stop waiting for it. So each check runs in a thread, and a probe waits for all of them
together, each at most its own timeout and never past DBOPS_HEALTH_DEADLINE_SECONDS; a check
that has not answered by then is reported as timed out and goes on hanging in its thread.

- One thread per check, kept for the life of the process: each holds its own persistent
  Django connection (connections are per thread), so probes reuse connections, and one hung
  check holds up no other.
- A check still running from an earlier probe is not started again: the new probe waits on
  that same run. Hung threads never pile up (at most one per check per process), and a
  struggling database gets no extra queries.
- Daemon threads: a thread hung on a frozen server must not keep a gunicorn worker from
  exiting (the interpreter joins ordinary threads at exit).
- Threads do not survive fork (gunicorn's preload_app imports this in the master, then forks
  the workers), so threads are started on first use, and a forked child forgets its parent's.
"""

from __future__ import annotations

import logging
import os
import queue
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future, wait
from concurrent.futures import TimeoutError as FutureTimeout

from health_check.base import HealthCheckResult
from health_check.exceptions import HealthCheckException, ServiceUnavailable

from dbops import conf

logger = logging.getLogger("health_check")

# Newest result of each check in this process: (monotonic time, error or None, seconds taken).
RECENT_RESULTS: dict[str, tuple[float, HealthCheckException | None, float]] = {}
# What the log last said of each check in this process: its failure's text, or None (passing).
LOGGED_STATE: dict[str, str | None] = {}


class TimedFuture(Future):
    """A Future that also says how long its function ran (None until it has finished).

    Timed in the thread that ran it: the probe collects results one after another, so the
    time until collection would charge every check after a slow one with the slow one's
    wait."""

    seconds: float | None = None


class HealthThread:
    """One daemon thread that runs the functions given to it, one after another."""

    def __init__(self, name: str):
        self.jobs: queue.SimpleQueue = queue.SimpleQueue()
        self.running: Future | None = None  # the newest job given through submit_once
        threading.Thread(target=self._work, name=name, daemon=True).start()

    def _work(self) -> None:
        while True:
            future, function = self.jobs.get()
            if not future.set_running_or_notify_cancel():
                continue
            begun = time.monotonic()
            try:
                result = function()
            except BaseException as exc:  # noqa: BLE001 - for whoever waits; the thread lives on
                future.seconds = time.monotonic() - begun
                future.set_exception(exc)
            else:
                future.seconds = time.monotonic() - begun
                future.set_result(result)

    def submit(self, function: Callable) -> TimedFuture:
        future = TimedFuture()
        self.jobs.put((future, function))
        return future


_threads: dict[str, HealthThread] = {}
_lock = threading.Lock()


def _forget_threads_after_fork() -> None:
    global _lock
    _lock = threading.Lock()
    _threads.clear()
    RECENT_RESULTS.clear()
    LOGGED_STATE.clear()


os.register_at_fork(after_in_child=_forget_threads_after_fork)


def submit_once(key: str, function: Callable) -> TimedFuture:
    """Run `function` in the health thread for `key`, unless its previous run is unfinished:
    then that run's future is returned instead."""
    with _lock:
        thread = _threads.get(key)
        if thread is None:
            thread = _threads[key] = HealthThread(f"dbops-health {key}")
        if thread.running is None or thread.running.done():
            thread.running = thread.submit(function)
        return thread.running


def submit_queued(key: str, function: Callable, max_pending: int) -> Future | None:
    """Run `function` in the health thread for `key` after the jobs given before it; None
    when `max_pending` are still waiting (a hung database: the caller does without)."""
    with _lock:
        thread = _threads.get(key)
        if thread is None:
            thread = _threads[key] = HealthThread(f"dbops-health {key}")
        if thread.jobs.qsize() >= max_pending:
            return None
        return thread.submit(function)


def close_connections(timeout: float = 10) -> None:
    """Close every health thread's database connection (tests, before the database is
    dropped); a thread still hung closes its own when it is free, unwaited for."""
    from django.db import connections

    with _lock:
        futures = [thread.submit(connections.close_all) for thread in _threads.values()]
    wait(futures, timeout=timeout)


def time_limit(timeout: float) -> float:
    """Seconds a probe waits for something whose own timeout is `timeout`."""
    return min(timeout, conf.HEALTH_DEADLINE_SECONDS)


def result_within(future: Future, started: float, timeout: float):
    """The future's result, waiting until `time_limit(timeout)` after `started` at most."""
    return future.result(timeout=max(0.0, started + time_limit(timeout) - time.monotonic()))


def run_checks(checks, started: float | None = None) -> list[HealthCheckResult]:
    """Run the checks together; each answers within its timeout and the probe's deadline.

    A result is reused for DBOPS_HEALTH_CACHE_SECONDS (default 1 s) within a process, so a
    storm of probes (many load balancers, a monitor gone wild) costs the database at most
    one query per check per second per process; an outage still shows within a second.
    """
    checks = list(checks)
    started = time.monotonic() if started is None else started
    ttl = conf.HEALTH_CACHE_SECONDS
    reused, running = {}, {}
    for check in checks:
        key = repr(check)
        cached = RECENT_RESULTS.get(key)
        if ttl and cached is not None and started - cached[0] < ttl:
            reused[key] = cached
        else:
            running[key] = submit_once(key, check.run)
    results = []
    for check in checks:
        key = repr(check)
        if key in reused:
            _, error, taken = reused[key]
            results.append(HealthCheckResult(check=check, error=error, time_taken=taken))
            continue
        future = running[key]
        error = outcome(check, future, started)
        # Its own run's time; one still running (timed out) has taken the wait, at least.
        taken = future.seconds if future.seconds is not None else time.monotonic() - started
        RECENT_RESULTS[key] = (started, error, taken)
        log_change(key, error)
        results.append(HealthCheckResult(check=check, error=error, time_taken=taken))
    return results


def log_change(key: str, error: HealthCheckException | None) -> None:
    """Log a check's state once per change, per process: WARNING with the check's name and
    its fixed reason when it starts failing (or fails for another reason), INFO when it
    passes again. A probe every second of a long outage writes one line, not thousands."""
    state = None if error is None else str(error)
    if LOGGED_STATE.get(key) == state:
        return
    had_failed = LOGGED_STATE.get(key) is not None
    LOGGED_STATE[key] = state
    if state is not None:
        logger.warning("Health check %s failed: %s", key, state)
    elif had_failed:
        logger.info("Health check %s passes again", key)


def outcome(check, future: Future, started: float) -> HealthCheckException | None:
    """What a check's run says, as the library would say it; never exception text."""
    timeout = check.timeout.total_seconds()
    try:
        result_within(future, started, timeout)
        return None
    except HealthCheckException as exc:
        return exc
    except FutureTimeout:
        return ServiceUnavailable(f"Timed out after {time_limit(timeout):g} s")
    except Exception as exc:  # noqa: BLE001 - its text may name secrets: only its type
        return HealthCheckException(f"unexpected {type(exc).__name__}")
