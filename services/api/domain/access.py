"""Who may see and change what. Roles per project: owner > operator > viewer; a
global admin acts as owner everywhere. Something the caller may not see answers
404 (it does not exist for them); something they see but may not change, 403."""

from __future__ import annotations

import uuid

from sqlalchemy import ColumnElement, Select, select, true
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import InstrumentedAttribute

from services.api.auth.principal import Principal
from services.api.web.errors import Forbidden, not_found
from services.common.db.enums import ProjectRole
from services.common.db.models import ProjectMember

RANK = {ProjectRole.VIEWER: 1, ProjectRole.OPERATOR: 2, ProjectRole.OWNER: 3}


def weaker(a: ProjectRole, b: ProjectRole | None) -> ProjectRole:
    return a if b is None or RANK[a] <= RANK[b] else b


async def project_role(
    session: AsyncSession, principal: Principal, project_id: uuid.UUID
) -> ProjectRole | None:
    """The caller's effective role in a project, or None when they may not see it."""
    if principal.token_project_id is not None and principal.token_project_id != project_id:
        return None
    if principal.is_admin and principal.token_project_id is None:
        role: ProjectRole | None = ProjectRole.OWNER
    else:
        role = await session.scalar(
            select(ProjectMember.role).where(
                ProjectMember.project_id == project_id,
                ProjectMember.user_id == principal.user_id,
            )
        )
        if role is None and principal.is_admin:
            role = ProjectRole.OWNER  # an admin's token limited to this project
    if role is None:
        return None
    return weaker(role, principal.token_role)


async def require_role(
    session: AsyncSession,
    principal: Principal,
    project_id: uuid.UUID,
    at_least: ProjectRole,
    what: str,
) -> ProjectRole:
    """The caller's role if it is at least ``at_least``; 404 if they cannot see the
    project, 403 if they can but their role is too weak."""
    role = await project_role(session, principal, project_id)
    if role is None:
        raise not_found(what)
    if RANK[role] < RANK[at_least]:
        raise Forbidden(
            f"this needs the {at_least.value} role in the project (you are {role.value})"
        )
    return role


def visible_projects(
    principal: Principal, project_column: InstrumentedAttribute[uuid.UUID]
) -> ColumnElement[bool]:
    """A WHERE clause keeping rows of projects the caller may see."""
    if principal.token_project_id is not None:
        if principal.is_admin:
            return project_column == principal.token_project_id
        return (project_column == principal.token_project_id) & project_column.in_(
            _member_projects(principal)
        )
    if principal.is_admin:
        return true()
    return project_column.in_(_member_projects(principal))


def _member_projects(principal: Principal) -> Select[uuid.UUID]:
    return select(ProjectMember.project_id).where(ProjectMember.user_id == principal.user_id)


async def roles_in(
    session: AsyncSession, principal: Principal, project_ids: list[uuid.UUID]
) -> dict[uuid.UUID, ProjectRole]:
    """The caller's effective role in each of several visible projects (one query)."""
    if not project_ids:
        return {}
    found: dict[uuid.UUID, ProjectRole] = {}
    if not principal.is_admin:  # an admin owns every project it sees
        rows = await session.execute(
            select(ProjectMember.project_id, ProjectMember.role).where(
                ProjectMember.user_id == principal.user_id,
                ProjectMember.project_id.in_(project_ids),
            )
        )
        found = {row.project_id: row.role for row in rows}
    roles: dict[uuid.UUID, ProjectRole] = {}
    for project_id in project_ids:
        role = ProjectRole.OWNER if principal.is_admin else found.get(project_id)
        if role is not None:
            roles[project_id] = weaker(role, principal.token_role)
    return roles
