"""Cron logic shared by the API and the scheduler: parsing with readable errors, time
zones, next slots (with the DST rule of issue 5) and descriptions.

Expected instants are worked out by hand from the zones' published transitions, not
computed by the code under test. croniter serves as an oracle for naive wall-clock
matching (the property test at the end), never for time zones: its own aware
iteration runs fall-back slots twice, which is what the DST rule forbids.
"""

from __future__ import annotations

import itertools
from datetime import UTC, datetime, timedelta, timezone
from zoneinfo import ZoneInfo

import pytest
from croniter import croniter
from hypothesis import given, settings
from hypothesis import strategies as st

from services.common.cron import (
    InvalidCron,
    InvalidTimezone,
    Slot,
    describe,
    iter_slots,
    next_slot,
    next_slots,
    parse_cron,
    parse_timezone,
)


def utc(text: str) -> datetime:
    """``"2024-03-31T01:00"`` as an aware UTC instant."""
    return datetime.fromisoformat(text).replace(tzinfo=UTC)


def instants(slots: list[Slot]) -> list[str]:
    return [s.utc.strftime("%Y-%m-%dT%H:%M") for s in slots]


# -- next slots: (cron, zone, after (UTC), expected UTC instants) --------------------

CASES = [
    # Common crons in UTC.
    ("0 2 * * *", "UTC", "2024-01-01T00:00",
     ["2024-01-01T02:00", "2024-01-02T02:00", "2024-01-03T02:00"]),
    ("*/15 * * * *", "UTC", "2024-01-01T00:07:30",
     ["2024-01-01T00:15", "2024-01-01T00:30", "2024-01-01T00:45", "2024-01-01T01:00"]),
    # A slot exactly at "after" is not next: slots are strictly after it.
    ("0 * * * *", "UTC", "2024-01-01T05:00",
     ["2024-01-01T06:00", "2024-01-01T07:00"]),
    ("0 * * * *", "UTC", "2024-01-01T05:00:00.000001",
     ["2024-01-01T06:00"]),
    # 2024-01-05 is a Friday.
    ("0 9 * * 1-5", "UTC", "2024-01-05T10:00",
     ["2024-01-08T09:00", "2024-01-09T09:00"]),
    ("0 9 * * mon-fri", "UTC", "2024-01-05T08:00",
     ["2024-01-05T09:00", "2024-01-08T09:00"]),
    ("0 0 * * 7", "UTC", "2024-01-01T00:00", ["2024-01-07T00:00", "2024-01-14T00:00"]),
    ("0 0 * * 5-7", "UTC", "2024-01-04T00:00",
     ["2024-01-05T00:00", "2024-01-06T00:00", "2024-01-07T00:00", "2024-01-12T00:00"]),
    ("0 6 1 jan,jul *", "UTC", "2024-03-01T00:00", ["2024-07-01T06:00", "2025-01-01T06:00"]),
    ("5/20 4 * * *", "UTC", "2024-01-01T00:00",
     ["2024-01-01T04:05", "2024-01-01T04:25", "2024-01-01T04:45", "2024-01-02T04:05"]),
    ("0 9-17/4 * * *", "UTC", "2024-01-01T00:00",
     ["2024-01-01T09:00", "2024-01-01T13:00", "2024-01-01T17:00", "2024-01-02T09:00"]),
    # Month ends: the 31st only exists in some months; L is the last day of each.
    ("0 0 31 * *", "UTC", "2024-01-31T00:00",
     ["2024-03-31T00:00", "2024-05-31T00:00", "2024-07-31T00:00", "2024-08-31T00:00"]),
    ("0 0 L * *", "UTC", "2024-01-15T00:00",
     ["2024-01-31T00:00", "2024-02-29T00:00", "2024-03-31T00:00", "2024-04-30T00:00"]),
    ("0 0 L * *", "UTC", "2023-02-01T00:00", ["2023-02-28T00:00", "2023-03-31T00:00"]),
    ("30 23 L 2 *", "UTC", "2023-03-01T00:00", ["2024-02-29T23:30", "2025-02-28T23:30"]),
    # Leap days, including the century rule (2100 is not a leap year).
    ("0 0 29 2 *", "UTC", "2024-03-01T00:00", ["2028-02-29T00:00", "2032-02-29T00:00"]),
    ("0 0 29 2 *", "UTC", "2096-03-01T00:00", ["2104-02-29T00:00"]),
    # Both day fields restricted: a day matching either runs (October 2024: Fridays
    # are the 4th, 11th, 18th, 25th; the 13th is a Sunday).
    ("0 0 13 * 5", "UTC", "2024-10-01T00:00",
     ["2024-10-04T00:00", "2024-10-11T00:00", "2024-10-13T00:00", "2024-10-18T00:00"]),
    ("0 0 L * 1", "UTC", "2024-04-20T00:00",
     ["2024-04-22T00:00", "2024-04-29T00:00", "2024-04-30T00:00", "2024-05-06T00:00"]),
    # Any day field other than a bare * is a restriction: day 2 or any weekday.
    ("0 0 2 * 0-6", "UTC", "2024-01-01T00:00", ["2024-01-02T00:00", "2024-01-03T00:00"]),
    ("0 0 1-31/2 * 1", "UTC", "2024-01-01T00:00",
     ["2024-01-03T00:00", "2024-01-05T00:00", "2024-01-07T00:00", "2024-01-08T00:00"]),
    # Aliases (2024-01-01 is a Monday; @weekly is Sunday midnight).
    ("@yearly", "UTC", "2024-06-01T00:00", ["2025-01-01T00:00", "2026-01-01T00:00"]),
    ("@annually", "UTC", "2024-12-31T23:59", ["2025-01-01T00:00"]),
    ("@monthly", "UTC", "2024-01-31T12:00", ["2024-02-01T00:00", "2024-03-01T00:00"]),
    ("@weekly", "UTC", "2024-01-01T00:00", ["2024-01-07T00:00", "2024-01-14T00:00"]),
    ("@daily", "UTC", "2024-02-28T00:00", ["2024-02-29T00:00", "2024-03-01T00:00"]),
    ("@midnight", "UTC", "2024-02-28T00:00", ["2024-02-29T00:00"]),
    ("@hourly", "UTC", "2024-01-01T23:30", ["2024-01-02T00:00", "2024-01-02T01:00"]),
    ("@yearly", "Europe/Berlin", "2024-06-01T00:00", ["2024-12-31T23:00", "2025-12-31T23:00"]),
    # Europe/Berlin, spring forward 2024-03-31 02:00 CET -> 03:00 CEST: 02:30 does not
    # exist, so that day's slot runs at the first instant after the gap (03:00 CEST).
    ("30 2 * * *", "Europe/Berlin", "2024-03-30T00:00",
     ["2024-03-30T01:30", "2024-03-31T01:00", "2024-04-01T00:30"]),
    # Every slot inside the gap collapses into one run at 03:00 CEST, together with
    # the 03:00 slot itself.
    ("*/30 * * * *", "Europe/Berlin", "2024-03-31T00:15",
     ["2024-03-31T00:30", "2024-03-31T01:00", "2024-03-31T01:30"]),
    ("0,30 2-3 * * *", "Europe/Berlin", "2024-03-30T23:00",
     ["2024-03-31T01:00", "2024-03-31T01:30", "2024-04-01T00:00"]),
    # Fall back 2024-10-27 03:00 CEST -> 02:00 CET: 02:00-02:59 happen twice; a slot
    # there runs once, at its first occurrence (CEST).
    ("30 2 * * *", "Europe/Berlin", "2024-10-26T00:00",
     ["2024-10-26T00:30", "2024-10-27T00:30", "2024-10-28T01:30"]),
    ("*/30 * * * *", "Europe/Berlin", "2024-10-26T23:45",
     ["2024-10-27T00:00", "2024-10-27T00:30", "2024-10-27T02:00", "2024-10-27T02:30"]),
    # Starting inside the second pass (02:10 CET): 02:30 already ran in the first pass.
    ("30 2 * * *", "Europe/Berlin", "2024-10-27T01:10", ["2024-10-28T01:30"]),
    ("*/20 * * * *", "Europe/Berlin", "2024-10-27T01:10",
     ["2024-10-27T02:00", "2024-10-27T02:20"]),
    # America/New_York, spring forward 2024-03-10 02:00 EST -> 03:00 EDT.
    ("30 2 * * *", "America/New_York", "2024-03-09T12:00",
     ["2024-03-10T07:00", "2024-03-11T06:30"]),
    # Fall back 2024-11-03 02:00 EDT -> 01:00 EST: 01:30 runs once, in EDT.
    ("30 1 * * *", "America/New_York", "2024-11-02T12:00",
     ["2024-11-03T05:30", "2024-11-04T06:30"]),
    ("0 * * * *", "America/New_York", "2024-11-03T03:30",
     ["2024-11-03T04:00", "2024-11-03T05:00", "2024-11-03T07:00", "2024-11-03T08:00"]),
    # Australia/Lord_Howe shifts by 30 minutes. Fall back 2024-04-07 02:00 (+11:00)
    # -> 01:30 (+10:30): 01:45 runs once, at +11:00.
    ("45 1 * * *", "Australia/Lord_Howe", "2024-04-05T12:00",
     ["2024-04-05T14:45", "2024-04-06T14:45", "2024-04-07T15:15"]),
    # Spring forward 2024-10-06 02:00 (+10:30) -> 02:30 (+11:00).
    ("15 2 * * *", "Australia/Lord_Howe", "2024-10-04T12:00",
     ["2024-10-04T15:45", "2024-10-05T15:30", "2024-10-06T15:15"]),
    ("*/15 * * * *", "Australia/Lord_Howe", "2024-10-05T15:10",
     ["2024-10-05T15:15", "2024-10-05T15:30", "2024-10-05T15:45"]),
    # Negative DST (Irish winter time is the "DST" in tzdata): fall back 2024-10-27
    # 02:00 IST -> 01:00 GMT; 01:30 runs once, at its first occurrence (IST).
    ("30 1 * * *", "Europe/Dublin", "2024-10-26T12:00",
     ["2024-10-27T00:30", "2024-10-28T01:30"]),
    # Chile springs forward at midnight (2024-09-08 00:00 -04 -> 01:00 -03): the daily
    # midnight run happens at 01:00 that day.
    ("@daily", "America/Santiago", "2024-09-07T12:00",
     ["2024-09-08T04:00", "2024-09-09T03:00"]),
    # Samoa skipped 2011-12-30 entirely (-10 -> +14): that day's noon runs when the
    # next day begins.
    ("0 12 * * *", "Pacific/Apia", "2011-12-29T12:00",
     ["2011-12-29T22:00", "2011-12-30T10:00", "2011-12-30T22:00"]),
    # A zone without DST, and one a fraction of an hour off UTC.
    ("0 9 * * *", "Asia/Tokyo", "2024-01-01T00:00", ["2024-01-02T00:00", "2024-01-03T00:00"]),
    ("0 0 * * *", "Asia/Kolkata", "2024-01-01T00:00", ["2024-01-01T18:30", "2024-01-02T18:30"]),
]  # fmt: skip


