"""In-flight work with an owner: spawned tasks are tracked, and on shutdown they get a
grace period to finish before the rest are cancelled."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Coroutine
from typing import Any

log = logging.getLogger(__name__)


class WorkTracker:
    def __init__(self) -> None:
        self._tasks: set[asyncio.Task[Any]] = set()

    def __len__(self) -> int:
        return len(self._tasks)

    def spawn(self, coro: Coroutine[Any, Any, Any], *, name: str) -> asyncio.Task[Any]:
        task = asyncio.create_task(coro, name=name)
        self._tasks.add(task)
        task.add_done_callback(self._finished)
        return task

    def _finished(self, task: asyncio.Task[Any]) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.error("task %s failed", task.get_name(), exc_info=task.exception())

    async def drain(self, grace: float) -> int:
        """Wait up to ``grace`` seconds for running work; cancel what is left.

        Returns how many tasks had to be cancelled.
        """
        if not self._tasks:
            return 0
        log.info("waiting up to %.0fs for %d running task(s)", grace, len(self._tasks))
        _, pending = await asyncio.wait(set(self._tasks), timeout=grace)
        for task in pending:
            log.warning("grace period over: cancelling %s", task.get_name())
            task.cancel()
        if pending:
            await asyncio.wait(pending)
        return len(pending)
