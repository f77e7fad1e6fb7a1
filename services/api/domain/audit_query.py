"""Reading the audit log (admins only; the view enforces it): filters and keyset
pages, newest first."""

from __future__ import annotations

from typing import Any

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from services.api.schemas.audit import AuditQuery
from services.api.web.pagination import cut, keyset
from services.common.db.models import AuditEntry

PREFIX_MARKS = (".", "*")
ORDER = (AuditEntry.at, AuditEntry.id)
# Rows, not ORM objects: a page is only read and rendered, and loading entities
# costs as much as everything else of the request. Built once.
_ENTRIES = select(*AuditEntry.__table__.c)


async def list_audit(
    session: AsyncSession, query: AuditQuery
) -> tuple[list[Any], str | None, int | None]:
    stmt = _ENTRIES
    if query.user_id is not None:
        stmt = stmt.where(AuditEntry.user_id == query.user_id)
    if query.project_id is not None:
        stmt = stmt.where(AuditEntry.project_id == query.project_id)
    if query.action is not None:
        if query.action.endswith(PREFIX_MARKS):
            prefix = query.action.rstrip("*")
            stmt = stmt.where(AuditEntry.action.startswith(prefix, autoescape=True))
        else:
            stmt = stmt.where(AuditEntry.action == query.action)
    if query.outcome is not None:
        stmt = stmt.where(AuditEntry.outcome == query.outcome)
    if query.from_ is not None:
        stmt = stmt.where(AuditEntry.at >= query.from_)
    if query.to is not None:
        stmt = stmt.where(AuditEntry.at < query.to)
    # No total: counting a log that only grows costs a scan per page.
    rows = list((await session.execute(keyset(stmt, query, ORDER))).all())
    return (*cut(rows, query, ORDER), None)
