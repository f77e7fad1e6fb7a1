"""The audit log: every mutating request, who, what, when, from where, and how it
ended. Append-only; never holds a secret. Entries outlive their user and project."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

from sqlalchemy import JSON, ForeignKey, Index, String
from sqlalchemy.orm import Mapped, mapped_column

from services.common.db.base import Base, UuidPk
from services.common.db.enums import AuditOutcome
from services.common.db.types import UTCDateTime, str_enum, utcnow


class AuditEntry(UuidPk, Base):
    __tablename__ = "audit_log"
    __table_args__ = (
        Index(None, "at"),
        Index(None, "user_id", "at"),
        Index(None, "project_id", "at"),
        Index(None, "action", "at"),
    )

    at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    user_id: Mapped[uuid.UUID | None] = mapped_column(ForeignKey("users.id", ondelete="SET NULL"))
    # Who it was at the time (the user row may be gone later); None for the system.
    actor: Mapped[str | None] = mapped_column(String(320))
    # e.g. "database.create", "backup.delete", "auth.login".
    action: Mapped[str] = mapped_column(String(64))
    target_type: Mapped[str | None] = mapped_column(String(32))
    target_id: Mapped[str | None] = mapped_column(String(64))
    project_id: Mapped[uuid.UUID | None] = mapped_column(
        ForeignKey("projects.id", ondelete="SET NULL")
    )
    client_address: Mapped[str | None] = mapped_column(String(64))
    outcome: Mapped[AuditOutcome] = mapped_column(str_enum(AuditOutcome))
    details: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
