"""Cron schedules as pure functions: parse and validate an expression and a time
zone, list the next run times, describe an expression in words. Shared by the API
(validation, previews, ``next_run_at``) and the scheduler (firing), so both agree on
every slot. Nothing here reads the wall clock: callers pass ``after``.

Expressions
    Five fields — minute (0-59), hour (0-23), day-of-month (1-31, or ``L`` alone:
    the last day of the month), month (1-12 or ``jan``-``dec``), day-of-week (0-7,
    0 and 7 are Sunday, or ``sun``-``sat``) — each ``*``, a value, a range ``a-b``,
    a step ``*/n``, ``a-b/n`` or ``a/n``, or a comma list of values, ranges and
    steps; or one of the aliases in :data:`ALIASES`. When neither day-of-month nor
    day-of-week is a bare ``*``, a day matching *either* runs (POSIX cron).
    Refused, with a message saying why: seconds and year fields, ``@reboot``,
    Quartz and croniter extensions (``?``, ``W``, ``#``, ``H``, ``R``, ``L``
    anywhere but alone in day-of-month), backwards ranges (``22-2``: cron ranges do
    not wrap), steps too large to repeat (``*/90`` in minutes would run hourly, not
    every 90 minutes), expressions that never run (``0 0 30 2 *``), and both day
    fields set with one starting with ``*`` (``0 0 */2 * 1``: Vixie cron and
    crontab.guru read it as "both", POSIX and croniter as "either").

Time zones and DST (the rule of issue 5)
    An expression is evaluated on the wall clock of the schedule's IANA zone. A wall
    time that does not exist (spring-forward gap) runs once, at the first instant
    after the gap; a wall time that happens twice (fall-back overlap) runs once, at
    its first occurrence. Slots that land on the same instant run once.

croniter agrees with this module on every expression it accepts (the unit tests
check it against croniter's naive iteration), but the iteration is done here:
croniter's own zone handling runs fall-back slots twice, and this is several times
faster, which matters to a scheduler with thousands of schedules.
"""

from __future__ import annotations

import bisect
import calendar
import dataclasses
import difflib
import functools
import importlib.resources
import re
import zoneinfo
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta, tzinfo
from typing import Final

from cron_descriptor import ExpressionDescriptor, Options
from croniter import croniter

MAX_EXPR_LENGTH: Final = 100
MAX_TIMEZONE_LENGTH: Final = 64
ALIASES: Final = {
    "@yearly": "0 0 1 1 *",
    "@annually": "0 0 1 1 *",
    "@monthly": "0 0 1 * *",
    "@weekly": "0 0 * * 0",
    "@daily": "0 0 * * *",
    "@midnight": "0 0 * * *",
    "@hourly": "0 * * * *",
}
_FIELDS: Final = (
    ("minute", 0, 59),
    ("hour", 0, 23),
    ("day-of-month", 1, 31),
    ("month", 1, 12),
    ("day-of-week", 0, 7),
)
_UNITS: Final = ("minutes", "hours", "days", "months", "days")
_NAMES: Final = {
    3: {m.lower(): i for i, m in enumerate(calendar.month_abbr) if m},
    4: {"sun": 0, "mon": 1, "tue": 2, "wed": 3, "thu": 4, "fri": 5, "sat": 6},
}
_ITEM: Final = re.compile(
    r"(?:(?P<star>\*)|(?P<a>[a-z0-9]+)(?:-(?P<b>[a-z0-9]+))?)(?:/(?P<step>[0-9]+))?"
)
_UNSUPPORTED: Final = (
    (re.compile(r".*\?.*"), "'?' is not supported; use '*'"),
    (re.compile(r".*#.*"), "'#' (nth weekday of the month) is not supported"),
    (re.compile(r"[0-9]*w[0-9]*|lw"), "'W' (nearest weekday) is not supported"),
    (re.compile(r"[hr](\(.*)?(/.*)?"), "hashed and random values (H and R) are not supported"),
)
_LAST: Final = re.compile(r"l|[0-9]+l|l[0-9]+")
_ZONE_KEY: Final = re.compile(r"[A-Za-z][A-Za-z0-9_+-]*(/[A-Za-z0-9_+-]+)*")
_MAX_SEARCH_DAYS: Final = 366 * 12  # a valid expression matches within 8 years
_MONTH_DAYS: Final = (31, 29, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31)


