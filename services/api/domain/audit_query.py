"""Reading the audit log (admins only; the view enforces it): filters and keyset
pages, newest first. Statements are built once per shape (which filters are set,
whether a cursor is given) and run with the request's values bound."""

from __future__ import annotations

from functools import cache
from typing import Any

from sqlalchemy import ColumnElement, Select, bindparam, select, type_coerce
from sqlalchemy.ext.asyncio import AsyncSession

from services.api.schemas.audit import AuditQuery
from services.api.web.pagination import (
    LIKE_ESCAPE,
    cut,
    keyset_bound,
    page_params,
    plain_rows,
    prefix_pattern,
)
from services.common.db.models import AuditEntry
from services.common.db.types import RepeatedUuid

PREFIX_MARKS = (".", "*")
ORDER = (AuditEntry.at, AuditEntry.id)
# Who and which project repeat down a page: each id is parsed once (RepeatedUuid).
_COLUMNS = tuple(
    type_coerce(column, RepeatedUuid()).label(column.key)
    if column.key in {"user_id", "project_id"} else column
    for column in AuditEntry.__table__.c
)  # fmt: skip
# query field -> (condition on the log, with its value bound under the field's name)
_EXACT: dict[str, Any] = {
    "user_id": lambda: AuditEntry.user_id == bindparam("user_id"),
    "project_id": lambda: AuditEntry.project_id == bindparam("project_id"),
    "outcome": lambda: AuditEntry.outcome == bindparam("outcome"),
    "from_": lambda: AuditEntry.at >= bindparam("from_"),
    "to": lambda: AuditEntry.at < bindparam("to"),
}


async def list_audit(
    session: AsyncSession, query: AuditQuery
) -> tuple[list[dict[str, Any]], str | None, int | None]:
    """A page of entries as plain rows (a page is only read and rendered)."""
    params = page_params(query)
    present = tuple(name for name in _EXACT if getattr(query, name) is not None)
    params |= {name: getattr(query, name) for name in present}
    action = None
    if query.action is not None:
        if query.action.endswith(PREFIX_MARKS):
            action = "prefix"
            params["action"] = prefix_pattern(query.action.rstrip("*"))
        else:
            action = "exact"
            params["action"] = query.action
    result = await (await session.connection()).execute(
        _statement(present, action, bool(query.cursor)), params
    )
    rows = plain_rows(result)
    # No total: counting a log that only grows costs a scan per page.
    return (*cut(rows, query, ORDER), None)


@cache
def _statement(present: tuple[str, ...], action: str | None, cursor: bool) -> Select[Any]:
    where: list[ColumnElement[bool]] = [_EXACT[name]() for name in present]
    if action == "exact":
        where.append(AuditEntry.action == bindparam("action"))
    elif action == "prefix":
        where.append(AuditEntry.action.like(bindparam("action"), escape=LIKE_ESCAPE))
    return keyset_bound(select(*_COLUMNS).where(*where), ORDER, cursor=cursor)
