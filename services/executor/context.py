"""What the executor's job handlers share."""

from __future__ import annotations

import asyncio
import gc
import os
import socket
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime

from nats.aio.client import Client as NATS
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker
from sqlalchemy.orm import configure_mappers

from services.common.credentials import CredentialCipher
from services.common.db.types import utcnow
from services.common.settings import Settings
from services.executor.adapters.pg_tools import installed_pg_dumps


async def prepare_for_jobs() -> None:
    """Once started, before the first job: the installed pg_dumps looked for (in a
    worker thread: a ``--version`` run of each), then :func:`settle_after_start`."""
    await asyncio.to_thread(installed_pg_dumps)
    settle_after_start()


def settle_after_start() -> None:
    """The one-time work of the ORM done now (mapping the models, which the first query
    would do 20-30 ms into the first backup), then every object alive (modules, classes,
    mappings: most of the heap, and they live as long as the process) moved out of the
    garbage collector's sight. Otherwise each full collection walks all of them: a stall
    of the event loop of about 60 ms, measured in the middle of a backup, whenever the
    collector decides one is due."""
    configure_mappers()
    gc.collect()
    gc.freeze()


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