class CronError(ValueError):
    """Bad input; the message says what is wrong and is safe to show to the user.
    ``field`` names the input it is about (``cron`` or ``timezone``)."""

    field = "cron"


class InvalidCron(CronError):
    field = "cron"


class InvalidTimezone(CronError):
    field = "timezone"


class _EndOfCalendar(Exception):
    """Iteration went past year 9999."""


@dataclass(frozen=True)
class CronSpec:
    """A parsed expression: ``expr`` is its normal form (what to store); the rest
    are the values it matches (day-of-week 0-6, Sunday 0)."""

    expr: str
    minutes: tuple[int, ...]
    hours: tuple[int, ...]
    days: frozenset[int]
    last_day: bool
    months: frozenset[int]
    weekdays: frozenset[int]
    days_restricted: bool
    weekdays_restricted: bool

    @property
    def five_fields(self) -> str:
        """The expression with an alias spelt out."""
        return ALIASES.get(self.expr, self.expr)

    def matches_day(self, day: date) -> bool:
        if day.month not in self.months:
            return False
        in_month = day.day in self.days or (
            self.last_day and day.day == calendar.monthrange(day.year, day.month)[1]
        )
        in_week = day.isoweekday() % 7 in self.weekdays
        if self.days_restricted and self.weekdays_restricted:
            return in_month or in_week
        return in_month and in_week

    def next_wall(self, wall: datetime) -> datetime:
        """The first matching wall-clock minute strictly after ``wall`` (naive, or
        read as naive)."""
        try:
            start = wall.replace(second=0, microsecond=0, tzinfo=None) + timedelta(minutes=1)
            day, earliest = start.date(), (start.hour, start.minute)
            for _ in range(_MAX_SEARCH_DAYS):
                if day.month not in self.months:
                    day, earliest = _first_of_next_month(day), (0, 0)
                    continue
                if self.matches_day(day):
                    found = self._time_from(*earliest)
                    if found is not None:
                        return datetime(day.year, day.month, day.day, *found)
                day, earliest = day + timedelta(days=1), (0, 0)
        except (OverflowError, ValueError):
            raise _EndOfCalendar from None
        raise InvalidCron(f"cron {self.expr!r} never runs")  # pragma: no cover - parse_cron

    def _time_from(self, hour: int, minute: int) -> tuple[int, int] | None:
        """The first (hour, minute) of the day at or after the given one."""
        i = bisect.bisect_left(self.hours, hour)
        if i < len(self.hours) and self.hours[i] == hour:
            j = bisect.bisect_left(self.minutes, minute)
            if j < len(self.minutes):
                return hour, self.minutes[j]
            i += 1
        if i < len(self.hours):
            return self.hours[i], self.minutes[0]
        return None


@dataclass(frozen=True)
class Slot:
    """One run: ``utc`` and ``local`` are the same instant (``local`` in the
    schedule's zone); ``nominal`` is the naive wall time the expression names,
    which differs from ``local`` only when it fell into a spring-forward gap.
    Compare and key slots by ``utc``: Python calls an ambiguous local time (one in a
    fall-back overlap) unequal to every datetime of another zone."""

    utc: datetime
    local: datetime
    nominal: datetime

    @property
    def shifted(self) -> bool:
        """True when the nominal wall time did not exist (moved past a DST gap)."""
        return self.local.replace(tzinfo=None) != self.nominal


# -- parsing ---------------------------------------------------------------------------


