"""The retention selection as tables: (policy, zone, now, backups) -> which are kept
and why. Instants are written in UTC and the expected buckets worked out by hand from
the zones' published DST transitions (Europe/Berlin springs forward on 2026-03-29
at 01:00 UTC; America/New_York falls back on 2026-11-01 at 06:00 UTC)."""

from __future__ import annotations

import uuid
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from services.common.db.enums import BackupStatus
from services.common.retention import (
    KEEP_ALL,
    NEWEST_GOOD,
    NEWEST_VERIFIED,
    STILL_RUNNING,
    BackupPlan,
    Candidate,
    bucket,
    decide,
    effective,
)
from services.common.retention_policy import RetentionPolicy

S = BackupStatus


def utc(text: str) -> datetime:
    return datetime.fromisoformat(text).replace(tzinfo=UTC)


@dataclass(frozen=True)
class B:
    """One backup of a table row: a name, when it finished (UTC), and its state."""

    name: str
    at: str
    status: BackupStatus = S.SUCCEEDED
    verified: bool = False
    usable: bool = True
    broken_at: str | None = None
    on: str = ""
    """The destinations holding a stored copy, one letter each ("" : not told)."""


def dest(letter: str) -> uuid.UUID:
    return uuid.uuid5(uuid.NAMESPACE_URL, f"destination:{letter}")


def plans(
    policy: dict[str, Any], tz: str, now: str, rows: list[B], days: int = 30
) -> dict[str, BackupPlan]:
    ids = {row.name: uuid.uuid5(uuid.NAMESPACE_OID, row.name) for row in rows}
    names = {v: k for k, v in ids.items()}
    candidates = [
        Candidate(
            id=ids[row.name],
            status=row.status,
            finished_at=utc(row.at),
            verified=row.verified,
            usable=row.usable,
            broken_at=utc(row.broken_at) if row.broken_at else None,
            stored_on=frozenset(dest(letter) for letter in row.on),
        )
        for row in rows
    ]
    decisions = decide(
        RetentionPolicy.model_validate(policy), tz, utc(now), candidates,
        failed_run_retention_days=days,
    )  # fmt: skip
    return {names[d.backup_id]: d for d in decisions}


def run(policy: dict[str, Any], tz: str, now: str, rows: list[B], days: int = 30) -> dict[str, Any]:
    return {name: (d.keep, d.reasons) for name, d in plans(policy, tz, now, rows, days).items()}


def kept(result: dict[str, Any]) -> list[str]:
    return [name for name, (keep, _) in result.items() if keep]


def daily(first: str, count: int, time: str = "02:00") -> list[B]:
    start = datetime.fromisoformat(f"{first}T{time}")
    return [B(f"d{i}", (start + timedelta(days=i)).isoformat()) for i in range(count)]


# -- which backups are kept: (id, policy, zone, now, backups, kept newest first) ----------

