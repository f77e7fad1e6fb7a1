"""Backups seen from the API: back up now, list and inspect runs, delete them with
their artifacts, and find the copy to download. Runs themselves are written by the
executor; the API only creates the queued row and the job."""

from __future__ import annotations

import contextlib
import logging
import uuid
from typing import Any, Final

from nats.aio.client import Client as NATS
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from proto.jobs import BackupRequested
from proto.values import Compression, Trigger
from services.api.auth.principal import Principal
from services.api.domain.access import require_role
from services.api.domain.databases import get_database
from services.api.web.errors import Conflict, ServiceUnavailable, ValidationFailed, not_found
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
from services.common.destinations import driver_for
from services.common.destinations.base import DestinationError, Driver
from services.common.streams import publish

log = logging.getLogger(__name__)
BACKUP = "backup"


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