@functools.lru_cache(maxsize=4096)
def parse_cron(expr: str) -> CronSpec:
    """Validate and parse ``expr``; raise :class:`InvalidCron` saying what is wrong."""
    text = expr.strip(" \t\r\n")
    if not text:
        raise InvalidCron("cron is empty; write 5 fields, e.g. '0 2 * * *', or @daily")
    if len(text) > MAX_EXPR_LENGTH:
        raise InvalidCron(f"cron is too long (at most {MAX_EXPR_LENGTH} characters)")
    if not all(c.isascii() and (c.isprintable() or c == "\t") for c in text):
        raise InvalidCron("cron contains characters other than letters, digits, spaces and */,-")
    if text.startswith("@"):
        return _parse_alias(text.lower())
    parts = text.lower().split()
    if len(parts) != 5:
        why = "seconds and years are not supported" if len(parts) in (6, 7) else "no more, no less"
        raise InvalidCron(
            f"cron has {len(parts)} fields; use 5 (minute hour day-of-month month "
            f"day-of-week): {why}"
        )
    values = [_parse_field(index, part) for index, part in enumerate(parts)]
    last_day = parts[2] == "l"
    if last_day:
        parts[2] = "L"
    _check_day_fields(parts[2], parts[4])
    spec = CronSpec(
        expr=" ".join(parts),
        minutes=tuple(sorted(values[0])),
        hours=tuple(sorted(values[1])),
        days=frozenset(values[2]),
        last_day=last_day,
        months=frozenset(values[3]),
        weekdays=frozenset(v % 7 for v in values[4]),
        days_restricted=parts[2] != "*",
        weekdays_restricted=parts[4] != "*",
    )
    _check_it_runs(spec)
    if not croniter.is_valid(spec.expr):  # pragma: no cover - the grammar here is stricter
        raise InvalidCron(f"cron {spec.expr!r} is not valid")
    return spec


def _parse_alias(alias: str) -> CronSpec:
    if alias == "@reboot":
        raise InvalidCron("@reboot is not a schedule; use times, e.g. @daily or '0 2 * * *'")
    if alias not in ALIASES:
        raise InvalidCron(f"unknown alias {alias!r}; use one of {', '.join(ALIASES)}")
    return dataclasses.replace(parse_cron(ALIASES[alias]), expr=alias)


def _parse_field(index: int, text: str) -> set[int]:
    """The values of one field; for day-of-month ``L``, the empty set."""
    name = _FIELDS[index][0]
    values: set[int] = set()
    items = text.split(",")
    for item in items:
        if not item:
            raise InvalidCron(f"{name}: empty item in the list {text!r}")
        for pattern, why in _UNSUPPORTED:
            if pattern.fullmatch(item):
                raise InvalidCron(f"{name}: {why}")
        if _LAST.fullmatch(item):
            if index != 2:
                raise InvalidCron(f"{name}: 'L' (last day of the month) is only in day-of-month")
            if item != "l" or len(items) > 1:
                raise InvalidCron(f"{name}: 'L' (last day of the month) must stand alone")
            return set()
        if item.startswith("*") and len(items) > 1:
            raise InvalidCron(f"{name}: '*' cannot be part of a list")
        values |= _parse_item(index, item)
    return values


def _parse_item(index: int, item: str) -> set[int]:
    name, low, high = _FIELDS[index]
    top = 6 if index == 4 else high  # day-of-week 7 is Sunday again: steps stop at 6
    match = _ITEM.fullmatch(item)
    if match is None:
        raise InvalidCron(f"{name}: {item!r} is not a value, range or step")
    if match["star"]:
        a, b = low, top
    else:
        a = _value(index, match["a"])
        b = _value(index, match["b"]) if match["b"] else a
        if b < a:
            raise InvalidCron(
                f"{name}: range {item!r} runs backwards (cron ranges do not wrap); "
                f"split it, e.g. {match['a']}-{high},{low}-{match['b']}"
            )
        if match["step"] and not match["b"]:
            b = top  # 'a/n': from a to the end of the field
    if match["step"] is None:
        return set(range(a, b + 1))
    step = int(match["step"])
    if step < 1:
        raise InvalidCron(f"{name}: step must be at least 1")
    if step > b - a:
        every = f"; cron cannot run every {step} {_UNITS[index]}" if match["star"] else ""
        raise InvalidCron(
            f"{name}: step {step} is larger than the range {a}-{b}, so it would run "
            f"only at {a}{every}"
        )
    return set(range(a, b + 1, step))


