"""``POST /backups/{id}/restore``, ``POST /databases/{id}/restore-upload``,
``POST /backups/{id}/verify`` and ``/restores``."""

from __future__ import annotations

import uuid
from typing import Any

from proto.jobs import RestoreRequested
from services.api.domain import restores as domain
from services.api.schemas.restores import (
    RestoreCreate,
    RestoreDetail,
    RestoreListQuery,
    RestoreOut,
    RestoreUploadQuery,
)
from services.api.web.endpoint import Call, Endpoints, NoBody, NoQuery
from services.api.web.errors import ApiError
from services.api.web.pagination import Page
from services.common.db.models import Restore

routes = Endpoints("restores")
UPLOAD_CHUNK = 1024 * 1024


def restore_out(restore: Restore) -> RestoreOut:
    out = RestoreOut.model_validate(restore)
    return out.model_copy(update={"purpose": domain.purpose_of(restore).value})


@routes.post("/backups/{id}/restore", body=RestoreCreate, response=RestoreOut, status=202,
             summary="Restore a backup into the same or another database (operator)",
             action="restore.create", errors=(403, 409, 503))  # fmt: skip
async def create_restore(call: Call[RestoreCreate, NoQuery]) -> RestoreOut:
    backup_id = call.path_uuid("id", "backup")
    body = call.body
    async with call.ctx.transaction() as session:
        restore, job = await domain.request_restore(
            session, call.principal, backup_id, target_database_id=body.target_database_id,
            target_name=body.target_database_name, mode=body.mode,
            confirm_overwrite_source=body.confirm_overwrite_source, no_owner=body.no_owner,
        )  # fmt: skip
    call.audit.target("restore", restore.id, job.project_id)
    call.audit.details.update(backup_id=str(backup_id), mode=body.mode.value,
                              target_database_id=str(job.target_database_id))  # fmt: skip
    await _queue(call, restore, job)
    return restore_out(restore)


@routes.post("/databases/{id}/restore-upload", query=RestoreUploadQuery, response=RestoreOut,
             status=202, action="restore.upload", errors=(403, 413, 503),
             raw_body="application/octet-stream",
             summary="Restore a dump file sent as the raw request body (operator); "
             "options in the query string")  # fmt: skip
async def upload_restore(call: Call[NoBody, RestoreUploadQuery]) -> RestoreOut:
    database_id = call.path_uuid("id", "database")
    q = call.query
    async with call.ctx.transaction() as session:
        database, name = await domain.check_upload_target(
            session, call.principal, database_id, target_name=q.target_database_name,
            confirm_overwrite_source=q.confirm_overwrite_source,
        )  # fmt: skip
    restore_id = uuid.uuid4()
    key = await domain.stage_upload(
        call.request.content.iter_chunked(UPLOAD_CHUNK), settings=call.ctx.settings,
        engine=database.engine.value, restore_id=restore_id,
        declared_size=call.request.content_length,
    )  # fmt: skip
    try:
        async with call.ctx.transaction() as session:
            database, _ = await domain.check_upload_target(
                session,
                call.principal,
                database_id,
                target_name=q.target_database_name,
                confirm_overwrite_source=q.confirm_overwrite_source,
            )  # fmt: skip (again: the upload took a while)
            restore, job = await domain.create_upload_restore(
                session, call.principal, database, restore_id=restore_id, key=key, name=name,
                mode=q.mode, no_owner=q.no_owner,
            )  # fmt: skip
    except BaseException:
        domain.remove_upload(call.ctx.settings, key)
        raise
    call.audit.target("restore", restore.id, job.project_id)
    call.audit.details.update(database_id=str(database_id), mode=q.mode.value, upload=True)
    try:
        await _queue(call, restore, job)
    except ApiError:
        domain.remove_upload(call.ctx.settings, key)
        raise
    return restore_out(restore)


@routes.post("/backups/{id}/verify", response=RestoreOut, status=202,
             summary="Verify a backup now: a test restore into a scratch database and a "
             "comparison with the counts recorded at backup time (operator)",
             action="backup.verify", errors=(403, 409, 503))  # fmt: skip
async def verify_backup(call: Call[NoBody, NoQuery]) -> RestoreOut:
    backup_id = call.path_uuid("id", "backup")
    async with call.ctx.transaction() as session:
        restore, job = await domain.request_verification(
            session, call.principal, backup_id, call.ctx.settings
        )
    call.audit.target("backup", backup_id, job.project_id)
    call.audit.details.update(restore_id=str(restore.id))
    await _queue(call, restore, job)
    return restore_out(restore)


async def _queue(call: Call[Any, Any], restore: Restore, job: RestoreRequested) -> None:
    try:
        await domain.send_job(call.ctx.nc, job)
    except ApiError:
        async with call.ctx.transaction() as session:
            await session.delete(await session.get(Restore, restore.id))
        raise


@routes.get(
    "/restores",
    query=RestoreListQuery,
    response=Page[RestoreOut],
    summary="List restores and verifications (filters: backup, target database, status)",
)
async def list_restores(call: Call[NoBody, RestoreListQuery]) -> Page[RestoreOut]:
    q = call.query
    async with call.ctx.transaction() as session:
        rows, cursor, total = await domain.list_restores(
            session, call.principal, q, backup_id=q.backup_id,
            target_database_id=q.target_database_id, status=q.status,
        )  # fmt: skip
    return Page[RestoreOut](items=[restore_out(r) for r in rows],
                            next_cursor=cursor, total=total)  # fmt: skip


@routes.get("/restores/{id}", response=RestoreDetail, summary="A restore, with its log")
async def get_restore(call: Call[NoBody, NoQuery]) -> RestoreDetail:
    restore_id = call.path_uuid("id", "restore")
    async with call.ctx.transaction() as session:
        restore = await domain.get_restore(session, call.principal, restore_id)
    return RestoreDetail.model_validate({**restore_out(restore).model_dump(),
                                         "log": restore.log_tail})  # fmt: skip
