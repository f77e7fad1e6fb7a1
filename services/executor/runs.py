"""State changes of a backup row, each in its own short transaction. The executor
is the only writer of a run once it is claimed."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from services.common.db.enums import BackupStatus, CopyStatus
from services.common.db.models import Backup, BackupCopy

CLAIMABLE = (BackupStatus.QUEUED,)


@dataclass(frozen=True)
class Claim:
    claimed: bool
    busy_with: uuid.UUID | None = None
    """Another running backup of the same database, when the claim lost to it."""


async def claim(
    sessions: async_sessionmaker[AsyncSession],
    backup_id: uuid.UUID,
    *,
    executor_id: str,
    now: datetime,
    redelivered: bool,
) -> Claim:
    """Move the row to ``running``. A redelivered job may take over a ``running``
    row: JetStream redelivers only when the previous holder stopped acking (died)."""
    statuses = [BackupStatus.QUEUED, *([BackupStatus.RUNNING] if redelivered else [])]
    try:
        async with sessions() as session, session.begin():
            result = await session.execute(
                update(Backup)
                .where(Backup.id == backup_id, Backup.status.in_(statuses))
                .values(
                    status=BackupStatus.RUNNING,
                    started_at=now,
                    heartbeat_at=now,
                    executor_id=executor_id,
                    attempts=Backup.attempts + 1,
                    error_code=None,
                    error_message=None,
                )
            )
            return Claim(claimed=bool(getattr(result, "rowcount", 0)))
    except IntegrityError:
        async with sessions() as session:
            database_id = await session.scalar(
                select(Backup.database_id).where(Backup.id == backup_id)
            )
            other = await session.scalar(
                select(Backup.id).where(
                    Backup.database_id == database_id, Backup.status == BackupStatus.RUNNING
                )
            )
        return Claim(claimed=False, busy_with=other)


async def heartbeat(
    sessions: async_sessionmaker[AsyncSession], backup_id: uuid.UUID, now: datetime, bytes_in: int
) -> None:
    async with sessions() as session, session.begin():
        await session.execute(
            update(Backup)
            .where(Backup.id == backup_id, Backup.status == BackupStatus.RUNNING)
            .values(heartbeat_at=now, bytes_in=bytes_in)
        )


async def finish(
    sessions: async_sessionmaker[AsyncSession],
    backup_id: uuid.UUID,
    status: BackupStatus,
    *,
    now: datetime,
    copies: list[BackupCopy] | None = None,
    **values: Any,
) -> None:
    async with sessions() as session, session.begin():
        await session.execute(
            update(Backup)
            .where(Backup.id == backup_id)
            .values(status=status, finished_at=now, heartbeat_at=now, **values)
        )
        for copy in copies or []:
            await session.merge(copy)


async def skip(
    sessions: async_sessionmaker[AsyncSession], backup_id: uuid.UUID, *, now: datetime, reason: str
) -> bool:
    """Record a still-queued run as skipped; False when someone else (a scheduler
    replica) already settled it, so only one of us announces it."""
    async with sessions() as session, session.begin():
        result = await session.execute(
            update(Backup)
            .where(Backup.id == backup_id, Backup.status == BackupStatus.QUEUED)
            .values(status=BackupStatus.SKIPPED, finished_at=now, error_code="overlap",
                    error_message=reason)
        )  # fmt: skip
        return bool(getattr(result, "rowcount", 0))


async def previous_good_size(
    sessions: async_sessionmaker[AsyncSession], database_id: uuid.UUID, backup_id: uuid.UUID
) -> int | None:
    """Raw dump size of the newest successful backup of the database before this one."""
    async with sessions() as session:
        size: int | None = await session.scalar(
            select(Backup.bytes_in)
            .where(
                Backup.database_id == database_id,
                Backup.status == BackupStatus.SUCCEEDED,
                Backup.id != backup_id,
            )
            .order_by(Backup.finished_at.desc())
            .limit(1)
        )
        return size


def failed_copy(
    backup_id: uuid.UUID, destination_id: uuid.UUID, key: str, error: str
) -> BackupCopy:
    return BackupCopy(backup_id=backup_id, destination_id=destination_id, artifact_key=key,
                      status=CopyStatus.FAILED, error_message=error[:4000])  # fmt: skip


def stored_copy(
    backup_id: uuid.UUID, destination_id: uuid.UUID, key: str, size: int, sha256: str, now: datetime
) -> BackupCopy:
    return BackupCopy(
        backup_id=backup_id, destination_id=destination_id, artifact_key=key,
        status=CopyStatus.STORED, size_bytes=size, sha256=sha256, stored_at=now,
    )  # fmt: skip
