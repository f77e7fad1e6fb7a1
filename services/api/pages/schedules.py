"""Schedules: list, detail (next runs in the schedule's zone, retention preview),
create and edit with the cron builder, enable / disable, delete."""

from __future__ import annotations

import uuid
from typing import Any

from aiohttp import web

from services.api.domain import backup_list
from services.api.domain import destinations as destination_domain
from services.api.domain import retention as retention_domain
from services.api.domain import schedules as domain
from services.api.domain.access import roles_in
from services.api.domain.databases import get_database
from services.api.pages import schedule_form as sf
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
from services.api.pages.queries import database_names, visible_database_choices
from services.api.pages.render import render
from services.api.schemas.schedules import ScheduleCreate, ScheduleUpdate
from services.api.web.errors import ApiError
from services.api.web.pagination import PageQuery
from services.common.cron import CronError
from services.common.db.enums import ProjectRole
from services.common.db.models import Database

routes = web.RouteTableDef()
TIMEOUT_HINT = "between 1 and 10080 minutes (7 days)"
RETENTION_PREVIEW_LIMIT = 30


@routes.get("/schedules")
async def list_schedules(request: web.Request) -> web.Response:
    ctx = context(request)
    who = principal(request)
    database_id = query_uuid(request, "database")
    project_id = query_uuid(request, "project")
    state = request.query.get("enabled", "")
    enabled = {"yes": True, "no": False}.get(state)
    async with ctx.transaction() as session:
        views, cursor, total = await domain.list_schedules(
            session,
            who,
            page_query(request),
            database_id=database_id,
            project_id=project_id,
            enabled=enabled,
        )
        names = await database_names(session, [v.schedule.database_id for v in views])
        choices = await visible_database_choices(session, who)
    now = ctx.clock()
    upcoming = {v.schedule.id: domain.upcoming(v.schedule, now, 1) for v in views}
    query = "&".join(
        f"{k}={v}"
        for k, v in (
            ("database", database_id or ""),
            ("project", project_id or ""),
            ("enabled", state),
        )
        if v
    )
    return render(
        request,
        "schedules/list.html",
        {
            "views": views,
            "names": names,
            "upcoming": upcoming,
            "describe": domain.description,
            "databases": choices,
            "database_id": database_id,
            "enabled": state,
            "next_cursor": cursor,
            "total": total,
            "has_previous": bool(request.query.get("cursor")),
            "base": "/schedules" + (f"?{query}" if query else ""),
            "filtered": bool(query),
        },
    )


@routes.get("/cron-preview")
async def cron_preview(request: web.Request) -> web.Response:
    """JSON for the cron builder's script: the cron in words and its next runs."""
    ctx = context(request)
    cron = request.query.get("cron", "")[:200]
    tz = request.query.get("timezone", "UTC")[:200] or "UTC"
    try:
        text, runs = sf.preview(cron, tz, ctx.clock())
    except CronError as exc:
        return web.json_response({"ok": False, "error": str(exc)})
    return web.json_response(
        {
            "ok": True,
            "description": text,
            "runs": [
                {
                    "local": s.local.strftime("%a %Y-%m-%d %H:%M %Z"),
                    "utc": s.utc.strftime("%Y-%m-%d %H:%M UTC"),
                    "shifted": s.shifted,
                }
                for s in runs
            ],
        }
    )


@routes.get("/schedules/{id}")
async def show_schedule(request: web.Request) -> web.Response:
    ctx = context(request)
    who = principal(request)
    schedule_id = path_uuid(request, "id", "schedule")
    now = ctx.clock()
    async with ctx.transaction() as session:
        view = await domain.get_schedule(session, who, schedule_id)
        role = (await roles_in(session, who, [view.project_id]))[view.project_id]
        database = await session.get(Database, view.schedule.database_id)
        destinations = await _destinations(request, view.project_id)
        kept = await retention_domain.preview(
            session,
            who,
            schedule_id,
            now=now,
            failed_run_retention_days=ctx.settings.failed_run_retention_days,
            limit=RETENTION_PREVIEW_LIMIT,
        )
        recent, _, _ = await backup_list.list_backups(
            session, who, PageQuery(limit=10), backup_list.Filters(schedule_id=schedule_id)
        )
    return render(
        request,
        "schedules/detail.html",
        {
            "view": view,
            "s": view.schedule,
            "role": role.value,
            "database": database,
            "description": domain.description(view.schedule),
            "runs": domain.upcoming(view.schedule, now, sf.PREVIEW_RUNS),
            "destinations": {d.id: d for d in destinations},
            "retention": kept,
            "recent": recent,
        },
    )


