"""Dashboard and storage numbers, computed at most once per ``BM_API_STATS_CACHE_S``
seconds for the same question (scope and parameters): they aggregate every backup in
scope, and a dashboard open in many browsers (or polled by scripts) would otherwise
repeat that work on every request. Requests that arrive while the numbers are being
computed wait for that computation instead of starting their own, and once numbers
exist, numbers that expired less than one time-to-live ago are served while the next
ones are computed (so a dashboard in steady use never waits for the aggregate; after
a quiet spell, the first request waits for fresh numbers). Every answer says when it was computed
(``generated_at``); any change made through this process forgets them at once."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Hashable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, TypeVar

T = TypeVar("T")


@dataclass
class _Entry:
    until: datetime
    task: asyncio.Future[Any]
    """The computation under way, or done."""
    last: Any = None
    """The previous numbers, served while newer ones are computed (only if they
    expired less than one time-to-live ago)."""
    has_last: bool = False


class StatsCache:
    MAX_ENTRIES = 1_000

    def __init__(self, ttl_s: float) -> None:
        self.ttl = timedelta(seconds=ttl_s)
        self._entries: dict[Hashable, _Entry] = {}

    async def get(self, key: Hashable, now: datetime, compute: Callable[[], Awaitable[T]]) -> T:
        if self.ttl <= timedelta(0):
            return await compute()
        entry = self._entries.get(key)
        if entry is None:
            if len(self._entries) >= self.MAX_ENTRIES:
                self._entries.clear()
            entry = self._entries[key] = _Entry(now + self.ttl, _start(compute))
        elif entry.until <= now and entry.task.done():
            fresh = not entry.task.cancelled() and entry.task.exception() is None
            entry.has_last = fresh and now < entry.until + self.ttl
            entry.last = entry.task.result() if entry.has_last else None
            entry.until, entry.task = now + self.ttl, _start(compute)
        if entry.has_last and not entry.task.done():
            result: T = entry.last  # newer numbers are on their way
            return result
        try:
            result = await asyncio.shield(entry.task)
        except Exception:
            if self._entries.get(key) is entry:
                del self._entries[key]  # a failure is never remembered
            raise
        return result

    def clear(self) -> None:
        self._entries.clear()


def _start(compute: Callable[[], Awaitable[Any]]) -> asyncio.Future[Any]:
    task = asyncio.ensure_future(compute())
    # A refresh nobody waits for may fail: its error is raised to the next caller,
    # and must not also be logged as "never retrieved".
    task.add_done_callback(lambda done: done.cancelled() or done.exception())
    return task