# fmt: off
KEPT_CASES = [
    ("no rule keeps everything", {}, "UTC", "2026-01-10T00:00",
     daily("2026-01-01", 5), ["d4", "d3", "d2", "d1", "d0"]),
    ("keep_last 3", {"keep_last": 3}, "UTC", "2026-01-10T00:00",
     daily("2026-01-01", 5), ["d4", "d3", "d2"]),
    ("keep_last larger than what exists", {"keep_last": 10}, "UTC", "2026-01-10T00:00",
     daily("2026-01-01", 3), ["d2", "d1", "d0"]),
    # Younger than 7 days: strictly less (d2 is exactly 7 days old and goes).
    ("max_age 7 days", {"max_age_days": 7}, "UTC", "2026-01-10T02:00",
     daily("2026-01-01", 6), ["d5", "d4", "d3"]),
    ("keep_last or max_age, whichever keeps more", {"keep_last": 2, "max_age_days": 4},
     "UTC", "2026-01-10T00:00", daily("2026-01-01", 8), ["d7", "d6", "d5"]),
    ("max_age alone never empties a database", {"max_age_days": 1}, "UTC",
     "2026-06-01T00:00", daily("2026-01-01", 3), ["d2"]),
    # GFS counts periods that have a backup, not calendar periods: a pause in backups
    # does not make the old ones expire.
    ("gfs daily counts days with backups", {"gfs": {"daily": 3}}, "UTC", "2026-03-01T00:00",
     [B("a", "2026-01-01T01:00"), B("b", "2026-01-11T01:00"), B("c", "2026-01-21T01:00"),
      B("d", "2026-01-31T01:00")], ["d", "c", "b"]),
    ("gfs keeps the newest of each day", {"gfs": {"daily": 2}}, "UTC", "2026-01-03T00:00",
     [B("1a", "2026-01-01T01:00"), B("1b", "2026-01-01T23:00"), B("2a", "2026-01-02T00:10"),
      B("2b", "2026-01-02T12:00")], ["2b", "1b"]),
    ("gfs tiers combine", {"gfs": {"daily": 2, "weekly": 2, "monthly": 2}}, "UTC",
     "2026-02-10T00:00", daily("2026-01-20", 20),
     # d19 Feb 8 (Sun, W06); d18 Feb 7; d12 Feb 1 (Sun, newest of W05); d11 Jan 31 (Jan).
     ["d19", "d18", "d12", "d11"]),
    ("gfs zero counts are no rule", {"gfs": {"daily": 0, "weekly": None}}, "UTC",
     "2026-01-10T00:00", daily("2026-01-01", 2), ["d1", "d0"]),
    ("keep_last with gfs monthly", {"keep_last": 1, "gfs": {"monthly": 3}}, "UTC",
     "2026-04-01T00:00",
     [B("jan", "2026-01-15T00:00"), B("feb1", "2026-02-01T00:00"), B("feb2", "2026-02-20T00:00"),
      B("mar1", "2026-03-01T00:00"), B("mar2", "2026-03-31T00:00")],
     ["mar2", "feb2", "jan"]),
    ("gfs yearly", {"gfs": {"yearly": 2}}, "UTC", "2026-06-01T00:00",
     [B("y24a", "2024-03-01T00:00"), B("y24b", "2024-12-31T23:59"), B("y25", "2025-07-01T00:00"),
      B("y26", "2026-01-01T00:00")], ["y26", "y25"]),
]


@pytest.mark.parametrize(
    ("policy", "tz", "now", "rows", "expected"),
    [pytest.param(*case[1:], id=case[0]) for case in KEPT_CASES],
)
def test_kept_backups(
    policy: dict[str, Any], tz: str, now: str, rows: list[B], expected: list[str]
) -> None:
    assert kept(run(policy, tz, now, rows)) == expected


# -- GFS buckets in the schedule's zone: DST changes, month and year ends -----------------

BUCKET_CASES = [
    # Berlin, spring forward 2026-03-29: 00:30 local is still the previous UTC day.
    ("daily", "2026-03-27T23:30", "Europe/Berlin", "2026-03-28"),
    ("daily", "2026-03-28T23:30", "Europe/Berlin", "2026-03-29"),
    ("daily", "2026-03-29T22:30", "Europe/Berlin", "2026-03-30"),  # CEST: +2
    ("daily", "2026-03-29T21:59", "Europe/Berlin", "2026-03-29"),
    # New York, fall back 2026-11-01: the 01:00 hour happens twice, as two buckets.
    ("hourly", "2026-11-01T05:10", "America/New_York", "2026-11-01 01:00-04:00"),
    ("hourly", "2026-11-01T06:10", "America/New_York", "2026-11-01 01:00-05:00"),
    ("hourly", "2026-03-29T00:59", "Europe/Berlin", "2026-03-29 01:00+01:00"),
    ("hourly", "2026-03-29T01:00", "Europe/Berlin", "2026-03-29 03:00+02:00"),
    ("hourly", "2026-01-01T00:20", "Asia/Kolkata", "2026-01-01 05:00+05:30"),
    # Month ends: late evening in New York is already the next month in UTC.
    ("monthly", "2026-02-01T04:30", "America/New_York", "2026-01"),
    ("monthly", "2026-03-01T04:30", "America/New_York", "2026-02"),
    ("monthly", "2026-02-28T23:30", "Pacific/Auckland", "2026-03"),
    # ISO weeks: 2024-12-30 (Monday) starts 2025-W01; 2027-01-01 is in 2026-W53.
    ("weekly", "2024-12-29T12:00", "UTC", "2024-W52"),
    ("weekly", "2024-12-30T12:00", "UTC", "2025-W01"),
    ("weekly", "2027-01-01T12:00", "UTC", "2026-W53"),
    ("weekly", "2026-01-04T23:30", "UTC", "2026-W01"),
    ("weekly", "2026-01-04T23:30", "Europe/Berlin", "2026-W02"),  # Monday 00:30 there
    ("yearly", "2026-12-31T23:30", "Europe/Berlin", "2027"),
    ("yearly", "2027-01-01T03:00", "America/Los_Angeles", "2026"),
]


