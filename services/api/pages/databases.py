"""Databases: list with their last backup, detail, create and edit (engine-specific
fields; the password is never shown back), delete, test connection, back up now."""

from __future__ import annotations

import uuid

from aiohttp import web

from proto.requests import DatabaseTestReply, DatabaseTestRequest
from proto.values import Compression
from services.api.domain import backup_list
from services.api.domain import backups as backup_domain
from services.api.domain import databases as domain
from services.api.domain import schedules as schedule_domain
from services.api.domain.access import roles_in
from services.api.domain.schedules import GoneSchedule, announce_gone
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
from services.api.pages.database_form import (
    ENGINE_LABELS,
    ENGINES,
    TLS_MODES,
    database_fields,
    engine_of,
    option_groups,
    options_to_form,
    renames,
)
from services.api.pages.flash import flash
from services.api.pages.forms import Form, parse
from services.api.pages.queries import last_runs, project_names, visible_project_choices
from services.api.pages.render import human_bytes, render
from services.api.schemas.databases import DatabaseCreate, DatabaseUpdate
from services.api.web.errors import ApiError, ServiceUnavailable
from services.api.web.pagination import PageQuery
from services.common.db.enums import DatabaseEngine, ProjectRole
from services.common.db.models import Backup, Database
from services.common.dump_options import Kind
from services.common.streams import NoResponder
from services.common.streams import request as nats_request

routes = web.RouteTableDef()

BACKUP_NOW_TIMEOUT_S = 6 * 3600


async def _owner_projects(request: web.Request) -> list[tuple[uuid.UUID, str]]:
    ctx = context(request)
    who = principal(request)
    async with ctx.transaction() as session:
        projects = await visible_project_choices(session, who)
        roles = await roles_in(session, who, [pid for pid, _ in projects])
    return [(pid, name) for pid, name in projects if roles.get(pid) is ProjectRole.OWNER]


async def _form_page(
    request: web.Request, form: Form, database: Database | None = None, status: int = 200
) -> web.Response:
    projects = [] if database else await _owner_projects(request)
    return render(
        request,
        "databases/form.html",
        {
            "form": form,
            "database": database,
            "projects": projects,
            "engines": ENGINES,
            "tls_modes": TLS_MODES,
            "groups": option_groups(database.engine if database else None),
            "Kind": Kind,
            "engine_labels": ENGINE_LABELS,
        },
        status=status,
    )


# -- list and detail --------------------------------------------------------------------


@routes.get("/databases")
async def list_databases(request: web.Request) -> web.Response:
    ctx = context(request)
    who = principal(request)
    project_id = query_uuid(request, "project")
    engine_text = request.query.get("engine", "")
    engine = DatabaseEngine(engine_text) if engine_text in ENGINE_LABELS else None
    async with ctx.transaction() as session:
        rows, cursor, total = await domain.list_databases(
            session, who, page_query(request), project_id=project_id, engine=engine
        )
        last = await last_runs(session, [d.id for d in rows])
        projects = await visible_project_choices(session, who)
        roles = await roles_in(session, who, [pid for pid, _ in projects])
    base = "/databases?" + "&".join(
        f"{k}={v}" for k, v in (("project", project_id or ""), ("engine", engine_text)) if v
    )
    return render(
        request,
        "databases/list.html",
        {
            "databases": rows,
            "last": last,
            "projects": projects,
            "project_names": dict(projects),
            "project_id": project_id,
            "engine": engine_text,
            "engines": ENGINES,
            "next_cursor": cursor,
            "total": total,
            "has_previous": bool(request.query.get("cursor")),
            "base": base.rstrip("?"),
            "can_add": any(r is ProjectRole.OWNER for r in roles.values()),
            "filtered": bool(project_id or engine),
        },
    )