@pytest.mark.parametrize(("expr", "tz", "after", "expected"), CASES)
def test_next_slots(expr: str, tz: str, after: str, expected: list[str]) -> None:
    assert instants(next_slots(expr, tz, utc(after), len(expected))) == expected


LOCAL_CASES = [
    # (cron, zone, after (UTC), local ISO of the first slot, shifted by a gap?)
    ("30 2 * * *", "Europe/Berlin", "2024-03-31T00:00", "2024-03-31T03:00:00+02:00", True),
    ("30 2 * * *", "Europe/Berlin", "2024-10-27T00:00", "2024-10-27T02:30:00+02:00", False),
    ("30 2 * * *", "Europe/Berlin", "2024-10-27T01:00", "2024-10-28T02:30:00+01:00", False),
    ("15 2 * * *", "Australia/Lord_Howe", "2024-10-05T12:00", "2024-10-06T02:30:00+11:00", True),
    ("45 1 * * *", "Australia/Lord_Howe", "2024-04-06T12:00", "2024-04-07T01:45:00+11:00", False),
    ("0 12 * * *", "Pacific/Apia", "2011-12-30T00:00", "2011-12-31T00:00:00+14:00", True),
    ("0 0 * * *", "UTC", "2024-01-01T00:00", "2024-01-02T00:00:00+00:00", False),
]


