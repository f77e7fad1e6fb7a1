"""The dashboard and storage numbers, scoped to what the caller may see.

Every number is aggregated in SQL with a fixed number of queries, whatever the
number of projects, databases or backups; only cron arithmetic (overdue, next runs)
happens in Python, once per enabled schedule and cached per expression.
"""

from __future__ import annotations

import uuid
from collections.abc import Hashable
from dataclasses import dataclass
from datetime import datetime, timedelta
from functools import lru_cache
from itertools import pairwise
from typing import Any

from sqlalchemy import ColumnElement, Select, case, func, select, true
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import InstrumentedAttribute, aliased

from services.api.auth.principal import Principal
from services.api.domain.access import require_role, visible_projects
from services.api.schemas.stats import (
    Counts,
    Dashboard,
    DatabaseStorage,
    DestinationStorage,
    LastSuccess,
    NextRun,
    NextRunSource,
    OverdueDatabase,
    ProjectStorage,
    StatusCounts,
    StorageStats,
    StorageUse,
    Window,
    WindowStats,
)
from services.common.cron import CronError, next_slots
from services.common.db.enums import BackupStatus, CopyStatus, ProjectRole, VerifyStatus
from services.common.db.models import (
    Backup,
    BackupCopy,
    Database,
    Destination,
    Project,
    Schedule,
    SchedulerCursor,
)
from services.common.destinations.space import free_space
from services.common.settings import Settings

WINDOWS: tuple[tuple[Window, timedelta], ...] = (
    ("24h", timedelta(hours=24)),
    ("7d", timedelta(days=7)),
    ("30d", timedelta(days=30)),
)
LIST_LIMIT = 200
OVERDUE_FACTOR = 2
# Slots looked at to find a schedule's interval: more than a week of a weekday cron.
INTERVAL_SAMPLE = 8


@dataclass(frozen=True)
class Scope:
    """Which projects count: one project, every visible one, or all (an admin)."""

    principal: Principal
    project_id: uuid.UUID | None

    @property
    def unrestricted(self) -> bool:
        return self.project_id is None and self.principal.acts_as_admin

    def where(self, column: InstrumentedAttribute[uuid.UUID]) -> ColumnElement[bool]:
        if self.project_id is not None:
            return column == self.project_id
        if self.unrestricted:
            return true()
        return visible_projects(self.principal, column)


def scope_key(principal: Principal) -> Hashable:
    """What decides which projects a caller's numbers count (a cache key)."""
    if principal.acts_as_admin:
        return "admin"
    return (principal.user_id, principal.token_project_id, principal.token_role)


async def scope_for(
    session: AsyncSession, principal: Principal, project_id: uuid.UUID | None
) -> Scope:
    if project_id is not None:
        await require_role(session, principal, project_id, ProjectRole.VIEWER, "project")
    return Scope(principal, project_id)


# -- dashboard ---------------------------------------------------------------------


async def dashboard(
    session: AsyncSession,
    principal: Principal,
    project_id: uuid.UUID | None,
    *,
    now: datetime,
    next_runs: int,
) -> Dashboard:
    scope = await scope_for(session, principal, project_id)
    schedules = await _enabled_schedules(session, scope)
    return Dashboard(
        generated_at=now,
        project_id=project_id,
        counts=await _counts(session, scope),
        windows=await _windows(session, scope, now),
        last_success=await _last_successes(session, scope),
        overdue=_overdue(schedules, now)[:LIST_LIMIT],
        next_runs=_next_runs(schedules, now, next_runs),
    )


async def _counts(session: AsyncSession, scope: Scope) -> Counts:
    def count(stmt: Select[Any]) -> Any:
        return stmt.scalar_subquery()

    schedules = select(func.count()).select_from(Schedule).join(Database)
    row = (
        await session.execute(
            select(
                count(select(func.count()).select_from(Project).where(scope.where(Project.id))),
                count(
                    select(func.count())
                    .select_from(Database)
                    .where(scope.where(Database.project_id))
                ),
                count(schedules.where(scope.where(Database.project_id))),
                count(
                    schedules.where(scope.where(Database.project_id), Schedule.enabled.is_(True))
                ),
            )
        )
    ).one()
    return Counts(projects=row[0], databases=row[1], schedules=row[2], schedules_enabled=row[3])


