"""The scheduler's pure catch-up logic on top of ``services.common.cron`` (whose own
slot tables live in test_cron.py): where owed slots start (the baseline), which owed
slot fires and which are recorded as missed, with ``now`` passed in as the clock.

Expected instants are worked out by hand from the zones' transitions: Berlin
2024-03-31 02:00 CET -> 03:00 CEST and 2024-10-27 03:00 CEST -> 02:00 CET; New York
2024-03-10 02:00 EST -> 03:00 EDT and 2024-11-03 02:00 EDT -> 01:00 EST; Lord Howe
(30-minute DST) 2024-10-06 02:00 -> 02:30 (+10:30 -> +11) and 2024-04-07 02:00 ->
01:30 (+11 -> +10:30).
"""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta

import pytest

from services.common.cron import parse_cron, parse_timezone
from services.scheduler.catchup import Kind, baseline, newest_slots, plan, span

SID = uuid.UUID(int=1)


def utc(text: str) -> datetime:
    return datetime.fromisoformat(text).replace(tzinfo=UTC)


def hhmm(instant: datetime) -> str:
    return instant.strftime("%Y-%m-%dT%H:%M")


# (cron, zone, after, now, grace (s), max missed) -> (missed UTC, fired UTC, next UTC)
PLANS = [
    # The normal case: only the slot due now.
    (
        "0 * * * *",
        "UTC",
        "2024-03-01T12:00",
        "2024-03-01T13:00:00.5",
        3600,
        100,
        [],
        "2024-03-01T13:00",
        "2024-03-01T14:00",
    ),
    # Nothing due yet.
    (
        "0 * * * *",
        "UTC",
        "2024-03-01T12:00",
        "2024-03-01T12:59",
        3600,
        100,
        [],
        None,
        "2024-03-01T13:00",
    ),
    # Down 35 minutes: one catch-up run for the newest slot, the others missed.
    (
        "*/10 * * * *",
        "UTC",
        "2024-03-01T12:00",
        "2024-03-01T12:35",
        3600,
        100,
        ["2024-03-01T12:10", "2024-03-01T12:20"],
        "2024-03-01T12:30",
        "2024-03-01T12:40",
    ),
    # Down 3 hours: slots beyond the grace are missed, the newest within it fires.
    (
        "0 * * * *",
        "UTC",
        "2024-03-01T12:00",
        "2024-03-01T15:05",
        3600,
        100,
        ["2024-03-01T13:00", "2024-03-01T14:00"],
        "2024-03-01T15:00",
        "2024-03-01T16:00",
    ),
    # Every owed slot beyond the grace: nothing fires.
    (
        "0 13 * * *",
        "UTC",
        "2024-03-01T12:00",
        "2024-03-01T15:00",
        3600,
        100,
        ["2024-03-01T13:00"],
        None,
        "2024-03-02T13:00",
    ),
    # The grace is inclusive: exactly at the limit still fires; a second later not.
    (
        "0 * * * *",
        "UTC",
        "2024-03-01T12:00",
        "2024-03-01T14:00",
        3600,
        100,
        ["2024-03-01T13:00"],
        "2024-03-01T14:00",
        "2024-03-01T15:00",
    ),
    (
        "0 13 * * *",
        "UTC",
        "2024-03-01T12:00",
        "2024-03-01T14:00:00",
        3600,
        100,
        [],
        "2024-03-01T13:00",
        "2024-03-02T13:00",
    ),
    (
        "0 13 * * *",
        "UTC",
        "2024-03-01T12:00",
        "2024-03-01T14:00:01",
        3600,
        100,
        ["2024-03-01T13:00"],
        None,
        "2024-03-02T13:00",
    ),
    # A long gap: only the newest max_missed are recorded one by one.
    (
        "* * * * *",
        "UTC",
        "2024-03-01T12:00",
        "2024-03-01T12:30:30",
        0,
        3,
        ["2024-03-01T12:28", "2024-03-01T12:29", "2024-03-01T12:30"],
        None,
        "2024-03-01T12:31",
    ),
    # Month ends and leap days.
    (
        "0 0 L * *",
        "UTC",
        "2024-01-15T00:00",
        "2024-02-29T00:10",
        3600,
        100,
        ["2024-01-31T00:00"],
        "2024-02-29T00:00",
        "2024-03-31T00:00",
    ),
    (
        "0 12 29 2 *",
        "UTC",
        "2021-01-01T00:00",
        "2024-02-29T12:00:05",
        3600,
        100,
        [],
        "2024-02-29T12:00",
        "2028-02-29T12:00",
    ),
    (
        "@yearly",
        "UTC",
        "2020-06-01T00:00",
        "2024-01-01T00:00:10",
        3600,
        100,
        ["2021-01-01T00:00", "2022-01-01T00:00", "2023-01-01T00:00"],
        "2024-01-01T00:00",
        "2025-01-01T00:00",
    ),
    # Berlin, spring forward: 02:30 does not exist; it runs once at 03:00 CEST.
    (
        "30 2 * * *",
        "Europe/Berlin",
        "2024-03-30T12:00",
        "2024-03-31T01:00:30",
        3600,
        100,
        [],
        "2024-03-31T01:00",
        "2024-04-01T00:30",
    ),
    # Berlin, fall back: 02:30 happens twice; it runs once, at the first (CEST).
    (
        "30 2 * * *",
        "Europe/Berlin",
        "2024-10-26T12:00",
        "2024-10-27T02:00",
        7200,
        100,
        [],
        "2024-10-27T00:30",
        "2024-10-28T01:30",
    ),
    # New York, spring forward: 02:30 EST does not exist; 03:00 EDT instead.
    (
        "30 2 * * *",
        "America/New_York",
        "2024-03-09T12:00",
        "2024-03-10T07:00",
        3600,
        100,
        [],
        "2024-03-10T07:00",
        "2024-03-11T06:30",
    ),
    # New York, fall back, caught up after the night: one missed row, not two.
    (
        "30 1 * * *",
        "America/New_York",
        "2024-11-02T12:00",
        "2024-11-03T07:00",
        3600,
        100,
        ["2024-11-03T05:30"],
        None,
        "2024-11-04T06:30",
    ),
    # Lord Howe, 30-minute spring forward: 02:15 runs at 02:30 (+11).
    (
        "15 2 * * *",
        "Australia/Lord_Howe",
        "2024-10-05T00:00",
        "2024-10-05T15:31",
        3600,
        100,
        [],
        "2024-10-05T15:30",
        "2024-10-06T15:15",
    ),
    # Lord Howe, 30-minute fall back: 01:45 happens twice; once, at the first (+11).
    (
        "45 1 * * *",
        "Australia/Lord_Howe",
        "2024-04-06T00:00",
        "2024-04-06T15:20",
        3600,
        100,
        [],
        "2024-04-06T14:45",
        "2024-04-07T15:15",
    ),
]