@pytest.mark.parametrize(("expr", "tz", "after", "local", "shifted"), LOCAL_CASES)
def test_slots_carry_local_time(expr: str, tz: str, after: str, local: str, shifted: bool) -> None:
    slot = next_slot(expr, tz, utc(after))
    assert slot.local.isoformat() == local
    assert slot.local.tzinfo == ZoneInfo(tz)
    assert slot.utc.tzinfo is UTC
    assert slot.local.timestamp() == slot.utc.timestamp()  # the same instant
    assert slot.shifted is shifted


def test_after_in_any_zone_means_the_same_instant() -> None:
    berlin = datetime(2024, 1, 1, 1, 0, tzinfo=ZoneInfo("Europe/Berlin"))
    offset = datetime(2024, 1, 1, 5, 30, tzinfo=timezone(timedelta(hours=5, minutes=30)))
    expected = instants(next_slots("0 * * * *", "UTC", utc("2024-01-01T00:00"), 3))
    assert instants(next_slots("0 * * * *", "UTC", berlin, 3)) == expected
    assert instants(next_slots("0 * * * *", "UTC", offset, 3)) == expected


def test_a_naive_after_is_refused() -> None:
    with pytest.raises(ValueError, match="timezone-aware"):
        next_slots("0 * * * *", "UTC", datetime(2024, 1, 1), 1)


