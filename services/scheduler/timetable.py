"""The in-memory timetable: each enabled schedule's next slot, in a min-heap keyed by
when the scheduler must act on it (``lead`` before the slot, to reserve it), so the
scheduler sleeps until exactly the earliest one.

Replacing or removing an entry leaves its old heap item behind; items carry the
entry's version and stale ones are skipped when they surface (and the heap is
rebuilt when they pile up). Pure: no clock, no I/O.
"""

from __future__ import annotations

import heapq
import itertools
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import datetime, timedelta, tzinfo

from services.common.cron import CronSpec, Slot, parse_cron, parse_timezone
from services.scheduler.catchup import baseline, first_after


@dataclass(frozen=True)
class Timing:
    """What decides a schedule's slots, as read from the metadata DB."""

    schedule_id: uuid.UUID
    cron: str
    timezone: str
    enabled: bool
    created_at: datetime
    changed_at: datetime
    last_slot_at: datetime | None = None
    next_slot_at: datetime | None = None
    has_cursor: bool = False

    @property
    def key(self) -> tuple[str, str]:
        return self.cron, self.timezone


@dataclass
class Entry:
    timing: Timing
    spec: CronSpec
    zone: tzinfo
    after: datetime
    """Every slot up to this instant is handled (or not owed)."""
    next: Slot | None
    """The first slot after ``after``; ``None`` when the calendar has ended."""
    following: Slot | None = None
    """The slot after ``next``, worked out ahead so that firing needs no cron."""
    retry_at: datetime | None = None
    """After a failed attempt: not before this instant."""
    version: int = field(default=0, compare=False)

    @property
    def schedule_id(self) -> uuid.UUID:
        return self.timing.schedule_id

    def act_at(self, lead: timedelta) -> datetime | None:
        """When the scheduler must act: ``lead`` before the next slot (to reserve it),
        or when a failed attempt may be retried, whichever is later."""
        if self.next is None:
            return None
        at = self.next.utc - lead
        if self.retry_at is not None and self.retry_at > at:
            return self.retry_at
        return at


class Timetable:
    def __init__(self, lead: timedelta = timedelta(0)) -> None:
        self.lead = lead
        self._entries: dict[uuid.UUID, Entry] = {}
        self._heap: list[tuple[datetime, int, uuid.UUID]] = []
        self._versions = itertools.count(1)

    def __len__(self) -> int:
        return len(self._entries)

    def __contains__(self, schedule_id: object) -> bool:
        return schedule_id in self._entries

    def __iter__(self) -> Iterator[Entry]:
        return iter(list(self._entries.values()))

    def get(self, schedule_id: uuid.UUID) -> Entry | None:
        return self._entries.get(schedule_id)

    def put(self, entry: Entry) -> None:
        """Add or replace the schedule's entry (and queue it for its due time)."""
        entry.version = next(self._versions)
        self._entries[entry.schedule_id] = entry
        due = entry.act_at(self.lead)
        if due is not None:
            heapq.heappush(self._heap, (due, entry.version, entry.schedule_id))
        if len(self._heap) > 2 * len(self._entries) + 64:
            self._rebuild()

    def remove(self, schedule_id: uuid.UUID) -> Entry | None:
        return self._entries.pop(schedule_id, None)

    def next_due(self) -> datetime | None:
        """When the earliest entry needs acting on; ``None`` when none ever does."""
        while self._heap:
            due, version, schedule_id = self._heap[0]
            if self._is_current(version, schedule_id):
                return due
            heapq.heappop(self._heap)
        return None

    def pop_due(self, now: datetime, limit: int | None = None) -> list[Entry]:
        """The entries to act on at ``now`` (earliest first, at most ``limit``). They
        stay in the table but leave the heap: ``put`` them back once handled."""
        due: list[Entry] = []
        while self._heap and self._heap[0][0] <= now and (limit is None or len(due) < limit):
            _, version, schedule_id = heapq.heappop(self._heap)
            if self._is_current(version, schedule_id):
                due.append(self._entries[schedule_id])
        return due

    def _is_current(self, version: int, schedule_id: uuid.UUID) -> bool:
        entry = self._entries.get(schedule_id)
        return entry is not None and entry.version == version

    def _rebuild(self) -> None:
        self._heap = [
            (due, entry.version, entry.schedule_id)
            for entry in self._entries.values()
            if (due := entry.act_at(self.lead)) is not None
        ]
        heapq.heapify(self._heap)


def entry_for(timing: Timing, previous: Entry | None = None) -> Entry:
    """A new entry for an enabled schedule whose timing is new or changed: it owes
    the slots after its baseline (and never one ``previous`` already handled).
    Raises ``CronError`` for a cron or zone that no longer validates."""
    spec, zone = parse_cron(timing.cron), parse_timezone(timing.timezone)
    after = baseline(
        spec,
        zone,
        created_at=timing.created_at,
        changed_at=timing.changed_at,
        last_slot_at=timing.last_slot_at,
        next_slot_at=timing.next_slot_at,
    )
    if previous is not None:
        after = max(after, previous.after)
    first = first_after(spec, zone, after)
    following = first_after(spec, zone, first.utc) if first is not None else None
    return Entry(timing, spec, zone, after=after, next=first, following=following)
