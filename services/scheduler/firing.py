"""Recording slots, in two steps.

``reserve`` writes each slot's row: ``queued`` for a slot to fire (inserted idempotently
— an id derived from the slot, and the unique ``(schedule_id, slot_at)`` lets only one
writer record it), ``missed`` for a missed one. ``release`` then, at the slot's time,
publishes what the rows call for: the ``bm.v1.backup.requested`` job (``Nats-Msg-Id =
<schedule_id>:<slot>``, stored once by JetStream within its duplicate window), or a
``missed``/``skipped`` event. The scheduler reserves upcoming slots a few seconds early,
so at the slot's time only the overlap check and the publish remain.

Exactly once
    A writer that finds the row already there (another replica, or this scheduler
    before a crash) and still ``queued`` publishes its job again — deduplicated, and
    executors claim by backup id — which is what heals a crash between the row and the
    job. Every other move of a row (``queued`` to ``skipped``, ``missed`` or
    ``cancelled``) is one guarded ``UPDATE ... WHERE status = 'queued'``, and only the
    writer whose update (or insert) took effect publishes the event: history and
    events show each slot once. A job that cannot be published fails the batch: the
    cursor stays put and the slot is tried again.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import uuid
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Final

from prometheus_client import Counter, Histogram

from proto.backup_events import BackupMissed, BackupSkipped
from proto.base import Event
from services.common.db.enums import BackupStatus, OverlapPolicy
from services.common.streams import publish
from services.scheduler.catchup import Action, Kind, late_reason
from services.scheduler.context import SchedulerContext
from services.scheduler.publisher import publish_all
from services.scheduler.slots import CODES, Item, row_of, slot_key, with_job
from services.scheduler.store import Store

log = logging.getLogger(__name__)

CONCURRENCY: Final = 64
"""Events and guarded updates in flight at once (rare: missed and skipped slots)."""
PUBLISH_TIMEOUT_S: Final = 10.0

SLOTS = Counter("bm_scheduler_slots", "Slots recorded by this scheduler", ["outcome"])
LATENESS = Histogram(
    "bm_scheduler_fire_lateness_seconds",
    "From a slot's time to its job being stored in JetStream",
    buckets=(0.05, 0.1, 0.25, 0.5, 1, 2, 5, 15, 60, 300, 3600),
)


@dataclass
class Outcome:
    stale: set[uuid.UUID] = field(default_factory=set)
    """Schedules found deleted or disabled: reload them."""
    fired: int = 0
    missed: int = 0
    skipped: int = 0


@dataclass
class Reserved:
    items: list[Item]
    outcome: Outcome


class Firing:
    def __init__(self, ctx: SchedulerContext, store: Store) -> None:
        self.ctx = ctx
        self.store = store

    async def record(self, actions: Sequence[Action], now: datetime) -> Outcome:
        """Reserve and release at once (slots already due)."""
        return await self.release(await self.reserve(actions, now), now)

    async def reserve(self, actions: Sequence[Action], now: datetime) -> Reserved:
        """Write the slots' rows; nothing is published yet."""
        outcome = Outcome()
        configs = await self.store.configs({a.schedule_id for a in actions})
        items: list[Item] = []
        for action in actions:
            config = configs.get(action.schedule_id)
            if config is None or not config.enabled:
                outcome.stale.add(action.schedule_id)
            elif action.kind is Kind.MISSED:
                items.append(Item(action, config, BackupStatus.MISSED, action.reason))
            else:
                items.append(with_job(action, config))
        inserted = await self.store.insert_backups([row_of(i, now) for i in items])
        for item in items:
            item.mine = item.backup_id in inserted
        others = [item for item in items if not item.mine]
        if others:
            existing = await self.store.existing([item.key for item in others])
            for item in others:
                item.found = existing.get(item.key)
        return Reserved(items, outcome)

    async def release(self, reserved: Reserved, now: datetime) -> Outcome:
        """Publish what the rows call for; raise (once all were tried) if a job could
        not be published."""
        outcome = reserved.outcome
        checks = [
            i
            for i in reserved.items
            if i.job is not None and i.queued and i.config.overlap_policy is OverlapPolicy.SKIP
        ]
        running = await self.store.running() if checks else {}
        fire: list[Item] = []
        others: list[Callable[[], Awaitable[None]]] = []
        for item in reserved.items:
            if item.action.kind is Kind.MISSED or (item.job and now - item.key[1] > self.ctx.grace):
                others.append(functools.partial(self._missed, item, now, outcome))
            elif item.job is None:
                if item.mine:
                    SLOTS.labels("failed").inc()
                    log.error("schedule %s: %s", item.action.schedule_id, item.reason)
            elif not item.queued:
                continue
            elif (
                (other := running.get(item.config.database_id))
                and other != item.row_id
                and (item.config.overlap_policy is OverlapPolicy.SKIP)
            ):
                others.append(functools.partial(self._skipped, item, other, now, outcome))
            else:
                fire.append(item)
        results = await asyncio.gather(
            self._fire(fire, outcome), _run_all(others, CONCURRENCY), return_exceptions=True
        )
        for result in results:
            if isinstance(result, BaseException):
                raise result
        return outcome

    async def cancel(self, items: Sequence[Item], now: datetime, reason: str) -> None:
        """Reserved slots whose schedule changed before they fired."""
        for item in items:
            if item.queued:
                await self.store.finish_queued(
                    item.row_id, BackupStatus.CANCELLED, CODES[BackupStatus.CANCELLED], reason, now
                )

    async def sweep(self, now: datetime) -> None:
        """Rows left ``queued`` by a scheduler that stopped between writing a slot's
        row and publishing its job, and then the schedule changed so that the slot is
        no longer owed: once beyond the grace, they are recorded as missed."""
        reason = late_reason(now, self.ctx.grace)
        status = BackupStatus.MISSED
        for row in await self.store.orphans(now - self.ctx.grace):
            if await self.store.finish_queued(row.id, status, CODES[status], reason, now):
                SLOTS.labels("missed").inc()
                event = BackupMissed(
                    backup_id=row.id,
                    project_id=row.project_id,
                    database_id=row.database_id,
                    schedule_id=row.schedule_id,
                    slot_at=row.slot_at,
                    reason=reason,
                )
                await self._event(event, f"missed:{slot_key(row.schedule_id, row.slot_at)}")

    # -- one slot ---------------------------------------------------------------------------

    async def _fire(self, items: list[Item], outcome: Outcome) -> None:
        """Publish the jobs (all at once, each acked by JetStream)."""
        jobs = []
        for item in items:
            assert item.job is not None
            job = item.job
            if item.row_id != job.backup_id:  # recorded earlier under another id
                job = job.model_copy(update={"backup_id": item.row_id})
            jobs.append((job, item.msg_id))

        def acked(index: int) -> None:
            LATENESS.observe(max(0.0, (self.ctx.clock() - items[index].key[1]).total_seconds()))
            if items[index].mine:
                outcome.fired += 1
                SLOTS.labels("fired").inc()

        results = await publish_all(self.ctx.nc, jobs, timeout_s=PUBLISH_TIMEOUT_S, acked=acked)
        errors = [error for error in results if error is not None]
        if errors:
            raise errors[0]

    async def _missed(self, item: Item, now: datetime, outcome: Outcome) -> None:
        reason = item.reason if item.action.kind is Kind.MISSED else None
        reason = reason or late_reason(now, self.ctx.grace)
        recorded = item.mine and item.status is BackupStatus.MISSED
        status = BackupStatus.MISSED
        if not recorded and not (
            item.queued
            and await self.store.finish_queued(item.row_id, status, CODES[status], reason, now)
        ):
            return
        outcome.missed += 1
        SLOTS.labels("missed").inc()
        event = BackupMissed(**_ids(item), slot_at=item.key[1], reason=reason)
        await self._event(event, f"missed:{item.msg_id}")

    async def _skipped(self, item: Item, other: uuid.UUID, now: datetime, outcome: Outcome) -> None:
        reason = (
            f"Skipped (overlap policy 'skip'): backup {other} of this database was still "
            "running at the slot's time."
        )
        status = BackupStatus.SKIPPED
        if await self.store.finish_queued(item.row_id, status, CODES[status], reason, now):
            outcome.skipped += 1
            SLOTS.labels("skipped").inc()
            event = BackupSkipped(
                **_ids(item), slot_at=item.key[1], reason=reason, running_backup_id=other
            )
            await self._event(event, f"skipped:{item.msg_id}")

    async def _event(self, event: Event, key: str) -> None:
        try:
            await publish(self.ctx.nc, event, msg_id=key, ack_timeout_s=PUBLISH_TIMEOUT_S)
        except Exception as exc:
            log.warning("could not publish %s for %s: %s", event.SUBJECT, key, exc)


def _ids(item: Item) -> dict[str, Any]:
    return {
        "backup_id": item.row_id,
        "project_id": item.config.project_id,
        "database_id": item.config.database_id,
        "schedule_id": item.action.schedule_id,
    }


async def _run_all(calls: list[Callable[[], Awaitable[None]]], limit: int) -> None:
    """Run ``calls`` with at most ``limit`` at once (a few workers taking turns, not a
    task per call); raise the first error after every call was tried."""
    pending = iter(calls)
    errors: list[Exception] = []

    async def worker() -> None:
        for call in pending:
            try:
                await call()
            except Exception as exc:
                errors.append(exc)

    await asyncio.gather(*(worker() for _ in range(min(limit, len(calls)))))
    if errors:
        raise errors[0]
