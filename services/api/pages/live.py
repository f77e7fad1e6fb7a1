"""Live progress of a backup or restore as Server-Sent Events, fed by NATS.

Each stream subscribes (core NATS) to the run's lifecycle and progress subjects,
sends the run's state from the metadata DB first, then every progress event of that
run, and ``done`` once the row is final. The row is read again every few seconds
too, so a missed event (NATS down, the executor gone) only delays the page. Without
JavaScript the detail pages show the same state after a reload.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from aiohttp import web
from nats.aio.msg import Msg

from proto.backup_events import BackupCompleted, BackupFailed, BackupProgressed, BackupStarted
from proto.base import Event
from proto.codec import ProtoError, decode
from proto.restore_events import (
    RestoreCompleted,
    RestoreFailed,
    RestoreProgressed,
    RestoreStarted,
)
from services.api.domain.backups import get_backup
from services.api.domain.restores import get_restore
from services.api.pages.common import context, path_uuid, principal
from services.api.pages.render import human_bytes, human_duration, human_rate
from services.common.db.enums import FINAL_BACKUP_STATUSES, RestoreStatus
from services.common.db.models import Backup, Restore

log = logging.getLogger(__name__)
routes = web.RouteTableDef()

POLL_S = 5.0
MAX_STREAM_S = 3600.0
QUEUE_SIZE = 64
BACKUP_EVENTS: tuple[type[Event], ...] = (
    BackupStarted,
    BackupProgressed,
    BackupCompleted,
    BackupFailed,
)
RESTORE_EVENTS: tuple[type[Event], ...] = (
    RestoreStarted,
    RestoreProgressed,
    RestoreCompleted,
    RestoreFailed,
)
FINAL_RESTORE = frozenset({RestoreStatus.SUCCEEDED, RestoreStatus.FAILED, RestoreStatus.CANCELLED})
_STOP = object()


@dataclass
class LiveStreams:
    """The open streams of an app, told to end when it shuts down."""

    queues: set[asyncio.Queue[object]]

    async def shutdown(self, _: web.Application) -> None:
        for queue in list(self.queues):
            with contextlib.suppress(asyncio.QueueFull):
                queue.put_nowait(_STOP)


LIVE: web.AppKey[LiveStreams] = web.AppKey("bm_live_streams", LiveStreams)


def setup_live(app: web.Application) -> None:
    streams = LiveStreams(set())
    app[LIVE] = streams
    app.on_shutdown.append(streams.shutdown)


def _state(status: str, final: bool, bytes_in: int | None, bytes_out: int | None) -> dict[str, Any]:
    return {
        "status": status,
        "final": final,
        "bytes_in": human_bytes(bytes_in) if bytes_in else "—",
        "bytes_out": human_bytes(bytes_out) if bytes_out else "—",
    }


def _progress(event: BackupProgressed | RestoreProgressed) -> dict[str, Any]:
    total = (
        event.estimated_total_bytes if isinstance(event, BackupProgressed) else event.total_bytes
    )
    percent = min(100.0, event.bytes_in / total * 100) if total else None
    return {
        "status": "running",
        "bytes_in": human_bytes(event.bytes_in),
        "bytes_out": human_bytes(event.bytes_out),
        "rate": human_rate(event.rate_bps),
        "elapsed": human_duration(event.elapsed_s),
        "percent": percent,
    }


def _frame(name: str, data: dict[str, Any]) -> bytes:
    return f"event: {name}\ndata: {json.dumps(data)}\n\n".encode()


async def _stream(
    request: web.Request,
    run_id: uuid.UUID,
    models: tuple[type[Event], ...],
    id_field: str,
    load: Callable[[], Awaitable[dict[str, Any]]],
) -> web.StreamResponse:
    ctx = context(request)
    streams = request.app[LIVE]
    queue: asyncio.Queue[object] = asyncio.Queue(maxsize=QUEUE_SIZE)

    def handler(model: type[Event]) -> Callable[[Msg], Awaitable[None]]:
        async def on_message(msg: Msg) -> None:
            try:
                event = decode(model, msg.data)
            except ProtoError:
                return
            if getattr(event, id_field) != run_id:
                return
            if queue.full():  # a slow reader: drop the oldest progress
                with contextlib.suppress(asyncio.QueueEmpty):
                    queue.get_nowait()
            queue.put_nowait(event)

        return on_message

    subscriptions = []
    nc = ctx.nc
    if nc is not None and nc.is_connected:
        for model in models:
            subscriptions.append(await nc.subscribe(model.SUBJECT, cb=handler(model)))
    response = web.StreamResponse(
        headers={
            "Content-Type": "text/event-stream",
            "Cache-Control": "no-store",
            "X-Accel-Buffering": "no",
        }
    )
    streams.queues.add(queue)
    try:
        await response.prepare(request)
        await response.write(b"retry: 3000\n\n")
        await _pump(response, queue, load)
    except (ConnectionResetError, asyncio.CancelledError):
        raise
    except Exception:
        log.exception("live stream of %s ended by an error", run_id)
    finally:
        streams.queues.discard(queue)
        for subscription in subscriptions:
            with contextlib.suppress(Exception):
                await subscription.unsubscribe()
    return response


async def _pump(
    response: web.StreamResponse,
    queue: asyncio.Queue[object],
    load: Callable[[], Awaitable[dict[str, Any]]],
) -> None:
    state = await load()
    await response.write(_frame("state", state))
    loop = asyncio.get_running_loop()
    ends = loop.time() + MAX_STREAM_S
    while not state["final"] and loop.time() < ends:
        try:
            item = await asyncio.wait_for(queue.get(), timeout=POLL_S)
        except TimeoutError:
            item = None
        if item is _STOP:
            return
        if isinstance(item, BackupProgressed | RestoreProgressed):
            await response.write(_frame("progress", _progress(item)))
            continue
        state = await load()  # a lifecycle event, or the periodic check
        await response.write(_frame("state", state))
    if state["final"]:
        await response.write(_frame("done", state))


@routes.get("/backups/{id}/events")
async def backup_events(request: web.Request) -> web.StreamResponse:
    ctx = context(request)
    who = principal(request)
    backup_id = path_uuid(request, "id", "backup")
    async with ctx.transaction() as session:
        await get_backup(session, who, backup_id)  # 404 unless the visitor may see it

    async def load() -> dict[str, Any]:
        async with ctx.transaction() as session:
            backup = await session.get(Backup, backup_id)
        if backup is None:
            return _state("deleted", True, None, None)
        final = backup.status in FINAL_BACKUP_STATUSES
        return _state(backup.status.value, final, backup.bytes_in, backup.bytes_out)

    return await _stream(request, backup_id, BACKUP_EVENTS, "backup_id", load)


@routes.get("/restores/{id}/events")
async def restore_events(request: web.Request) -> web.StreamResponse:
    ctx = context(request)
    who = principal(request)
    restore_id = path_uuid(request, "id", "restore")
    async with ctx.transaction() as session:
        await get_restore(session, who, restore_id)

    async def load() -> dict[str, Any]:
        async with ctx.transaction() as session:
            restore = await session.get(Restore, restore_id)
        if restore is None:
            return _state("deleted", True, None, None)
        return _state(restore.status.value, restore.status in FINAL_RESTORE, restore.bytes_in, None)

    return await _stream(request, restore_id, RESTORE_EVENTS, "restore_id", load)
