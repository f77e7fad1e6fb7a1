"""Every table of the metadata DB; importing this module registers them all on
``Base.metadata`` (which Alembic compares against)."""

from __future__ import annotations

from services.common.db.models.accounts import ApiToken, Project, ProjectMember, RefreshToken, User
from services.common.db.models.audit import AuditEntry
from services.common.db.models.catalog import (
    Database,
    Destination,
    Schedule,
    SchedulerCursor,
    schedule_destinations,
)
from services.common.db.models.runs import Backup, BackupCopy, Restore

__all__ = [
    "ApiToken",
    "AuditEntry",
    "Backup",
    "BackupCopy",
    "Database",
    "Destination",
    "Project",
    "ProjectMember",
    "RefreshToken",
    "Restore",
    "Schedule",
    "SchedulerCursor",
    "User",
    "schedule_destinations",
]