# -- the form -----------------------------------------------------------------------------


async def _destinations(request: web.Request, project_id: uuid.UUID) -> list[Any]:
    ctx = context(request)
    async with ctx.transaction() as session:
        rows, _, _ = await destination_domain.list_destinations(
            session,
            principal(request),
            ctx.settings,
            PageQuery(limit=200),
            project_id=project_id,
            kind=None,
        )
    return [d for d in rows if d.enabled]


async def _form_page(
    request: web.Request,
    form: Form,
    *,
    database: Database | None,
    schedule_id: uuid.UUID | None = None,
    status: int = 200,
) -> web.Response:
    ctx = context(request)
    extra: dict[str, Any] = {}
    if database is None:
        async with ctx.transaction() as session:
            choices = await visible_database_choices(session, principal(request))
            roles = await roles_in(session, principal(request), list({c[2] for c in choices}))
        extra["choices"] = [
            (str(i), name)
            for i, name, project, _ in choices
            if roles.get(project) in {ProjectRole.OPERATOR, ProjectRole.OWNER}
        ]
    else:
        extra["destinations"] = await _destinations(request, database.project_id)
    if not form.errors.get("cron") and not form.errors.get("timezone") and database is not None:
        try:
            extra["preview"] = sf.preview(
                sf.chosen_cron(form), form.value("timezone") or "UTC", ctx.clock()
            )
        except CronError as exc:
            form.errors.setdefault("cron", str(exc))
    return render(
        request,
        "schedules/form.html",
        {
            "form": form,
            "database": database,
            "schedule_id": schedule_id,
            "sf": sf,
            "zones": sf.time_zones(),
            **extra,
        },
        status=status,
    )


def _fail(form: Form, exc: ApiError) -> None:
    form.fail(exc, sf.RENAMES)
    if "timeout_min" in form.errors:
        form.errors["timeout_min"] = TIMEOUT_HINT
    for key in [k for k in form.errors if k.startswith("destination_ids.")]:
        form.errors.setdefault("destination_ids", form.errors.pop(key))


@routes.get("/schedules/new")
async def new_schedule(request: web.Request) -> web.Response:
    ctx = context(request)
    database_id = query_uuid(request, "database")
    database = None
    if database_id is not None:
        async with ctx.transaction() as session:
            database = await get_database(
                session, principal(request), database_id, ProjectRole.OPERATOR
            )
    return await _form_page(request, sf.new_form(database_id), database=database)


@routes.post("/schedules/new")
async def create_schedule(request: web.Request) -> web.StreamResponse:
    ctx = context(request)
    who = principal(request)
    form = await Form.read(request)
    database_id = query_uuid(request, "database")
    async with ctx.transaction() as session:
        database = await get_database(
            session, who, database_id or uuid.UUID(int=0), ProjectRole.OPERATOR
        )
    if form.raw("action") == "preview":
        return await _form_page(request, form, database=database)
    try:
        body = parse(ScheduleCreate, {**sf.schedule_fields(form), "database_id": database.id})
        async with audited(request, "schedule.create") as note, ctx.transaction() as session:
            view, event = await domain.create_schedule(session, who, body)
            note.target("schedule", view.schedule.id, view.project_id)
            note.details["name"] = view.schedule.name
    except ApiError as exc:
        if exc.status in {403, 404}:
            raise
        _fail(form, exc)
        return await _form_page(request, form, database=database, status=exc.status)
    await domain.publish_change(ctx.nc, event)
    flash(request, "success", f"Schedule “{view.schedule.name}” created.")
    return redirect(f"/schedules/{view.schedule.id}")


