"""The scheduler's SQL: schedules' timings and job settings, running backups, slot
rows (inserted idempotently: the unique ``(schedule_id, slot_at)`` decides which
writer recorded a slot) and cursors (upserted so that ``last_slot_at`` only moves
forward, whichever replica writes last). SQLite and PostgreSQL alike."""

from __future__ import annotations

import uuid
from collections.abc import Collection, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import Insert, or_, select, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from services.common.db.enums import (
    BackupStatus,
    BackupTrigger,
    Compression,
    Encryption,
    OverlapPolicy,
)
from services.common.db.models import (
    Backup,
    Database,
    Schedule,
    SchedulerCursor,
    schedule_destinations,
)
from services.scheduler.timetable import Timing

IN_CHUNK = 500
"""Most values in one ``IN (...)`` (SQLite allows 32766 parameters per statement)."""


@dataclass(frozen=True)
class JobConfig:
    """What a fired slot's job needs from its schedule and database."""

    id: uuid.UUID
    database_id: uuid.UUID
    project_id: uuid.UUID
    enabled: bool
    overlap_policy: OverlapPolicy
    compression: Compression
    compression_level: int | None
    encryption: Encryption
    encryption_recipient: str | None
    timeout_s: int
    destinations: list[uuid.UUID]


@dataclass(frozen=True)
class CursorWrite:
    schedule_id: uuid.UUID
    last_slot_at: datetime | None
    next_slot_at: datetime | None


@dataclass(frozen=True)
class Orphan:
    id: uuid.UUID
    schedule_id: uuid.UUID
    database_id: uuid.UUID
    project_id: uuid.UUID
    slot_at: datetime


@dataclass(frozen=True)
class Existing:
    id: uuid.UUID
    status: BackupStatus


