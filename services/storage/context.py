"""What the storage service's parts share."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime

from nats.aio.client import Client as NATS
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from services.common.db.types import utcnow
from services.common.settings import Settings

ACTOR = "storage"
"""How the storage service signs its audit entries (it acts for no user)."""


@dataclass
class StorageContext:
    settings: Settings
    sessions: async_sessionmaker[AsyncSession]
    nc: NATS | None
    stopping: asyncio.Event = field(default_factory=asyncio.Event)
    clock: Callable[[], datetime] = field(default=utcnow)
    _locks: dict[uuid.UUID, asyncio.Lock] = field(default_factory=dict)

    def database_lock(self, database_id: uuid.UUID) -> asyncio.Lock:
        """Retention of one database runs once at a time in this process (the event
        handler and the sweep may both reach it); replicas rely on idempotence."""
        return self._locks.setdefault(database_id, asyncio.Lock())
