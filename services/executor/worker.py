"""Pulls jobs from the JetStream work queue through the executors' shared durable
consumer and runs them with a concurrency limit.

A job is acked only after its handler returned (its artifact and row are final).
While it runs, in-progress acks keep JetStream from redelivering it. A handler
that crashes unexpectedly, or a job cancelled at shutdown, is nak'ed so another
executor (or this one, later) takes it again; ``max_deliver`` bounds the retries.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable

from nats.aio.msg import Msg
from nats.js import JetStreamContext

from services.common.logs import job_id
from services.common.work import WorkTracker

log = logging.getLogger(__name__)

Handler = Callable[[Msg], Awaitable[None]]
FETCH_TIMEOUT_S = 1.0
ACK_TIMEOUT_S = 5.0


class JobWorker:
    def __init__(
        self,
        js: JetStreamContext,
        *,
        stream: str,
        durable: str,
        handlers: dict[str, Handler],
        work: WorkTracker,
        concurrency: int,
        heartbeat_s: float = 15.0,
    ) -> None:
        self._js = js
        self._stream = stream
        self._durable = durable
        self._handlers = handlers
        self._work = work
        self._slots = asyncio.Semaphore(concurrency)
        self._heartbeat_s = heartbeat_s
        self._loop_task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        sub = await self._js.pull_subscribe_bind(durable=self._durable, stream=self._stream)
        self._loop_task = asyncio.create_task(self._pull_loop(sub), name="job-pull-loop")

    async def stop_taking_work(self) -> None:
        """Stop fetching; jobs already running are left to the WorkTracker's grace."""
        if self._loop_task is not None:
            self._loop_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._loop_task
            self._loop_task = None

    async def _pull_loop(self, sub: JetStreamContext.PullSubscription) -> None:
        try:
            while True:
                await self._slots.acquire()
                try:
                    msgs = await sub.fetch(1, timeout=FETCH_TIMEOUT_S)
                except TimeoutError:
                    self._slots.release()
                    continue
                except Exception as exc:
                    self._slots.release()
                    log.warning("cannot fetch jobs: %s", exc)
                    await asyncio.sleep(FETCH_TIMEOUT_S)
                    continue
                for msg in msgs:
                    self._work.spawn(self._run(msg), name=f"job:{msg.subject}")
        finally:
            with contextlib.suppress(Exception):
                await sub.unsubscribe()

    async def _run(self, msg: Msg) -> None:
        token = job_id.set(_job_label(msg))
        heartbeat = asyncio.create_task(self._heartbeat(msg), name="job-heartbeat")
        try:
            handler = self._handlers.get(msg.subject)
            if handler is None:
                log.error("no handler for %s: terminating the message", msg.subject)
                await msg.term()
                return
            await handler(msg)
            await _confirmed_ack(msg)
        except asyncio.CancelledError:
            log.warning("job cancelled before it finished; it will be redelivered")
            with contextlib.suppress(Exception):
                await asyncio.shield(msg.nak())
            raise
        except Exception:
            log.exception("job crashed; it will be redelivered")
            with contextlib.suppress(Exception):
                await msg.nak(delay=5)
        finally:
            heartbeat.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await heartbeat
            job_id.reset(token)
            self._slots.release()

    async def _heartbeat(self, msg: Msg) -> None:
        while True:
            await asyncio.sleep(self._heartbeat_s)
            with contextlib.suppress(Exception):
                await msg.in_progress()


async def _confirmed_ack(msg: Msg) -> None:
    """Ack and wait for the server's confirmation, so "done" means removed from the
    queue; if the confirmation is lost the job comes back, and handlers are
    idempotent by backup or restore id."""
    try:
        await msg.ack_sync(timeout=ACK_TIMEOUT_S)
    except Exception as exc:
        log.warning("ack not confirmed (%s); the job may be delivered again", exc)


def _job_label(msg: Msg) -> str:
    if msg.headers and "Nats-Msg-Id" in msg.headers:
        return msg.headers["Nats-Msg-Id"]
    try:
        return str(msg.metadata.sequence.stream)
    except Exception:
        return "?"
