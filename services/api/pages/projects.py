"""Projects: list, detail with members and roles, create, edit, delete."""

from __future__ import annotations

import uuid
from typing import Any

from aiohttp import web
from sqlalchemy import func, select

from services.api.domain import databases as database_domain
from services.api.domain import project_list
from services.api.domain import projects as domain
from services.api.domain.schedules import announce_gone
from services.api.pages.audit import audited
from services.api.pages.common import (
    confirm_page,
    context,
    page_query,
    path_uuid,
    principal,
    redirect,
)
from services.api.pages.flash import flash
from services.api.pages.forms import Form, parse
from services.api.pages.queries import last_runs
from services.api.pages.render import render
from services.api.schemas.projects import MemberAdd, MemberUpdate, ProjectCreate, ProjectUpdate
from services.api.web.errors import ApiError
from services.api.web.pagination import PageQuery
from services.common.db.enums import ProjectRole
from services.common.db.models import Database

routes = web.RouteTableDef()
ROLES = [(r.value, r.value.capitalize()) for r in ProjectRole]


@routes.get("/projects")
async def list_projects(request: web.Request) -> web.Response:
    ctx = context(request)
    who = principal(request)
    q = request.query.get("q", "").strip()[:200] or None
    async with ctx.transaction() as session:
        page = page_query(request)
        rows, cursor, total = await project_list.list_projects(session, who, page, q)
        roles = {p["id"]: p["role"] for p in rows}
        counts = dict(
            (
                await session.execute(
                    select(Database.project_id, func.count())
                    .where(Database.project_id.in_([p["id"] for p in rows]))
                    .group_by(Database.project_id)
                )
            ).all()
        )
    return render(
        request,
        "projects/list.html",
        {
            "projects": rows,
            "roles": roles,
            "counts": counts,
            "q": q or "",
            "next_cursor": cursor,
            "total": total,
            "has_previous": bool(request.query.get("cursor")),
        },
    )


def _form_page(
    request: web.Request, form: Form, project: Any = None, status: int = 200
) -> web.Response:
    return render(request, "projects/form.html", {"form": form, "project": project}, status=status)


@routes.get("/projects/new")
async def new_project(request: web.Request) -> web.Response:
    return _form_page(request, Form())


@routes.post("/projects/new")
async def create_project(request: web.Request) -> web.StreamResponse:
    ctx = context(request)
    form = await Form.read(request)
    try:
        body = parse(
            ProjectCreate,
            {
                "name": form.raw("name"),
                "slug": form.optional("slug"),
                "description": form.raw("description"),
            },
        )
        async with audited(request, "project.create") as note, ctx.transaction() as session:
            project = await domain.create_project(
                session, principal(request), body.name, body.slug, body.description
            )
            note.target("project", project.id, project.id)
    except ApiError as exc:
        form.fail(exc)
        return _form_page(request, form, status=exc.status)
    flash(request, "success", f"Project “{project.name}” created. Add its first database.")
    return redirect(f"/projects/{project.id}")


@routes.get("/projects/{id}")
async def show_project(request: web.Request) -> web.Response:
    ctx = context(request)
    who = principal(request)
    project_id = path_uuid(request, "id", "project")
    async with ctx.transaction() as session:
        project, role = await domain.get_project(session, who, project_id)
        members, _, _ = await domain.list_members(session, who, project_id, PageQuery(limit=200))
        dbs, _, db_total = await database_domain.list_databases(
            session, who, PageQuery(limit=200), project_id=project_id, engine=None
        )
        last = await last_runs(session, [d.id for d in dbs])
    return render(
        request,
        "projects/detail.html",
        {
            "project": project,
            "role": role.value,
            "members": members,
            "databases": dbs,
            "database_total": db_total,
            "last": last,
            "roles": ROLES,
            "form": Form(),
        },
    )


@routes.get("/projects/{id}/edit")
async def edit_project(request: web.Request) -> web.Response:
    ctx = context(request)
    project_id = path_uuid(request, "id", "project")
    async with ctx.transaction() as session:
        project, _ = await domain.get_project(
            session, principal(request), project_id, ProjectRole.OWNER
        )
    form = Form({"name": project.name, "description": project.description})
    return _form_page(request, form, project)


