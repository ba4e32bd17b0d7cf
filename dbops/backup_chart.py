"""The status page's backup chart: the last 30 backup runs' size and duration, and the newest
verification, as a small SVG drawn on the server.

Server-rendered, so the page needs no script, no charting library and no CDN, and shows in
any browser an admin may have at hand during an incident. A person reads a trend (a backup
that suddenly shrank, one that takes twice as long, failures in a row, no verification for
weeks) at a glance that a table of numbers hides. Every mark has a <title> (a tooltip, and
what a screen reader reads) giving the exact figures.
"""

from __future__ import annotations

from django.db import DatabaseError
from django.template.defaultfilters import filesizeformat

RUNS = 30
WIDTH, HEIGHT = 640, 180
LEFT, RIGHT, TOP, BOTTOM = 64, 56, 16, 28  # room for the axes' labels
FAILED_MARK = 6  # height of the red mark a failed run leaves on the baseline


def backup_chart(limit: int = RUNS) -> dict | None:
    """The chart's geometry and labels; None when there is nothing (or nothing readable)."""
    from dbops.models import BackupRecord

    try:
        runs = list(
            BackupRecord.objects.exclude(status=BackupRecord.Status.RUNNING)
            .order_by("-started_at", "-id")
            .only(
                "started_at",
                "status",
                "filename",
                "size",
                "duration_seconds",
                "verification",
                "verified_at",
            )[:limit]
        )
        newest_verified = (
            BackupRecord.objects.exclude(verification=BackupRecord.Verification.NOT_VERIFIED)
            .exclude(verified_at=None)
            .order_by("-verified_at")
            .only("id", "filename", "verification", "verified_at", "started_at")
            .first()
        )
    except DatabaseError:
        return None
    if not runs:
        return None
    runs.reverse()  # oldest on the left
    return layout(runs, newest_verified, limit)


def layout(runs, newest_verified, limit: int) -> dict:
    plot_width, plot_height = WIDTH - LEFT - RIGHT, HEIGHT - TOP - BOTTOM
    baseline = TOP + plot_height
    slot = plot_width / limit
    largest = max((run.size or 0 for run in runs), default=0) or 1
    longest = max((run.duration_seconds or 0 for run in runs), default=0) or 1
    bars, points = [], []
    for index, run in enumerate(runs):
        x = LEFT + index * slot
        succeeded = run.status == "succeeded"
        height = (run.size or 0) / largest * plot_height if succeeded else FAILED_MARK
        is_verified = newest_verified is not None and run.pk == newest_verified.pk
        bars.append(
            {
                "x": number(x + slot * 0.15),
                "y": number(baseline - height),
                "width": number(slot * 0.7),
                "height": number(height),
                "status": run.status,
                "verified": is_verified,
                "title": describe(run),
            }
        )
        if succeeded and run.duration_seconds is not None:
            y = baseline - run.duration_seconds / longest * plot_height
            points.append({"x": number(x + slot / 2), "y": number(y), "title": describe(run)})
    return {
        "width": WIDTH,
        "height": HEIGHT,
        "left": LEFT,
        "right": WIDTH - RIGHT,
        "top": TOP,
        "baseline": baseline,
        "label_y": baseline + 18,
        "bars": bars,
        "points": points,
        "polyline": " ".join(f"{p['x']},{p['y']}" for p in points),
        "largest": filesizeformat(largest),
        "longest": f"{longest:.1f} s",
        "runs": len(runs),
        "failed": sum(run.status != "succeeded" for run in runs),
        "verification": verification_text(newest_verified),
        "verification_failed": newest_verified is not None
        and newest_verified.verification == "failed",
    }


def number(value: float) -> str:
    """A coordinate as SVG reads it (a template would localize a float: "12,5" in some
    languages)."""
    return f"{value:.1f}"


def describe(run) -> str:
    when = f"{run.started_at:%Y-%m-%d %H:%M} UTC"
    if run.status != "succeeded":
        return f"{when}: {run.get_status_display().lower()}"
    duration = f"{run.duration_seconds:.1f} s" if run.duration_seconds is not None else "?"
    verified = f", verification {run.verification}" if run.verification else ""
    return f"{when}: {run.filename}, {filesizeformat(run.size or 0)} in {duration}{verified}"


def verification_text(record) -> str:
    if record is None:
        return "Newest verification: none yet (dbbackup --verify, or verify_backup)"
    return (
        f"Newest verification: {record.verification} at {record.verified_at:%Y-%m-%d %H:%M} UTC "
        f"({record.filename or 'a backup'} of {record.started_at:%Y-%m-%d %H:%M} UTC)"
    )
