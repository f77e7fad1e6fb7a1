"""Projects and their members (the service layer shared by the API and the pages)."""

from __future__ import annotations

import re
import secrets
import uuid

from sqlalchemy import delete, func, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from services.api.auth.principal import Principal
from services.api.domain.access import require_role
from services.api.domain.schedules import GoneSchedule
from services.api.web.errors import Conflict, Forbidden, NotFound, not_found
from services.api.web.pagination import PageQuery, paginate
from services.common.db.enums import ProjectRole
from services.common.db.models import Database, Project, ProjectMember, Schedule, User

PROJECT = "project"


def slugify(name: str) -> str:
    slug = re.sub(r"[^a-z0-9]+", "-", name.lower()).strip("-")[:50]
    return slug or "project"


async def create_project(
    session: AsyncSession, principal: Principal, name: str, slug: str | None, description: str
) -> Project:
    if principal.token_project_id is not None or principal.token_role is not None:
        raise Forbidden("an API token limited to a project or role cannot create projects")
    chosen = slug or slugify(name)
    if await session.scalar(select(Project.id).where(Project.slug == chosen)) is not None:
        if slug is not None:
            raise Conflict("a project with this slug exists", fields={"slug": "already taken"})
        chosen = f"{chosen}-{secrets.token_hex(3)}"
    project = Project(name=name, slug=chosen, description=description)
    session.add(project)
    await session.flush()
    session.add(
        ProjectMember(project_id=project.id, user_id=principal.user_id, role=ProjectRole.OWNER)
    )
    await session.flush()
    return project


async def get_project(
    session: AsyncSession,
    principal: Principal,
    project_id: uuid.UUID,
    at_least: ProjectRole = ProjectRole.VIEWER,
) -> tuple[Project, ProjectRole]:
    role = await require_role(session, principal, project_id, at_least, PROJECT)
    project = await session.get(Project, project_id)
    if project is None:
        raise not_found(PROJECT)
    return project, role


async def update_project(
    session: AsyncSession, principal: Principal, project_id: uuid.UUID, name: str, description: str
) -> tuple[Project, ProjectRole]:
    project, role = await get_project(session, principal, project_id, ProjectRole.OWNER)
    project.name = name
    project.description = description
    await session.flush()
    return project, role


async def delete_project(
    session: AsyncSession, principal: Principal, project_id: uuid.UUID
) -> list[GoneSchedule]:
    """Delete a project with its databases and schedules; the schedules that went,
    for the schedulers to hear of."""
    project, _ = await get_project(session, principal, project_id, ProjectRole.OWNER)
    schedules = [
        GoneSchedule(row.id, row.database_id)
        for row in await session.execute(
            select(Schedule.id, Schedule.database_id)
            .join(Database, Database.id == Schedule.database_id)
            .where(Database.project_id == project_id)
        )
    ]
    try:
        async with session.begin_nested():
            # Schedules first: their links to the project's own destinations would
            # otherwise block the cascade (schedule_destinations is RESTRICT there).
            await session.execute(
                delete(Schedule).where(
                    Schedule.database_id.in_(
                        select(Database.id).where(Database.project_id == project_id)
                    )
                )
            )
            await session.delete(project)
    except IntegrityError:
        raise Conflict(
            "this project still has backups or destinations in use: delete them first"
        ) from None
    return schedules


# -- members -----------------------------------------------------------------------


async def list_members(
    session: AsyncSession, principal: Principal, project_id: uuid.UUID, page: PageQuery
) -> tuple[list[tuple[ProjectMember, str]], str | None, int | None]:
    await require_role(session, principal, project_id, ProjectRole.VIEWER, PROJECT)
    stmt = select(ProjectMember).where(ProjectMember.project_id == project_id)
    members, cursor, total = await paginate(
        session, stmt, page, order=(ProjectMember.created_at, ProjectMember.user_id)
    )
    emails = await _emails(session, [m.user_id for m in members])
    return [(m, emails[m.user_id]) for m in members], cursor, total


async def add_member(
    session: AsyncSession,
    principal: Principal,
    project_id: uuid.UUID,
    *,
    email: str | None,
    user_id: uuid.UUID | None,
    role: ProjectRole,
) -> tuple[ProjectMember, str]:
    await require_role(session, principal, project_id, ProjectRole.OWNER, PROJECT)
    query = (
        select(User).where(User.email == email.lower())
        if email
        else select(User).where(User.id == user_id)
    )
    user = await session.scalar(query)
    if user is None:
        field = "email" if email else "user_id"
        raise NotFound(
            "no such user: they must have an account first", fields={field: "unknown user"}
        )
    if await session.get(ProjectMember, (project_id, user.id)) is not None:
        raise Conflict("this user is already a member; change their role instead")
    member = ProjectMember(project_id=project_id, user_id=user.id, role=role)
    session.add(member)
    await session.flush()
    return member, user.email


async def set_member_role(
    session: AsyncSession,
    principal: Principal,
    project_id: uuid.UUID,
    user_id: uuid.UUID,
    role: ProjectRole,
) -> tuple[ProjectMember, str]:
    await require_role(session, principal, project_id, ProjectRole.OWNER, PROJECT)
    member = await _member(session, project_id, user_id)
    if member.role is ProjectRole.OWNER and role is not ProjectRole.OWNER:
        await _keep_an_owner(session, project_id)
    member.role = role
    await session.flush()
    return member, (await _emails(session, [user_id]))[user_id]


async def remove_member(
    session: AsyncSession, principal: Principal, project_id: uuid.UUID, user_id: uuid.UUID
) -> None:
    await require_role(session, principal, project_id, ProjectRole.OWNER, PROJECT)
    member = await _member(session, project_id, user_id)
    if member.role is ProjectRole.OWNER:
        await _keep_an_owner(session, project_id)
    await session.delete(member)
    await session.flush()


async def _member(
    session: AsyncSession, project_id: uuid.UUID, user_id: uuid.UUID
) -> ProjectMember:
    member = await session.get(ProjectMember, (project_id, user_id))
    if member is None:
        raise not_found("member")
    return member


async def _keep_an_owner(session: AsyncSession, project_id: uuid.UUID) -> None:
    owners = await session.scalar(
        select(func.count()).where(
            ProjectMember.project_id == project_id, ProjectMember.role == ProjectRole.OWNER
        )
    )
    if (owners or 0) <= 1:
        raise Conflict("a project needs at least one owner: make someone else owner first")


async def _emails(session: AsyncSession, user_ids: list[uuid.UUID]) -> dict[uuid.UUID, str]:
    if not user_ids:
        return {}
    rows = await session.execute(select(User.id, User.email).where(User.id.in_(user_ids)))
    return {row.id: row.email for row in rows}
