"""The API in-process over a real socket, with a migrated SQLite metadata DB and a
real NATS server; ``api`` is the client tests use."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import nats
import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer

from services.api.app import setup_api
from services.api.context import API, ApiContext
from services.common.credentials import CredentialCipher
from services.common.db.engine import create_engine, session_factory
from services.common.migrate import upgrade
from services.common.secrets import resolve_secrets
from services.common.settings import Settings
from services.common.streams import ensure_streams
from tests.api.client import Api
from tests.servers import NatsServer


@pytest.fixture
def api_settings(tmp_path: Path, sqlite_url: str) -> Settings:
    # The lowest bcrypt cost: many tests hash passwords through the real endpoints.
    return Settings(
        data_dir=tmp_path / "data",
        database_url=sqlite_url,
        max_body_bytes=64 * 1024,
        bcrypt_rounds=4,
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