@pytest.mark.parametrize(
    ("expr", "zone", "after", "now", "grace", "most", "missed", "fired", "upcoming"), PLANS
)
def test_plan(
    expr: str,
    zone: str,
    after: str,
    now: str,
    grace: int,
    most: int,
    missed: list[str],
    fired: str | None,
    upcoming: str,
) -> None:
    result = plan(
        SID,
        parse_cron(expr),
        parse_timezone(zone),
        after=utc(after),
        now=utc(now),
        grace=timedelta(seconds=grace),
        max_missed=most,
    )
    assert [hhmm(a.slot.utc) for a in result.actions if a.kind is Kind.MISSED] == missed
    fire = [hhmm(a.slot.utc) for a in result.actions if a.kind is Kind.FIRE]
    assert fire == ([fired] if fired else [])
    if result.actions:
        assert result.actions[-1].slot.utc == result.handled_until
        assert [a.slot.utc for a in result.actions] == sorted(a.slot.utc for a in result.actions)
    else:
        assert result.handled_until is None
    assert result.next is not None
    assert hhmm(result.next.utc) == upcoming
    assert all(a.reason for a in result.actions if a.kind is Kind.MISSED)


def test_missed_reasons_say_why() -> None:
    spec, zone = parse_cron("0 * * * *"), parse_timezone("UTC")
    result = plan(
        SID,
        spec,
        zone,
        after=utc("2024-03-01T12:00"),
        now=utc("2024-03-01T16:10"),
        grace=timedelta(hours=2),
        max_missed=2,
    )
    reasons = [a.reason for a in result.actions if a.kind is Kind.MISSED]
    assert reasons[0].startswith("Not run: the scheduler was stopped")
    assert "until 2024-03-01 16:10:00 UTC, longer than the catch-up grace of 2 h" in reasons[0]
    assert "Earlier slots since 2024-03-01 12:00:00 UTC were missed too" in reasons[0]
    assert "only the last 2 are recorded one by one" in reasons[0]
    assert reasons[1].startswith("Not run at its time")
    assert "catch-up run was started for the later slot 2024-03-01 16:00:00 UTC" in reasons[1]


