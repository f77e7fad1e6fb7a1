"""Backups seen from the API: back up now, list and inspect runs, delete them with
their artifacts, and find the copy to download. Runs themselves are written by the
executor; the API only creates the queued row and the job."""

from __future__ import annotations

import contextlib
import logging
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
from types import SimpleNamespace
from typing import Any, Final

from nats.aio.client import Client as NATS
from sqlalchemy import ColumnElement, Select, func, literal, select
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import aliased

from proto.jobs import BackupRequested
from proto.values import Compression, Trigger
from services.api.auth.principal import Principal
from services.api.domain.access import require_role, visible_projects
from services.api.domain.databases import get_database
from services.api.web.errors import Conflict, ServiceUnavailable, ValidationFailed, not_found
from services.api.web.pagination import PageQuery, after_cursor, cut, decode_cursor, keyset
from services.common.artifacts import (
    Removal,
    copies_with_destinations,
    deleted_events,
    remove_copies,
)
from services.common.db.enums import BackupStatus, CopyStatus, DestinationKind, ProjectRole
from services.common.db.models import (
    Backup,
    BackupCopy,
    Database,
    Destination,
    Schedule,
    schedule_destinations,
)
from services.common.db.types import UTCDateTime
from services.common.destinations import driver_for
from services.common.destinations.base import DestinationError, Driver
from services.common.streams import publish

log = logging.getLogger(__name__)
BACKUP = "backup"


@dataclass(frozen=True)
class Filters:
    project_id: uuid.UUID | None = None
    database_id: uuid.UUID | None = None
    schedule_id: uuid.UUID | None = None
    status: BackupStatus | None = None
    trigger: Trigger | None = None
    since: datetime | None = None
    until: datetime | None = None


async def queue_backup(
    session: AsyncSession,
    principal: Principal,
    database_id: uuid.UUID,
    *,
    destination_ids: list[uuid.UUID] | None,
    compression: Compression,
    timeout_s: int,
) -> tuple[Backup, BackupRequested]:
    """Create the queued row and the job (published by the caller after commit)."""
    database = await get_database(session, principal, database_id, ProjectRole.OPERATOR)
    destinations = await _destinations_for(session, database, destination_ids)
    backup = Backup(database_id=database.id, trigger=Trigger.MANUAL,
                    requested_by_id=principal.user_id)  # fmt: skip
    session.add(backup)
    await session.flush()
    job = BackupRequested(
        backup_id=backup.id, project_id=database.project_id, database_id=database.id,
        trigger=Trigger.MANUAL, requested_by=principal.user_id, timeout_s=timeout_s,
        compression=compression, destination_ids=tuple(destinations),
    )  # fmt: skip
    return backup, job


async def send_job(nc: NATS | None, job: BackupRequested) -> None:
    if nc is None or not nc.is_connected:
        raise ServiceUnavailable("the job queue (NATS) is unavailable; nothing was queued")
    try:
        await publish(nc, job)
    except Exception as exc:
        log.warning("could not queue backup %s: %s", job.backup_id, exc)
        raise ServiceUnavailable("the job queue refused the job; nothing was queued") from None


async def _destinations_for(
    session: AsyncSession, database: Database, wanted: list[uuid.UUID] | None
) -> list[uuid.UUID]:
    usable = select(Destination).where(
        Destination.enabled.is_(True),
        (Destination.project_id.is_(None)) | (Destination.project_id == database.project_id),
    )
    if wanted is not None:
        found = {d.id for d in await session.scalars(usable.where(Destination.id.in_(wanted)))}
        missing = {
            f"destination_ids.{i}": "no such enabled destination for this database's project"
            for i, destination_id in enumerate(wanted) if destination_id not in found
        }  # fmt: skip
        if missing:
            raise ValidationFailed("Some destinations cannot be used", fields=missing)
        return sorted(set(wanted))
    from_schedules = set(
        await session.scalars(
            select(schedule_destinations.c.destination_id)
            .join(Schedule, Schedule.id == schedule_destinations.c.schedule_id)
            .where(Schedule.database_id == database.id)
        )
    )
    if from_schedules:
        return sorted(from_schedules)
    local = list(await session.scalars(usable.where(Destination.kind == DestinationKind.LOCAL)
                                       .order_by(Destination.created_at)))  # fmt: skip
    if not local:
        message = "choose a destination: none is set up for this database's project"
        raise ValidationFailed(message, fields={"destination_ids": message})
    # The project's own destination first (it set one up on purpose), else a global one.
    own_first = sorted(local, key=lambda d: d.project_id is None)
    return [own_first[0].id]


