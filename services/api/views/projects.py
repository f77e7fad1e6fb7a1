"""``/projects`` and ``/projects/{id}/members``."""

from __future__ import annotations

from services.api.domain import project_list
from services.api.domain import projects as domain
from services.api.domain.schedules import announce_gone
from services.api.schemas.projects import (
    MemberAdd,
    MemberOut,
    MemberUpdate,
    ProjectCreate,
    ProjectListQuery,
    ProjectOut,
    ProjectUpdate,
)
from services.api.web.endpoint import Call, Endpoints, NoBody, NoQuery
from services.api.web.pagination import Page, PageQuery, RowsPage
from services.common.db.enums import ProjectRole
from services.common.db.models import Project, ProjectMember

routes = Endpoints("projects")


def project_out(project: Project, role: ProjectRole) -> ProjectOut:
    return ProjectOut.model_validate({**_columns(project), "role": role})


def member_out(member: ProjectMember, email: str) -> MemberOut:
    return MemberOut(
        user_id=member.user_id, email=email, role=member.role, created_at=member.created_at
    )


def _columns(project: Project) -> dict[str, object]:
    return {
        c: getattr(project, c)
        for c in ("id", "name", "slug", "description", "created_at", "updated_at")
    }


@routes.get(
    "/projects",
    query=ProjectListQuery,
    response=Page[ProjectOut],
    summary="List the projects the caller may see",
)
async def list_projects(call: Call[NoBody, ProjectListQuery]) -> RowsPage:
    async with call.ctx.reading() as session:
        rows, cursor, total = await project_list.list_projects(
            session, call.principal, call.query, call.query.q
        )
    return RowsPage(rows, cursor, total)


@routes.post(
    "/projects",
    body=ProjectCreate,
    response=ProjectOut,
    status=201,
    summary="Create a project (the caller becomes its owner)",
    action="project.create",
    errors=(403, 409),
)
async def create_project(call: Call[ProjectCreate, NoQuery]) -> ProjectOut:
    async with call.ctx.transaction() as session:
        project = await domain.create_project(
            session, call.principal, call.body.name, call.body.slug, call.body.description
        )
    call.audit.target("project", project.id, project.id)
    return project_out(project, ProjectRole.OWNER)


@routes.get("/projects/{id}", response=ProjectOut, summary="Get a project")
async def get_project(call: Call[NoBody, NoQuery]) -> ProjectOut:
    project_id = call.path_uuid("id", "project")
    async with call.ctx.transaction() as session:
        project, role = await domain.get_project(session, call.principal, project_id)
    return project_out(project, role)


@routes.put(
    "/projects/{id}",
    body=ProjectUpdate,
    response=ProjectOut,
    summary="Rename or describe a project (owner)",
    action="project.update",
    errors=(403,),
)
async def update_project(call: Call[ProjectUpdate, NoQuery]) -> ProjectOut:
    project_id = call.path_uuid("id", "project")
    call.audit.target("project", project_id, project_id)
    async with call.ctx.transaction() as session:
        project, role = await domain.update_project(
            session, call.principal, project_id, call.body.name, call.body.description
        )
    return project_out(project, role)


@routes.delete(
    "/projects/{id}", summary="Delete a project (owner)", action="project.delete", errors=(403, 409)
)
async def delete_project(call: Call[NoBody, NoQuery]) -> None:
    project_id = call.path_uuid("id", "project")
    call.audit.target("project", project_id)  # no project_id: the row is gone afterwards
    async with call.ctx.transaction() as session:
        schedules = await domain.delete_project(session, call.principal, project_id)
    call.audit.details["schedules_deleted"] = len(schedules)
    await announce_gone(call.ctx.nc, project_id, schedules, call.principal.user_id)


@routes.get(
    "/projects/{id}/members",
    query=PageQuery,
    response=Page[MemberOut],
    summary="List a project's members",
)
async def list_members(call: Call[NoBody, PageQuery]) -> Page[MemberOut]:
    project_id = call.path_uuid("id", "project")
    async with call.ctx.transaction() as session:
        rows, cursor, total = await domain.list_members(
            session, call.principal, project_id, call.query
        )
    return Page[MemberOut](
        items=[member_out(m, e) for m, e in rows], next_cursor=cursor, total=total
    )


@routes.post(
    "/projects/{id}/members",
    body=MemberAdd,
    response=MemberOut,
    status=201,
    summary="Add a member (owner)",
    action="project.member.add",
    errors=(403, 409),
)
async def add_member(call: Call[MemberAdd, NoQuery]) -> MemberOut:
    project_id = call.path_uuid("id", "project")
    async with call.ctx.transaction() as session:
        member, email = await domain.add_member(
            session,
            call.principal,
            project_id,
            email=call.body.email,
            user_id=call.body.user_id,
            role=call.body.role,
        )
    call.audit.target("user", member.user_id, project_id)
    call.audit.details["role"] = member.role.value
    return member_out(member, email)


@routes.put(
    "/projects/{id}/members/{user_id}",
    body=MemberUpdate,
    response=MemberOut,
    summary="Change a member's role (owner)",
    action="project.member.update",
    errors=(403, 409),
)
async def set_member_role(call: Call[MemberUpdate, NoQuery]) -> MemberOut:
    project_id = call.path_uuid("id", "project")
    user_id = call.path_uuid("user_id", "member")
    call.audit.target("user", user_id, project_id)
    call.audit.details["role"] = call.body.role.value
    async with call.ctx.transaction() as session:
        member, email = await domain.set_member_role(
            session, call.principal, project_id, user_id, call.body.role
        )
    return member_out(member, email)


@routes.delete(
    "/projects/{id}/members/{user_id}",
    summary="Remove a member (owner)",
    action="project.member.remove",
    errors=(403, 409),
)
async def remove_member(call: Call[NoBody, NoQuery]) -> None:
    project_id = call.path_uuid("id", "project")
    user_id = call.path_uuid("user_id", "member")
    call.audit.target("user", user_id, project_id)
    async with call.ctx.transaction() as session:
        await domain.remove_member(session, call.principal, project_id, user_id)
