"""Restores seen from the API: ask for one (checks, the queued row and the job) and
read their state. The executor does the work and writes the outcome."""

from __future__ import annotations

import uuid

from nats.aio.client import Client as NATS
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from proto.jobs import RestoreRequested
from services.api.auth.principal import Principal
from services.api.domain.access import require_role, visible_projects
from services.api.domain.backups import get_backup
from services.api.domain.databases import get_database
from services.api.web.errors import Conflict, ServiceUnavailable, ValidationFailed, not_found
from services.api.web.pagination import PageQuery, paginate
from services.common.db.enums import BackupStatus, ProjectRole, RestoreMode
from services.common.db.models import Database, Restore
from services.common.streams import publish

RESTORE = "restore"


async def request_restore(
    session: AsyncSession,
    principal: Principal,
    backup_id: uuid.UUID,
    *,
    target_database_id: uuid.UUID | None,
    target_name: str | None,
    mode: RestoreMode,
    confirm_overwrite_source: bool,
    no_owner: bool,
) -> tuple[Restore, RestoreRequested]:
    backup, project_id = await get_backup(session, principal, backup_id, ProjectRole.OPERATOR)
    if backup.status is not BackupStatus.SUCCEEDED:
        raise Conflict(
            f"only a successful backup can be restored (this one is {backup.status.value})"
        )
    target = await get_database(
        session, principal, target_database_id or backup.database_id, ProjectRole.OPERATOR
    )
    source = await session.get(Database, backup.database_id)
    assert source is not None
    if target.engine is not source.engine and {target.engine.value, source.engine.value} != {
        "mysql", "mariadb"
    }:  # fmt: skip
        raise ValidationFailed(
            f"a {source.engine.value} backup cannot be restored into a {target.engine.value} "
            "database", fields={"target_database_id": "engine differs from the backup's"},
        )  # fmt: skip
    name = target_name or target.database_name
    # The same server and database name, through whichever row it is reached.
    here = (target.host, target.port, name)
    over_source = here == (source.host, source.port, source.database_name)
    if over_source and not confirm_overwrite_source:
        raise ValidationFailed(
            "this restore would write over the database the backup came from",
            fields={"confirm_overwrite_source": "set to true to restore over the source"},
        )
    restore = Restore(backup_id=backup.id, target_database_id=target.id, target_name=name,
                      mode=mode, requested_by_id=principal.user_id)  # fmt: skip
    session.add(restore)
    await session.flush()
    job = RestoreRequested(
        restore_id=restore.id, project_id=project_id, backup_id=backup.id,
        target_database_id=target.id, target_database_name=name, mode=mode,
        no_owner=no_owner, requested_by=principal.user_id,
    )  # fmt: skip
    return restore, job


async def send_job(nc: NATS | None, job: RestoreRequested) -> None:
    if nc is None or not nc.is_connected:
        raise ServiceUnavailable("the job queue (NATS) is unavailable; nothing was queued")
    try:
        await publish(nc, job)
    except Exception:
        raise ServiceUnavailable("the job queue refused the job; nothing was queued") from None


async def list_restores(
    session: AsyncSession, principal: Principal, page: PageQuery, *,
    backup_id: uuid.UUID | None, target_database_id: uuid.UUID | None, status: object,
) -> tuple[list[Restore], str | None, int | None]:  # fmt: skip
    stmt = (
        select(Restore)
        .join(Database, Database.id == Restore.target_database_id)
        .where(visible_projects(principal, Database.project_id))
    )
    if backup_id is not None:
        stmt = stmt.where(Restore.backup_id == backup_id)
    if target_database_id is not None:
        stmt = stmt.where(Restore.target_database_id == target_database_id)
    if status is not None:
        stmt = stmt.where(Restore.status == status)
    return await paginate(session, stmt, page, order=(Restore.queued_at, Restore.id))


async def get_restore(
    session: AsyncSession, principal: Principal, restore_id: uuid.UUID
) -> Restore:
    row = (
        await session.execute(
            select(Restore, Database.project_id)
            .join(Database, Database.id == Restore.target_database_id)
            .where(Restore.id == restore_id)
        )
    ).one_or_none()
    if row is None:
        raise not_found(RESTORE)
    await require_role(session, principal, row[1], ProjectRole.VIEWER, RESTORE)
    restore: Restore = row[0]
    return restore