@pytest.mark.parametrize(("tier", "at", "tz", "expected"), BUCKET_CASES)
def test_buckets_follow_the_schedules_wall_clock(
    tier: str, at: str, tz: str, expected: str
) -> None:
    assert bucket(tier, utc(at), tz) == expected


def test_gfs_daily_across_spring_forward_uses_local_days() -> None:
    # Two runs a day, at 00:30 and 23:30 Berlin time (UTC+1, then UTC+2 from the 29th).
    rows = [B("27-early", "2026-03-26T23:30"), B("27-late", "2026-03-27T22:30"),
            B("28-early", "2026-03-27T23:30"), B("28-late", "2026-03-28T22:30"),
            B("29-early", "2026-03-28T23:30"), B("29-late", "2026-03-29T21:30"),
            B("30-early", "2026-03-29T22:30"), B("30-late", "2026-03-30T21:30")]  # fmt: skip
    result = run({"gfs": {"daily": 3}}, "Europe/Berlin", "2026-03-31T12:00", rows)
    assert kept(result) == ["30-late", "29-late", "28-late"]
    assert result["29-late"][1] == ("gfs daily 2026-03-29",)
    assert result["30-early"] == (False, ("not the newest of a kept GFS period",))
    # Bucketing by UTC date instead would have kept 29-early (2026-03-28T23:30 UTC).
    assert not result["29-early"][0]


def test_gfs_hourly_across_fall_back_keeps_both_repeated_hours() -> None:
    rows = [B("00:40", "2026-11-01T04:40"), B("01:10 EDT", "2026-11-01T05:10"),
            B("01:40 EDT", "2026-11-01T05:40"), B("01:10 EST", "2026-11-01T06:10"),
            B("01:40 EST", "2026-11-01T06:40")]  # fmt: skip
    result = run({"gfs": {"hourly": 2}}, "America/New_York", "2026-11-01T07:00", rows)
    assert kept(result) == ["01:40 EST", "01:40 EDT"]
    assert result["01:40 EST"][1] == ("gfs hourly 2026-11-01 01:00-05:00", NEWEST_GOOD)
    assert result["01:40 EDT"][1] == ("gfs hourly 2026-11-01 01:00-04:00",)


def test_gfs_monthly_at_month_ends_uses_the_zones_month() -> None:
    # 23:30 in New York on the last day of each month: the next month in UTC.
    rows = [B("jan30", "2026-01-31T04:30"), B("jan31", "2026-02-01T04:30"),
            B("feb27", "2026-02-28T04:30"), B("feb28", "2026-03-01T04:30"),
            B("mar01", "2026-03-01T17:00")]  # fmt: skip
    result = run({"gfs": {"monthly": 2}}, "America/New_York", "2026-03-02T00:00", rows)
    assert kept(result) == ["mar01", "feb28"]
    assert result["feb28"][1] == ("gfs monthly 2026-02",)
    utc_result = run({"gfs": {"monthly": 2}}, "UTC", "2026-03-02T00:00", rows)
    assert kept(utc_result) == ["mar01", "feb27"]


# -- reasons ----------------------------------------------------------------------------


