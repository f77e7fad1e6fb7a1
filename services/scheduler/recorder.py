"""Acting on slots. Each slot is *reserved* ``LEAD`` before its time — its job
settings read and its row written (``queued``, as of the slot's time) — and
*released* at its time: the overlap check and the publish, nothing else, so thousands
of slots of the same minute go out within a second. Slots already due (catch-up after
downtime, retries) are reserved and released at once. Then each schedule and its
cursor move on."""

from __future__ import annotations

import logging
import time
import uuid
from collections.abc import Callable, Collection
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Final

from services.scheduler.catchup import Action, Plan, first_after, plan
from services.scheduler.context import SchedulerContext
from services.scheduler.firing import Firing, Outcome, Reserved
from services.scheduler.slots import Item
from services.scheduler.store import CursorWrite, Store
from services.scheduler.timetable import Entry, Timetable

log = logging.getLogger(__name__)

LEAD: Final = timedelta(seconds=30)
"""How long before its time a slot is reserved (its row written, ``queued``)."""
BATCH: Final = 500
"""Slots written per transaction."""
SCHEDULES_PER_ROUND: Final = 500
"""Entries taken at once; more wait for the next round (changes go between)."""
RETRY_S: Final = 5.0
CHANGED_REASON: Final = (
    "Cancelled: the schedule was disabled, deleted or given another time just before this slot."
)


@dataclass
class Reservation:
    entry: Entry
    plan: Plan
    items: list[Item]

    @property
    def at(self) -> datetime:
        assert self.entry.next is not None
        return self.entry.next.utc


