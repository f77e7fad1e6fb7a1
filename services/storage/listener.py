"""Retention right after each backup: ``bm.v1.backup.completed`` events are pulled
from the events stream through the storage service's own durable consumer (shared by
every storage replica, so each event is handled once) and retention is applied to
that database. An event is acked once retention ran; a failure is redelivered later
(bounded), and the periodic sweep catches anything that still slips through."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable
from typing import Final

from nats.aio.msg import Msg
from nats.js import JetStreamContext
from nats.js.api import AckPolicy, ConsumerConfig, DeliverPolicy
from nats.js.errors import APIError

from proto import subjects
from proto.backup_events import BackupCompleted
from proto.codec import ProtoError, decode
from services.common.streams import StreamSetupError
from services.common.work import WorkTracker

log = logging.getLogger(__name__)

STORAGE_DURABLE: Final = "bm-storage"
"""Durable pull consumer on ``BM_EVENTS`` (``bm.v1.backup.completed`` only)."""
MAX_DELIVER: Final = 5
RETRY_DELAY_S: Final = 30.0
FETCH_TIMEOUT_S: Final = 1.0
BATCH: Final = 10

OnCompleted = Callable[[BackupCompleted], Awaitable[object]]


def storage_consumer_config(ack_wait: float) -> ConsumerConfig:
    return ConsumerConfig(
        durable_name=STORAGE_DURABLE,
        description="Storage service: retention after each completed backup",
        # A new consumer starts with what happens from now on; the sweep covers the past.
        deliver_policy=DeliverPolicy.NEW,
        ack_policy=AckPolicy.EXPLICIT,
        ack_wait=ack_wait,
        max_deliver=MAX_DELIVER,
        filter_subject=subjects.BACKUP_COMPLETED,
    )


class CompletedListener:
    def __init__(
        self, js: JetStreamContext, work: WorkTracker, on_completed: OnCompleted, *,
        ack_wait: float = 60.0,
    ) -> None:  # fmt: skip
        self._js = js
        self._work = work
        self._on_completed = on_completed
        self._ack_wait = ack_wait
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        try:
            await self._js.add_consumer(
                subjects.EVENTS_STREAM, storage_consumer_config(self._ack_wait)
            )
        except APIError as exc:
            raise StreamSetupError(
                f"Cannot create or update consumer {STORAGE_DURABLE} on {subjects.EVENTS_STREAM}: "
                f"{exc.description} — delete the consumer to let the storage service recreate it"
            ) from exc
        sub = await self._js.pull_subscribe_bind(
            durable=STORAGE_DURABLE, stream=subjects.EVENTS_STREAM
        )
        self._task = asyncio.create_task(self._loop(sub), name="storage-completed-loop")

    async def stop_taking_work(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None

    async def _loop(self, sub: JetStreamContext.PullSubscription) -> None:
        try:
            while True:
                try:
                    msgs = await sub.fetch(BATCH, timeout=FETCH_TIMEOUT_S)
                except TimeoutError:
                    continue
                except Exception as exc:
                    log.warning("cannot fetch events: %s", exc)
                    await asyncio.sleep(FETCH_TIMEOUT_S)
                    continue
                for msg in msgs:
                    # Owned by the tracker: on shutdown a running pass gets the grace.
                    task = self._work.spawn(self._handle(msg), name="retention-after-backup")
                    await asyncio.shield(task)
        finally:
            with contextlib.suppress(Exception):
                await sub.unsubscribe()

    async def _handle(self, msg: Msg) -> None:
        try:
            event = decode(BackupCompleted, msg.data)
        except ProtoError as exc:
            log.error("dropping an unreadable %s: %s", msg.subject, exc)
            await msg.term()
            return
        try:
            await self._on_completed(event)
        except asyncio.CancelledError:
            with contextlib.suppress(Exception):
                await asyncio.shield(msg.nak())
            raise
        except Exception:
            log.exception("retention after backup %s failed; it will be retried", event.backup_id)
            with contextlib.suppress(Exception):
                await msg.nak(delay=RETRY_DELAY_S)
            return
        with contextlib.suppress(Exception):
            await msg.ack_sync(timeout=5)