def test_count_must_be_positive() -> None:
    with pytest.raises(ValueError, match="count"):
        next_slots("0 * * * *", "UTC", utc("2024-01-01T00:00"), 0)


def test_iteration_is_lazy_and_stops_at_the_end_of_time() -> None:
    slots = iter_slots("0 0 1 1 *", "UTC", utc("9997-06-01T00:00"))
    assert [s.utc.year for s in slots] == [9998, 9999]


def test_a_whole_year_of_hourly_slots_in_berlin_runs_each_wall_hour_once() -> None:
    # 2024 has 8784 wall hours; the first (midnight, 1 January) is not after "after";
    # 02:00 on 31 March does not exist and merges into the 03:00 slot; 02:00 on
    # 27 October happens twice but runs once.
    slots = next_slots("0 * * * *", "Europe/Berlin", utc("2023-12-31T23:00"), 8782)
    walls = [s.local.replace(tzinfo=None) for s in slots]
    assert len(set(walls)) == len(walls) == 8782
    assert all(b.utc > a.utc for a, b in itertools.pairwise(slots))
    assert slots[-1].local.isoformat() == "2024-12-31T23:00:00+01:00"
    spring = [s for s in slots if s.local.date().isoformat() == "2024-03-31"]
    assert [s.local.hour for s in spring][:4] == [0, 1, 3, 4]
    assert not any(s.shifted for s in slots)  # the merged slot is 03:00 itself
    autumn = [s.utc.strftime("%H:%M") for s in slots if s.local.date().isoformat() == "2024-10-27"]
    assert autumn[:4] == ["22:00", "23:00", "00:00", "02:00"]  # 00:00, 01:00, 02:00 CEST, 03:00 CET


