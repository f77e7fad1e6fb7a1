"""The scheduler's loop: keep the timetable in step with the metadata DB, sleep until
the earliest thing to do (or a change), do it (``recorder``), repeat.

One task owns the timetable; schedule-change events only note the schedule id and
wake the loop, which reloads those rows from the DB (an event never carries the
configuration, so a late or replayed one cannot install a stale one). Every
``BM_SCHEDULER_RECONCILE_S`` the loop re-reads every schedule, which covers events
lost while NATS was unreachable or this process was down, and sweeps rows a stopped
scheduler left ``queued``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import uuid
from collections.abc import Iterable, Sequence
from datetime import datetime
from typing import Final

from prometheus_client import Counter, Gauge

from services.common.cron import CronError
from services.scheduler.context import SchedulerContext
from services.scheduler.recorder import LEAD, RETRY_S, Recorder
from services.scheduler.store import CursorWrite, Store
from services.scheduler.timetable import Timetable, Timing, entry_for

log = logging.getLogger(__name__)

EPSILON_S: Final = 0.001

SCHEDULES = Gauge("bm_scheduler_schedules", "Enabled schedules in this scheduler's timetable")
ROUNDS = Counter("bm_scheduler_rounds", "Rounds of the scheduler's loop (it sleeps between them)")


class Scheduler:
    def __init__(self, ctx: SchedulerContext) -> None:
        self.ctx = ctx
        self.store = Store(ctx.sessions, ctx.dialect)
        self.table = Timetable(LEAD)
        self.recorder = Recorder(ctx, self.store, self.table, self.schedule_changed)
        self.firing = self.recorder.firing
        self.rounds = 0
        self._changed: set[uuid.UUID] = set()
        self._wake = asyncio.Event()
        self._stopping = False
        self._reconcile_at = 0.0

    # -- control (from other tasks) --------------------------------------------------------

    def schedule_changed(self, schedule_id: uuid.UUID) -> None:
        """Reload this schedule from the metadata DB at once."""
        self._changed.add(schedule_id)
        self._wake.set()

    def wake(self) -> None:
        """Run a round now (e.g. the clock was set forward)."""
        self._wake.set()

    def stop(self) -> None:
        """Stop after the round in progress. Reserved rows stay ``queued``: another
        replica, or this scheduler's next start, fires them (or records them missed)."""
        self._stopping = True
        self._wake.set()

    # -- the loop --------------------------------------------------------------------------

    async def run(self) -> None:
        while not self._stopping:
            self._wake.clear()
            try:
                delay = await self.tick()
            except Exception:
                log.exception("scheduler round failed; trying again in %g s", RETRY_S)
                delay = RETRY_S
            if not self._stopping and delay > 0:
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(delay):
                        await self._wake.wait()

    async def tick(self) -> float:
        """One round; returns how long to sleep (unless woken) before the next."""
        loop = asyncio.get_running_loop()
        if loop.time() >= self._reconcile_at:
            await self.reconcile()
            self._reconcile_at = loop.time() + self.ctx.settings.scheduler_reconcile_s
        if self._changed:
            changed, self._changed = self._changed, set()
            try:
                await self.reload(changed)
            except Exception:
                self._changed |= changed
                raise
        await self.recorder.release_due()
        more = await self.recorder.act_on_due()
        self.rounds += 1
        ROUNDS.inc()
        now = self.ctx.clock()
        delay = 0.0 if more else self._reconcile_at - loop.time()
        if (at := self.recorder.next_time()) is not None:
            delay = min(delay, (at - now).total_seconds() + EPSILON_S)
        return max(0.0, delay)

    # -- keeping the timetable in step -----------------------------------------------------

    async def reconcile(self) -> None:
        timings = await self.store.timings()
        known = {t.schedule_id for t in timings}
        gone = [e.schedule_id for e in self.table if e.schedule_id not in known]
        for sid in gone:
            self.table.remove(sid)
        await self._apply(timings)
        await self.recorder.settle([*gone, *known], refresh=False)
        await self.firing.sweep(self.ctx.clock())

    async def reload(self, ids: Iterable[uuid.UUID]) -> None:
        wanted = set(ids)
        timings = await self.store.timings(wanted)
        for gone in wanted - {t.schedule_id for t in timings}:
            self.table.remove(gone)
        await self._apply(timings)
        await self.recorder.settle(wanted, refresh=True)

    async def _apply(self, timings: Sequence[Timing]) -> None:
        now = self.ctx.clock()
        writes = [w for t in timings if (w := self._apply_one(t, now)) is not None]
        SCHEDULES.set(len(self.table))
        try:
            await self.store.write_cursors(writes, now)
        except Exception as exc:  # only next_slot_at hints: the next write catches up
            log.warning("could not write %d cursor(s): %s", len(writes), exc)

    def _apply_one(self, timing: Timing, now: datetime) -> CursorWrite | None:
        sid = timing.schedule_id
        entry = self.table.get(sid)
        if not timing.enabled:
            self.table.remove(sid)
            if timing.next_slot_at is not None:  # paused: no next run to show
                return CursorWrite(sid, timing.last_slot_at, None)
            return None
        if entry is not None and entry.timing.key == timing.key:
            return None
        try:
            entry = entry_for(timing, entry)
        except CronError as exc:
            log.warning("schedule %s cannot run: %s", sid, exc)
            self.table.remove(sid)
            return None
        self.table.put(entry)
        first = entry.next
        if first is not None and first.utc <= now:
            return None  # owed now: recording it writes the cursor
        next_at = first.utc if first is not None else None
        if next_at != timing.next_slot_at or not timing.has_cursor:
            return CursorWrite(sid, timing.last_slot_at, next_at)
        return None
