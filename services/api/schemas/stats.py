"""Models of ``/stats``: the dashboard and storage use, both scoped to the caller."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from services.common.db.enums import DestinationKind

Window = Literal["24h", "7d", "30d"]
NextRunSource = Literal["scheduler", "cron"]


class StatsQuery(BaseModel):
    model_config = ConfigDict(extra="forbid")

    project_id: uuid.UUID | None = Field(
        default=None, description="Only this project (404 when the caller cannot see it)"
    )


class DashboardQuery(StatsQuery):
    next_runs: int = Field(default=10, ge=0, le=100, description="How many upcoming runs to list")


class StatusCounts(BaseModel):
    """Backups per status (0 when none)."""

    queued: int = 0
    running: int = 0
    succeeded: int = 0
    failed: int = 0
    cancelled: int = 0
    missed: int = 0
    skipped: int = 0
    corrupt: int = 0


class WindowStats(BaseModel):
    window: Window
    since: datetime = Field(description="Backups queued at or after this time are counted")
    total: int
    by_status: StatusCounts
    success_rate: float | None = Field(
        description="succeeded / (succeeded + failed); null when there were neither"
    )


class Counts(BaseModel):
    projects: int
    databases: int
    schedules: int
    schedules_enabled: int


class LastSuccess(BaseModel):
    """A database and its newest successful backup (nulls when it never had one)."""

    project_id: uuid.UUID
    database_id: uuid.UUID
    database_name: str
    backup_id: uuid.UUID | None
    finished_at: datetime | None
    size_bytes: int | None = Field(description="Size of the stored artifact (after compression)")
    verified_backup_id: uuid.UUID | None = Field(
        default=None, description="The newest backup whose test-restore passed"
    )
    verified_at: datetime | None = None


class OverdueDatabase(BaseModel):
    """A database whose enabled schedule has not produced a successful backup within
    twice its interval."""

    project_id: uuid.UUID
    database_id: uuid.UUID
    database_name: str
    schedule_id: uuid.UUID
    schedule_name: str
    cron: str
    timezone: str
    interval_s: int = Field(description="The longest gap between the schedule's next runs")
    last_success_at: datetime | None
    overdue_since: datetime = Field(
        description="Last success (or the schedule's last change, if later) + 2 x interval"
    )


class NextRun(BaseModel):
    project_id: uuid.UUID
    database_id: uuid.UUID
    database_name: str
    schedule_id: uuid.UUID
    schedule_name: str
    at: datetime
    source: NextRunSource = Field(
        description="'scheduler': the slot the scheduler will fire next; 'cron': computed "
        "from the expression (the scheduler has not picked the schedule up yet)"
    )


class Dashboard(BaseModel):
    generated_at: datetime
    project_id: uuid.UUID | None
    counts: Counts
    windows: list[WindowStats]
    last_success: list[LastSuccess] = Field(
        description="One entry per database, by name (at most 200; narrow with project_id)"
    )
    overdue: list[OverdueDatabase] = Field(description="Most overdue first (at most 200)")
    next_runs: list[NextRun] = Field(description="Soonest first")


class StorageUse(BaseModel):
    size_bytes: int = Field(description="Bytes of stored copies")
    copies: int = Field(description="Stored copies (one backup on one destination)")
    missing: int = Field(default=0, description="Copies whose artifact is gone (reconciliation)")
    corrupt: int = Field(
        default=0, description="Copies whose bytes no longer match (integrity sweep)"
    )


class ProjectStorage(StorageUse):
    project_id: uuid.UUID
    project_name: str
    project_slug: str


class DestinationStorage(StorageUse):
    destination_id: uuid.UUID
    destination_name: str
    kind: DestinationKind
    shared: bool = Field(
        description="Usable by every project; the numbers count only what the caller may see"
    )
    free_bytes: int | None = Field(
        default=None, description="Free space of a local destination's device (null otherwise)"
    )
    total_bytes: int | None = Field(default=None, description="Size of that device")
    low_space: bool = Field(
        default=False, description="Free space is under BM_LOW_SPACE_BYTES / _FRACTION"
    )


class DatabaseStorage(StorageUse):
    project_id: uuid.UUID
    database_id: uuid.UUID
    database_name: str


class StorageStats(BaseModel):
    generated_at: datetime
    project_id: uuid.UUID | None
    total: StorageUse
    projects: list[ProjectStorage] = Field(description="Largest first")
    databases: list[DatabaseStorage] = Field(description="Largest first, at most 200")
    destinations: list[DestinationStorage] = Field(description="Largest first")
