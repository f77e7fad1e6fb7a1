"""Writing the audit log: one entry per mutating request, whatever its outcome,
in its own transaction (so a failed request is recorded too)."""

from __future__ import annotations

import logging
from typing import Any

from sqlalchemy.exc import IntegrityError

from services.api.web.endpoint import Call, Route
from services.common.db.enums import AuditOutcome
from services.common.db.models import AuditEntry

log = logging.getLogger(__name__)
DENIED_STATUSES = frozenset({401, 403, 404, 429})


def outcome_of(status: int) -> AuditOutcome:
    if status < 400:
        return AuditOutcome.SUCCESS
    if status in DENIED_STATUSES:
        return AuditOutcome.DENIED
    return AuditOutcome.FAILURE


async def write_audit(call: Call[Any, Any], route: Route, status: int) -> None:
    principal = call.principal_or_none
    note = call.audit
    entry = AuditEntry(
        at=call.ctx.clock(),
        user_id=principal.user_id if principal else None,
        actor=principal.email if principal else note.details.get("email"),
        action=route.action or route.tag,
        target_type=note.target_type,
        target_id=note.target_id,
        project_id=note.project_id,
        client_address=call.client_address[:64] or None,
        outcome=outcome_of(status),
        details={
            **note.details,
            "status": status,
            "api_token": bool(principal and principal.api_token_id),
        },
    )
    try:
        try:
            async with call.ctx.transaction() as session:
                session.add(entry)
        except IntegrityError:
            # The project named in the request does not exist (or was just deleted):
            # keep the entry, without the link.
            entry.project_id = None
            async with call.ctx.transaction() as session:
                session.add(entry)
    except Exception:
        # The request's own outcome stands; a lost audit entry is an operator alarm.
        log.exception("could not write the audit entry for %s", route.action)
