"""The API in-process over a real socket, with a migrated SQLite metadata DB and a
real NATS server; ``api`` is the client tests use."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import nats
import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer

from proto.subjects import BACKUP_REQUESTED, EXECUTOR_DURABLE, JOBS_STREAM, RESTORE_REQUESTED
from services.api.app import setup_api
from services.api.context import API, ApiContext
from services.api.web import endpoint
from services.common.credentials import CredentialCipher
from services.common.db.engine import create_engine, session_factory
from services.common.migrate import upgrade
from services.common.secrets import resolve_secrets
from services.common.settings import Settings
from services.common.streams import ensure_streams
from services.common.work import WorkTracker
from services.executor.backup import BackupHandler
from services.executor.connection_test import ConnectionTester
from services.executor.context import ExecutorContext
from services.executor.restore import RestoreHandler
from services.executor.worker import JobWorker
from tests.api.client import Api
from tests.servers import NatsServer

# Every page rendered from plain rows is checked against its route's response model.
endpoint.CHECK_ROWS_PAGES = True


@pytest.fixture
def api_database_url(sqlite_url: str) -> str:
    """The API's metadata DB: SQLite (``test_lists_postgres`` overrides it)."""
    return sqlite_url


@pytest.fixture
def api_settings(tmp_path: Path, api_database_url: str) -> Settings:
    # The lowest bcrypt cost: many tests hash passwords through the real endpoints.
    return Settings(
        data_dir=tmp_path / "data",
        database_url=api_database_url,
        max_body_bytes=64 * 1024,
        bcrypt_rounds=4,
        api_workers=1,  # the app runs in this one process
    )


@pytest.fixture
async def api(api_settings: Settings, nats_server: NatsServer) -> AsyncIterator[Api]:
    await upgrade(api_settings.database_url)
    engine = create_engine(api_settings.database_url)
    nc = await nats.connect(nats_server.url)
    await ensure_streams(nc.jetstream())
    secrets = resolve_secrets(api_settings)
    ctx = ApiContext(
        settings=api_settings,
        secrets=secrets,
        sessions=session_factory(engine),
        nc=nc,
        cipher=CredentialCipher(secrets.credential_keys),
    )
    app = web.Application(client_max_size=api_settings.max_body_bytes)
    setup_api(app)
    app[API] = ctx
    async with TestClient(TestServer(app)) as client:
        yield Api(client, ctx)
    await nc.close()
    await engine.dispose()


@pytest.fixture
async def api_executor(api: Api) -> AsyncIterator[ExecutorContext]:
    """An executor in this process (backups, restores, connection tests), sharing the
    API's metadata DB and NATS."""
    assert api.ctx.nc is not None
    ctx = ExecutorContext(
        settings=api.ctx.settings,
        sessions=api.ctx.sessions,
        nc=api.ctx.nc,
        cipher=api.ctx.cipher,
        executor_id="api-test-executor",
    )
    work = WorkTracker()
    worker = JobWorker(
        api.ctx.nc.jetstream(),
        stream=JOBS_STREAM,
        durable=EXECUTOR_DURABLE,
        handlers={BACKUP_REQUESTED: BackupHandler(ctx), RESTORE_REQUESTED: RestoreHandler(ctx)},
        work=work,
        concurrency=2,
    )
    tester = ConnectionTester(ctx)
    await worker.start()
    await tester.start()
    yield ctx
    await tester.stop()
    await worker.stop_taking_work()
    await work.drain(5)