class Recorder:
    def __init__(
        self,
        ctx: SchedulerContext,
        store: Store,
        table: Timetable,
        on_stale: Callable[[uuid.UUID], None],
    ) -> None:
        self.ctx = ctx
        self.store = store
        self.table = table
        self.firing = Firing(ctx, store)
        self.reserved: dict[uuid.UUID, Reservation] = {}
        self._on_stale = on_stale

    def next_time(self) -> datetime | None:
        """When there is something to do next: a release or an entry to act on."""
        times = [r.at for r in self.reserved.values()]
        if (act_at := self.table.next_due()) is not None:
            times.append(act_at)
        return min(times) if times else None

    async def settle(self, ids: Collection[uuid.UUID], *, refresh: bool) -> None:
        """Reservations of reloaded schedules: a schedule whose slot still stands is
        reserved again when ``refresh`` (its job settings may have changed); one that
        was disabled, deleted or re-timed has its reserved row cancelled."""
        cancelled: list[Item] = []
        for sid in ids:
            reservation = self.reserved.get(sid)
            if reservation is None:
                continue
            entry = self.table.get(sid)
            if entry is reservation.entry and not refresh:
                continue
            del self.reserved[sid]
            if entry is reservation.entry:
                self.table.put(entry)  # reserved again next round, with fresh settings
            elif entry is None or entry.next is None or entry.next.utc != reservation.at:
                cancelled.extend(reservation.items)
        if cancelled:
            await self.firing.cancel(cancelled, self.ctx.clock(), CHANGED_REASON)

    # -- slots -----------------------------------------------------------------------------

    async def release_due(self) -> None:
        """Publish the reserved slots whose time has come."""
        now = self.ctx.clock()
        ready = [r for r in self.reserved.values() if r.at <= now]
        if not ready:
            return
        for reservation in ready:
            del self.reserved[reservation.entry.schedule_id]
        entries = [r.entry for r in ready]
        items = [item for r in ready for item in r.items]
        started = time.perf_counter()
        try:
            outcome = await self.firing.release(Reserved(items, Outcome()), now)
        except Exception as exc:
            _log_failure(len(items), exc)
            await self._finish(entries, {}, {e.schedule_id for e in entries}, set(), now)
            return
        log.info(
            "released %d reserved slot(s) in %.3f s: %d fired, %d skipped, %d missed",
            len(items),
            time.perf_counter() - started,
            outcome.fired,
            outcome.skipped,
            outcome.missed,
        )
        plans = {r.entry.schedule_id: r.plan for r in ready}
        await self._finish(entries, plans, set(), outcome.stale, now)

    async def act_on_due(self) -> bool:
        """Reserve the slots coming within ``LEAD``; reserve and release at once those
        already due. Returns whether more entries are waiting."""
        now = self.ctx.clock()
        entries = self.table.pop_due(now, SCHEDULES_PER_ROUND)
        due = [e for e in entries if e.next is not None and e.next.utc <= now]
        ahead = [e for e in entries if e.next is not None and e.next.utc > now]
        if due:
            await self._record(due, now)
        if ahead:
            await self._reserve(ahead, now)
        return len(entries) == SCHEDULES_PER_ROUND

    async def _record(self, due: list[Entry], now: datetime) -> None:
        plans = {e.schedule_id: self._plan(e, now) for e in due}
        actions = [a for p in plans.values() for a in p.actions]
        failed: set[uuid.UUID] = set()
        stale: set[uuid.UUID] = set()
        for batch in _batches(actions):
            try:
                outcome = await self.firing.record(batch, now)
            except Exception as exc:
                failed.update(a.schedule_id for a in batch)
                _log_failure(len(batch), exc)
                continue
            stale |= outcome.stale
            _log_outcome(outcome)
        await self._finish(due, plans, failed, stale, now)

    async def _reserve(self, ahead: list[Entry], now: datetime) -> None:
        started = time.perf_counter()
        plans = {e.schedule_id: self._plan(e, e.next.utc) for e in ahead if e.next is not None}
        by_id = {e.schedule_id: e for e in ahead}
        stale: set[uuid.UUID] = set()
        for batch in _batches([a for p in plans.values() for a in p.actions]):
            try:
                reserved = await self.firing.reserve(batch, now)
            except Exception as exc:
                # Not reserved: these fire unreserved at their time (or retry).
                _log_failure(len(batch), exc)
                for sid in {a.schedule_id for a in batch}:
                    entry = by_id.pop(sid)
                    entry.retry_at = now + timedelta(seconds=RETRY_S)
                    self.table.put(entry)
                continue
            stale |= reserved.outcome.stale
            items: dict[uuid.UUID, list[Item]] = {}
            for item in reserved.items:
                items.setdefault(item.action.schedule_id, []).append(item)
            for sid, found in items.items():
                self.reserved[sid] = Reservation(by_id.pop(sid), plans[sid], found)
        for sid, entry in by_id.items():  # found disabled or deleted when reserving
            if sid in stale:
                self.table.remove(sid)
                self._on_stale(sid)
            else:
                self.table.put(entry)
        log.debug("reserved %d slot(s) in %.3f s", len(ahead), time.perf_counter() - started)

    def _plan(self, entry: Entry, now: datetime) -> Plan:
        upcoming = (entry.next, entry.following) if entry.next is not None else None
        return plan(
            entry.schedule_id,
            entry.spec,
            entry.zone,
            after=entry.after,
            now=now,
            grace=self.ctx.grace,
            max_missed=self.ctx.settings.scheduler_max_missed,
            upcoming=upcoming,
        )

    async def _finish(
        self,
        entries: list[Entry],
        plans: dict[uuid.UUID, Plan],
        failed: set[uuid.UUID],
        stale: set[uuid.UUID],
        now: datetime,
    ) -> None:
        """Move handled entries on (and their cursors); retry failed ones soon."""
        writes = []
        for entry in entries:
            sid = entry.schedule_id
            if sid in stale:
                self.table.remove(sid)
                self._on_stale(sid)  # disabled or deleted meanwhile: reload it
                continue
            if sid in failed:
                entry.retry_at = now + timedelta(seconds=RETRY_S)
                self.table.put(entry)
                continue
            p = plans[sid]
            entry.after = p.handled_until or entry.after
            entry.next, entry.retry_at = p.next, None
            entry.following = first_after(entry.spec, entry.zone, p.next.utc) if p.next else None
            self.table.put(entry)
            writes.append(CursorWrite(sid, p.handled_until, p.next.utc if p.next else None))
        try:
            await self.store.write_cursors(writes, self.ctx.clock())
        except Exception as exc:
            log.warning("could not write %d cursor(s): %s", len(writes), exc)


def _batches(actions: list[Action]) -> list[list[Action]]:
    return [actions[i : i + BATCH] for i in range(0, len(actions), BATCH)]


def _log_failure(count: int, exc: Exception) -> None:
    log.warning(
        "could not record %d slot(s), retrying in %g s: %s",
        count,
        RETRY_S,
        str(exc) or type(exc).__name__,
    )


def _log_outcome(outcome: Outcome) -> None:
    if outcome.missed or outcome.skipped:
        log.info(
            "fired %d slot(s); recorded %d missed and %d skipped",
            outcome.fired,
            outcome.missed,
            outcome.skipped,
        )
    elif outcome.fired:
        log.debug("fired %d slot(s)", outcome.fired)
