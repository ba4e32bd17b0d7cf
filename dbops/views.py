"""Health endpoints: what a load balancer, a monitor and a person on call each need.

- `/health/live/` touches no database: a process that is up but whose database is down
  should be taken out of rotation (readiness), not restarted in a loop (liveness).
- `/health/database/` is the probe a load balancer polls; `/health/` runs every check.

Anonymous callers get each check's status and a fixed message. Staff (a logged-in session)
or a caller with `Authorization: Bearer <DBOPS_HEALTH_TOKEN>` also get details; never a secret.
"""

from __future__ import annotations

import datetime
import hmac
import time

from django.conf import settings
from django.contrib.auth import get_user_model
from django.http import HttpResponse, JsonResponse
from django.utils.cache import add_never_cache_headers, patch_vary_headers
from health_check.views import HealthCheckView, MediaType

from dbops import archiving, conf, replication
from dbops.database import server_version
from dbops.health import (
    DATABASE_CHECKS,
    DATABASE_TIMEOUT,
    all_checks,
    newest_backup_age,
    prepare_connection,
)
from dbops.health_runner import result_within, run_checks, submit_once, submit_queued
from dbops.metrics import exposition


class DbopsHealthView(HealthCheckView):
    """django-health-check's view, run synchronously, within one deadline.

    The library's view is async: under WSGI every probe would build an event loop and hop
    threads, several times the cost of the probe itself. This keeps its checks, output
    formats and template, and runs the checks together in the process's health threads
    (dbops.health_runner), so a hung database still answers "timed out" within
    DBOPS_HEALTH_DEADLINE_SECONDS, details included, and the request thread is free again.
    """

    template_name = "dbops/health.html"
    # Whether the details include the standby's (its own deadline; the load balancer's
    # probe never waits on the standby).
    reports_standby = False

    def dispatch(self, request, *args, **kwargs):
        handler = getattr(self, request.method.lower(), self.http_method_not_allowed)
        response = handler(request, *args, **kwargs)
        patch_vary_headers(response, ["Accept"])
        add_never_cache_headers(response)
        return response

    def get(self, request, *args, **kwargs):
        started = time.monotonic()
        has_token = self.has_token(request)
        # Who holds a session is read from the database too: in a health thread, within the
        # deadline, so any cookie cannot hold the request thread on a hung database.
        staff = None
        if not has_token and settings.SESSION_COOKIE_NAME in request.COOKIES:
            staff = submit_queued(
                "staff session", lambda: is_active_staff(request), MAX_PENDING_SESSION_LOOKUPS
            )
        details = standby = None
        standby_alias = replication.configured_alias() if self.reports_standby else None
        if has_token or staff is not None:
            details = submit_once("details", database_details)
            if standby_alias is not None:
                standby = replication.submit_measurement(standby_alias)
        self.results = run_checks(self.get_checks(), started)
        self.details = None
        if has_token or (staff is not None and staff_within(staff, started)):
            self.details = details_within(details, started)
            if standby is not None:
                state = replication.observed_state(standby_alias, started, standby)
                self.details["replica"] = replication.details_of(state)
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

    def has_token(self, request) -> bool:
        return has_bearer_token(request, conf.HEALTH_TOKEN)

    def render_to_response_json(self, status):
        body = {
            repr(result.check): "OK" if not result.error else str(result.error)
            for result in self.results
        }
        if self.details is not None:
            body["details"] = self.details
        return JsonResponse(body, status=status)

    def get_context_data(self, **kwargs):
        return {
            "view": self,
            "results": self.results,
            "errors": any(result.error for result in self.results),
            "details": self.details,
        }


def has_bearer_token(request, *tokens: str) -> bool:
    header = request.headers.get("Authorization", "")
    if not header.startswith("Bearer "):
        return False
    given = header[len("Bearer ") :].encode()
    return any(token and hmac.compare_digest(given, token.encode()) for token in tokens)


# Session lookups waiting behind a hung one; beyond this, a cookie holder gets no details.
MAX_PENDING_SESSION_LOOKUPS = 8


def is_active_staff(request) -> bool:
    prepare_connection("default")
    user = request.user
    return bool(user.is_active and user.is_staff)


def staff_within(future, started: float) -> bool:
    try:
        return bool(result_within(future, started, DATABASE_TIMEOUT.total_seconds()))
    except Exception:  # noqa: BLE001 - unknown means anonymous
        return False


def details_within(future, started: float) -> dict:
    """Details as the database's own checks get them: within its timeout and the deadline."""
    try:
        return result_within(future, started, DATABASE_TIMEOUT.total_seconds())
    except Exception:  # noqa: BLE001 - details are best effort; never raw error text
        return {"error": "details unavailable"}


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
    if connection.vendor == "postgresql" and "database_error" not in details:
        try:
            details["wal_archiving"] = archiving.details_of(archiving.archiver_state(connection))
        except Exception:  # noqa: BLE001 - the WalArchiving check reports it
            details["wal_archiving"] = {"error": "archiver state unknown"}
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
            if estimate >= conf.HEALTH_EXACT_COUNT_BELOW:
                return {"user_count": estimate, "user_count_is_estimate": True}
        cursor.execute(f"SELECT count(*) FROM {connection.ops.quote_name(table)}")
        return {"user_count": cursor.fetchone()[0], "user_count_is_estimate": False}


def metrics(request):
    """`/metrics` (dbops.metrics) for a bearer of DBOPS_METRICS_TOKEN or DBOPS_HEALTH_TOKEN,
    or staff: 401 for anyone else without a session, 403 with a session that is not staff's.
    """
    started = time.monotonic()
    if not has_bearer_token(request, conf.METRICS_TOKEN, conf.HEALTH_TOKEN):
        if settings.SESSION_COOKIE_NAME not in request.COOKIES:
            return refused(401, "a bearer token (or a staff session) is required")
        staff = submit_queued(
            "staff session", lambda: is_active_staff(request), MAX_PENDING_SESSION_LOOKUPS
        )
        if staff is None or not staff_within(staff, started):
            return refused(403, "staff only")
    body, content_type = exposition(request.headers.get("Accept", ""))
    response = HttpResponse(body, content_type=content_type)
    patch_vary_headers(response, ["Accept", "Authorization", "Cookie"])
    add_never_cache_headers(response)
    return response


def refused(status: int, why: str) -> HttpResponse:
    response = HttpResponse(f"{why}\n", status=status, content_type="text/plain")
    if status == 401:
        response["WWW-Authenticate"] = 'Bearer realm="metrics"'
    add_never_cache_headers(response)
    return response


def live(request):
    """Liveness: the process answers. No database, no checks."""
    return HttpResponse("OK\n", content_type="text/plain")


database_view = DbopsHealthView.as_view(checks=DATABASE_CHECKS)


class FullHealthView(DbopsHealthView):
    """`/health/`: every check, the optional ones (a standby) as the settings say now."""

    reports_standby = True

    def get_checks(self):
        return all_checks()


all_checks_view = FullHealthView.as_view(checks=[])