# -- parsing ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("expr", "normal"),
    [
        ("0 2 * * *", "0 2 * * *"),
        ("  0\t2  *  * *  ", "0 2 * * *"),
        ("0 9 * * MON-FRI", "0 9 * * mon-fri"),
        ("0 0 l * *", "0 0 L * *"),
        ("@DAILY", "@daily"),
        (" @annually ", "@annually"),
        ("*/5 * * * *", "*/5 * * * *"),
        ("0 0 1,15 jan-jun/2 *", "0 0 1,15 jan-jun/2 *"),
        ("0 22 * * 7", "0 22 * * 7"),
        ("05 03 * * *", "05 03 * * *"),
    ],
)
def test_valid_expressions_are_normalised(expr: str, normal: str) -> None:
    assert parse_cron(expr).expr == normal


@pytest.mark.parametrize(
    ("expr", "message"),
    [
        ("", "is empty"),
        ("   ", "is empty"),
        ("* * * *", "has 4 fields"),
        ("* * * * * *", "seconds"),
        ("0 0 0 * * * 2024", "seconds and years are not supported"),
        ("@reboot", "@reboot"),
        ("@every 5m", "unknown alias"),
        ("@", "unknown alias"),
        ("60 * * * *", "minute: 60 is out of range 0-59"),
        ("0 24 * * *", "hour: 24 is out of range 0-23"),
        ("0 0 0 * *", "day-of-month: 0 is out of range 1-31"),
        ("0 0 32 * *", "day-of-month: 32 is out of range 1-31"),
        ("0 0 * 13 *", "month: 13 is out of range 1-12"),
        ("0 0 * * 8", "day-of-week: 8 is out of range 0-7"),
        ("-1 * * * *", "minute"),
        ("0 22-2 * * *", "runs backwards"),
        ("0 0 * * fri-mon", "runs backwards"),
        ("*/0 * * * *", "step must be at least 1"),
        ("*/90 * * * *", "every 90 minutes"),
        ("*/60 * * * *", "larger than the range"),
        ("0 */24 * * *", "larger than the range"),
        ("0 0 * * */7", "larger than the range"),
        ("0 0 10-12/5 * *", "larger than the range"),
        ("0 0 * * 1,", "empty item"),
        ("0,,5 * * * *", "empty item"),
        ("*,5 * * * *", "'*' cannot be part of a list"),
        ("0 0 ? * *", "'?'"),
        ("0 0 * * 5L", "'L'"),
        ("0 0 L * 5L", "'L'"),
        ("0 0 1,L * *", "alone"),
        ("0 L * * *", "only in day-of-month"),
        ("0 0 15W * *", "'W'"),
        ("0 0 * * fri#2", "'#'"),
        ("H * * * *", "H and R"),
        ("R 0 * * *", "H and R"),
        ("0 0 * * monday", "day-of-week: unknown name 'monday'"),
        ("0 0 * foo *", "month: unknown name 'foo'"),
        ("0 mon * * *", "hour: names are only allowed in month and day-of-week"),
        ("0 0 30 2 *", "never runs"),
        ("0 0 */2 * 1", "is ambiguous"),
        ("0 0 1 * */2", "is ambiguous"),
        ("0 0 31 4,6,9,11 *", "never runs"),
        ("0 0\u00a0* * 1", "characters"),
        ("0 0 * * 1 # comment", "has 7 fields"),
        ("0 0 * * " + "1," * 60 + "1", "too long"),
        ("0 0 99999999999999999999 * *", "day-of-month"),
    ],
)
def test_invalid_expressions_say_what_is_wrong(expr: str, message: str) -> None:
    with pytest.raises(InvalidCron) as caught:
        parse_cron(expr)
    assert message in str(caught.value)
    assert caught.value.field == "cron"


