"""Login rate limiting: failed attempts counted per client address and per account
in a sliding window, in memory.

The counters live in each API process's memory. The workers of one API service
(``BM_API_WORKERS``) share the budget: each allows its share of the attempts, so the
service as a whole allows at most the configured number (a person whose attempts
all reach one worker is stopped after that worker's share). Separate replicas each
allow the whole budget, and a restart forgets the counts. That bounds online
guessing well enough for a self-hosted service; a shared store (NATS KV, the
metadata DB) would be the next step if it ever is not.

:class:`FailureLimiter` and :class:`LoginThrottle` are pure (time comes from an
injected clock); :func:`login_throttle` gives the one throttle of an application.
"""

from __future__ import annotations

import math
import time
import weakref
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass

from aiohttp import web

from services.api.context import API

Clock = Callable[[], float]
"""Seconds on any monotonic scale (tests pass their own)."""

DEFAULT_MAX_KEYS = 100_000


class FailureLimiter:
    """Counts failures per key. A key that failed ``max_failures`` times within the
    last ``window_s`` seconds is blocked until the oldest of those failures leaves
    the window. Memory is bounded: at most ``max_failures`` timestamps per key and
    ``max_keys`` keys (stale keys go first, then the oldest)."""

    def __init__(
        self,
        max_failures: int,
        window_s: float,
        *,
        clock: Clock = time.monotonic,
        max_keys: int = DEFAULT_MAX_KEYS,
    ) -> None:
        if max_failures < 1 or window_s <= 0 or max_keys < 1:
            raise ValueError("max_failures and max_keys must be >= 1 and window_s > 0")
        self.max_failures = max_failures
        self.window_s = window_s
        self.max_keys = max_keys
        self._clock = clock
        self._failures: dict[str, deque[float]] = {}

    def retry_after(self, key: str) -> float | None:
        """Seconds until ``key`` may try again, or None when it may try now."""
        now = self._clock()
        failures = self._recent(key, now)
        if failures is None or len(failures) < self.max_failures:
            return None
        return failures[0] + self.window_s - now

    def record_failure(self, key: str) -> None:
        now = self._clock()
        failures = self._recent(key, now)
        if failures is None:
            if len(self._failures) >= self.max_keys:
                self._make_room(now)
            failures = self._failures[key] = deque(maxlen=self.max_failures)
        failures.append(now)

    def reset(self, key: str) -> None:
        self._failures.pop(key, None)

    def __len__(self) -> int:
        return len(self._failures)

    def _recent(self, key: str, now: float) -> deque[float] | None:
        """The key's failures still inside the window (None when there are none)."""
        failures = self._failures.get(key)
        if failures is None:
            return None
        while failures and failures[0] <= now - self.window_s:
            failures.popleft()
        if not failures:
            del self._failures[key]
            return None
        return failures

    def _make_room(self, now: float) -> None:
        stale = [k for k, f in self._failures.items() if f[-1] <= now - self.window_s]
        for key in stale:
            del self._failures[key]
        while len(self._failures) >= self.max_keys:
            del self._failures[next(iter(self._failures))]  # the oldest key


@dataclass
class LoginThrottle:
    """Both limits of the login form: per client address and per account."""

    by_client: FailureLimiter
    by_account: FailureLimiter

    @classmethod
    def create(cls, max_attempts: int, window_s: float, clock: Clock) -> LoginThrottle:
        return cls(
            FailureLimiter(max_attempts, window_s, clock=clock),
            FailureLimiter(max_attempts, window_s, clock=clock),
        )

    def retry_after_s(self, client: str, account: str) -> int | None:
        """Whole seconds to wait when either limit is reached, else None."""
        waits = [
            wait
            for wait in (self.by_client.retry_after(client), self.by_account.retry_after(account))
            if wait is not None
        ]
        return max(1, math.ceil(max(waits))) if waits else None

    def failed(self, client: str, account: str) -> None:
        self.by_client.record_failure(client)
        self.by_account.record_failure(account)

    def succeeded(self, account: str) -> None:
        """A correct password clears the account's count; the client's count stays
        (one valid account must not reset the guessing budget of an address)."""
        self.by_account.reset(account)


def share_of_attempts(max_attempts: int, workers: int) -> int:
    """One worker's part of the budget: the workers together allow at most
    ``max_attempts`` (never fewer than one each)."""
    return max(1, max_attempts // workers)


_THROTTLES: weakref.WeakKeyDictionary[web.Application, LoginThrottle] = weakref.WeakKeyDictionary()


def login_throttle(app: web.Application) -> LoginThrottle:
    """The login throttle of ``app``, made on first use from its settings; its
    clock is the API context's (so tests that move ``ctx.clock`` move it too)."""
    throttle = _THROTTLES.get(app)
    if throttle is None:
        ctx = app[API]
        throttle = LoginThrottle.create(
            share_of_attempts(ctx.settings.login_max_attempts, ctx.settings.api_worker_count()),
            ctx.settings.login_window_s,
            clock=lambda: ctx.clock().timestamp(),  # not the app: it is the weak key
        )
        _THROTTLES[app] = throttle
    return throttle
