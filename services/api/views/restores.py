"""``POST /backups/{id}/restore`` and ``/restores``."""

from __future__ import annotations

from services.api.domain import restores as domain
from services.api.schemas.restores import RestoreCreate, RestoreDetail, RestoreListQuery, RestoreOut
from services.api.web.endpoint import Call, Endpoints, NoBody, NoQuery
from services.api.web.errors import ApiError
from services.api.web.pagination import Page
from services.common.db.models import Restore

routes = Endpoints("restores")


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
    try:
        await domain.send_job(call.ctx.nc, job)
    except ApiError:
        async with call.ctx.transaction() as session:
            await session.delete(await session.get(Restore, restore.id))
        raise
    return RestoreOut.model_validate(restore)


@routes.get(
    "/restores",
    query=RestoreListQuery,
    response=Page[RestoreOut],
    summary="List restores (filters: backup, target database, status)",
)
async def list_restores(call: Call[NoBody, RestoreListQuery]) -> Page[RestoreOut]:
    q = call.query
    async with call.ctx.transaction() as session:
        rows, cursor, total = await domain.list_restores(
            session, call.principal, q, backup_id=q.backup_id,
            target_database_id=q.target_database_id, status=q.status,
        )  # fmt: skip
    return Page[RestoreOut](items=[RestoreOut.model_validate(r) for r in rows],
                            next_cursor=cursor, total=total)  # fmt: skip


@routes.get("/restores/{id}", response=RestoreDetail, summary="A restore, with its log")
async def get_restore(call: Call[NoBody, NoQuery]) -> RestoreDetail:
    restore_id = call.path_uuid("id", "restore")
    async with call.ctx.transaction() as session:
        restore = await domain.get_restore(session, call.principal, restore_id)
    return RestoreDetail.model_validate({**RestoreOut.model_validate(restore).model_dump(),
                                         "log": restore.log_tail})  # fmt: skip
