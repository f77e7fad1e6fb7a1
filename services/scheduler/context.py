"""What the scheduler's parts share: settings, the metadata DB, NATS and the clock."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from nats.aio.client import Client as NATS
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from services.common.db.types import utcnow
from services.common.settings import Settings


@dataclass
class SchedulerContext:
    settings: Settings
    sessions: async_sessionmaker[AsyncSession]
    nc: NATS
    clock: Callable[[], datetime] = field(default=utcnow)
    """The current instant (aware). Tests shift or freeze it; the scheduler sleeps
    real seconds for clock seconds, so a shifted clock must run at real speed."""

    @property
    def grace(self) -> timedelta:
        return timedelta(seconds=self.settings.scheduler_grace_s)

    @property
    def dialect(self) -> str:
        bind = self.sessions.kw["bind"]
        return str(bind.dialect.name)