async def _windows(session: AsyncSession, scope: Scope, now: datetime) -> list[WindowStats]:
    """Backups per (window, status), from one pass over the widest window's queued_at
    range: each row falls in the narrowest window it belongs to, and wider windows
    add up the narrower ones. (Grouping by status first would make SQLite walk the
    status index over every backup instead.)"""
    starts = [(name, now - span) for name, span in WINDOWS]
    bucket = case(
        *((Backup.queued_at >= since, index) for index, (_, since) in enumerate(starts[:-1])),
        else_=len(starts) - 1,
    ).label("bucket")
    stmt = (
        select(bucket, Backup.status, func.count())
        .where(Backup.queued_at >= starts[-1][1])
        .group_by(bucket, Backup.status)
    )
    if not scope.unrestricted:
        databases = select(Database.id).where(scope.where(Database.project_id))
        stmt = stmt.where(Backup.database_id.in_(databases))
    per_bucket: list[dict[str, int]] = [{} for _ in starts]
    for index, status, count in await session.execute(stmt):
        per_bucket[index][BackupStatus(status).value] = count
    windows: list[WindowStats] = []
    running: dict[str, int] = {}
    for (name, since), counts in zip(starts, per_bucket, strict=True):
        for status, count in counts.items():
            running[status] = running.get(status, 0) + count
        windows.append(_window_stats(name, since, dict(running)))
    return windows


def _window_stats(name: Window, since: datetime, counts: dict[str, int]) -> WindowStats:
    succeeded = counts.get(BackupStatus.SUCCEEDED.value, 0)
    judged = succeeded + counts.get(BackupStatus.FAILED.value, 0)
    return WindowStats(
        window=name,
        since=since,
        total=sum(counts.values()),
        by_status=StatusCounts.model_validate(counts),
        success_rate=round(succeeded / judged, 4) if judged else None,
    )


_RUN = aliased(Backup, name="run")


def _latest_success_id() -> Any:
    """The newest successful backup of the database of the enclosing query (one
    walk back along the (database_id, started_at) index)."""
    run = _RUN  # built once: aliasing an entity is costly per request
    return (
        select(run.id)
        .where(run.database_id == Database.id, run.status == BackupStatus.SUCCEEDED)
        .order_by(run.started_at.desc(), run.id.desc())
        .limit(1)
        .correlate(Database)
        .scalar_subquery()
    )


_VERIFIED = aliased(Backup, name="verified")
_VRUN = aliased(Backup, name="vrun")


def _latest_verified_id() -> Any:
    """The newest backup of the enclosing query's database whose verification passed."""
    run = _VRUN
    return (
        select(run.id)
        .where(run.database_id == Database.id, run.verify_status == VerifyStatus.PASSED)
        .order_by(run.verified_at.desc(), run.id.desc())
        .limit(1)
        .correlate(Database)
        .scalar_subquery()
    )


async def _last_successes(session: AsyncSession, scope: Scope) -> list[LastSuccess]:
    stmt = (
        select(
            Database.project_id.label("project_id"),
            Database.id.label("database_id"),
            Database.name.label("database_name"),
            Backup.id.label("backup_id"),
            Backup.finished_at.label("finished_at"),
            Backup.bytes_out.label("size_bytes"),
            _VERIFIED.id.label("verified_backup_id"),
            _VERIFIED.verified_at.label("verified_at"),
        )
        .select_from(Database)
        .outerjoin(Backup, Backup.id == _latest_success_id())
        .outerjoin(_VERIFIED, _VERIFIED.id == _latest_verified_id())
        .where(scope.where(Database.project_id))
        .order_by(Database.name, Database.id)
        .limit(LIST_LIMIT)
    )
    return [LastSuccess(**row._mapping) for row in await session.execute(stmt)]


