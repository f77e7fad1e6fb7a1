"""The audit log for what people do through the pages: the same actions and fields
as the JSON API's entries, marked ``"via": "web"``."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from aiohttp import web

from services.api.context import API
from services.api.domain.audit import outcome_of
from services.api.pages.session import VISITOR
from services.api.web.endpoint import AuditNote
from services.api.web.errors import ApiError
from services.common.db.models import AuditEntry

log = logging.getLogger(__name__)


@asynccontextmanager
async def audited(request: web.Request, action: str) -> AsyncIterator[AuditNote]:
    """Record ``action`` once the block ends, whatever its outcome."""
    note = AuditNote(details={"via": "web"})
    status = 500
    try:
        yield note
        status = 200
    except ApiError as exc:
        status = exc.status
        raise
    finally:
        await _write(request, action, note, status)


async def _write(request: web.Request, action: str, note: AuditNote, status: int) -> None:
    ctx = request.app[API]
    visitor = request.get(VISITOR)
    principal = visitor.principal if visitor else None
    actor = principal.email if principal else note.details.get("email")
    entry = AuditEntry(
        at=ctx.clock(),
        user_id=principal.user_id if principal else None,
        actor=actor if isinstance(actor, str) else None,
        action=action,
        target_type=note.target_type,
        target_id=note.target_id,
        project_id=note.project_id,
        client_address=(request.remote or "")[:64] or None,
        outcome=outcome_of(status),
        details={**note.details, "status": status, "api_token": False},
    )
    try:
        async with ctx.transaction() as session:
            session.add(entry)
    except Exception:
        log.exception("could not write the audit entry for %s", action)
