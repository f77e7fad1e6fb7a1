"""Models of ``GET /audit``: filters and entries of the audit log."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from typing import Annotated, Any

from pydantic import AfterValidator, AwareDatetime, Field, StringConstraints, model_validator

from services.api.schemas.common import Output
from services.api.web.pagination import PageQuery
from services.common.db.enums import AuditOutcome


def _in_utc(value: datetime) -> datetime:
    try:
        return value.astimezone(UTC)
    except OverflowError:
        raise ValueError("time out of range") from None


Instant = Annotated[AwareDatetime, AfterValidator(_in_utc)]
ActionFilter = Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=64)]


class AuditQuery(PageQuery):
    user_id: uuid.UUID | None = Field(default=None, description="Done by this user")
    project_id: uuid.UUID | None = Field(default=None, description="Concerning this project")
    action: ActionFilter | None = Field(
        default=None,
        description="An action (`project.create`), or a prefix ending with '.' or '*' "
        "(`project.` or `project.member*`)",
    )
    outcome: AuditOutcome | None = None
    from_: Instant | None = Field(
        default=None, alias="from", description="At or after (RFC 3339 with a zone)"
    )
    to: Instant | None = Field(default=None, description="Before (RFC 3339 with a zone)")

    @model_validator(mode="after")
    def _ordered(self) -> AuditQuery:
        if self.from_ is not None and self.to is not None and self.to < self.from_:
            raise ValueError("'to' must not be before 'from'")
        return self


class AuditEntryOut(Output):
    id: uuid.UUID
    at: datetime
    user_id: uuid.UUID | None = Field(description="Null for the system or an anonymous caller")
    actor: str | None = Field(description="Who it was at the time (their email)")
    action: str
    target_type: str | None
    target_id: str | None
    project_id: uuid.UUID | None
    client_address: str | None
    outcome: AuditOutcome
    details: dict[str, Any] = Field(description="What else is worth knowing; never a secret")
