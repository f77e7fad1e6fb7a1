"""How every service lives: start its health port, connect to the metadata DB and
NATS (retrying while they are down), start taking work, and on SIGTERM/SIGINT stop
taking work, give running work a grace period, drain NATS and exit 0."""

from __future__ import annotations

import asyncio
import gc
import logging
import signal
from dataclasses import dataclass, field
from typing import ClassVar

from aiohttp import web
from nats.aio.client import Client as NATS
from nats.js import JetStreamContext
from sqlalchemy.ext.asyncio import AsyncEngine

from services.common.connect import connect_nats, retry_until_ready, wait_for_database
from services.common.db.engine import create_engine
from services.common.errors import ConfigError, DependencyUnavailable
from services.common.health import Health, add_health_routes, request_id_middleware
from services.common.logs import configure_logging
from services.common.secrets import Secrets, resolve_secrets
from services.common.settings import Settings
from services.common.streams import ensure_streams
from services.common.work import WorkTracker
from services.common.workers import WorkerPool, stop_with_parent, worker_index

log = logging.getLogger(__name__)

EXIT_OK = 0
EXIT_CONFIG = 2


@dataclass
class Runtime:
    """What a service gets once its dependencies are up."""

    name: str
    settings: Settings
    secrets: Secrets
    engine: AsyncEngine
    nc: NATS
    js: JetStreamContext
    stopping: asyncio.Event
    work: WorkTracker = field(default_factory=WorkTracker)
    worker: int = 0
    """Which copy of the service this process is (``common.workers``); 0 alone."""


class Service:
    """Base of the four services; subclasses override the hooks they need."""

    name: ClassVar[str] = "service"

    def setup_http(self, app: web.Application) -> None:
        """Add routes to the service's HTTP app (health routes are already there)."""

    def workers(self, settings: Settings) -> int:
        """How many processes serve this service's port (``common.workers``)."""
        return 1

    async def start(self, runtime: Runtime) -> None:
        """Start taking work: subscribe, start loops (owned by ``runtime.work``)."""

    async def stop_taking_work(self) -> None:
        """Unsubscribe and stop loops that accept new work; running work goes on."""

    async def close(self) -> None:
        """Release what ``start`` opened, after running work has finished."""


async def serve(service: Service, settings: Settings) -> int:
    """Run ``service`` until a signal asks it to stop; return the exit code."""
    try:
        secrets = resolve_secrets(settings)
    except ConfigError as exc:
        log.error("cannot start: %s", exc)
        return EXIT_CONFIG

    loop = asyncio.get_running_loop()
    stopping = asyncio.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, _request_stop, stopping, signum)

    health = Health(service.name)
    app = web.Application(
        middlewares=[request_id_middleware], client_max_size=settings.max_body_bytes
    )
    add_health_routes(app, health)
    service.setup_http(app)
    runner = web.AppRunner(app, access_log=None, handler_cancellation=True)
    await runner.setup()
    port = settings.port_of(service.name)
    workers, worker = service.workers(settings), worker_index()
    health.worker = worker
    site = web.TCPSite(runner, settings.http_host, port, shutdown_timeout=5, reuse_port=workers > 1)
    if worker == 0:  # at once: /healthz answers while the dependencies come up
        await _listen(site, service.name, worker, workers)
    pool: WorkerPool | None = None
    if workers > 1 and worker == 0:
        pool = WorkerPool(service.name, workers - 1)
        pool.start()
    watch = None
    if worker > 0:
        watch = asyncio.create_task(stop_with_parent(stopping), name="watch-worker-0")

    engine = create_engine(settings.database_url)
    health.engine = engine
    nc: NATS | None = None
    runtime: Runtime | None = None
    try:
        retry_max = settings.connect_retry_max_s
        await wait_for_database(engine, stopping, max_delay=retry_max)
        nc = await connect_nats(
            settings.nats_url, stopping, name=f"bm-{service.name}", max_delay=retry_max
        )
        health.nc = nc
        js = nc.jetstream()
        await retry_until_ready(
            "JetStream",
            lambda: ensure_streams(
                js,
                duplicate_window=settings.jobs_duplicate_window_s,
                replicas=settings.stream_replicas,
                ack_wait=settings.job_ack_wait_s,
            ),
            stopping,
            max_delay=retry_max,
        )
        runtime = Runtime(service.name, settings, secrets, engine, nc, js, stopping, worker=worker)
        await service.start(runtime)
        if worker > 0:  # a copy takes connections only once it can serve them
            await _listen(site, service.name, worker, workers)
        # Everything loaded so far (modules, models, compiled queries) lives as long
        # as the process: keep it out of the collector's full passes, which otherwise
        # walk it all and pause the event loop for tens of milliseconds each time.
        gc.freeze()
        health.started = True
        log.info("%s ready", service.name)
        await stopping.wait()
    except DependencyUnavailable as exc:
        log.info("%s", exc)
    finally:
        health.stopping = True
        log.info("%s stopping: no new work", service.name)
        # The other workers stop alongside this one.
        pool_stopped = asyncio.create_task(pool.stop(settings.shutdown_grace_s)) if pool else None
        if watch is not None:
            watch.cancel()
        await service.stop_taking_work()
        if runtime is not None:
            await runtime.work.drain(settings.shutdown_grace_s)
        await service.close()
        if nc is not None:
            await _drain_nats(nc)
        await engine.dispose()
        await runner.cleanup()
        if pool_stopped is not None:
            await pool_stopped
        log.info("%s stopped", service.name)
    return EXIT_OK


async def _listen(site: web.TCPSite, name: str, worker: int, workers: int) -> None:
    await site.start()
    log.info("%s listening on %s%s", name, site.name,
             f" (worker {worker} of {workers})" if workers > 1 else "")  # fmt: skip


def _request_stop(stopping: asyncio.Event, signum: int) -> None:
    if not stopping.is_set():
        log.info("received %s", signal.Signals(signum).name)
    stopping.set()


async def _drain_nats(nc: NATS) -> None:
    try:
        if nc.is_connected:
            await nc.drain()
        else:
            await nc.close()
    except Exception as exc:
        log.warning("NATS drain failed: %s", exc)


def main(service: Service) -> None:
    """Entry point used by each ``services/<name>/__main__.py``."""
    try:
        settings = Settings()
    except Exception as exc:
        configure_logging(service.name)
        log.error("cannot start: invalid settings: %s", exc)
        raise SystemExit(EXIT_CONFIG) from None
    configure_logging(service.name, settings.log_level, settings.log_format)
    raise SystemExit(asyncio.run(serve(service, settings)))