@routes.get("/databases/{id}")
async def show_database(request: web.Request) -> web.Response:
    ctx = context(request)
    who = principal(request)
    database_id = path_uuid(request, "id", "database")
    now = ctx.clock()
    async with ctx.transaction() as session:
        database = await domain.get_database(session, who, database_id)
        role = (await roles_in(session, who, [database.project_id]))[database.project_id]
        schedules, _, _ = await schedule_domain.list_schedules(
            session,
            who,
            PageQuery(limit=50),
            database_id=database_id,
            project_id=None,
            enabled=None,
        )
        recent, _, backup_total = await backup_list.list_backups(
            session, who, PageQuery(limit=10), backup_list.Filters(database_id=database_id)
        )
        names = await project_names(session, [database.project_id])
    next_runs = {v.schedule.id: schedule_domain.upcoming(v.schedule, now, 1) for v in schedules}
    return render(
        request,
        "databases/detail.html",
        {
            "database": database,
            "role": role.value,
            "project_name": names[database.project_id],
            "schedules": schedules,
            "next_runs": next_runs,
            "recent": recent,
            "backup_total": backup_total,
            "engine_labels": ENGINE_LABELS,
            "describe": schedule_domain.description,
        },
    )


# -- create, edit, delete ---------------------------------------------------------------


@routes.get("/databases/new")
async def new_database(request: web.Request) -> web.Response:
    project = query_uuid(request, "project")
    return await _form_page(
        request, Form({"project_id": str(project or ""), "engine": "postgresql"})
    )


@routes.post("/databases/new")
async def create_database(request: web.Request) -> web.StreamResponse:
    ctx = context(request)
    form = await Form.read(request)
    engine = engine_of(form)
    try:
        body = parse(
            DatabaseCreate,
            {
                **database_fields(form, engine),
                "engine": form.raw("engine"),
                "project_id": form.raw("project_id"),
            },
        )
        async with audited(request, "database.create") as note, ctx.transaction() as session:
            note.details["project_id"] = str(body.project_id)
            database, change = await domain.create_database(
                session, principal(request), ctx.cipher, body
            )
            note.target("database", database.id, database.project_id)
            note.details.update(
                name=database.name,
                engine=database.engine.value,
                host=database.host,
                password=change.value,
            )
    except ApiError as exc:
        form.fail(exc, renames(engine))
        return await _form_page(request, form, status=exc.status)
    flash(
        request,
        "success",
        f"Database “{database.name}” added. Test its connection, "
        "then back it up or give it a schedule.",
    )
    return redirect(f"/databases/{database.id}")


@routes.get("/databases/{id}/edit")
async def edit_database(request: web.Request) -> web.Response:
    ctx = context(request)
    database_id = path_uuid(request, "id", "database")
    async with ctx.transaction() as session:
        database = await domain.get_database(
            session, principal(request), database_id, ProjectRole.OWNER
        )
    form = Form(
        {
            "name": database.name,
            "host": database.host,
            "port": str(database.port),
            "database_name": database.database_name,
            "username": database.username,
            "tls_mode": database.tls_mode.value,
            **options_to_form(database),
        }
    )
    return await _form_page(request, form, database)


@routes.post("/databases/{id}/edit")
async def update_database(request: web.Request) -> web.StreamResponse:
    ctx = context(request)
    who = principal(request)
    database_id = path_uuid(request, "id", "database")
    form = await Form.read(request)
    async with ctx.transaction() as session:
        database = await domain.get_database(session, who, database_id, ProjectRole.OWNER)
    try:
        body = parse(
            DatabaseUpdate,
            {
                **database_fields(form, database.engine),
                "clear_password": form.checked("clear_password"),
            },
        )
        async with audited(request, "database.update") as note, ctx.transaction() as session:
            note.target("database", database_id, database.project_id)
            database, change = await domain.update_database(
                session, who, ctx.cipher, database_id, body
            )
            note.details.update(
                name=database.name,
                engine=database.engine.value,
                host=database.host,
                password=change.value,
            )
    except ApiError as exc:
        if exc.status in {403, 404}:
            raise
        form.fail(exc, renames(database.engine))
        return await _form_page(request, form, database, status=exc.status)
    flash(request, "success", "Database saved.")
    return redirect(f"/databases/{database_id}")