def test_reasons_name_every_rule_that_keeps_or_drops() -> None:
    rows = daily("2026-01-01", 4)
    result = run({"keep_last": 2, "max_age_days": 3, "gfs": {"weekly": 1}}, "UTC",
                 "2026-01-05T00:00", rows)  # fmt: skip
    assert result["d3"] == (True, ("keep_last 2", "max_age 3 days", "gfs weekly 2026-W01",
                                   NEWEST_GOOD))  # fmt: skip
    assert result["d2"] == (True, ("keep_last 2", "max_age 3 days"))
    assert result["d1"] == (True, ("max_age 3 days",))
    assert result["d0"] == (False, ("not among the newest 2 (keep_last)",
                                    "max_age 3 days exceeded",
                                    "not the newest of a kept GFS period"))  # fmt: skip
    assert run({}, "UTC", "2026-01-05T00:00", rows)["d0"] == (True, (KEEP_ALL,))


def test_max_age_of_one_day_reads_naturally() -> None:
    result = run({"max_age_days": 1}, "UTC", "2026-01-05T00:00", daily("2026-01-01", 2))
    assert result["d0"] == (False, ("max_age 1 day exceeded",))


# -- never delete the last good one ------------------------------------------------------


def test_newest_successful_backup_survives_any_policy() -> None:
    rows = [B("good", "2026-01-01T00:00"), B("failed", "2026-03-01T00:00", S.FAILED),
            B("missed", "2026-03-02T00:00", S.MISSED)]  # fmt: skip
    result = run({"max_age_days": 7}, "UTC", "2026-03-03T00:00", rows)
    assert result["good"] == (True, (NEWEST_GOOD,))
    assert kept(result) == ["missed", "failed", "good"]


def test_newest_verified_backup_survives_too() -> None:
    rows = [B("old", "2026-01-01T00:00"), B("verified", "2026-01-02T00:00", verified=True),
            B("new1", "2026-01-03T00:00"), B("new2", "2026-01-04T00:00")]  # fmt: skip
    result = run({"keep_last": 1}, "UTC", "2026-01-05T00:00", rows)
    assert kept(result) == ["new2", "verified"]
    assert result["verified"] == (True, (NEWEST_VERIFIED,))
    assert result["new2"] == (True, ("keep_last 1", NEWEST_GOOD))


def test_corrupt_or_missing_backups_do_not_count_as_good() -> None:
    rows = [B("good", "2026-01-01T00:00"),
            B("corrupt", "2026-01-02T00:00", S.CORRUPT, broken_at="2026-01-03T00:00"),
            B("gone", "2026-01-03T00:00", usable=False)]  # fmt: skip
    result = run({"keep_last": 1}, "UTC", "2026-01-04T00:00", rows)
    # keep_last counts good backups only, so the older good one is still kept.
    assert result["good"] == (True, ("keep_last 1", NEWEST_GOOD))
    assert result["corrupt"] == (True, ("corrupt: kept 30 days for history",))
    assert result["gone"] == (True, ("no stored copy left: kept 30 days for history",))
    later = run({"keep_last": 1}, "UTC", "2026-02-02T12:00", rows)
    assert later["corrupt"] == (False, ("corrupt for more than 30 days",))
    assert later["gone"] == (False, ("no stored copy left for more than 30 days",))


def test_corrupt_history_starts_when_it_was_found() -> None:
    rows = [B("good", "2026-06-01T00:00"),
            B("old", "2025-01-01T00:00", S.CORRUPT, broken_at="2026-06-01T00:00")]  # fmt: skip
    assert run({}, "UTC", "2026-06-10T00:00", rows)["old"][0] is True


# -- rows without artifacts ----------------------------------------------------------------


@pytest.mark.parametrize("status", [S.FAILED, S.CANCELLED, S.MISSED, S.SKIPPED])
def test_failed_runs_are_history_for_the_configured_days(status: BackupStatus) -> None:
    rows = [B("good", "2026-01-20T00:00"), B("recent", "2026-01-15T00:00", status),
            B("old", "2026-01-01T00:00", status)]  # fmt: skip
    result = run({}, "UTC", "2026-01-21T00:00", rows, days=10)
    assert result["recent"] == (True, (f"{status.value} run: kept 10 days for history",))
    assert result["old"] == (False, (f"{status.value} run for more than 10 days",))


