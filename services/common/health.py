"""``/healthz`` (the process is alive), ``/readyz`` (metadata DB and NATS reachable)
and ``/metrics`` (Prometheus), served by every service on its own port."""

from __future__ import annotations

import asyncio
import os
import re
import uuid
from dataclasses import dataclass, field

from aiohttp import web
from aiohttp.typedefs import Handler
from nats.aio.client import Client as NATS
from prometheus_client import CONTENT_TYPE_LATEST, Gauge, generate_latest
from sqlalchemy.ext.asyncio import AsyncEngine

from services.common.db.engine import ping
from services.common.logs import request_id

READY = Gauge("bm_ready", "1 when the metadata DB and NATS are reachable", ["service"])
READINESS_TIMEOUT_S = 2.0
_SAFE_ID = re.compile(r"[A-Za-z0-9._-]{1,64}")


@dataclass
class Health:
    service: str
    engine: AsyncEngine | None = None
    nc: NATS | None = None
    started: bool = False
    stopping: bool = False
    worker: int = 0
    problems: list[str] = field(default_factory=list)

    async def check(self) -> list[str]:
        """What is wrong right now; empty when ready."""
        if self.stopping:
            return ["service is stopping"]
        if not self.started or self.engine is None or self.nc is None:
            return ["service is starting"]
        problems: list[str] = []
        if not self.nc.is_connected:
            problems.append("NATS is not connected")
        try:
            await asyncio.wait_for(ping(self.engine), READINESS_TIMEOUT_S)
        except Exception as exc:
            problems.append(f"metadata DB unreachable: {type(exc).__name__}")
        READY.labels(self.service).set(0 if problems else 1)
        return problems


HEALTH: web.AppKey[Health] = web.AppKey("health", Health)


async def healthz(request: web.Request) -> web.Response:
    health = request.app[HEALTH]
    return web.json_response(
        {"status": "alive", "service": health.service, "worker": health.worker, "pid": os.getpid()}
    )


async def readyz(request: web.Request) -> web.Response:
    health = request.app[HEALTH]
    problems = await health.check()
    body = {"status": "ready" if not problems else "unavailable", "service": health.service}
    if problems:
        body["problems"] = problems  # type: ignore[assignment]
    return web.json_response(body, status=200 if not problems else 503)


async def metrics(_: web.Request) -> web.Response:
    response = web.Response(body=generate_latest())
    response.content_type = CONTENT_TYPE_LATEST.split(";")[0]
    return response


def add_health_routes(app: web.Application, health: Health) -> None:
    app[HEALTH] = health
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/readyz", readyz)
    app.router.add_get("/metrics", metrics)


REQUEST_ID_HEADER = "X-Request-Id"
WORKER_HEADER = "X-Worker"
"""Which of a service's processes answered (``common.workers``): for a person
following one request through the logs of several."""


@web.middleware
async def request_id_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Tag the request's log lines with an id (the caller's, if sane, else a new one)
    and echo it in the response so a person can quote it."""
    given = request.headers.get(REQUEST_ID_HEADER, "")
    rid = given if _SAFE_ID.fullmatch(given) else uuid.uuid4().hex[:16]
    token = request_id.set(rid)
    try:
        response = await handler(request)
    except web.HTTPException as exc:
        exc.headers.update(_tags(request, rid))
        raise
    finally:
        request_id.reset(token)
    response.headers.update(_tags(request, rid))
    return response


def _tags(request: web.Request, rid: str) -> dict[str, str]:
    health = request.app.get(HEALTH)
    if health is None:
        return {REQUEST_ID_HEADER: rid}
    return {REQUEST_ID_HEADER: rid, WORKER_HEADER: str(health.worker)}
