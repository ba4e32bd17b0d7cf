"""Health endpoints: what a load balancer, a monitor and a person on call each need.

- `/health/live/` touches no database: a process that is up but whose database is down
  should be taken out of rotation (readiness), not restarted in a loop (liveness).
- `/health/database/` is the probe a load balancer polls; `/health/` runs every check.

Anonymous callers get each check's status and a fixed message. Staff (a logged-in session)
or a caller with `Authorization: Bearer <HEALTH_TOKEN>` also get details; never a secret.
"""

from __future__ import annotations

import datetime
import hmac
import logging
import time
from concurrent.futures import ThreadPoolExecutor
from concurrent.futures import TimeoutError as FutureTimeout

from django.conf import settings
from django.contrib.auth import get_user_model
from django.http import HttpResponse, JsonResponse
from django.utils.cache import add_never_cache_headers, patch_vary_headers
from health_check.base import HealthCheckResult
from health_check.exceptions import HealthCheckException, ServiceUnavailable
from health_check.views import HealthCheckView, MediaType

from dbops.database import server_version
from dbops.health import ALL_CHECKS, DATABASE_CHECKS, newest_backup_age, prepare_connection

logger = logging.getLogger("health_check")

# One long-lived thread per process runs every check, so its database connection persists
# from probe to probe (CONN_MAX_AGE) instead of being opened per request.
CHECK_EXECUTOR = ThreadPoolExecutor(max_workers=1, thread_name_prefix="dbops-health")
# Newest result of each check in this process: (monotonic time, error or None).
RECENT_RESULTS: dict[str, tuple[float, HealthCheckException | None]] = {}


class DbopsHealthView(HealthCheckView):
    """django-health-check's view, run synchronously.

    The library's view is async: under WSGI every probe would build an event loop and hop
    threads, several times the cost of the probe itself. This keeps its checks, output
    formats and template, and runs each check in the process's health thread with the
    check's own timeout, so a hung database still answers "unavailable" in time.
    """

    template_name = "dbops/health.html"

    def dispatch(self, request, *args, **kwargs):
        handler = getattr(self, request.method.lower(), self.http_method_not_allowed)
        response = handler(request, *args, **kwargs)
        patch_vary_headers(response, ["Accept"])
        add_never_cache_headers(response)
        return response

    def get(self, request, *args, **kwargs):
        self.details = (
            CHECK_EXECUTOR.submit(database_details) if self.may_see_details(request) else None
        )
        self.results = [run_check(check) for check in self.get_checks()]
        status = 500 if any(result.error for result in self.results) else 200
        return self.negotiated_response(request, status, **kwargs)

    def negotiated_response(self, request, status, **kwargs):
        if request.GET.get("format") == "json":
            return self.render_to_response_json(status)
        if request.GET.get("format") == "text":
            return self.render_to_response_text(status)
        for media in MediaType.parse_header(request.headers.get("accept", "*/*")):
            if media.mime_type in ("application/json", "application/*"):
                return self.render_to_response_json(status)
            if media.mime_type == "text/plain":
                return self.render_to_response_text(status)
            if media.mime_type in ("text/html", "application/xhtml+xml", "text/*", "*/*"):
                return self.render_to_response(self.get_context_data(**kwargs), status=status)
        return HttpResponse(
            "Not Acceptable: use text/html, text/plain or application/json",
            status=406,
            content_type="text/plain",
        )

    def may_see_details(self, request) -> bool:
        token = settings.HEALTH_TOKEN
        header = request.headers.get("Authorization", "")
        if token and header.startswith("Bearer "):
            return hmac.compare_digest(header[len("Bearer ") :].encode(), token.encode())
        if settings.SESSION_COOKIE_NAME not in request.COOKIES:
            return False  # no session: no need to load one to learn it is anonymous
        user = request.user
        return bool(user.is_active and user.is_staff)

    def resolved_details(self) -> dict | None:
        if self.details is None:
            return None
        try:
            return self.details.result(timeout=5)
        except Exception:  # noqa: BLE001 - details are best effort; never raw error text
            return {"error": "details unavailable"}

    def render_to_response_json(self, status):
        body = {
            repr(result.check): "OK" if not result.error else str(result.error)
            for result in self.results
        }
        details = self.resolved_details()
        if details is not None:
            body["details"] = details
        return JsonResponse(body, status=status)

    def get_context_data(self, **kwargs):
        return {
            "view": self,
            "results": self.results,
            "errors": any(result.error for result in self.results),
            "details": self.resolved_details(),
        }


