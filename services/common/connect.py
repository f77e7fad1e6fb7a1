"""Connecting to NATS and the metadata DB: retry with backoff while a dependency is
down, say so in the log, and give up only when the service is asked to stop."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
from collections.abc import Awaitable, Callable
from typing import TypeVar

import nats
from nats.aio.client import Client as NATS
from sqlalchemy.ext.asyncio import AsyncEngine

from services.common.db.engine import ping
from services.common.errors import DependencyUnavailable

log = logging.getLogger(__name__)
T = TypeVar("T")


def backoff_delays(first: float = 0.2, maximum: float = 10.0) -> Callable[[], float]:
    """Exponential backoff with jitter, capped at ``maximum`` seconds."""
    delay = first

    def next_delay() -> float:
        nonlocal delay
        current = min(delay, maximum)
        delay = min(delay * 2, maximum)
        return current * random.uniform(0.8, 1.2)  # noqa: S311 - jitter, not crypto

    return next_delay


async def unless_stopping(what: str, awaitable: Awaitable[T], stopping: asyncio.Event) -> T:
    """Await ``awaitable``, but give up (cancelling it) as soon as ``stopping`` is set."""
    work = asyncio.ensure_future(awaitable)
    stop = asyncio.ensure_future(stopping.wait())
    try:
        await asyncio.wait({work, stop}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        stop.cancel()
    if work.done():
        return work.result()
    work.cancel()
    with contextlib.suppress(BaseException):
        await work
    raise DependencyUnavailable(f"{what} unavailable and the service is stopping")


async def retry_until_ready(
    what: str,
    attempt: Callable[[], Awaitable[T]],
    stopping: asyncio.Event,
    *,
    max_delay: float = 10.0,
) -> T:
    """Call ``attempt`` until it succeeds; raise DependencyUnavailable if stopping."""
    next_delay = backoff_delays(maximum=max_delay)
    failures = 0
    while True:
        try:
            return await unless_stopping(what, attempt(), stopping)
        except (asyncio.CancelledError, DependencyUnavailable):
            raise
        except Exception as exc:
            failures += 1
            delay = next_delay()
            if _worth_a_warning(failures):
                log.warning("%s unavailable (%s); retrying in %.1fs", what, _describe(exc), delay)
        try:
            await asyncio.wait_for(stopping.wait(), timeout=delay)
        except TimeoutError:
            continue
        raise DependencyUnavailable(f"{what} unavailable and the service is stopping")


def _worth_a_warning(failures: int) -> bool:
    """The first failure, then every tenth: the log says so without flooding."""
    return failures == 1 or failures % 10 == 0


def _describe(exc: BaseException) -> str:
    text = str(exc).strip() or type(exc).__name__
    return text.splitlines()[0][:200]


async def connect_nats(
    url: str, stopping: asyncio.Event, *, name: str, max_delay: float = 10.0
) -> NATS:
    """Connect, waiting for as long as NATS is down; nats-py retries the first
    connection and every reconnection itself (forever), we log and watch ``stopping``."""
    connected = False
    failures = 0

    async def on_disconnected() -> None:
        if connected:
            log.warning("NATS disconnected; reconnecting")

    async def on_reconnected() -> None:
        log.warning("NATS reconnected")

    async def on_error(exc: Exception) -> None:
        nonlocal failures
        if connected:
            log.info("NATS: %s", _describe(exc))
            return
        failures += 1
        if _worth_a_warning(failures):
            log.warning("NATS at %s unavailable (%s); retrying", url, _describe(exc))

    nc = await unless_stopping(
        f"NATS at {url}",
        nats.connect(
            url,
            name=name,
            connect_timeout=2,
            allow_reconnect=True,
            max_reconnect_attempts=-1,
            reconnect_time_wait=min(max_delay, 2.0),
            disconnected_cb=on_disconnected,
            reconnected_cb=on_reconnected,
            error_cb=on_error,
        ),
        stopping,
    )
    connected = True
    log.info("connected to NATS at %s", url)
    return nc


async def wait_for_database(
    engine: AsyncEngine, stopping: asyncio.Event, *, max_delay: float = 10.0
) -> None:
    where = engine.url.render_as_string(hide_password=True)
    await retry_until_ready(
        f"metadata DB {where}", lambda: ping(engine), stopping, max_delay=max_delay
    )
    log.info("metadata DB reachable: %s", where)
