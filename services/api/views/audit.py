"""``GET /audit``: the audit log, for administrators."""

from __future__ import annotations

from services.api.domain.audit_query import list_audit
from services.api.schemas.audit import AuditEntryOut, AuditQuery
from services.api.web.endpoint import Call, Endpoints, NoBody
from services.api.web.pagination import Page, RowsPage

routes = Endpoints("audit")


@routes.get(
    "/audit",
    query=AuditQuery,
    response=Page[AuditEntryOut],
    auth="admin",
    summary="Audit log entries, newest first (administrators)",
)
async def list_entries(call: Call[NoBody, AuditQuery]) -> RowsPage:
    async with call.ctx.reading() as session:
        rows, cursor, total = await list_audit(session, call.query)
    return RowsPage(rows, cursor, total)