@routes.get("/schedules/{id}/edit")
async def edit_schedule(request: web.Request) -> web.Response:
    ctx = context(request)
    schedule_id = path_uuid(request, "id", "schedule")
    async with ctx.transaction() as session:
        view = await domain.get_schedule(
            session, principal(request), schedule_id, ProjectRole.OPERATOR
        )
        database = await session.get(Database, view.schedule.database_id)
    form = sf.form_of(view.schedule, view.destination_ids)
    return await _form_page(request, form, database=database, schedule_id=schedule_id)


@routes.post("/schedules/{id}/edit")
async def update_schedule(request: web.Request) -> web.StreamResponse:
    ctx = context(request)
    who = principal(request)
    schedule_id = path_uuid(request, "id", "schedule")
    form = await Form.read(request)
    async with ctx.transaction() as session:
        view = await domain.get_schedule(session, who, schedule_id, ProjectRole.OPERATOR)
        database = await session.get(Database, view.schedule.database_id)
    if form.raw("action") == "preview":
        return await _form_page(request, form, database=database, schedule_id=schedule_id)
    try:
        body = parse(ScheduleUpdate, sf.schedule_fields(form))
        async with audited(request, "schedule.update") as note, ctx.transaction() as session:
            note.target("schedule", schedule_id, view.project_id)
            note.details["fields"] = sorted(body.model_fields_set)
            view, event = await domain.update_schedule(session, who, schedule_id, body)
            note.details["name"] = view.schedule.name
    except ApiError as exc:
        if exc.status in {403, 404}:
            raise
        _fail(form, exc)
        return await _form_page(
            request, form, database=database, schedule_id=schedule_id, status=exc.status
        )
    await domain.publish_change(ctx.nc, event)
    flash(request, "success", "Schedule saved.")
    return redirect(f"/schedules/{schedule_id}")


# -- enable, disable, delete --------------------------------------------------------------


async def _set_enabled(request: web.Request, enabled: bool) -> web.StreamResponse:
    ctx = context(request)
    schedule_id = path_uuid(request, "id", "schedule")
    action = "schedule.enable" if enabled else "schedule.disable"
    async with audited(request, action) as note:
        note.target("schedule", schedule_id)
        async with ctx.transaction() as session:
            view, event = await domain.set_enabled(
                session, principal(request), schedule_id, enabled
            )
        note.target("schedule", schedule_id, view.project_id)
        note.details.update(name=view.schedule.name, changed=event is not None)
    if event is not None:
        await domain.publish_change(ctx.nc, event)
    flash(request, "success", f"Schedule {'enabled' if enabled else 'disabled'}.")
    return redirect(f"/schedules/{schedule_id}")


@routes.post("/schedules/{id}/enable")
async def enable_schedule(request: web.Request) -> web.StreamResponse:
    return await _set_enabled(request, True)


@routes.post("/schedules/{id}/disable")
async def disable_schedule(request: web.Request) -> web.StreamResponse:
    return await _set_enabled(request, False)


@routes.get("/schedules/{id}/delete")
async def confirm_delete(request: web.Request) -> web.Response:
    ctx = context(request)
    schedule_id = path_uuid(request, "id", "schedule")
    async with ctx.transaction() as session:
        view = await domain.get_schedule(
            session, principal(request), schedule_id, ProjectRole.OPERATOR
        )
    return confirm_page(
        request,
        title=f"Delete schedule “{view.schedule.name}”?",
        message="It stops firing at once. Its backups stay (delete them one by one).",
        action=f"/schedules/{schedule_id}/delete",
        button="Delete schedule",
        cancel=f"/schedules/{schedule_id}",
    )


@routes.post("/schedules/{id}/delete")
async def delete_schedule(request: web.Request) -> web.StreamResponse:
    ctx = context(request)
    schedule_id = path_uuid(request, "id", "schedule")
    async with audited(request, "schedule.delete") as note:
        note.target("schedule", schedule_id)
        async with ctx.transaction() as session:
            event = await domain.delete_schedule(session, principal(request), schedule_id)
        note.target("schedule", schedule_id, event.project_id)
    await domain.publish_change(ctx.nc, event)
    flash(request, "success", "Schedule deleted.")
    return redirect(f"/databases/{event.database_id}")
