"""Backups: list with filters, detail with live progress, download, delete, restore."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta
from pathlib import PurePosixPath
from typing import Any

from aiohttp import web
from sqlalchemy import select

from services.api.domain import backup_list
from services.api.domain import backups as domain
from services.api.domain import restores as restore_domain
from services.api.domain.access import RANK, roles_in
from services.api.pages.audit import audited
from services.api.pages.common import (
    confirm_page,
    context,
    page_query,
    path_uuid,
    principal,
    query_uuid,
    redirect,
)
from services.api.pages.flash import flash
from services.api.pages.forms import Form, parse
from services.api.pages.queries import visible_database_choices, visible_project_choices
from services.api.pages.render import render
from services.api.schemas.restores import RestoreCreate
from services.api.web.errors import ApiError, ValidationFailed
from services.api.web.pagination import PageQuery
from services.common.db.enums import BackupStatus, BackupTrigger, ProjectRole
from services.common.db.models import Database, Destination, Restore, Schedule

routes = web.RouteTableDef()
STATUSES = [s.value for s in BackupStatus]
TRIGGERS = [t.value for t in BackupTrigger]
SQL_FAMILY = {"mysql", "mariadb"}


def _day(text: str, *, end: bool = False) -> datetime | None:
    try:
        day = datetime.strptime(text, "%Y-%m-%d").replace(tzinfo=UTC)
    except ValueError:
        return None
    return day + timedelta(days=1) if end else day


@routes.get("/backups")
async def list_backups(request: web.Request) -> web.Response:
    ctx = context(request)
    who = principal(request)
    q = request.query
    filters = backup_list.Filters(
        project_id=query_uuid(request, "project"),
        database_id=query_uuid(request, "database"),
        schedule_id=query_uuid(request, "schedule"),
        status=BackupStatus(q["status"]) if q.get("status") in STATUSES else None,
        trigger=BackupTrigger(q["trigger"]) if q.get("trigger") in TRIGGERS else None,
        since=_day(q.get("since", "")),
        until=_day(q.get("until", ""), end=True),
    )
    async with ctx.transaction() as session:
        page = page_query(request)
        rows, cursor, total = await backup_list.list_backups(session, who, page, filters)
        projects = await visible_project_choices(session, who)
        databases = await visible_database_choices(session, who)
    kept = {
        k: q[k]
        for k in ("project", "database", "schedule", "status", "trigger", "since", "until")
        if q.get(k)
    }
    base = "/backups" + ("?" + "&".join(f"{k}={v}" for k, v in kept.items()) if kept else "")
    return render(
        request,
        "backups/list.html",
        {
            "backups": rows,
            "projects": projects,
            "databases": databases,
            "names": {d[0]: d[1] for d in databases},
            "q": q,
            "statuses": STATUSES,
            "triggers": TRIGGERS,
            "next_cursor": cursor,
            "total": total,
            "base": base,
            "has_previous": bool(q.get("cursor")),
            "filtered": bool(kept),
        },
    )


@routes.get("/backups/{id}")
async def show_backup(request: web.Request) -> web.Response:
    ctx = context(request)
    who = principal(request)
    backup_id = path_uuid(request, "id", "backup")
    async with ctx.transaction() as session:
        backup, project_id = await domain.get_backup(session, who, backup_id)
        role = (await roles_in(session, who, [project_id]))[project_id]
        copies = (await domain.copies_of(session, [backup.id]))[backup.id]
        database = await session.get(Database, backup.database_id)
        schedule = await session.get(Schedule, backup.schedule_id) if backup.schedule_id else None
        destinations = {
            d.id: d.name
            for d in await session.scalars(
                select(Destination).where(Destination.id.in_([c.destination_id for c in copies]))
            )
        }
        restores, _, _ = await restore_domain.list_restores(
            session,
            who,
            PageQuery(limit=10),
            backup_id=backup.id,
            target_database_id=None,
            status=None,
        )
    duration = None
    if backup.started_at and backup.finished_at:
        duration = (backup.finished_at - backup.started_at).total_seconds()
    return render(
        request,
        "backups/detail.html",
        {
            "backup": backup,
            "project_id": project_id,
            "role": role.value,
            "copies": copies,
            "database": database,
            "schedule": schedule,
            "destinations": destinations,
            "restores": restores,
            "duration": duration,
            "live": backup.status in {BackupStatus.QUEUED, BackupStatus.RUNNING},
            "filename": PurePosixPath(backup.artifact_key).name if backup.artifact_key else None,
        },
    )


@routes.get("/backups/{id}/download")
async def download(request: web.Request) -> web.StreamResponse:
    """The artifact, streamed after the same checks as the API's download."""
    ctx = context(request)
    backup_id = path_uuid(request, "id", "backup")
    async with ctx.transaction() as session:
        backup, _ = await domain.get_backup(session, principal(request), backup_id)
        driver, key, size = await domain.readable_copy(session, backup)
    response = web.StreamResponse()
    response.content_type = "application/octet-stream"
    response.content_length = size
    response.headers["Content-Disposition"] = f'attachment; filename="{PurePosixPath(key).name}"'
    if backup.sha256:
        response.headers["X-Checksum-SHA256"] = backup.sha256
    await response.prepare(request)
    async for chunk in driver.read(key, start=0, end=size):
        await response.write(chunk)
    await response.write_eof()
    return response