T0 = utc("2024-03-01T12:00")
H = timedelta(hours=1)

# (cron, last_slot_at, next_slot_at, changed_at) -> baseline; created_at is T0.
BASELINES = [
    ("0 * * * *", None, None, T0, T0),  # new: from its creation, no backfill
    ("0 * * * *", None, None, T0 + 5 * H, T0 + 5 * H),  # changed before first seen
    ("0 * * * *", None, T0 + H, T0 + H / 2, T0),  # seen, never fired, renamed
    ("0 * * * *", T0 + H, T0 + 2 * H, T0 + 1.5 * H, T0 + H),  # renamed: slots still owed
    ("0 * * * *", T0 + H, None, T0 + 3 * H, T0 + 3 * H),  # paused, re-enabled at +3 h
    ("30 * * * *", T0 + H, T0 + 2 * H, T0 + 2.5 * H, T0 + 2.5 * H),  # cron changed
    ("0 * * * *", T0 + 5 * H, None, T0 + H, T0 + 5 * H),  # never before the last slot
]


@pytest.mark.parametrize(("expr", "last", "upcoming", "changed", "expected"), BASELINES)
def test_baseline(
    expr: str,
    last: datetime | None,
    upcoming: datetime | None,
    changed: datetime,
    expected: datetime,
) -> None:
    found = baseline(
        parse_cron(expr),
        parse_timezone("UTC"),
        created_at=T0,
        changed_at=changed,
        last_slot_at=last,
        next_slot_at=upcoming,
    )
    assert found == expected


def test_newest_slots_look_back_only_as_far_as_needed() -> None:
    spec, zone = parse_cron("* * * * *"), parse_timezone("UTC")
    slots, left_out = newest_slots(spec, zone, utc("2023-01-01T00:00"), utc("2024-01-01T00:00"), 3)
    assert [hhmm(s.utc) for s in slots] == [
        "2023-12-31T23:58",
        "2023-12-31T23:59",
        "2024-01-01T00:00",
    ]
    assert left_out


@pytest.mark.parametrize(
    ("expr", "after", "until", "limit", "expected", "left_out"),
    [
        (
            "0 * * * *",
            "2024-03-01T12:00",
            "2024-03-01T14:30",
            5,
            ["2024-03-01T13:00", "2024-03-01T14:00"],
            False,
        ),
        ("0 * * * *", "2024-03-01T12:00", "2024-03-01T12:30", 5, [], False),
        (
            "0 * * * *",
            "2024-03-01T12:00",
            "2024-03-01T14:00",
            2,
            ["2024-03-01T13:00", "2024-03-01T14:00"],
            False,
        ),
        (
            "0 0 1 1 *",
            "2000-01-01T00:00",
            "2024-06-01T00:00",
            2,
            ["2023-01-01T00:00", "2024-01-01T00:00"],
            True,
        ),
    ],
)
def test_newest_slots(
    expr: str, after: str, until: str, limit: int, expected: list[str], left_out: bool
) -> None:
    slots, cut = newest_slots(
        parse_cron(expr), parse_timezone("UTC"), utc(after), utc(until), limit
    )
    assert ([hhmm(s.utc) for s in slots], cut) == (expected, left_out)


def test_newest_slots_needs_a_positive_limit() -> None:
    with pytest.raises(ValueError, match="at least 1"):
        newest_slots(parse_cron("@daily"), parse_timezone("UTC"), T0, T0 + H, 0)


@pytest.mark.parametrize(
    ("seconds", "text"), [(3600, "1 h"), (7200, "2 h"), (5400, "90 min"), (45, "45 s"), (0, "0 s")]
)
def test_span(seconds: int, text: str) -> None:
    assert span(timedelta(seconds=seconds)) == text
