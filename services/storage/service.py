"""The storage service: retention (right after each completed backup and on a periodic
sweep), usage accounting, reconciliation and integrity sweeps. It is the only writer
that deletes artifacts and backup rows (besides a person deleting one through the
API)."""

from __future__ import annotations

from typing import ClassVar

from proto.backup_events import BackupCompleted
from services.common.db.engine import session_factory
from services.common.lifecycle import Runtime, Service
from services.storage.context import StorageContext
from services.storage.listener import CompletedListener
from services.storage.prune import PruneReport, apply_retention
from services.storage.sweeps import Sweeper


class StorageService(Service):
    name: ClassVar[str] = "storage"

    def __init__(self) -> None:
        self._listener: CompletedListener | None = None
        self._sweeper: Sweeper | None = None

    async def start(self, runtime: Runtime) -> None:
        ctx = StorageContext(
            settings=runtime.settings,
            sessions=session_factory(runtime.engine),
            nc=runtime.nc,
            stopping=runtime.stopping,
        )

        async def after_backup(event: BackupCompleted) -> PruneReport:
            return await apply_retention(ctx, event.database_id)

        self._listener = CompletedListener(
            runtime.js, runtime.work, after_backup, ack_wait=runtime.settings.job_ack_wait_s
        )
        await self._listener.start()
        self._sweeper = Sweeper(ctx, runtime.work)
        self._sweeper.start()

    async def stop_taking_work(self) -> None:
        if self._listener is not None:
            await self._listener.stop_taking_work()
        if self._sweeper is not None:
            await self._sweeper.stop_taking_work()
