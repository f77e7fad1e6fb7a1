"""The executor: takes jobs from the durable work queue and runs them (engine
adapters arrive with issue #4; until a handler exists for a subject, its jobs stay
queued instead of being consumed)."""

from __future__ import annotations

from typing import ClassVar

from proto.subjects import EXECUTOR_DURABLE, JOBS_STREAM
from services.common.lifecycle import Runtime, Service
from services.executor.worker import Handler, JobWorker


class ExecutorService(Service):
    name: ClassVar[str] = "executor"

    def __init__(self, handlers: dict[str, Handler] | None = None) -> None:
        self._handlers = handlers or {}
        self._worker: JobWorker | None = None

    async def start(self, runtime: Runtime) -> None:
        if not self._handlers:
            return
        self._worker = JobWorker(
            runtime.js,
            stream=JOBS_STREAM,
            durable=EXECUTOR_DURABLE,
            handlers=self._handlers,
            work=runtime.work,
            concurrency=runtime.settings.executor_concurrency,
        )
        await self._worker.start()

    async def stop_taking_work(self) -> None:
        if self._worker is not None:
            await self._worker.stop_taking_work()
