"""What the executor's job handlers share."""

from __future__ import annotations

import os
import socket
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime

from nats.aio.client import Client as NATS
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from services.common.credentials import CredentialCipher
from services.common.db.types import utcnow
from services.common.settings import Settings


def default_executor_id() -> str:
    return f"{socket.gethostname()}:{os.getpid()}"[:128]


@dataclass
class ExecutorContext:
    settings: Settings
    sessions: async_sessionmaker[AsyncSession]
    nc: NATS
    cipher: CredentialCipher
    executor_id: str = field(default_factory=default_executor_id)
    clock: Callable[[], datetime] = field(default=utcnow)
