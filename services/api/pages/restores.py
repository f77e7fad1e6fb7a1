"""Restores: list and detail (with live progress while one runs)."""

from __future__ import annotations

from aiohttp import web

from services.api.domain import restores as domain
from services.api.domain.backups import get_backup
from services.api.pages.common import context, page_query, path_uuid, principal, query_uuid
from services.api.pages.queries import database_names
from services.api.pages.render import render
from services.api.web.errors import ApiError
from services.common.db.enums import RestoreStatus

routes = web.RouteTableDef()
STATUSES = [s.value for s in RestoreStatus]


@routes.get("/restores")
async def list_restores(request: web.Request) -> web.Response:
    ctx = context(request)
    who = principal(request)
    state = request.query.get("status", "")
    status = RestoreStatus(state) if state in STATUSES else None
    backup_id = query_uuid(request, "backup")
    async with ctx.transaction() as session:
        rows, cursor, total = await domain.list_restores(
            session,
            who,
            page_query(request),
            backup_id=backup_id,
            target_database_id=None,
            status=status,
        )
        names = await database_names(session, [r.target_database_id for r in rows])
    query = "&".join(f"{k}={v}" for k, v in (("status", state), ("backup", backup_id or "")) if v)
    return render(
        request,
        "restores/list.html",
        {
            "restores": rows,
            "names": names,
            "status": state,
            "statuses": STATUSES,
            "next_cursor": cursor,
            "total": total,
            "has_previous": bool(request.query.get("cursor")),
            "base": "/restores" + (f"?{query}" if query else ""),
            "filtered": bool(query),
        },
    )


@routes.get("/restores/{id}")
async def show_restore(request: web.Request) -> web.Response:
    ctx = context(request)
    who = principal(request)
    restore_id = path_uuid(request, "id", "restore")
    async with ctx.transaction() as session:
        restore = await domain.get_restore(session, who, restore_id)
        names = await database_names(session, [restore.target_database_id])
        backup = None
        if restore.backup_id is not None:
            try:
                backup, _ = await get_backup(session, who, restore.backup_id)
            except ApiError:
                backup = None
        source = await database_names(session, [backup.database_id if backup else None])
    duration = None
    if restore.started_at and restore.finished_at:
        duration = (restore.finished_at - restore.started_at).total_seconds()
    return render(
        request,
        "restores/detail.html",
        {
            "restore": restore,
            "target": names.get(restore.target_database_id) if restore.target_database_id else None,
            "backup": backup,
            "source": source.get(backup.database_id) if backup else None,
            "duration": duration,
            "live": restore.status in {RestoreStatus.QUEUED, RestoreStatus.RUNNING},
        },
    )
