"""Health endpoints: what a load balancer, a monitor and a person on call each need.

- `/health/live/` touches no database: a process that is up but whose database is down
  should be taken out of rotation (readiness), not restarted in a loop (liveness).
- `/health/database/` is the probe a load balancer polls; `/health/` runs every check.

Anonymous callers get each check's status and a fixed message. Staff (a logged-in session)
or a caller with `Authorization: Bearer <HEALTH_TOKEN>` also get details; never a secret.
"""

from __future__ import annotations

import contextlib
import datetime
import hmac
from concurrent.futures import ThreadPoolExecutor

from django.conf import settings
from django.contrib.auth import get_user_model
from django.http import HttpResponse, JsonResponse
from health_check.views import HealthCheckView

from dbops.database import server_version
from dbops.health import ALL_CHECKS, DATABASE_CHECKS, newest_backup_age, prepare_connection

# One long-lived thread per process runs every check, so its database connection persists
# from probe to probe (CONN_MAX_AGE) instead of being opened per request.
CHECK_EXECUTOR = ThreadPoolExecutor(max_workers=1, thread_name_prefix="dbops-health")


class DbopsHealthView(HealthCheckView):
    template_name = "dbops/health.html"

    def get_executor(self):
        return contextlib.nullcontext(CHECK_EXECUTOR)

    async def get(self, request, *args, **kwargs):
        self.details = None
        if await self.may_see_details(request):
            future = CHECK_EXECUTOR.submit(database_details)
            self.details = future
        response = await super().get(request, *args, **kwargs)
        return response

    async def may_see_details(self, request) -> bool:
        token = settings.HEALTH_TOKEN
        header = request.headers.get("Authorization", "")
        if token and header.startswith("Bearer "):
            return hmac.compare_digest(header[len("Bearer ") :].encode(), token.encode())
        user = await request.auser()
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
        return {**super().get_context_data(**kwargs), "details": self.resolved_details()}


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
