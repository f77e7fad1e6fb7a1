"""The executor: takes backup (and later restore) jobs from the durable work queue
and answers connection tests."""

from __future__ import annotations

from typing import ClassVar

from proto.subjects import BACKUP_REQUESTED, EXECUTOR_DURABLE, JOBS_STREAM, RESTORE_REQUESTED
from services.common.credentials import CredentialCipher
from services.common.db.engine import session_factory
from services.common.lifecycle import Runtime, Service
from services.executor.backup import BackupHandler
from services.executor.connection_test import ConnectionTester
from services.executor.context import ExecutorContext, prepare_for_jobs
from services.executor.restore import RestoreHandler
from services.executor.worker import JobWorker


class ExecutorService(Service):
    name: ClassVar[str] = "executor"

    def __init__(self) -> None:
        self._worker: JobWorker | None = None
        self._tester: ConnectionTester | None = None

    async def start(self, runtime: Runtime) -> None:
        ctx = ExecutorContext(
            settings=runtime.settings,
            sessions=session_factory(runtime.engine),
            nc=runtime.nc,
            cipher=CredentialCipher(runtime.secrets.credential_keys),
        )
        self._tester = ConnectionTester(ctx)
        await self._tester.start()
        self._worker = JobWorker(
            runtime.js,
            stream=JOBS_STREAM,
            durable=EXECUTOR_DURABLE,
            handlers={BACKUP_REQUESTED: BackupHandler(ctx), RESTORE_REQUESTED: RestoreHandler(ctx)},
            work=runtime.work,
            concurrency=runtime.settings.executor_concurrency,
            heartbeat_s=runtime.settings.job_ack_wait_s / 4,
        )
        await prepare_for_jobs()  # before the first job can arrive
        await self._worker.start()

    async def stop_taking_work(self) -> None:
        if self._tester is not None:
            await self._tester.stop()
        if self._worker is not None:
            await self._worker.stop_taking_work()