def _value(index: int, token: str) -> int:
    name, low, high = _FIELDS[index]
    if token.isdigit():
        value = int(token)
    elif token.isalpha():
        names = _NAMES.get(index)
        if names is None:
            raise InvalidCron(f"{name}: names are only allowed in month and day-of-week")
        if token not in names:
            raise InvalidCron(f"{name}: unknown name {token!r}; use {', '.join(names)}")
        value = names[token]
    else:
        raise InvalidCron(f"{name}: {token!r} is not a number")
    if not low <= value <= high:
        raise InvalidCron(f"{name}: {value} is out of range {low}-{high}")
    return value


def _check_day_fields(days: str, weekdays: str) -> None:
    if "*" in (days, weekdays) or not (days.startswith("*") or weekdays.startswith("*")):
        return
    raise InvalidCron(
        f"day-of-month {days!r} with day-of-week {weekdays!r} is ambiguous: some crons "
        "run on days matching both, others (and this one) on days matching either; "
        "write a range instead of '*' (e.g. 1-31/2) to mean either"
    )


def _check_it_runs(spec: CronSpec) -> None:
    if spec.last_day or not spec.days_restricted or spec.weekdays_restricted:
        return
    first = min(spec.days)
    if all(_MONTH_DAYS[m - 1] < first for m in spec.months):
        names = [calendar.month_name[m] for m in sorted(spec.months)]
        which = f"{names[0]} has" if len(names) == 1 else f"none of {', '.join(names)} has"
        raise InvalidCron(f"cron never runs: {which} a day {first}")


@functools.lru_cache(maxsize=1024)
def parse_timezone(name: str) -> zoneinfo.ZoneInfo:
    """The IANA zone ``name``; raise :class:`InvalidTimezone` saying what is wrong."""
    if not name:
        raise InvalidTimezone("time zone is empty; use an IANA name such as UTC or Europe/Berlin")
    if len(name) > MAX_TIMEZONE_LENGTH:
        raise InvalidTimezone(f"time zone is too long (at most {MAX_TIMEZONE_LENGTH} characters)")
    if re.match(r"[+-][0-9]", name):
        raise InvalidTimezone(
            f"{name!r}: a fixed offset is not a time zone; use an IANA name such as "
            "Europe/Berlin (DST included), or Etc/GMT-2 for a fixed UTC+2"
        )
    if name == "localtime":
        raise InvalidTimezone("'localtime' depends on the machine; use an IANA name")
    for prefix in ("posix/", "right/"):
        if name.startswith(prefix):
            raise InvalidTimezone(f"{name!r}: use {name.removeprefix(prefix)}")
    if _ZONE_KEY.fullmatch(name) and name not in {"Factory", "posixrules"}:
        try:
            return zoneinfo.ZoneInfo(name)
        except (KeyError, ValueError, OSError):  # not found, or not a zone file
            pass
    raise InvalidTimezone(f"unknown time zone {name!r}{_suggestion(name)}")


@functools.cache
def _known_zones() -> tuple[str, ...]:
    """Zone names for suggestions: tzdata's list (instant), else a scan of the
    system's zone files (slow, once)."""
    try:
        listed = importlib.resources.files("tzdata").joinpath("zones").read_text()
        return tuple(sorted(listed.split()))
    except (ModuleNotFoundError, OSError):  # pragma: no cover - tzdata is installed
        return tuple(sorted(zoneinfo.available_timezones()))


def _suggestion(name: str) -> str:
    known = _known_zones()
    same_case = [zone for zone in known if zone.lower() == name.lower()]
    close = same_case or difflib.get_close_matches(name, known, n=1, cutoff=0.8)
    if close:
        return f"; did you mean {close[0]}?"
    return "; use an IANA name such as UTC, Europe/Berlin or America/New_York"


# -- slots ----------------------------------------------------------------------------