@dataclass(frozen=True)
class _Enabled:
    project_id: uuid.UUID
    database_id: uuid.UUID
    database_name: str
    schedule_id: uuid.UUID
    schedule_name: str
    cron: str
    timezone: str
    changed_at: datetime
    last_success_at: datetime | None
    next_slot_at: datetime | None


async def _enabled_schedules(session: AsyncSession, scope: Scope) -> list[_Enabled]:
    last = Backup.__table__.alias("last_success")
    stmt = (
        select(
            Database.project_id,
            Database.id,
            Database.name,
            Schedule.id,
            Schedule.name,
            Schedule.cron,
            Schedule.timezone,
            Schedule.updated_at,
            last.c.finished_at,
            SchedulerCursor.next_slot_at,
        )
        .join(Database, Database.id == Schedule.database_id)
        .outerjoin(last, last.c.id == _latest_success_id())
        .outerjoin(SchedulerCursor, SchedulerCursor.schedule_id == Schedule.id)
        .where(Schedule.enabled.is_(True), scope.where(Database.project_id))
    )
    return [_Enabled(*row) for row in await session.execute(stmt)]


def _overdue(schedules: list[_Enabled], now: datetime) -> list[OverdueDatabase]:
    """Per database, its most overdue enabled schedule (if any is overdue)."""
    worst: dict[uuid.UUID, OverdueDatabase] = {}
    for item in schedules:
        interval = schedule_interval(item.cron, item.timezone, _hour(now))
        if interval is None:
            continue
        reference = max(item.changed_at, item.last_success_at or item.changed_at)
        due = reference + OVERDUE_FACTOR * interval
        if due >= now:
            continue
        known = worst.get(item.database_id)
        if known is None or due < known.overdue_since:
            worst[item.database_id] = OverdueDatabase(
                project_id=item.project_id,
                database_id=item.database_id,
                database_name=item.database_name,
                schedule_id=item.schedule_id,
                schedule_name=item.schedule_name,
                cron=item.cron,
                timezone=item.timezone,
                interval_s=int(interval.total_seconds()),
                last_success_at=item.last_success_at,
                overdue_since=due,
            )
    return sorted(worst.values(), key=lambda o: (o.overdue_since, o.database_name))


def _next_runs(schedules: list[_Enabled], now: datetime, limit: int) -> list[NextRun]:
    upcoming: list[tuple[datetime, str, uuid.UUID, NextRunSource, _Enabled]] = []
    for item in schedules:
        at = item.next_slot_at
        source: NextRunSource = "scheduler"
        if at is None:
            at, source = next_slot(item.cron, item.timezone, now), "cron"
        if at is not None:
            upcoming.append((at, item.schedule_name, item.schedule_id, source, item))
    upcoming.sort(key=lambda run: run[:3])
    return [
        NextRun(
            project_id=item.project_id,
            database_id=item.database_id,
            database_name=item.database_name,
            schedule_id=item.schedule_id,
            schedule_name=item.schedule_name,
            at=at,
            source=source,
        )
        for at, _, _, source, item in upcoming[:limit]
    ]


def _hour(now: datetime) -> datetime:
    return now.replace(minute=0, second=0, microsecond=0)


@lru_cache(maxsize=4096)
def schedule_interval(expr: str, tz: str, hour: datetime) -> timedelta | None:
    """The longest gap between the next few slots of a cron (None if it is invalid
    or never fires); cached per hour, as irregular crons drift slowly."""
    slots = _next_slots(expr, tz, hour, INTERVAL_SAMPLE)
    gaps = [b - a for a, b in pairwise(slots)]
    return max(gaps) if gaps else None


def next_slot(expr: str, tz: str, now: datetime) -> datetime | None:
    slots = _next_slots(expr, tz, now, 1)
    return slots[0] if slots else None


def _next_slots(expr: str, tz: str, after: datetime, count: int) -> list[datetime]:
    """The next ``count`` slots (UTC) of a stored schedule; empty when the stored
    expression or zone is no longer valid (the API validates both on the way in, so
    this only guards against rows written otherwise)."""
    try:
        return [slot.utc for slot in next_slots(expr, tz, after, count)]
    except CronError:
        return []