class Store:
    def __init__(self, sessions: async_sessionmaker[AsyncSession], dialect: str) -> None:
        self.sessions = sessions
        if dialect not in ("sqlite", "postgresql"):
            raise ValueError(f"the scheduler supports SQLite and PostgreSQL, not {dialect}")
        self._insert = sqlite.insert if dialect == "sqlite" else postgresql.insert

    # -- reading -------------------------------------------------------------------------

    async def timings(self, ids: Collection[uuid.UUID] | None = None) -> list[Timing]:
        """Every schedule (or those of ``ids``), enabled or not, with its cursor."""
        stmt = select(
            Schedule.id,
            Schedule.cron,
            Schedule.timezone,
            Schedule.enabled,
            Schedule.created_at,
            Schedule.updated_at,
            SchedulerCursor.last_slot_at,
            SchedulerCursor.next_slot_at,
            SchedulerCursor.schedule_id.is_not(None),
        ).outerjoin(SchedulerCursor, SchedulerCursor.schedule_id == Schedule.id)
        async with self.sessions() as session:
            if ids is None:
                return [Timing(*row) for row in await session.execute(stmt)]
            found: list[Timing] = []
            for part in _parts(list(ids)):
                rows = await session.execute(stmt.where(Schedule.id.in_(part)))
                found.extend(Timing(*row) for row in rows)
            return found

    async def configs(self, ids: Collection[uuid.UUID]) -> dict[uuid.UUID, JobConfig]:
        found: dict[uuid.UUID, JobConfig] = {}
        async with self.sessions() as session:
            for part in _parts(list(ids)):
                destinations: dict[uuid.UUID, list[uuid.UUID]] = {i: [] for i in part}
                links = await session.execute(
                    select(
                        schedule_destinations.c.schedule_id, schedule_destinations.c.destination_id
                    )
                    .where(schedule_destinations.c.schedule_id.in_(part))
                    .order_by(schedule_destinations.c.destination_id)
                )
                for schedule_id, destination_id in links:
                    destinations[schedule_id].append(destination_id)
                rows = await session.execute(
                    select(
                        Schedule.id,
                        Schedule.database_id,
                        Database.project_id,
                        Schedule.enabled,
                        Schedule.overlap_policy,
                        Schedule.compression,
                        Schedule.compression_level,
                        Schedule.encryption,
                        Schedule.encryption_recipient,
                        Schedule.timeout_s,
                    )
                    .join(Database, Database.id == Schedule.database_id)
                    .where(Schedule.id.in_(part))
                )
                for row in rows:
                    found[row.id] = JobConfig(**row._asdict(), destinations=destinations[row.id])
        return found

    async def running(self) -> dict[uuid.UUID, uuid.UUID]:
        """The running backup of each database that has one (a few at most)."""
        async with self.sessions() as session:
            rows = await session.execute(
                select(Backup.database_id, Backup.id).where(Backup.status == BackupStatus.RUNNING)
            )
            return {database_id: backup_id for database_id, backup_id in rows}

    async def orphans(self, before: datetime) -> list[Orphan]:
        """Scheduled rows still ``queued`` for a slot older than ``before`` that the
        cursor never passed: reserved or recorded, but never confirmed published."""
        stmt = (
            select(
                Backup.id,
                Backup.schedule_id,
                Backup.database_id,
                Database.project_id,
                Backup.slot_at,
            )
            .join(Database, Database.id == Backup.database_id)
            .outerjoin(SchedulerCursor, SchedulerCursor.schedule_id == Backup.schedule_id)
            .where(
                Backup.status == BackupStatus.QUEUED,
                Backup.trigger == BackupTrigger.SCHEDULE,
                Backup.schedule_id.is_not(None),
                Backup.slot_at < before,
                or_(
                    SchedulerCursor.last_slot_at.is_(None),
                    SchedulerCursor.last_slot_at < Backup.slot_at,
                ),
            )
        )
        async with self.sessions() as session:
            return [
                Orphan(row.id, row.schedule_id, row.database_id, row.project_id, row.slot_at)
                for row in await session.execute(stmt)
                if row.schedule_id is not None and row.slot_at is not None
            ]

    async def existing(
        self, keys: Collection[tuple[uuid.UUID, datetime]]
    ) -> dict[tuple[uuid.UUID, datetime], Existing]:
        """The rows already recorded for ``(schedule_id, slot_at)`` keys."""
        wanted = set(keys)
        found: dict[tuple[uuid.UUID, datetime], Existing] = {}
        async with self.sessions() as session:
            for part in _parts(list(wanted)):
                rows = await session.execute(
                    select(Backup.schedule_id, Backup.slot_at, Backup.id, Backup.status).where(
                        Backup.schedule_id.in_({key[0] for key in part}),
                        Backup.slot_at.in_({key[1] for key in part}),
                    )
                )
                for schedule_id, slot_at, backup_id, status in rows:
                    key = (schedule_id, slot_at)
                    if schedule_id is not None and slot_at is not None and key in wanted:
                        found[(schedule_id, slot_at)] = Existing(backup_id, status)
        return found

    # -- writing -------------------------------------------------------------------------

    async def insert_backups(self, rows: Sequence[dict[str, Any]]) -> set[uuid.UUID]:
        """Insert the rows that are not recorded yet; return the ids inserted. A row
        whose schedule or database was deleted meanwhile is left out."""
        stmt = self._insert(Backup).on_conflict_do_nothing().returning(Backup.id)
        try:
            async with self.sessions() as session, session.begin():
                return set((await session.execute(stmt, list(rows))).scalars())
        except IntegrityError:
            if len(rows) == 1:
                return set()
        inserted: set[uuid.UUID] = set()
        for row in rows:  # one by one, so one deleted schedule does not block the rest
            inserted |= await self.insert_backups([row])
        return inserted

    async def finish_queued(
        self, backup_id: uuid.UUID, status: BackupStatus, code: str, reason: str, now: datetime
    ) -> bool:
        """Move a row from ``queued`` to a final ``status``; False when it was no
        longer queued (someone else moved it, or an executor claimed it)."""
        async with self.sessions() as session, session.begin():
            result = await session.execute(
                update(Backup)
                .where(Backup.id == backup_id, Backup.status == BackupStatus.QUEUED)
                .values(status=status, finished_at=now, error_code=code, error_message=reason)
            )
            return bool(getattr(result, "rowcount", 0))

    async def write_cursors(self, writes: Sequence[CursorWrite], now: datetime) -> None:
        """Upsert cursors; a write whose ``last_slot_at`` is older than the stored one
        (another replica got further) changes nothing."""
        if not writes:
            return
        stmt = self._insert(SchedulerCursor)
        stmt = stmt.on_conflict_do_update(
            index_elements=[SchedulerCursor.schedule_id],
            set_={
                "last_slot_at": stmt.excluded.last_slot_at,
                "next_slot_at": stmt.excluded.next_slot_at,
                "updated_at": stmt.excluded.updated_at,
            },
            where=or_(
                SchedulerCursor.last_slot_at.is_(None),
                stmt.excluded.last_slot_at >= SchedulerCursor.last_slot_at,
            ),
        )
        params = [
            {
                "schedule_id": w.schedule_id,
                "last_slot_at": w.last_slot_at,
                "next_slot_at": w.next_slot_at,
                "updated_at": now,
            }
            for w in writes
        ]
        await self._execute_each(stmt, params)

    async def _execute_each(self, stmt: Insert, params: list[dict[str, Any]]) -> None:
        try:
            async with self.sessions() as session, session.begin():
                await session.execute(stmt, params)
            return
        except IntegrityError:
            if len(params) == 1:
                return  # its schedule was deleted meanwhile
        for one in params:
            await self._execute_each(stmt, [one])


def _parts(items: list[Any]) -> list[list[Any]]:
    return [items[i : i + IN_CHUNK] for i in range(0, len(items), IN_CHUNK)]