def run_check(check) -> HealthCheckResult:
    """Run one check in the health thread, within its timeout, as the library would.

    A result is reused for DBOPS_HEALTH_CACHE_SECONDS (default 1 s) within a process, so a
    storm of probes (many load balancers, a monitor gone wild) costs the database at most
    one query per check per second per process; an outage still shows within a second.
    """
    ttl = settings.DBOPS_HEALTH_CACHE_SECONDS
    key = repr(check)
    cached = RECENT_RESULTS.get(key)
    now = time.monotonic()
    if ttl and cached is not None and now - cached[0] < ttl:
        return HealthCheckResult(check=check, error=cached[1], time_taken=0.0)
    result = _run_check(check)
    RECENT_RESULTS[key] = (now, result.error)
    return result


def _run_check(check) -> HealthCheckResult:
    started = time.perf_counter()
    future = CHECK_EXECUTOR.submit(check.run)
    try:
        future.result(timeout=check.timeout.total_seconds())
        error = None
    except HealthCheckException as exc:
        error = exc
        logger.warning("Health check %r failed: %s", check, exc)
    except FutureTimeout:
        error = ServiceUnavailable(f"Timed out after {check.timeout.total_seconds():g} seconds")
        logger.warning("Health check %r timed out", check)
    except Exception:
        logger.exception("Unexpected exception during health check")
        error = HealthCheckException("unknown error")
    return HealthCheckResult(check=check, error=error, time_taken=time.perf_counter() - started)


def database_details() -> dict:
    """What the old /health/database showed, for staff and token holders only."""
    details: dict = {"timestamp": datetime.datetime.now(datetime.UTC).isoformat()}
    connection = prepare_connection("default")
    details["database_vendor"] = connection.vendor
    details["database_name"] = str(connection.settings_dict["NAME"])
    try:
        with connection.cursor() as cursor:
            cursor.execute("SELECT 1")
        details["server_version"] = server_version(connection)
        details.update(user_count(connection))
    except Exception:  # noqa: BLE001 - the checks report the outage; details stay quiet
        details["database_error"] = "database unreachable"
    age = newest_backup_age()
    details["newest_backup_age_seconds"] = None if age is None else round(age)
    return details


def user_count(connection) -> dict:
    """Exact below the threshold; PostgreSQL's planner estimate above it, labelled so."""
    table = get_user_model()._meta.db_table
    with connection.cursor() as cursor:
        if connection.vendor == "postgresql":
            cursor.execute(
                "SELECT reltuples::bigint FROM pg_class WHERE oid = to_regclass(%s)", [table]
            )
            row = cursor.fetchone()
            estimate = row[0] if row else -1
            if estimate >= settings.DBOPS_HEALTH_EXACT_COUNT_BELOW:
                return {"user_count": estimate, "user_count_is_estimate": True}
        cursor.execute(f"SELECT count(*) FROM {connection.ops.quote_name(table)}")
        return {"user_count": cursor.fetchone()[0], "user_count_is_estimate": False}


def live(request):
    """Liveness: the process answers. No database, no checks."""
    return HttpResponse("OK\n", content_type="text/plain")


database_view = DbopsHealthView.as_view(checks=DATABASE_CHECKS)
all_checks_view = DbopsHealthView.as_view(checks=ALL_CHECKS)