def iter_slots(expr: str | CronSpec, tz: str | tzinfo, after: datetime) -> Iterator[Slot]:
    """Every slot strictly after ``after`` (an aware instant), in order, lazily;
    the iteration ends only with the calendar (year 9999)."""
    spec = expr if isinstance(expr, CronSpec) else parse_cron(expr)
    zone = parse_timezone(tz) if isinstance(tz, str) else tz
    if after.tzinfo is None or after.utcoffset() is None:
        raise ValueError("after must be timezone-aware")
    after = after.astimezone(UTC)
    wall = after.astimezone(zone).replace(tzinfo=None)
    pending: Slot | None = None  # a slot moved past a gap, perhaps met by a later one
    while True:
        try:
            wall = spec.next_wall(wall)
            slot = _slot(wall, zone)
        except (_EndOfCalendar, OverflowError):
            break
        if slot.utc <= after:
            continue  # the rest of a fall-back overlap whose first pass is over
        if pending is not None:
            if slot.utc == pending.utc:
                # Several wall times meet at the end of a gap: one run, reported as
                # the slot that truly is at that wall time when there is one.
                pending = pending if slot.shifted else slot
                continue
            yield pending
            pending = None
        if slot.shifted:
            pending = slot
        else:
            yield slot
    if pending is not None:
        yield pending


def next_slots(expr: str | CronSpec, tz: str | tzinfo, after: datetime, count: int) -> list[Slot]:
    """The next ``count`` slots strictly after ``after`` (fewer only at year 9999)."""
    if count < 1:
        raise ValueError("count must be at least 1")
    slots: list[Slot] = []
    for slot in iter_slots(expr, tz, after):
        slots.append(slot)
        if len(slots) == count:
            break
    return slots


def next_slot(expr: str | CronSpec, tz: str | tzinfo, after: datetime) -> Slot:
    """The first slot strictly after ``after``."""
    for slot in iter_slots(expr, tz, after):
        return slot
    raise CronError(f"no run time after {after.isoformat()}: the calendar ends in 9999")


def _slot(wall: datetime, zone: tzinfo) -> Slot:
    before = wall.replace(tzinfo=zone, fold=0).utcoffset()
    later = wall.replace(tzinfo=zone, fold=1).utcoffset()
    assert before is not None
    assert later is not None
    if before >= later:
        # Unique, or repeated (fall-back): fold=0 is the first occurrence.
        instant = (wall - before).replace(tzinfo=UTC)
    else:
        instant = _gap_end(wall, zone, before)
    return Slot(utc=instant, local=instant.astimezone(zone), nominal=wall)


def _gap_end(wall: datetime, zone: tzinfo, before: timedelta) -> datetime:
    """The first instant after the spring-forward gap that contains ``wall``: the
    transition itself, found to the second between ``wall - offset after`` (before
    the transition) and ``wall - offset before`` (at or after it)."""
    later = wall.replace(tzinfo=zone, fold=1).utcoffset()
    assert later is not None
    low = (wall - later).replace(tzinfo=UTC)
    high = (wall - before).replace(tzinfo=UTC)
    while high - low > timedelta(seconds=1):
        middle = (low + (high - low) / 2).replace(microsecond=0)
        if middle.astimezone(zone).utcoffset() == before:
            low = middle
        else:
            high = middle
    return high


def _first_of_next_month(day: date) -> date:
    if day.month == 12:
        return date(day.year + 1, 1, 1)
    return date(day.year, day.month + 1, 1)


# -- descriptions ---------------------------------------------------------------------


@functools.lru_cache(maxsize=1024)
def describe(expr: str | CronSpec) -> str:
    """The expression in English ("At 02:30, Monday through Friday"); raises
    :class:`InvalidCron` for an invalid one."""
    spec = expr if isinstance(expr, CronSpec) else parse_cron(expr)
    options = Options(locale_code="en_US", use_24hour_time_format=True)
    try:
        return str(ExpressionDescriptor(spec.five_fields, options).get_description())
    except Exception:  # pragma: no cover - a description is a nicety, never an error
        return spec.five_fields
