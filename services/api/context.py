"""What every API handler may use, built once when the service has its runtime."""

from __future__ import annotations

import logging
import uuid
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from datetime import datetime

from aiohttp import web
from nats.aio.client import Client as NATS
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from proto.subjects import API_CACHES_STALE
from services.api.auth.cache import PrincipalCache
from services.api.domain.stats_cache import StatsCache
from services.common.credentials import CredentialCipher
from services.common.db.engine import read_engine, session_factory
from services.common.db.types import utcnow
from services.common.secrets import Secrets
from services.common.settings import Settings

log = logging.getLogger(__name__)


@dataclass
class ApiContext:
    settings: Settings
    secrets: Secrets
    sessions: async_sessionmaker[AsyncSession]
    nc: NATS | None
    cipher: CredentialCipher
    clock: Callable[[], datetime] = field(default=utcnow)
    principals: PrincipalCache = field(init=False)
    stats: StatsCache = field(init=False)
    read_sessions: async_sessionmaker[AsyncSession] = field(init=False)
    inline_reads: bool = field(init=False)
    instance: str = field(default_factory=lambda: uuid.uuid4().hex)
    """Tells this process's own change notices from the others'."""

    def __post_init__(self) -> None:
        self.principals = PrincipalCache(self.settings.api_auth_cache_s)
        self.stats = StatsCache(self.settings.api_stats_cache_s)
        reads = read_engine(self.settings.database_url)
        self.inline_reads = reads is not None
        self.read_sessions = session_factory(reads) if reads is not None else self.sessions

    @asynccontextmanager
    async def reading(self) -> AsyncIterator[AsyncSession]:
        """A session for reads only (a page of a list): on a SQLite file it runs on
        the event loop, skipping aiosqlite's thread (``common.db.inline_sqlite``)."""
        if not self.inline_reads:
            async with self.read_sessions() as session:
                yield session
            return
        session = self.read_sessions()
        try:
            yield session
        finally:
            # Closed in this task. AsyncSession's own exit closes in a task of its
            # own and waits for it: other requests run meanwhile with the connection
            # still out, and under load the pool opened (and SQLite parsed the
            # schema for) a fresh connection for most requests. An inline close
            # never waits, so nothing can interrupt it halfway.
            await session.close()

    def forget_cached(self) -> None:
        """After a change: the next request checks and counts afresh."""
        self.principals.clear()
        self.stats.clear()

    async def changed(self) -> None:
        """After a change made through this process: forget here, and tell the other
        API processes (workers, replicas) to forget too, so none answers from a cache
        that predates the change (their caches' time limits bound it otherwise)."""
        self.forget_cached()
        if self.nc is not None and self.nc.is_connected:
            try:
                await self.nc.publish(API_CACHES_STALE, self.instance.encode())
            except Exception as exc:  # the time limits still bound what others serve
                log.warning("could not tell other API processes of a change: %s", exc)

    def heard_of_change(self, sender: bytes) -> None:
        if sender != self.instance.encode():
            self.forget_cached()

    @asynccontextmanager
    async def transaction(self) -> AsyncIterator[AsyncSession]:
        async with self.sessions() as session, session.begin():
            yield session


API: web.AppKey[ApiContext] = web.AppKey("api_context", ApiContext)
