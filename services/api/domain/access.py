"""Who may see and change what. Roles per project: owner > operator > viewer; a
global admin acts as owner everywhere. Something the caller may not see answers
404 (it does not exist for them); something they see but may not change, 403."""

from __future__ import annotations

import uuid
from typing import Any, Literal

from sqlalchemy import ColumnElement, bindparam, select, true
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


# How a caller's view of projects is shaped; the values (who, which project) are
# separate so a statement can be built once per shape and bound per request.
Visibility = Literal["everything", "member", "token", "member_token"]


def visibility_of(principal: Principal) -> Visibility:
    if principal.token_project_id is not None:
        return "token" if principal.is_admin else "member_token"
    return "everything" if principal.is_admin else "member"


def visible_projects(
    principal: Principal, project_column: InstrumentedAttribute[uuid.UUID]
) -> ColumnElement[bool]:
    """A WHERE clause keeping rows of projects the caller may see."""
    return _visible(
        visibility_of(principal), project_column, principal.user_id, principal.token_project_id
    )


def visible_projects_bound(visibility: Visibility, project_column: Any) -> ColumnElement[bool]:
    """:func:`visible_projects` with the caller as bound parameters (values:
    :func:`visibility_params`), for statements built once and run for anyone."""
    return _visible(
        visibility, project_column, bindparam("viewer_id"), bindparam("viewer_token_project_id")
    )


def visibility_params(principal: Principal) -> dict[str, Any]:
    return {"viewer_id": principal.user_id, "viewer_token_project_id": principal.token_project_id}


def _visible(
    visibility: Visibility, project_column: Any, user_id: Any, token_project_id: Any
) -> ColumnElement[bool]:
    member_of = select(ProjectMember.project_id).where(ProjectMember.user_id == user_id)
    column: ColumnElement[uuid.UUID] = project_column
    if visibility == "everything":
        return true()
    if visibility == "member":
        return column.in_(member_of)
    in_token_project: ColumnElement[bool] = column == token_project_id
    if visibility == "token":  # an admin's token limited to one project
        return in_token_project
    return in_token_project & column.in_(member_of)


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