def test_leap_day_only_is_valid_but_rare() -> None:
    assert parse_cron("0 0 29 2 *").expr == "0 0 29 2 *"
    # Day-of-week rescues an impossible day-of-month (either one matches).
    assert instants(next_slots("0 0 30 2 1", "UTC", utc("2024-01-31T00:00"), 1)) == [
        "2024-02-05T00:00"
    ]


# -- time zones ------------------------------------------------------------------------


@pytest.mark.parametrize(
    "name",
    ["UTC", "Europe/Berlin", "America/New_York", "Australia/Lord_Howe", "Etc/GMT+5",
     "America/Argentina/Buenos_Aires", "US/Eastern"],
)  # fmt: skip
def test_known_zones(name: str) -> None:
    assert parse_timezone(name).key == name


@pytest.mark.parametrize(
    ("name", "message"),
    [
        ("", "is empty"),
        ("Mars/Olympus", "unknown time zone 'Mars/Olympus'"),
        ("Europe/Berlni", "did you mean Europe/Berlin?"),
        ("europe/berlin", "did you mean Europe/Berlin?"),
        ("../../etc/passwd", "unknown time zone"),
        ("/etc/localtime", "unknown time zone"),
        ("localtime", "depends on the machine"),
        ("posix/Europe/Berlin", "use Europe/Berlin"),
        ("right/UTC", "use UTC"),
        ("Factory", "unknown time zone"),
        ("Europe/Berlin ", "unknown time zone"),
        ("Europe//Berlin", "unknown time zone"),
        ("+02:00", "a fixed offset is not a time zone"),
        ("CET\x00", "unknown time zone"),
        ("A" * 100, "too long"),
    ],
)
def test_unknown_zones_are_refused_clearly(name: str, message: str) -> None:
    with pytest.raises(InvalidTimezone) as caught:
        parse_timezone(name)
    assert message in str(caught.value)
    assert caught.value.field == "timezone"


def test_slot_functions_refuse_bad_input_with_the_same_errors() -> None:
    with pytest.raises(InvalidTimezone):
        next_slots("0 * * * *", "Nowhere/City", utc("2024-01-01T00:00"), 1)
    with pytest.raises(InvalidCron):
        next_slots("0 * * *", "UTC", utc("2024-01-01T00:00"), 1)


# -- descriptions ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("expr", "text"),
    [
        ("0 2 * * *", "At 02:00"),
        ("*/15 * * * *", "Every 15 minutes"),
        ("0 9 * * 1-5", "At 09:00, Monday through Friday"),
        ("0 0 L * *", "At 00:00, on the last day of the month"),
        ("0 0 13 * 5", "At 00:00, on day 13 of the month, or on Friday"),
        ("@daily", "At 00:00"),
        ("@hourly", "Every hour"),
        ("@weekly", "At 00:00, only on Sunday"),
        ("@yearly", "At 00:00, on day 1 of the month, only in January"),
        ("30 23 * * 7", "At 23:30, only on Sunday"),
    ],
)
def test_descriptions(expr: str, text: str) -> None:
    assert describe(expr) == text


# -- property: wall-clock matching agrees with croniter's naive iteration -------------

FIELDS = [(0, 59), (0, 23), (1, 31), (1, 12), (0, 7)]


@st.composite
def fields(draw: st.DrawFn, index: int) -> str:
    low, high = FIELDS[index]
    kind = draw(st.sampled_from(["star", "value", "range", "step", "list", "start-step"]))
    if kind == "star":
        return "*"
    if kind == "value":
        return str(draw(st.integers(low, high)))
    if kind == "start-step":
        start = draw(st.integers(low, min(high, 6 if index == 4 else high) - 1))
        top = 6 if index == 4 else high
        return f"{start}/{draw(st.integers(1, top - start))}"
    if kind == "step":
        top = 6 if index == 4 else high
        return f"*/{draw(st.integers(1, top - low))}"
    a = draw(st.integers(low, high - 1))
    b = draw(st.integers(a + 1, high))
    if kind == "range":
        step = draw(st.one_of(st.none(), st.integers(1, b - a)))
        return f"{a}-{b}" + (f"/{step}" if step else "")
    values = draw(st.lists(st.integers(low, high), min_size=2, max_size=4, unique=True))
    return ",".join(map(str, values))


