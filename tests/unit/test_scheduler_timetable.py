"""The scheduler's timetable: a min-heap of due times whose replaced and removed
entries are skipped, with retries pushed back and due entries taken in order."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta

import pytest

from services.common.cron import CronError, next_slot, parse_cron, parse_timezone
from services.scheduler.timetable import Entry, Timetable, Timing, entry_for

T0 = datetime(2024, 3, 1, 12, 0, tzinfo=UTC)


def entry(minute: int, *, schedule_id: uuid.UUID | None = None, cron: str = "") -> Entry:
    """An entry whose next slot is T0 + ``minute`` minutes (an hourly cron)."""
    expr = cron or f"{minute % 60} * * * *"
    timing = Timing(schedule_id or uuid.uuid4(), expr, "UTC", True, T0, T0)
    spec, zone = parse_cron(expr), parse_timezone("UTC")
    after = T0 + timedelta(minutes=minute) - timedelta(seconds=30)
    return Entry(timing, spec, zone, after=after, next=next_slot(spec, zone, after))


def at(minute: float) -> datetime:
    return T0 + timedelta(minutes=minute)


def test_entries_come_due_earliest_first() -> None:
    table = Timetable()
    late, early, middle = entry(30), entry(10), entry(20)
    for item in (late, early, middle):
        table.put(item)
    assert table.next_due() == at(10)
    assert table.pop_due(at(5)) == []
    assert table.pop_due(at(25)) == [early, middle]
    assert table.next_due() == at(30)
    assert len(table) == 3  # taken entries stay until put back or removed


def test_a_replaced_entry_is_due_at_its_new_time_only() -> None:
    table = Timetable()
    first = entry(10)
    table.put(first)
    moved = entry(40, schedule_id=first.schedule_id)
    table.put(moved)
    assert table.next_due() == at(40)
    assert table.pop_due(at(20)) == []
    assert table.pop_due(at(45)) == [moved]
    assert table.get(first.schedule_id) is moved


def test_a_removed_entry_never_comes_due() -> None:
    table = Timetable()
    gone, kept = entry(10), entry(20)
    table.put(gone)
    table.put(kept)
    table.remove(gone.schedule_id)
    assert gone.schedule_id not in table
    assert table.next_due() == at(20)
    assert table.pop_due(at(60)) == [kept]
    assert table.remove(uuid.uuid4()) is None


def test_a_retry_waits_until_its_time() -> None:
    table = Timetable()
    item = entry(10)
    item.retry_at = at(12)
    table.put(item)
    assert item.act_at(timedelta(0)) == at(12)
    assert table.pop_due(at(11)) == []
    assert table.pop_due(at(12)) == [item]


def test_taking_due_entries_in_rounds() -> None:
    table = Timetable()
    items = [entry(m) for m in range(1, 8)]
    for item in items:
        table.put(item)
    assert table.pop_due(at(59), limit=3) == items[:3]
    assert table.pop_due(at(59), limit=3) == items[3:6]
    assert table.pop_due(at(59)) == items[6:]
    for item in items:
        table.put(item)  # put back unchanged: due again
    assert len(table.pop_due(at(59))) == 7


def test_an_entry_without_a_next_slot_is_never_due() -> None:
    table = Timetable()
    item = entry(10)
    item.next = None
    table.put(item)
    assert item.act_at(timedelta(0)) is None
    assert table.next_due() is None
    assert list(table) == [item]


def test_stale_heap_items_do_not_pile_up() -> None:
    table = Timetable()
    item = entry(10)
    for _ in range(1000):
        table.put(item)
    assert len(table._heap) <= 2 * len(table) + 64
    assert table.pop_due(at(10)) == [item]


def test_a_new_entry_owes_slots_from_its_baseline() -> None:
    timing = Timing(uuid.uuid4(), "0 * * * *", "UTC", True, T0, T0 + timedelta(minutes=5))
    fresh = entry_for(timing)
    assert (fresh.after, fresh.next, fresh.following) == (
        T0 + timedelta(minutes=5),
        next_slot("0 * * * *", "UTC", T0),
        next_slot("0 * * * *", "UTC", T0 + timedelta(hours=1)),
    )
    assert fresh.next is not None
    assert fresh.next.utc == at(60)


def test_a_re_timed_entry_never_owes_what_its_predecessor_handled() -> None:
    timing = Timing(uuid.uuid4(), "0 * * * *", "UTC", True, T0, T0)
    previous = entry_for(timing)
    previous.after = at(180)
    retimed = entry_for(Timing(timing.schedule_id, "30 * * * *", "UTC", True, T0, T0), previous)
    assert retimed.after == at(180)
    assert retimed.next is not None
    assert retimed.next.utc == at(210)


def test_a_cron_that_no_longer_validates_raises() -> None:
    with pytest.raises(CronError):
        entry_for(Timing(uuid.uuid4(), "0 0 30 2 *", "UTC", True, T0, T0))
