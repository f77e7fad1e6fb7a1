"""Models of ``GET /schedules/{id}/retention/preview``."""

from __future__ import annotations

import uuid
from datetime import datetime

from pydantic import BaseModel, ConfigDict, Field

from services.common.db.enums import BackupStatus
from services.common.retention_policy import RetentionPolicy

PREVIEW_LIMIT = 200
PREVIEW_MAX = 2000


class RetentionPreviewQuery(BaseModel):
    model_config = ConfigDict(extra="forbid")

    limit: int = Field(
        default=PREVIEW_LIMIT,
        ge=1,
        le=PREVIEW_MAX,
        description="List at most this many backups, newest first (the counts cover all)",
    )


class CopyVerdict(BaseModel):
    """Retention applies per destination: what happens to one stored copy."""

    destination_id: uuid.UUID
    destination_name: str
    size_bytes: int = Field(description="Bytes of this copy")
    keep: bool = Field(description="The copy stays on this destination")
    reasons: list[str] = Field(
        description="Every rule that keeps it there, or why it goes, decided over the "
        "backups stored on this destination"
    )


class BackupVerdict(BaseModel):
    backup_id: uuid.UUID
    status: BackupStatus
    finished_at: datetime = Field(description="When the run ended (or was recorded)")
    verified: bool
    size_bytes: int = Field(description="Bytes of its copies (what deleting it frees)")
    keep: bool = Field(
        description="The backup (its row) stays: some destination keeps its copy, or it "
        "is kept for history; its copies on other destinations may still go (`copies`)"
    )
    reasons: list[str] = Field(
        description="Every rule that keeps it, or why it goes, e.g. 'keep_last 7', "
        "'gfs daily 2026-11-27', 'newest successful backup', 'max_age 30 days exceeded'"
    )
    copies: list[CopyVerdict] = Field(
        default_factory=list,
        description="One per stored copy, by destination name: kept or deleted there, and why",
    )


class RetentionPreview(BaseModel):
    schedule_id: uuid.UUID
    database_id: uuid.UUID
    project_id: uuid.UUID
    generated_at: datetime
    timezone: str = Field(description="GFS periods are days, weeks... of this zone")
    policy: RetentionPolicy
    keeps_everything: bool = Field(description="The policy has no rule: nothing is deleted")
    failed_run_retention_days: int = Field(
        description="Failed, missed and skipped runs (and corrupt backups) are kept this long"
    )
    problem: str | None = Field(
        default=None,
        description="Why everything is kept although a policy is set (an invalid stored value)",
    )
    keep_count: int = Field(description="Backups that stay")
    delete_count: int = Field(description="Backups that would be deleted (row and copies)")
    copy_delete_count: int = Field(
        description="Copies that would be deleted from backups that stay (another "
        "destination keeps them)"
    )
    delete_bytes: int = Field(
        description="Bytes the deletions would free on all destinations: the deleted "
        "backups' copies and the other copies that would go"
    )
    backups: list[BackupVerdict] = Field(description="Newest first, at most `limit`")
    truncated: bool = Field(description="More backups exist than are listed")
