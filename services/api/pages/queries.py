"""Reads only the pages need (charts, last runs, names), scoped like everything else
through ``domain.access``. Each is one query, whatever the number of rows behind it:
per-day numbers are conditional aggregates over the indexed ``queued_at`` range."""

from __future__ import annotations

import uuid
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta

from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import aliased

from services.api.auth.principal import Principal
from services.api.domain.access import visible_projects
from services.api.domain.stats import Scope
from services.common.db.enums import BackupStatus, CopyStatus
from services.common.db.models import Backup, BackupCopy, Database, Project, Restore

CHART_GROUPS: tuple[tuple[str, str, frozenset[BackupStatus]], ...] = (
    ("succeeded", "#16a34a", frozenset({BackupStatus.SUCCEEDED})),
    ("failed", "#dc2626", frozenset({BackupStatus.FAILED, BackupStatus.CORRUPT})),
    (
        "other",
        "#9ca3af",
        frozenset({BackupStatus.CANCELLED, BackupStatus.MISSED, BackupStatus.SKIPPED}),
    ),
    ("in progress", "#2563eb", frozenset({BackupStatus.QUEUED, BackupStatus.RUNNING})),
)


def day_starts(now: datetime, days: int) -> list[datetime]:
    """Midnights (UTC) starting each of the last ``days`` days, and the next one."""
    today = now.astimezone(UTC).replace(hour=0, minute=0, second=0, microsecond=0)
    first = today - timedelta(days=days - 1)
    return [first + timedelta(days=i) for i in range(days + 1)]


def _in_scope(scope: Scope) -> object:
    return Backup.database_id.in_(select(Database.id).where(scope.where(Database.project_id)))


async def runs_per_day(
    session: AsyncSession, scope: Scope, now: datetime, days: int
) -> tuple[list[date], dict[str, list[int]]]:
    """Backups queued per UTC day, counted per chart group."""
    starts = day_starts(now, days)
    columns = [
        func.count().filter(
            Backup.status.in_(statuses),
            Backup.queued_at >= starts[i],
            Backup.queued_at < starts[i + 1],
        )
        for i in range(days)
        for _, _, statuses in CHART_GROUPS
    ]
    stmt = select(*columns).where(Backup.queued_at >= starts[0], Backup.queued_at < starts[-1])
    if not scope.unrestricted:
        stmt = stmt.where(_in_scope(scope))  # type: ignore[arg-type]
    row = (await session.execute(stmt)).one()
    width = len(CHART_GROUPS)
    counts = {
        label: [int(row[i * width + g] or 0) for i in range(days)]
        for g, (label, _, _) in enumerate(CHART_GROUPS)
    }
    return [start.date() for start in starts[:-1]], counts


async def stored_per_day(
    session: AsyncSession, scope: Scope, now: datetime, days: int
) -> tuple[list[date], list[int]]:
    """Bytes of the copies stored now, as they stood at the end of each UTC day (the
    copies retention deleted since are no longer counted)."""
    starts = day_starts(now, days)
    size = func.coalesce(BackupCopy.size_bytes, Backup.bytes_out, 0)
    written = func.coalesce(BackupCopy.stored_at, Backup.finished_at, Backup.queued_at)
    columns = [func.sum(size).filter(written < starts[i + 1]) for i in range(days)]
    stmt = (
        select(*columns)
        .select_from(BackupCopy)
        .join(Backup, Backup.id == BackupCopy.backup_id)
        .where(BackupCopy.status == CopyStatus.STORED)
    )
    if not scope.unrestricted:
        stmt = stmt.where(_in_scope(scope))  # type: ignore[arg-type]
    row = (await session.execute(stmt)).one()
    return [start.date() for start in starts[:-1]], [int(value or 0) for value in row]


@dataclass(frozen=True)
class LastRun:
    backup_id: uuid.UUID
    status: BackupStatus
    at: datetime
    """When it finished, or was queued when it has not."""


async def last_runs(
    session: AsyncSession, database_ids: Iterable[uuid.UUID]
) -> dict[uuid.UUID, LastRun]:
    """The newest backup run of each database (one walk back along its index each)."""
    ids = list(database_ids)
    if not ids:
        return {}
    run = aliased(Backup)
    newest = (
        select(run.id)
        .where(run.database_id == Database.id)
        .order_by(run.queued_at.desc(), run.id.desc())
        .limit(1)
        .correlate(Database)
        .scalar_subquery()
    )
    rows = await session.execute(
        select(Database.id, Backup.id, Backup.status, Backup.finished_at, Backup.queued_at)
        .join(Backup, Backup.id == newest)
        .where(Database.id.in_(ids))
    )
    return {row[0]: LastRun(backup_id=row[1], status=row[2], at=row[3] or row[4]) for row in rows}


async def database_names(
    session: AsyncSession, ids: Iterable[uuid.UUID | None]
) -> dict[uuid.UUID, tuple[str, uuid.UUID]]:
    """``{database_id: (name, project_id)}`` (the caller already checked access)."""
    wanted = {i for i in ids if i is not None}
    if not wanted:
        return {}
    rows = await session.execute(
        select(Database.id, Database.name, Database.project_id).where(Database.id.in_(wanted))
    )
    return {row[0]: (row[1], row[2]) for row in rows}


async def project_names(
    session: AsyncSession, ids: Iterable[uuid.UUID | None]
) -> dict[uuid.UUID, str]:
    wanted = {i for i in ids if i is not None}
    if not wanted:
        return {}
    rows = await session.execute(select(Project.id, Project.name).where(Project.id.in_(wanted)))
    return {row[0]: row[1] for row in rows}


async def visible_project_choices(
    session: AsyncSession, principal: Principal
) -> list[tuple[uuid.UUID, str]]:
    """Every project the visitor sees, by name (for filters and selects)."""
    rows = await session.execute(
        select(Project.id, Project.name)
        .where(visible_projects(principal, Project.id))
        .order_by(func.lower(Project.name))
        .limit(500)
    )
    return [(row[0], row[1]) for row in rows]


async def visible_database_choices(
    session: AsyncSession, principal: Principal
) -> list[tuple[uuid.UUID, str, uuid.UUID, str]]:
    """``(id, name, project_id, engine)`` of every database the visitor sees."""
    rows = await session.execute(
        select(Database.id, Database.name, Database.project_id, Database.engine)
        .where(visible_projects(principal, Database.project_id))
        .order_by(func.lower(Database.name))
        .limit(1000)
    )
    return [(row[0], row[1], row[2], row[3].value) for row in rows]


async def active_runs(
    session: AsyncSession, scope: Scope, limit: int = 10
) -> tuple[list[Backup], list[Restore]]:
    """Backups and restores queued or running now, newest first."""
    backups = select(Backup).where(Backup.status.in_((BackupStatus.QUEUED, BackupStatus.RUNNING)))
    if not scope.unrestricted:
        backups = backups.where(_in_scope(scope))  # type: ignore[arg-type]
    restores = (
        select(Restore)
        .join(Database, Database.id == Restore.target_database_id)
        .where(Restore.status.in_(("queued", "running")), scope.where(Database.project_id))
    )
    found_backups = list(
        await session.scalars(backups.order_by(Backup.queued_at.desc()).limit(limit))
    )
    found_restores = list(
        await session.scalars(restores.order_by(Restore.queued_at.desc()).limit(limit))
    )
    return found_backups, found_restores