@routes.post("/projects/{id}/edit")
async def update_project(request: web.Request) -> web.StreamResponse:
    ctx = context(request)
    project_id = path_uuid(request, "id", "project")
    form = await Form.read(request)
    try:
        async with ctx.transaction() as session:
            project, _ = await domain.get_project(
                session, principal(request), project_id, ProjectRole.OWNER
            )
        body = parse(
            ProjectUpdate, {"name": form.raw("name"), "description": form.raw("description")}
        )
        async with audited(request, "project.update") as note, ctx.transaction() as session:
            note.target("project", project_id, project_id)
            await domain.update_project(
                session, principal(request), project_id, body.name, body.description
            )
    except ApiError as exc:
        if exc.status in {403, 404}:
            raise
        form.fail(exc)
        return _form_page(request, form, project, status=exc.status)
    flash(request, "success", "Project saved.")
    return redirect(f"/projects/{project_id}")


@routes.get("/projects/{id}/delete")
async def confirm_delete(request: web.Request) -> web.Response:
    ctx = context(request)
    project_id = path_uuid(request, "id", "project")
    async with ctx.transaction() as session:
        project, _ = await domain.get_project(
            session, principal(request), project_id, ProjectRole.OWNER
        )
    return confirm_page(
        request,
        title=f"Delete project “{project.name}”?",
        message="The project, its databases, schedules and memberships are deleted. "
        "A project whose databases still have backups cannot be deleted: delete "
        "those backups first.",
        action=f"/projects/{project_id}/delete",
        button="Delete project",
        cancel=f"/projects/{project_id}",
    )


@routes.post("/projects/{id}/delete")
async def delete_project(request: web.Request) -> web.StreamResponse:
    ctx = context(request)
    project_id = path_uuid(request, "id", "project")
    who = principal(request)
    async with audited(request, "project.delete") as note, ctx.transaction() as session:
        note.target("project", project_id)
        gone = await domain.delete_project(session, who, project_id)
        note.details["schedules_deleted"] = len(gone)
    await announce_gone(ctx.nc, project_id, gone, who.user_id)
    flash(request, "success", "Project deleted.")
    return redirect("/projects")


# -- members --------------------------------------------------------------------------


@routes.post("/projects/{id}/members")
async def add_member(request: web.Request) -> web.StreamResponse:
    ctx = context(request)
    project_id = path_uuid(request, "id", "project")
    form = await Form.read(request)
    body = parse(MemberAdd, {"email": form.optional("email"), "role": form.raw("role")})
    async with audited(request, "project.member.add") as note, ctx.transaction() as session:
        member, email = await domain.add_member(
            session,
            principal(request),
            project_id,
            email=body.email,
            user_id=None,
            role=body.role,
        )
        note.target("user", member.user_id, project_id)
        note.details["role"] = member.role.value
    flash(request, "success", f"{email} is now {member.role.value} of this project.")
    return redirect(f"/projects/{project_id}#members")


@routes.post("/projects/{id}/members/{user_id}")
async def set_member_role(request: web.Request) -> web.StreamResponse:
    ctx = context(request)
    project_id = path_uuid(request, "id", "project")
    user_id = path_uuid(request, "user_id", "member")
    form = await Form.read(request)
    body = parse(MemberUpdate, {"role": form.raw("role")})
    async with audited(request, "project.member.update") as note, ctx.transaction() as session:
        note.target("user", user_id, project_id)
        note.details["role"] = body.role.value
        _, email = await domain.set_member_role(
            session, principal(request), project_id, user_id, body.role
        )
    flash(request, "success", f"{email} is now {body.role.value}.")
    return redirect(f"/projects/{project_id}#members")


@routes.post("/projects/{id}/members/{user_id}/remove")
async def remove_member(request: web.Request) -> web.StreamResponse:
    ctx = context(request)
    project_id = path_uuid(request, "id", "project")
    user_id: uuid.UUID = path_uuid(request, "user_id", "member")
    async with audited(request, "project.member.remove") as note, ctx.transaction() as session:
        note.target("user", user_id, project_id)
        await domain.remove_member(session, principal(request), project_id, user_id)
    flash(request, "success", "Member removed.")
    return redirect(f"/projects/{project_id}#members")