# What a list shows: every column but the log tail and the manifest (the detail's).
LIST_COLUMNS: Final = tuple(
    getattr(Backup, name)
    for name in ("id", "database_id", "schedule_id", "trigger", "status", "slot_at",
                 "queued_at", "started_at", "finished_at", "attempts", "bytes_in", "bytes_out",
                 "sha256", "artifact_key", "compression", "error_code", "error_message",
                 "warning", "verified_at", "verify_status", "verify_message")
)  # fmt: skip
LIST_ORDER: Final = (Backup.queued_at, Backup.id)
# Built once: building a select of many columns, or an alias, costs per request.
_LISTED: Final = select(*LIST_COLUMNS)
_LISTED_WITH_PROJECT: Final = _LISTED.add_columns(Database.project_id).join(
    Database, Database.id == Backup.database_id
)
_RUN: Final = aliased(Backup, name="run")
EPOCH: Final = datetime(1970, 1, 1, tzinfo=UTC)


def _conditions(filters: Filters, run: Any = Backup) -> list[ColumnElement[bool]]:
    """The filters on the backups table itself (project and database are scoping);
    ``run``: the backups entity or an alias of it."""
    where: list[ColumnElement[bool]] = []
    if filters.schedule_id is not None:
        where.append(run.schedule_id == filters.schedule_id)
    if filters.status is not None:
        where.append(run.status == filters.status)
    if filters.trigger is not None:
        where.append(run.trigger == filters.trigger)
    if filters.since is not None:
        where.append(run.queued_at >= filters.since)
    if filters.until is not None:
        where.append(run.queued_at < filters.until)
    return where


async def list_backups(
    session: AsyncSession, principal: Principal, page: PageQuery, filters: Filters
) -> tuple[list[BackupRow], str | None, int | None]:
    """A page of backups the caller sees, newest first; ``total`` only when the list
    is one database's (an index count), as counting every backup would cost a scan
    per page."""
    where = _conditions(filters)
    if principal.acts_as_admin and filters.project_id is None and filters.database_id is None:
        stmt = keyset(_LISTED_WITH_PROJECT.where(*where), page, LIST_ORDER)
        rows, cursor = cut(list((await session.execute(stmt)).all()), page, LIST_ORDER)
        return [BackupRow(**row._mapping) for row in rows], cursor, None
    projects = await _visible_databases(session, principal, filters)
    if not projects:
        return [], None, 0 if filters.database_id is not None else None
    stmt = _merged(filters, list(projects), page)
    rows, cursor = cut(list((await session.execute(stmt)).all()), page, LIST_ORDER)
    total = None
    if filters.database_id is not None:
        total = await session.scalar(
            select(func.count())
            .select_from(Backup)
            .where(Backup.database_id.in_(list(projects)), *where)
        )
    listed = [BackupRow(**row._mapping, project_id=projects[row.database_id]) for row in rows]
    return listed, cursor, total


class BackupRow(SimpleNamespace):
    """A listed backup: its list columns as attributes, and ``project_id``."""


async def _visible_databases(
    session: AsyncSession, principal: Principal, filters: Filters
) -> dict[uuid.UUID, uuid.UUID]:
    """``{database id: project id}`` of the databases the list may show."""
    stmt = select(Database.id, Database.project_id).where(
        visible_projects(principal, Database.project_id)
    )
    if filters.project_id is not None:
        stmt = stmt.where(Database.project_id == filters.project_id)
    if filters.database_id is not None:
        stmt = stmt.where(Database.id == filters.database_id)
    return {row.id: row.project_id for row in await session.execute(stmt)}


