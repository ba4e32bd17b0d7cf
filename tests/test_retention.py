"""dbops.retention.decide: the tiers, the floor, the newest verified and the pinned backups, on
records at chosen dates (no database: the decision is a function of the records)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

from dbops.models import BackupRecord
from dbops.retention import Policy, decide

NOW = datetime(2026, 3, 18, 12, 0, tzinfo=UTC)  # a Wednesday
NOTHING = {"daily": 0, "weekly": 0, "monthly": 0, "minimum": 0}


def record(moment: datetime, pk: int, **fields) -> BackupRecord:
    fields.setdefault("status", BackupRecord.Status.SUCCEEDED)
    return BackupRecord(
        pk=pk, started_at=moment, filename=f"backup-{moment:%Y-%m-%d-%H%M%S}.psql.bin.gz", **fields
    )


def records_at(*moments: datetime, **fields) -> list[BackupRecord]:
    return [record(moment, pk, **fields) for pk, moment in enumerate(moments, start=1)]


def kept(records, **policy) -> list[datetime]:
    decisions = decide(records, Policy(**{**NOTHING, **policy}), NOW)
    return sorted(d.record.started_at for d in decisions if d.keep)


def at(text: str, tz=UTC) -> datetime:
    return datetime.fromisoformat(text).replace(tzinfo=tz)


def test_daily_keeps_the_newest_backup_of_each_of_the_last_n_days_that_have_one():
    every_six_hours = [NOW - timedelta(hours=6 * n) for n in range(40)]  # 10 days

    assert kept(records_at(*every_six_hours), daily=7) == sorted(
        max(m for m in every_six_hours if m.date() == day)
        for day in {m.date() for m in every_six_hours}
        if day > NOW.date() - timedelta(days=7)
    )


def test_days_are_utc_days_whatever_the_time_zone_of_the_timestamps():
    plus_two = timezone(timedelta(hours=2))
    # 01:00 on the 17th at +02:00 is 23:00 on the 16th in UTC: the same UTC day as 22:00.
    late = at("2026-03-16T22:00:00")
    next_morning_there = at("2026-03-17T01:00:00", plus_two)
    midnight = at("2026-03-17T00:00:00")

    assert kept(records_at(late, next_morning_there, midnight), daily=7) == [
        next_morning_there,
        midnight,
    ]


def test_a_day_without_a_backup_uses_no_daily_slot():
    moments = [at("2026-03-18T02:00:00"), at("2026-03-01T02:00:00"), at("2026-02-01T02:00:00")]

    assert kept(records_at(*moments), daily=3) == sorted(moments)
    assert kept(records_at(*moments), daily=2) == sorted(moments[:2])


def test_weekly_keeps_the_newest_of_each_iso_week_monday_to_sunday():
    sunday_night = at("2026-03-15T23:59:59")
    monday_midnight = at("2026-03-16T00:00:00")
    saturday = at("2026-03-14T10:00:00")
    previous_sunday = at("2026-03-08T12:00:00")

    moments = [sunday_night, monday_midnight, saturday, previous_sunday]
    assert kept(records_at(*moments), weekly=2) == [sunday_night, monday_midnight]
    assert kept(records_at(*moments), weekly=3) == [previous_sunday, sunday_night, monday_midnight]


def test_iso_weeks_cross_the_new_year():
    # 2026-01-01 is a Thursday: 2025-12-29 to 2026-01-04 is week 2026-W01.
    moments = [at("2025-12-28T12:00:00"), at("2025-12-29T12:00:00"), at("2026-01-04T12:00:00")]

    assert kept(records_at(*moments), weekly=2) == [moments[0], moments[2]]


def test_monthly_keeps_the_newest_of_each_month_and_a_month_without_backups_uses_no_slot():
    end_of_january = at("2026-01-31T23:59:59")
    first_of_march = at("2026-03-01T00:00:00")
    mid_january = at("2026-01-15T00:00:00")
    december = at("2025-12-31T23:00:00")

    moments = [end_of_january, first_of_march, mid_january, december]
    assert kept(records_at(*moments), monthly=2) == [end_of_january, first_of_march]
    assert kept(records_at(*moments), monthly=3) == [december, end_of_january, first_of_march]


def test_daily_weekly_and_monthly_together_over_fifteen_months_of_nightly_backups():
    first = datetime(2025, 1, 1, 2, 0, tzinfo=UTC)
    nightly = [first + timedelta(days=n) for n in range((NOW - first).days + 1)]

    expected = (
        [at(f"2026-03-{day:02d}T02:00:00") for day in range(12, 19)]  # 7 daily
        + [at("2026-03-08T02:00:00"), at("2026-03-01T02:00:00")]  # weeks 10 and 9 (Sundays)
        + [at(f"{month}T02:00:00") for month in ("2026-02-28", "2026-01-31", "2025-12-31")]
        + [at(f"{month}T02:00:00") for month in ("2025-11-30", "2025-10-31", "2025-09-30")]
        + [at(f"{month}T02:00:00") for month in ("2025-08-31", "2025-07-31", "2025-06-30")]
        + [at(f"{month}T02:00:00") for month in ("2025-05-31", "2025-04-30")]
    )
    assert kept(records_at(*nightly), daily=7, weekly=4, monthly=12, minimum=3) == sorted(expected)


def test_the_floor_keeps_the_n_newest_successful_backups_and_failed_runs_do_not_count():
    good = [NOW - timedelta(days=30 + n) for n in range(5)]
    failed = [NOW - timedelta(days=n) for n in range(3)]
    records = records_at(*good) + [
        record(moment, 100 + n, status=BackupRecord.Status.FAILED)
        for n, moment in enumerate(failed)
    ]

    decisions = decide(records, Policy(**{**NOTHING, "minimum": 3}), NOW)

    assert [d.record.started_at for d in decisions] == good  # failed runs are not considered
    assert [d.keep for d in decisions] == [True, True, True, False, False]
    assert decisions[0].why == "1 of the 3 newest (KEEP_MIN)"


def test_the_newest_verified_backup_is_kept_however_old_and_a_failed_verification_is_not():
    records = [
        record(NOW - timedelta(days=1), 1),
        record(NOW - timedelta(days=100), 2, verification=BackupRecord.Verification.FAILED),
        record(NOW - timedelta(days=400), 3, verification=BackupRecord.Verification.PASSED),
        record(NOW - timedelta(days=500), 4, verification=BackupRecord.Verification.PASSED),
    ]

    decisions = {d.record.pk: d for d in decide(records, Policy(**NOTHING), NOW)}

    assert {pk: d.keep for pk, d in decisions.items()} == {1: False, 2: False, 3: True, 4: False}
    assert decisions[3].why == "the newest verified backup"


def test_a_pinned_backup_is_kept_whatever_its_age():
    records = records_at(NOW - timedelta(days=3000), NOW - timedelta(days=2000))
    records[1].pinned = True

    decisions = decide(records, Policy(**NOTHING), NOW)

    assert [(d.record.pk, d.keep, d.why) for d in decisions] == [
        (2, True, "pinned (kept from the admin)"),
        (1, False, "older than the tiers keep (0 daily, 0 weekly, 0 monthly, the 0 newest)"),
    ]


def test_keep_days_keeps_every_backup_younger_than_n_days():
    hourly = [NOW - timedelta(hours=n) for n in range(72)]

    assert kept(records_at(*hourly), days=2) == sorted(hourly[:48])


def test_every_reason_is_given_and_a_backup_that_goes_says_which_one_its_day_keeps():
    newest, earlier = at("2026-03-18T10:00:00"), at("2026-03-18T04:00:00")
    records = records_at(newest, earlier)

    decisions = decide(records, Policy(daily=7, weekly=4, monthly=12, minimum=1), NOW)

    assert decisions[0].why == (
        "1 of the 1 newest (KEEP_MIN); daily 1 of 7: the newest of 2026-03-18; "
        "weekly 1 of 4: the newest of week 2026-W12; monthly 1 of 12: the newest of 2026-03"
    )
    assert not decisions[1].keep
    assert decisions[1].why == (
        "not the newest backup of 2026-03-18 (backup-2026-03-18-100000.psql.bin.gz is)"
    )


def test_no_records_no_decisions():
    assert decide([], Policy(), NOW) == []