@st.composite
def expressions(draw: st.DrawFn) -> str:
    parts = [draw(fields(i)) for i in range(5)]
    if draw(st.booleans()):
        parts[2] = draw(st.sampled_from(["*", "L", parts[2]]))
    return " ".join(parts)


@settings(max_examples=400, deadline=None)
@given(
    expr=expressions(),
    start=st.datetimes(min_value=datetime(2000, 1, 1), max_value=datetime(2090, 1, 1)),
)
def test_wall_clock_matching_agrees_with_croniter(expr: str, start: datetime) -> None:
    try:
        spec = parse_cron(expr)
    except InvalidCron:
        return  # e.g. day 31 only in April: croniter would search for decades
    oracle = croniter(expr, start)
    wall = start
    for _ in range(5):
        wall = spec.next_wall(wall)
        assert wall == oracle.get_next(datetime), expr


@settings(max_examples=200, deadline=None)
@given(
    expr=expressions(),
    zone=st.sampled_from(
        ["UTC", "Europe/Berlin", "America/New_York", "Australia/Lord_Howe", "America/Santiago"]
    ),
    after=st.datetimes(
        min_value=datetime(2000, 1, 1),
        max_value=datetime(2090, 1, 1),
        timezones=st.just(UTC),
    ),
)
def test_slots_are_increasing_after_the_start_and_run_each_wall_time_once(
    expr: str, zone: str, after: datetime
) -> None:
    try:
        spec = parse_cron(expr)
    except InvalidCron:
        return
    slots = next_slots(spec, zone, after, 20)
    assert slots[0].utc > after
    assert all(b.utc > a.utc for a, b in itertools.pairwise(slots))
    walls = [s.nominal for s in slots]
    assert len(set(walls)) == len(walls)
    for slot in slots:
        # (not ==: Python calls an ambiguous local time unequal to every other zone's)
        assert slot.local.timestamp() == slot.utc.timestamp()
        assert slot.utc.tzinfo is UTC
        assert slot.local.tzinfo == ZoneInfo(zone)
        if not slot.shifted:
            assert slot.local.replace(tzinfo=None) == slot.nominal
            assert slot.local.fold == 0  # a repeated wall time runs at its first occurrence
        else:
            assert slot.local.replace(tzinfo=None) > slot.nominal
    if zone == "UTC":
        oracle = croniter(spec.expr, after)
        assert [s.utc for s in slots] == [oracle.get_next(datetime) for _ in slots]


CRON_ALPHABET = "0123456789*/,-LlWwH#?RjanfebMONmonsuntue@dailyreboot \t\u00a0x"


@settings(max_examples=2000, deadline=None)
@given(
    expr=st.one_of(st.text(max_size=40), st.text(alphabet=CRON_ALPHABET, max_size=40)),
    zone=st.one_of(st.text(max_size=30), st.sampled_from(["UTC", "Europe/Berlin", "Etc/GMT+5"])),
)
def test_any_text_parses_or_is_refused_with_a_message(expr: str, zone: str) -> None:
    problems: list[str] = []
    try:
        spec = parse_cron(expr)
        slots = next_slots(spec, zone, utc("2024-01-01T00:00"), 3)
    except (InvalidCron, InvalidTimezone) as exc:
        problems.append(str(exc))
    if problems:
        assert problems[0]  # a message, and nothing but these two errors
        return
    assert len(slots) == 3
    assert describe(spec)
