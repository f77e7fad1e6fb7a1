"""The storage service's periodic work, in two loops:

* maintenance, every ``BM_STORAGE_SWEEP_INTERVAL_S``: retention of every database
  that has backups, reconciliation of every destination (events and metrics for what
  it finds), usage and free space;
* integrity, as often, re-hashing the copies that are due (a long pass never holds
  up retention, which has its own loop).

Each pass runs as tracked work: on SIGTERM it is not cut short at once but stops
between two items (it checks ``stopping``) within the shutdown grace.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
import uuid
from collections.abc import Callable, Coroutine
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import select
from sqlalchemy.exc import SQLAlchemyError

from proto.storage_events import MAX_LISTED, StorageOrphansFound
from services.common.db.enums import AuditOutcome
from services.common.db.models import AuditEntry, Destination
from services.common.destinations.space import FreeSpace
from services.common.streams import publish
from services.common.work import WorkTracker
from services.storage import metrics
from services.storage.context import ACTOR, StorageContext
from services.storage.integrity import IntegrityReport, RateLimiter, integrity_pass
from services.storage.prune import PruneReport, apply_retention, databases_with_backups
from services.storage.reconcile import ReconcileReport, reconcile
from services.storage.usage import (
    LowSpaceWarnings,
    export_usage,
    free_space,
    stored_usage,
)

log = logging.getLogger(__name__)
ORPHANS_REMOVED_ACTION = "storage.orphans_removed"


@dataclass
class MaintenanceReport:
    retention: list[PruneReport] = field(default_factory=list)
    destinations: list[ReconcileReport] = field(default_factory=list)
    free_space: list[FreeSpace] = field(default_factory=list)


Fingerprint = tuple[frozenset[str], frozenset[uuid.UUID]]


class Sweeper:
    def __init__(self, ctx: StorageContext, work: WorkTracker) -> None:
        self.ctx = ctx
        self.work = work
        self.low_space = LowSpaceWarnings()
        self._reported: dict[uuid.UUID, Fingerprint] = {}
        self._loops: list[asyncio.Task[None]] = []

    # -- lifecycle -----------------------------------------------------------------------

    def start(self) -> None:
        settings = self.ctx.settings
        every = settings.storage_sweep_interval_s
        self._loops.append(asyncio.create_task(
            self._every(every, self.maintenance, "maintenance"), name="storage-maintenance-loop"
        ))  # fmt: skip
        if settings.integrity_interval_s > 0:
            self._loops.append(asyncio.create_task(
                self._every(min(every, settings.integrity_interval_s), self.integrity, "integrity"),
                name="storage-integrity-loop",
            ))  # fmt: skip

    async def stop_taking_work(self) -> None:
        for task in self._loops:
            task.cancel()
        for task in self._loops:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._loops.clear()

    async def _every(
        self, interval: float, sweep: Callable[[], Coroutine[Any, Any, object]], name: str
    ) -> None:
        while not self.ctx.stopping.is_set():
            task = self.work.spawn(_guarded(sweep(), name), name=f"storage-{name}")
            if await asyncio.shield(task):
                metrics.LAST_SWEEP.labels(name).set(time.time())
            await asyncio.sleep(interval)

    # -- passes --------------------------------------------------------------------------

    async def maintenance(self) -> MaintenanceReport:
        report = MaintenanceReport()
        for database_id in await databases_with_backups(self.ctx):
            if self.ctx.stopping.is_set():
                return report
            try:
                report.retention.append(await apply_retention(self.ctx, database_id))
            except SQLAlchemyError:
                raise  # the DB itself: the pass ends (see _guarded)
            except Exception:
                log.exception("retention of database %s failed", database_id)
        async with self.ctx.sessions() as session:
            destinations = list(await session.scalars(select(Destination)))
        for destination in destinations:
            if self.ctx.stopping.is_set():
                return report
            found = await reconcile(self.ctx, destination)
            report.destinations.append(found)
            await self._report(destination, found)
            space = await free_space(destination, self.ctx.settings)
            if space is not None:
                report.free_space.append(space)
                await self.low_space.check(self.ctx, space)
        export_usage(await stored_usage(self.ctx))
        return report

    async def integrity(self) -> IntegrityReport:
        limiter = RateLimiter(self.ctx.settings.integrity_rate_bps)
        report = await integrity_pass(self.ctx, limiter)
        if report.checked:
            log.info("integrity: checked %d copies (%d bytes)", report.checked, report.bytes_read)
        return report

    # -- reporting -----------------------------------------------------------------------

    async def _report(self, destination: Destination, found: ReconcileReport) -> None:
        label = str(destination.id)
        if not found.available:
            log.warning("reconciliation of %s skipped: %s", destination.name, found.problem)
            return
        metrics.ORPHANS.labels(label).set(len(found.orphans) - len(found.removed))
        metrics.MISSING.labels(label).set(len(found.missing))
        metrics.UNREADABLE.labels(label).set(len(found.unreadable))
        metrics.ORPHANS_REMOVED.inc(len(found.removed))
        for key, problem in found.unreadable.items():
            log.warning("%s on %s: %s", key, destination.name, problem)
        if found.removed:
            await self._audit_removed(destination, found)
        left = frozenset(o.key for o in found.orphans) - {o.key for o in found.removed}
        fingerprint = (left, frozenset(found.missing))
        anything = found.orphans or found.missing or found.removed
        if not anything or (
            fingerprint == self._reported.get(destination.id) and not found.removed
        ):
            return
        self._reported[destination.id] = fingerprint
        if self.ctx.nc is None:
            return
        event = StorageOrphansFound(
            destination_id=destination.id, orphan_count=len(found.orphans),
            orphan_bytes=sum(o.size for o in found.orphans),
            orphan_keys=tuple(o.key for o in found.orphans[:MAX_LISTED]),
            missing_count=len(found.missing),
            missing_backup_ids=tuple(found.missing[:MAX_LISTED]),
            removed_count=len(found.removed), removed_bytes=sum(o.size for o in found.removed),
        )  # fmt: skip
        with contextlib.suppress(Exception):
            await publish(self.ctx.nc, event)

    async def _audit_removed(self, destination: Destination, found: ReconcileReport) -> None:
        entry = AuditEntry(
            at=self.ctx.clock(), user_id=None, actor=ACTOR, action=ORPHANS_REMOVED_ACTION,
            target_type="destination", target_id=str(destination.id),
            project_id=destination.project_id, outcome=AuditOutcome.SUCCESS,
            details={"count": len(found.removed), "bytes": sum(o.size for o in found.removed),
                     "keys": [o.key for o in found.removed[:MAX_LISTED]]},
        )  # fmt: skip
        async with self.ctx.sessions() as session, session.begin():
            session.add(entry)


async def _guarded(sweep: Coroutine[Any, Any, object], name: str) -> bool:
    """Run one pass; True when it finished. The metadata DB being away (or not yet
    migrated) is a warning and the next pass tries again; anything else is a bug."""
    try:
        await sweep
    except SQLAlchemyError as exc:
        first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        log.warning("%s sweep stopped: metadata DB error (%s); trying again later", name, first)
        return False
    except Exception:
        log.exception("%s sweep failed", name)
        return False
    return True