def test_unfinished_rows_are_never_touched() -> None:
    rows = [B("queued", "2025-01-01T00:00", S.QUEUED), B("running", "2025-01-02T00:00", S.RUNNING),
            B("good", "2026-01-01T00:00")]  # fmt: skip
    result = run({"keep_last": 1}, "UTC", "2026-06-01T00:00", rows, days=1)
    assert result["queued"] == (True, (STILL_RUNNING,))
    assert result["running"] == (True, (STILL_RUNNING,))


def test_order_is_newest_first_with_ties_broken_by_id() -> None:
    rows = [B("a", "2026-01-01T00:00"), B("b", "2026-01-01T00:00"), B("c", "2026-01-02T00:00")]
    result = run({"keep_last": 2}, "UTC", "2026-01-03T00:00", rows)
    names = list(result)
    assert names[0] == "c"
    assert sorted(names[1:]) == ["a", "b"]
    assert [keep for keep, _ in result.values()] == [True, True, False]


# -- per destination: (id, policy, now, backups with where they are stored,
#    kept on A, kept on B, rows kept) -------------------------------------------------------


def kept_on(result: dict[str, BackupPlan], letter: str) -> list[str]:
    return [name for name, d in result.items()
            for c in d.copies if c.destination_id == dest(letter) and c.keep]  # fmt: skip


def on(rows: list[B], letters: str, **where: str) -> list[B]:
    """``rows`` stored on ``letters``, except those named in ``where``."""
    return [B(r.name, r.at, r.status, r.verified, r.usable, r.broken_at,
              where.get(r.name, letters)) for r in rows]  # fmt: skip


PER_DESTINATION_CASES = [
    # B missed d4: it keeps d2 instead, so it still holds three; d2's row stays for it.
    ("keep_last counts the copies on each destination", {"keep_last": 3}, "2026-01-10T00:00",
     on(daily("2026-01-01", 6), "AB", d4="A"),
     ["d5", "d4", "d3"], ["d5", "d3", "d2"], ["d5", "d4", "d3", "d2"]),
    # Everything expired: each destination keeps the newest it holds.
    ("newest good backup per destination", {"max_age_days": 7}, "2026-06-01T00:00",
     [B("old1", "2026-01-01T00:00", on="AB"), B("old2", "2026-01-02T00:00", on="AB"),
      B("new", "2026-01-03T00:00", on="A")],
     ["new"], ["old2"], ["new", "old2"]),
    ("newest verified backup per destination", {"keep_last": 1}, "2026-01-10T00:00",
     [B("v", "2026-01-01T00:00", verified=True, on="AB"), B("n1", "2026-01-02T00:00", on="AB"),
      B("n2", "2026-01-03T00:00", on="A")],
     ["n2", "v"], ["n1", "v"], ["n2", "n1", "v"]),
    ("gfs takes each destination's newest of the period", {"gfs": {"daily": 2}},
     "2026-01-03T00:00",
     [B("1a", "2026-01-01T01:00", on="AB"), B("1b", "2026-01-01T23:00", on="A"),
      B("2a", "2026-01-02T12:00", on="AB")],
     ["2a", "1b"], ["2a", "1a"], ["2a", "1b", "1a"]),
    # A destination that is no longer written to keeps its newest copy.
    ("a destination written to no more keeps its newest", {"keep_last": 1}, "2026-01-10T00:00",
     [B("b-only", "2026-01-01T00:00", on="B"), B("a1", "2026-01-02T00:00", on="A"),
      B("a2", "2026-01-03T00:00", on="A")],
     ["a2"], ["b-only"], ["a2", "b-only"]),
    ("the same copies everywhere: the same backups everywhere", {"keep_last": 2},
     "2026-01-10T00:00", on(daily("2026-01-01", 4), "AB"),
     ["d3", "d2"], ["d3", "d2"], ["d3", "d2"]),
]


