"""Listing the projects a caller sees, each with the caller's role, from one
statement built once per shape (kind of caller, name search, cursor) and bound per
request; see ``backup_list`` for why."""

from __future__ import annotations

from functools import cache
from typing import Any

from sqlalchemy import Select, bindparam, func, literal, select
from sqlalchemy.ext.asyncio import AsyncSession

from services.api.auth.principal import Principal
from services.api.domain.access import (
    Visibility,
    visibility_of,
    visibility_params,
    visible_projects_bound,
    weaker,
)
from services.api.web.pagination import (
    LIKE_ESCAPE,
    PageQuery,
    contains_pattern,
    cut,
    keyset_bound,
    page_params,
    plain_rows,
)
from services.common.db.enums import ProjectRole
from services.common.db.models import Project, ProjectMember

ORDER = (Project.created_at, Project.id)
COLUMNS: tuple[Any, ...] = tuple(
    getattr(Project, name)
    for name in ("id", "name", "slug", "description", "created_at", "updated_at")
)


async def list_projects(
    session: AsyncSession, principal: Principal, page: PageQuery, q: str | None
) -> tuple[list[dict[str, Any]], str | None, int]:
    """A page of projects as plain rows with the caller's ``role``, and the total."""
    visibility = visibility_of(principal)
    params = visibility_params(principal) | page_params(page)
    if q:
        params["search"] = contains_pattern(q.lower())
    connection = await session.connection()
    statement = _page_statement(visibility, bool(q), bool(page.cursor))
    result = await connection.execute(statement, params)
    rows = plain_rows(result)
    for row in rows:
        # An administrator owns every project it sees; a member has its own role.
        role = ProjectRole.OWNER if principal.is_admin else row["role"]
        row["role"] = weaker(role, principal.token_role)
    total = await connection.scalar(_count_statement(visibility, bool(q)), params)
    return (*cut(rows, page, ORDER), total or 0)


def _visible(visibility: Visibility, search: bool) -> Select[Any]:
    stmt: Select[Any] = select(*COLUMNS).where(visible_projects_bound(visibility, Project.id))
    if search:
        stmt = stmt.where(func.lower(Project.name).like(bindparam("search"), escape=LIKE_ESCAPE))
    return stmt


@cache
def _page_statement(visibility: Visibility, search: bool, cursor: bool) -> Select[Any]:
    if visibility in {"everything", "token"}:  # administrators: no membership to read
        role = literal(None).label("role")
    else:
        role = (
            select(ProjectMember.role)
            .where(ProjectMember.project_id == Project.id,
                   ProjectMember.user_id == bindparam("viewer_id"))
            .scalar_subquery()
            .label("role")
        )  # fmt: skip
    return keyset_bound(_visible(visibility, search).add_columns(role), ORDER, cursor=cursor)


@cache
def _count_statement(visibility: Visibility, search: bool) -> Select[Any]:
    return select(func.count()).select_from(_visible(visibility, search).subquery())
