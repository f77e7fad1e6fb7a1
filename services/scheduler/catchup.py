"""Which slots a schedule owes, and what becomes of each: pure functions of the
schedule's timing, its cursor and ``now`` (nothing here reads a clock).

Owed slots
    A schedule owes every slot after its *baseline* up to ``now``. The baseline is
    the last slot the scheduler handled (fired, or recorded as missed or skipped)
    when the cursor proves the timing has not changed since — the cursor's
    ``next_slot_at`` is the first slot after it under today's cron and zone. Else
    (never handled, re-enabled, cron or zone changed) it is the later of that slot
    and the schedule's last change: a new schedule is not backfilled, a disabled
    spell owes nothing, and a new cron owes nothing from before it was set.

Catch-up
    Of the owed slots, the newest fires if it is at most ``grace`` old; every other
    owed slot is recorded as missed, with the reason. At most ``max_missed`` are
    recorded one by one (the newest ones); the oldest recorded row then says how far
    back the gap goes. In the normal case the only owed slot is the one due now.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta, tzinfo
from enum import StrEnum
from itertools import takewhile
from typing import Final

from services.common.cron import CronSpec, Slot, iter_slots

FIRST_WINDOW: Final = timedelta(hours=1)
"""The first look-back when listing the newest owed slots; it grows fourfold."""


class Kind(StrEnum):
    FIRE = "fire"
    MISSED = "missed"


@dataclass(frozen=True)
class Action:
    """One slot to record: fire it, or record it as missed (``reason`` says why)."""

    schedule_id: uuid.UUID
    slot: Slot
    kind: Kind
    reason: str = ""


@dataclass(frozen=True)
class Plan:
    actions: tuple[Action, ...]
    """Oldest slot first; the fired slot, if any, is last."""
    handled_until: datetime | None
    """The newest slot in ``actions`` (the cursor's next ``last_slot_at``)."""
    next: Slot | None
    """The first slot after ``now`` (``None`` only at the end of the calendar)."""


def first_after(spec: CronSpec, zone: tzinfo, after: datetime) -> Slot | None:
    for slot in iter_slots(spec, zone, after):
        return slot
    return None


def baseline(
    spec: CronSpec,
    zone: tzinfo,
    *,
    created_at: datetime,
    changed_at: datetime,
    last_slot_at: datetime | None,
    next_slot_at: datetime | None,
) -> datetime:
    """The instant after which the schedule owes slots (see the module docstring)."""
    anchor = last_slot_at or created_at
    if next_slot_at is not None:
        expected = first_after(spec, zone, anchor)
        if expected is not None and expected.utc == next_slot_at:
            return anchor
    return max(anchor, changed_at)


def newest_slots(
    spec: CronSpec, zone: tzinfo, after: datetime, until: datetime, limit: int
) -> tuple[list[Slot], bool]:
    """Up to ``limit`` newest slots in ``(after, until]``, oldest first, and whether
    older slots of the range were left out. Looks back in growing windows, so the
    cost follows ``limit``, not the length of the range (a year of minutes)."""
    if limit < 1:
        raise ValueError("limit must be at least 1")
    window = FIRST_WINDOW
    while True:
        start = after if window >= until - after else until - window
        slots = list(_until(iter_slots(spec, zone, start), until))
        if len(slots) > limit:
            return slots[-limit:], True
        if start <= after:
            return slots, False
        window *= 4


def plan(
    schedule_id: uuid.UUID,
    spec: CronSpec,
    zone: tzinfo,
    *,
    after: datetime,
    now: datetime,
    grace: timedelta,
    max_missed: int,
    upcoming: tuple[Slot, Slot | None] | None = None,
) -> Plan:
    """What to do about the slots in ``(after, now]``. ``upcoming``, when known, is
    the first slot after ``after`` and the one after it: when that second one is not
    due yet — the normal case — no cron is evaluated here at all."""
    if (
        upcoming is not None
        and upcoming[0].utc <= now
        and (upcoming[1] is None or upcoming[1].utc > now)
    ):
        owed, left_out, following = [upcoming[0]], False, upcoming[1]
    else:
        owed, left_out = newest_slots(spec, zone, after, now, max_missed + 1)
        following = first_after(spec, zone, max(after, now))
    fire = owed[-1] if owed and now - owed[-1].utc <= grace else None
    missed = owed[:-1] if fire is not None else owed
    if len(missed) > max_missed:
        missed, left_out = missed[-max_missed:], True
    actions = [
        Action(schedule_id, slot, Kind.MISSED, _missed_reason(slot, fire, now, grace))
        for slot in missed
    ]
    if left_out and actions:
        first = actions[0]
        note = (
            f" Earlier slots since {_at(after)} were missed too; only the last "
            f"{len(actions)} are recorded one by one."
        )
        actions[0] = Action(schedule_id, first.slot, first.kind, first.reason + note)
    if fire is not None:
        actions.append(Action(schedule_id, fire, Kind.FIRE))
    return Plan(
        actions=tuple(actions),
        handled_until=owed[-1].utc if owed else None,
        next=following,
    )


def _until(slots: Iterator[Slot], until: datetime) -> Iterator[Slot]:
    return takewhile(lambda slot: slot.utc <= until, slots)


def _missed_reason(slot: Slot, fire: Slot | None, now: datetime, grace: timedelta) -> str:
    if fire is not None and now - slot.utc <= grace:
        return (
            f"Not run at its time: the scheduler was stopped or could not reach NATS or "
            f"the metadata DB. One catch-up run was started for the later slot "
            f"{_at(fire.utc)} instead."
        )
    return late_reason(now, grace)


def late_reason(now: datetime, grace: timedelta) -> str:
    """Why a slot recorded more than ``grace`` after its time did not run."""
    return (
        f"Not run: the scheduler was stopped or could not reach NATS or the metadata DB "
        f"from this slot until {_at(now)}, longer than the catch-up grace of {span(grace)}."
    )


def _at(instant: datetime) -> str:
    return instant.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


def span(duration: timedelta) -> str:
    """``1 h``, ``90 min``, ``45 s``: a duration as a person would write it."""
    seconds = int(duration.total_seconds())
    if seconds and seconds % 3600 == 0:
        return f"{seconds // 3600} h"
    if seconds >= 60 and seconds % 60 == 0:
        return f"{seconds // 60} min"
    return f"{duration.total_seconds():g} s"