@pytest.mark.parametrize(
    ("policy", "now", "rows", "on_a", "on_b", "rows_kept"),
    [pytest.param(*case[1:], id=case[0]) for case in PER_DESTINATION_CASES],
)
def test_retention_applies_per_destination(
    policy: dict[str, Any], now: str, rows: list[B], on_a: list[str], on_b: list[str],
    rows_kept: list[str],
) -> None:  # fmt: skip
    result = plans(policy, "UTC", now, rows)
    assert kept_on(result, "A") == on_a
    assert kept_on(result, "B") == on_b
    assert [name for name, d in result.items() if d.keep] == rows_kept
    for d in result.values():
        # A row goes exactly when every stored copy goes.
        assert d.keep is any(c.keep for c in d.copies)


def test_copy_reasons_are_each_destinations_own() -> None:
    result = plans({"keep_last": 3}, "UTC", "2026-01-10T00:00",
                   on(daily("2026-01-01", 6), "AB", d4="A"))  # fmt: skip
    d2 = result["d2"]
    copies = {c.destination_id: (c.keep, c.reasons) for c in d2.copies}
    assert copies == {dest("A"): (False, ("not among the newest 3 (keep_last)",)),
                      dest("B"): (True, ("keep_last 3",))}  # fmt: skip
    # The row stays for what keeps its kept copies; only A's copy goes.
    assert (d2.keep, d2.reasons) == (True, ("keep_last 3",))
    assert [c.destination_id for c in d2.dropped] == [dest("A")]
    d4 = result["d4"]  # stored on A only: it has one copy decision
    assert [(c.destination_id, c.keep) for c in d4.copies] == [(dest("A"), True)]
    d0 = result["d0"]
    assert (d0.keep, d0.reasons) == (False, ("not among the newest 3 (keep_last)",))
    assert len(d0.dropped) == 2
    d5 = result["d5"]
    assert d5.reasons == ("keep_last 3", NEWEST_GOOD)


def test_rows_without_a_stored_copy_follow_the_history_rule() -> None:
    rows = [B("good", "2026-01-20T00:00", on="AB"),
            B("failed", "2026-01-01T00:00", S.FAILED),
            B("gone", "2026-01-19T00:00", usable=False),
            B("running", "2025-01-01T00:00", S.RUNNING, on="A")]  # fmt: skip
    result = plans({"keep_last": 1}, "UTC", "2026-01-21T00:00", rows, days=10)
    assert (result["failed"].keep, result["failed"].copies) == (False, ())
    assert result["gone"].keep
    assert result["gone"].copies == ()
    running = result["running"]
    assert running.keep
    assert [(c.destination_id, c.keep, c.reasons) for c in running.copies] == [
        (dest("A"), True, (STILL_RUNNING,))
    ]


def test_no_destinations_given_is_one_group() -> None:
    rows = daily("2026-01-01", 4)
    told = plans({"keep_last": 2}, "UTC", "2026-01-10T00:00", on(rows, "A"))
    untold = plans({"keep_last": 2}, "UTC", "2026-01-10T00:00", rows)
    assert {n: (d.keep, d.reasons) for n, d in told.items()} == {
        n: (d.keep, d.reasons) for n, d in untold.items()
    }
    assert [(c.destination_id, c.keep) for c in untold["d0"].copies] == [(None, False)]


# -- properties ------------------------------------------------------------------------------

counts = st.none() | st.integers(0, 5)
policies = st.builds(
    lambda keep_last, max_age, h, d, w, m, y: RetentionPolicy.model_validate({
        "keep_last": keep_last, "max_age_days": max_age,
        "gfs": {"hourly": h, "daily": d, "weekly": w, "monthly": m, "yearly": y},
    }),
    st.none() | st.integers(1, 5), st.none() | st.integers(1, 60),
    counts, counts, counts, counts, counts,
)
rows_strategy = st.lists(
    st.tuples(
        st.integers(0, 400 * 24),  # hours before "now"
        st.sampled_from(list(BackupStatus)),
        st.booleans(),
        st.booleans(),
    ),
    max_size=40,
)
NOW = utc("2026-06-01T00:00")