# -- storage -----------------------------------------------------------------------


async def storage(
    session: AsyncSession,
    principal: Principal,
    project_id: uuid.UUID | None,
    *,
    now: datetime,
    settings: Settings,
) -> StorageStats:
    """One aggregate over the copies in scope, grouped by (database, destination,
    state); totals per project, database and destination are summed from it. Stored
    copies count in bytes and copies; missing and corrupt ones are counted apart."""
    scope = await scope_for(session, principal, project_id)
    grouped = (
        select(
            Backup.database_id,
            BackupCopy.destination_id,
            BackupCopy.status,
            func.sum(func.coalesce(BackupCopy.size_bytes, Backup.bytes_out)).label("size"),
            func.count().label("copies"),
        )
        .select_from(BackupCopy)
        .join(Backup, Backup.id == BackupCopy.backup_id)
        .where(BackupCopy.status.in_(COUNTED))
        .group_by(Backup.database_id, BackupCopy.destination_id, BackupCopy.status)
    )
    if not scope.unrestricted:
        databases = select(Database.id).where(scope.where(Database.project_id))
        grouped = grouped.where(Backup.database_id.in_(databases))
    usage = grouped.subquery()
    rows = await session.execute(
        select(usage, Database.name, Database.project_id, Project.name, Project.slug,
               Destination.name, Destination.kind, Destination.project_id)
        .join(Database, Database.id == usage.c.database_id)
        .join(Project, Project.id == Database.project_id)
        .join(Destination, Destination.id == usage.c.destination_id)
    )  # fmt: skip
    projects: dict[uuid.UUID, ProjectStorage] = {}
    per_database: dict[uuid.UUID, DatabaseStorage] = {}
    destinations: dict[uuid.UUID, DestinationStorage] = {}
    total = StorageUse(size_bytes=0, copies=0)
    for row in rows:
        (db_id, dest_id, status, size, copies, db_name, pid, p_name, slug, d_name, kind,
         d_project) = row  # fmt: skip
        uses = (
            projects.setdefault(pid, ProjectStorage(
                project_id=pid, project_name=p_name, project_slug=slug, size_bytes=0, copies=0,
            )),
            per_database.setdefault(db_id, DatabaseStorage(
                project_id=pid, database_id=db_id, database_name=db_name, size_bytes=0,
                copies=0,
            )),
            destinations.setdefault(dest_id, DestinationStorage(
                destination_id=dest_id, destination_name=d_name, kind=kind,
                shared=d_project is None, size_bytes=0, copies=0,
            )),
            total,
        )  # fmt: skip
        for use in uses:
            _count(use, CopyStatus(status), int(size or 0), copies)
    await _add_free_space(session, destinations, settings)
    return StorageStats(
        generated_at=now,
        project_id=project_id,
        total=total,
        projects=sorted(projects.values(), key=lambda p: (-p.size_bytes, p.project_name)),
        databases=sorted(per_database.values(), key=lambda d: (-d.size_bytes, d.database_name))[
            :LIST_LIMIT
        ],
        destinations=sorted(
            destinations.values(), key=lambda d: (-d.size_bytes, d.destination_name)
        ),
    )


COUNTED = (CopyStatus.STORED, CopyStatus.MISSING, CopyStatus.CORRUPT)


async def _add_free_space(
    session: AsyncSession, found: dict[uuid.UUID, DestinationStorage], settings: Settings
) -> None:
    """The device's free space for each local destination listed."""
    if not found:
        return
    for destination in await session.scalars(
        select(Destination).where(Destination.id.in_(list(found)))
    ):
        space = await free_space(destination, settings)
        if space is not None:
            use = found[destination.id]
            use.free_bytes, use.total_bytes, use.low_space = (
                space.free_bytes, space.total_bytes, space.low
            )  # fmt: skip


def _count(use: StorageUse, status: CopyStatus, size: int, copies: int) -> None:
    if status is CopyStatus.STORED:
        use.size_bytes += size
        use.copies += copies
    elif status is CopyStatus.MISSING:
        use.missing += copies
    else:
        use.corrupt += copies
