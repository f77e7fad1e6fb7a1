"""What every API handler may use, built once when the service has its runtime."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from datetime import datetime

from aiohttp import web
from nats.aio.client import Client as NATS
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from services.common.credentials import CredentialCipher
from services.common.db.types import utcnow
from services.common.secrets import Secrets
from services.common.settings import Settings


@dataclass
class ApiContext:
    settings: Settings
    secrets: Secrets
    sessions: async_sessionmaker[AsyncSession]
    nc: NATS | None
    cipher: CredentialCipher
    clock: Callable[[], datetime] = field(default=utcnow)

    @asynccontextmanager
    async def transaction(self) -> AsyncIterator[AsyncSession]:
        async with self.sessions() as session, session.begin():
            yield session


API: web.AppKey[ApiContext] = web.AppKey("api_context", ApiContext)