def _merged(filters: Filters, database_ids: list[uuid.UUID], page: PageQuery) -> Select[Any]:
    """The newest rows of the databases a caller sees without sorting all their
    backups. Each database's own next page ends at some instant; the database whose
    page ends latest already has more than a page of rows from then on, so no row of
    the page is older than that instant. Reading only from then on touches at most a
    page (and its ties) per database through the (database, queued_at) index."""
    run = _RUN
    own = select(run.queued_at).where(run.database_id == Database.id, *_conditions(filters, run))
    if page.cursor:
        cursor = decode_cursor(page.cursor, (datetime, uuid.UUID))
        own = own.where(after_cursor((run.queued_at, run.id), cursor))
    own_last = (
        own.order_by(run.queued_at.desc()).limit(1).offset(page.limit)
        .correlate(Database).scalar_subquery()
    )  # fmt: skip
    latest = select(func.max(own_last)).where(Database.id.in_(database_ids)).scalar_subquery()
    # No database has a full page left: every row of theirs may be on the page.
    since = func.coalesce(latest, literal(EPOCH, UTCDateTime()))
    stmt = _LISTED.where(
        Backup.database_id.in_(database_ids), *_conditions(filters), Backup.queued_at >= since
    )
    return keyset(stmt, page, LIST_ORDER)


async def get_backup(
    session: AsyncSession, principal: Principal, backup_id: uuid.UUID,
    at_least: ProjectRole = ProjectRole.VIEWER,
) -> tuple[Backup, uuid.UUID]:  # fmt: skip
    """The backup and its project id, if the caller may see it with ``at_least``."""
    row = (
        await session.execute(
            select(Backup, Database.project_id)
            .join(Database, Database.id == Backup.database_id)
            .where(Backup.id == backup_id)
        )
    ).one_or_none()
    if row is None:
        raise not_found(BACKUP)
    backup, project_id = row[0], row[1]
    await require_role(session, principal, project_id, at_least, BACKUP)
    return backup, project_id


COPY_COLUMNS: Final = (
    BackupCopy.backup_id, BackupCopy.destination_id, BackupCopy.status,
    BackupCopy.size_bytes, BackupCopy.stored_at,
)  # fmt: skip


async def copies_of(
    session: AsyncSession, backup_ids: list[uuid.UUID]
) -> dict[uuid.UUID, list[Any]]:
    """Each backup's copies (rows): destination, status, size, when stored."""
    found: dict[uuid.UUID, list[Any]] = {i: [] for i in backup_ids}
    if backup_ids:
        stmt = (
            select(*COPY_COLUMNS).where(BackupCopy.backup_id.in_(backup_ids))
            .order_by(BackupCopy.destination_id)
        )  # fmt: skip
        for copy in await session.execute(stmt):
            found[copy.backup_id].append(copy)
    return found


async def readable_copy(session: AsyncSession, backup: Backup) -> tuple[Driver, str, int]:
    """A stored copy to read: its driver, key and size."""
    if backup.status is not BackupStatus.SUCCEEDED or backup.artifact_key is None:
        raise Conflict(f"this backup has no artifact to download (status {backup.status.value})")
    rows = (
        await session.execute(
            select(BackupCopy, Destination)
            .join(Destination, Destination.id == BackupCopy.destination_id)
            .where(BackupCopy.backup_id == backup.id, BackupCopy.status == CopyStatus.STORED)
            .order_by(Destination.created_at)
        )
    ).all()
    for copy, destination in ((row[0], row[1]) for row in rows):
        try:
            driver = driver_for(destination)
            info = await driver.stat(copy.artifact_key)
        except DestinationError:
            continue
        return driver, copy.artifact_key, info.size
    raise Conflict("no stored copy of this backup is readable right now")


async def delete_backup(
    session: AsyncSession, principal: Principal, backup_id: uuid.UUID
) -> tuple[Backup, uuid.UUID, Removal]:
    """Delete the artifacts (and manifests) of every copy, then the row."""
    backup, project_id = await get_backup(session, principal, backup_id, ProjectRole.OWNER)
    if backup.status in {BackupStatus.QUEUED, BackupStatus.RUNNING}:
        raise Conflict("this backup is still queued or running; wait for it to finish")
    removal = await remove_copies(await copies_with_destinations(session, backup.id))
    if removal.failed:
        destination, error = removal.failed[0]
        raise Conflict(f"cannot delete the copy on {destination.name}: {error}")
    await session.delete(backup)
    await session.flush()
    return backup, project_id, removal


async def announce_deleted(
    nc: NATS | None, backup: Backup, project_id: uuid.UUID, removal: Removal,
    deleted_by: uuid.UUID,
) -> None:  # fmt: skip
    if nc is None:
        return
    for event in deleted_events(backup, project_id, removal, row_deleted=True,
                                reason="deleted by a user", deleted_by=deleted_by):  # fmt: skip
        with contextlib.suppress(Exception):
            await publish(nc, event)