@settings(max_examples=300, deadline=None)
@given(
    policy=policies,
    tz=st.sampled_from(["UTC", "Europe/Berlin", "America/New_York", "Asia/Kolkata"]),
    rows=rows_strategy,
)
def test_invariants(
    policy: RetentionPolicy, tz: str, rows: list[tuple[int, BackupStatus, bool, bool]]
) -> None:
    candidates = [
        Candidate(uuid.uuid4(), status, NOW - timedelta(hours=hours), verified, usable)
        for hours, status, verified, usable in rows
    ]
    decisions = decide(policy, tz, NOW, candidates)
    by_id = {d.backup_id: d for d in decisions}
    assert len(by_id) == len(candidates)
    assert all(d.reasons for d in decisions)
    good = [c for c in candidates if c.status is S.SUCCEEDED and c.usable]
    if good:
        newest = max(good, key=lambda c: (c.finished_at, c.id))
        assert by_id[newest.id].keep
    for candidate in candidates:
        if candidate.status in {S.QUEUED, S.RUNNING}:
            assert by_id[candidate.id].keep
    if policy.keeps_everything:
        assert all(by_id[c.id].keep for c in good)
    # A larger keep_last never keeps fewer backups.
    if policy.keep_last is not None:
        more = decide(policy.model_copy(update={"keep_last": policy.keep_last + 1}), tz, NOW,
                      candidates)  # fmt: skip
        assert {d.backup_id for d in decisions if d.keep} <= {d.backup_id for d in more if d.keep}


DESTINATIONS = [dest(letter) for letter in "ABC"]


@settings(max_examples=200, deadline=None)
@given(
    policy=policies,
    rows=st.lists(
        st.tuples(st.integers(0, 400 * 24), st.sampled_from(list(BackupStatus)), st.booleans(),
                  st.sets(st.sampled_from(DESTINATIONS))),
        max_size=30,
    ),
)  # fmt: skip
def test_each_destination_is_decided_as_if_it_were_alone(
    policy: RetentionPolicy, rows: list[tuple[int, BackupStatus, bool, set[uuid.UUID]]]
) -> None:
    candidates = [
        Candidate(uuid.uuid4(), status, NOW - timedelta(hours=hours), verified,
                  usable=bool(where), stored_on=frozenset(where))
        for hours, status, verified, where in rows
    ]  # fmt: skip
    decisions = {d.backup_id: d for d in decide(policy, "Europe/Berlin", NOW, candidates)}
    for destination in DESTINATIONS:
        there = [c for c in candidates if destination in c.stored_on and c.status is S.SUCCEEDED]
        untold = [replace(c, stored_on=frozenset()) for c in there]
        alone = decide(policy, "Europe/Berlin", NOW, untold)
        copies = {
            d.backup_id: c.keep
            for d in decisions.values()
            for c in d.copies
            if c.destination_id == destination
        }
        assert {d.backup_id: d.keep for d in alone} == {c.id: copies[c.id] for c in there}
        if there:  # the newest good backup on every destination stays there
            assert copies[max(there, key=lambda c: (c.finished_at, c.id)).id]
    for candidate in candidates:
        decision = decisions[candidate.id]
        if candidate.status is S.SUCCEEDED and candidate.stored_on:
            assert decision.keep is any(c.keep for c in decision.copies)
            assert {c.destination_id for c in decision.copies} == candidate.stored_on
        assert decision.reasons


# -- what a schedule's stored values mean ----------------------------------------------------


@pytest.mark.parametrize(
    ("stored", "timezone", "keeps_everything", "problem"),
    [
        (None, None, True, None),  # no schedule (manual runs): keep them
        ({}, "UTC", True, None),
        ({"keep_last": 3}, "Europe/Berlin", False, None),
        ({"keep_last": 0}, "UTC", True, "the stored retention policy is invalid"),
        ({"keep_last": 3, "surprise": 1}, "UTC", True, "the stored retention policy is invalid"),
        ({"keep_last": 3}, "Mars/Olympus_Mons", True, "unknown time zone 'Mars/Olympus_Mons'"),
    ],
)
def test_effective_policy_never_guesses(
    stored: dict[str, Any] | None, timezone: str | None, keeps_everything: bool, problem: str | None
) -> None:
    rules = effective(stored, timezone)
    assert rules.policy.keeps_everything is keeps_everything
    assert rules.problem == problem