@routes.get("/databases/{id}/delete")
async def confirm_delete(request: web.Request) -> web.Response:
    ctx = context(request)
    database_id = path_uuid(request, "id", "database")
    async with ctx.transaction() as session:
        database = await domain.get_database(
            session, principal(request), database_id, ProjectRole.OWNER
        )
    return confirm_page(
        request,
        title=f"Delete database “{database.name}”?",
        message="Its settings and schedules are deleted; the server itself is not touched. "
        "A database that still has backups cannot be deleted: delete them first.",
        action=f"/databases/{database_id}/delete",
        button="Delete database",
        cancel=f"/databases/{database_id}",
    )


@routes.post("/databases/{id}/delete")
async def delete_database(request: web.Request) -> web.StreamResponse:
    ctx = context(request)
    who = principal(request)
    database_id = path_uuid(request, "id", "database")
    async with audited(request, "database.delete") as note, ctx.transaction() as session:
        note.target("database", database_id)
        deleted = await domain.delete_database(session, who, database_id)
        note.target("database", database_id, deleted.project_id)
        note.details["schedules_deleted"] = len(deleted.schedules)
    gone = [GoneSchedule(schedule_id, database_id) for schedule_id in deleted.schedules]
    await announce_gone(ctx.nc, deleted.project_id, gone, who.user_id)
    flash(request, "success", "Database deleted.")
    return redirect(f"/projects/{deleted.project_id}")


# -- actions -----------------------------------------------------------------------------


@routes.post("/databases/{id}/test")
async def test_connection(request: web.Request) -> web.StreamResponse:
    ctx = context(request)
    who = principal(request)
    database_id = path_uuid(request, "id", "database")
    async with audited(request, "database.test") as note:
        async with ctx.transaction() as session:
            database = await domain.get_database(session, who, database_id, ProjectRole.OPERATOR)
        note.target("database", database.id, database.project_id)
        nc = ctx.nc
        if nc is None or not nc.is_connected:
            raise ServiceUnavailable("cannot reach the executors: NATS is unavailable")
        timeout = ctx.settings.connection_test_timeout_s
        try:
            reply = await nats_request(
                nc,
                DatabaseTestRequest(
                    database_id=database.id, requested_by=who.user_id, timeout_s=timeout
                ),
                DatabaseTestReply,
                timeout_s=timeout + 5,
            )
        except NoResponder as exc:
            raise ServiceUnavailable(
                f"no executor answered ({exc}); start an executor and try again"
            ) from None
        note.details["ok"] = reply.ok
    if reply.ok:
        size = reply.database_size_bytes
        parts = [
            f"Connected to {ENGINE_LABELS.get(database.engine.value, '')} "
            f"{reply.server_version or ''}".rstrip(),
            f"in {reply.latency_ms:.0f} ms" if reply.latency_ms is not None else "",
        ]
        if size is not None:
            parts.append(f"(database size {human_bytes(size)})")
        flash(request, "success", " ".join(p for p in parts if p) + ".")
    else:
        flash(request, "error", f"Connection failed: {reply.error or reply.error_code}")
    return redirect(f"/databases/{database_id}")


@routes.post("/databases/{id}/backup")
async def back_up_now(request: web.Request) -> web.StreamResponse:
    ctx = context(request)
    database_id = path_uuid(request, "id", "database")
    async with audited(request, "backup.create") as note:
        async with ctx.transaction() as session:
            backup, job = await backup_domain.queue_backup(
                session,
                principal(request),
                database_id,
                destination_ids=None,
                compression=Compression(),
                timeout_s=BACKUP_NOW_TIMEOUT_S,
            )
        note.target("backup", backup.id, job.project_id)
        try:
            await backup_domain.send_job(ctx.nc, job)
        except ApiError:
            async with ctx.transaction() as session:
                await session.delete(await session.get(Backup, backup.id))
            raise
    flash(request, "success", "Backup queued. This page follows its progress.")
    return redirect(f"/backups/{backup.id}")