@routes.get("/backups/{id}/delete")
async def confirm_delete(request: web.Request) -> web.Response:
    ctx = context(request)
    backup_id = path_uuid(request, "id", "backup")
    async with ctx.transaction() as session:
        backup, _ = await domain.get_backup(
            session, principal(request), backup_id, ProjectRole.OWNER
        )
    return confirm_page(
        request,
        title="Delete this backup?",
        message="Its artifact is deleted from every destination; this cannot be undone.",
        details=[
            ("Queued", backup.queued_at.strftime("%Y-%m-%d %H:%M UTC")),
            ("Status", backup.status.value),
            ("Artifact", backup.artifact_key or "—"),
        ],
        action=f"/backups/{backup_id}/delete",
        button="Delete backup",
        cancel=f"/backups/{backup_id}",
    )


@routes.post("/backups/{id}/delete")
async def delete_backup(request: web.Request) -> web.StreamResponse:
    ctx = context(request)
    who = principal(request)
    backup_id = path_uuid(request, "id", "backup")
    async with audited(request, "backup.delete") as note:
        note.target("backup", backup_id)
        async with ctx.transaction() as session:
            backup, project_id, removed = await domain.delete_backup(session, who, backup_id)
        note.target("backup", backup_id, project_id)
        note.details["artifact_key"] = backup.artifact_key
    await domain.announce_deleted(ctx.nc, backup, project_id, removed, who.user_id)
    flash(request, "success", "Backup deleted, with its artifact.")
    return redirect(f"/databases/{backup.database_id}")


# -- restore ------------------------------------------------------------------------------


async def _restore_page(
    request: web.Request, backup_id: uuid.UUID, form: Form | None = None, status: int = 200
) -> web.Response:
    ctx = context(request)
    who = principal(request)
    async with ctx.transaction() as session:
        backup, project_id = await domain.get_backup(session, who, backup_id, ProjectRole.OPERATOR)
        source = await session.get(Database, backup.database_id)
        assert source is not None
        choices = await visible_database_choices(session, who)
        roles = await roles_in(session, who, list({c[2] for c in choices}))
    family = SQL_FAMILY if source.engine.value in SQL_FAMILY else {source.engine.value}
    targets = [
        (str(i), f"{name} ({engine})")
        for i, name, project, engine in choices
        if engine in family
        and RANK.get(roles.get(project, ProjectRole.VIEWER), 0) >= RANK[ProjectRole.OPERATOR]
    ]
    if form is None:
        stamp = backup.queued_at.strftime("%Y%m%d_%H%M")
        form = Form(
            {
                "target_database_id": str(source.id),
                "mode": "into-empty",
                "target_database_name": f"{source.database_name}_restored_{stamp}",
            }
        )
    return render(
        request,
        "backups/restore.html",
        {
            "backup": backup,
            "source": source,
            "targets": targets,
            "form": form,
            "project_id": project_id,
        },
        status=status,
    )


@routes.get("/backups/{id}/restore")
async def restore_form(request: web.Request) -> web.Response:
    return await _restore_page(request, path_uuid(request, "id", "backup"))


@routes.post("/backups/{id}/restore")
async def restore(request: web.Request) -> web.StreamResponse:
    backup_id = path_uuid(request, "id", "backup")
    form = await Form.read(request)
    try:
        body = parse(
            RestoreCreate,
            {
                "target_database_id": form.optional("target_database_id"),
                "target_database_name": form.optional("target_database_name"),
                "mode": form.raw("mode") or "into-empty",
                "confirm_overwrite_source": form.checked("confirm_overwrite_source"),
                "no_owner": form.checked("no_owner"),
            },
        )
        if not form.checked("confirm"):
            raise _unconfirmed()
        restore_id = await _start_restore(request, backup_id, body)
    except ApiError as exc:
        if exc.status in {403, 404}:
            raise
        form.fail(exc)
        return await _restore_page(request, backup_id, form, status=exc.status)
    flash(request, "success", "Restore queued. This page follows its progress.")
    return redirect(f"/restores/{restore_id}")


def _unconfirmed() -> ApiError:
    return ValidationFailed(
        "Confirm the restore first",
        fields={"confirm": "tick this box to confirm where the backup is restored"},
    )


async def _start_restore(request: web.Request, backup_id: uuid.UUID, body: Any) -> uuid.UUID:
    ctx = context(request)
    async with audited(request, "restore.create") as note:
        async with ctx.transaction() as session:
            restore, job = await restore_domain.request_restore(
                session,
                principal(request),
                backup_id,
                target_database_id=body.target_database_id,
                target_name=body.target_database_name,
                mode=body.mode,
                confirm_overwrite_source=body.confirm_overwrite_source,
                no_owner=body.no_owner,
            )
        note.target("restore", restore.id, job.project_id)
        note.details.update(
            backup_id=str(backup_id),
            mode=body.mode.value,
            target_database_id=str(job.target_database_id),
        )
        try:
            await restore_domain.send_job(ctx.nc, job)
        except ApiError:
            async with ctx.transaction() as session:
                await session.delete(await session.get(Restore, restore.id))
            raise
    return restore.id
