from __future__ import annotations

import uuid
from datetime import datetime

from pydantic import Field

from proto.values import CompressionAlgorithm
from services.api.schemas.common import Input, Output
from services.api.web.pagination import PageQuery
from services.common.db.enums import BackupStatus, BackupTrigger, CopyStatus, VerifyStatus


class CompressionIn(Input):
    algorithm: CompressionAlgorithm = CompressionAlgorithm.ZSTD
    level: int | None = Field(default=None, description="zstd -7..22, gzip 1..9; null: default")


class BackupNow(Input):
    destination_ids: list[uuid.UUID] | None = Field(
        default=None,
        min_length=1,
        description="Where to store it; default: the destinations of the database's "
        "schedules, else the default destination",
    )
    compression: CompressionIn = CompressionIn()
    timeout_s: int = Field(default=6 * 3600, ge=10, le=7 * 86400)


class CopyOut(Output):
    destination_id: uuid.UUID
    status: CopyStatus
    size_bytes: int | None
    stored_at: datetime | None


class BackupOut(Output):
    id: uuid.UUID
    database_id: uuid.UUID
    project_id: uuid.UUID
    schedule_id: uuid.UUID | None
    trigger: BackupTrigger
    status: BackupStatus
    slot_at: datetime | None
    queued_at: datetime
    started_at: datetime | None
    finished_at: datetime | None
    duration_s: float | None
    attempts: int
    bytes_in: int | None = Field(description="Raw dump size")
    bytes_out: int | None = Field(description="Stored (compressed) size")
    sha256: str | None
    artifact_key: str | None
    compression: str | None
    error_code: str | None
    error_message: str | None
    warning: str | None
    verified_at: datetime | None
    verify_status: VerifyStatus | None
    verify_message: str | None
    copies: list[CopyOut]


class BackupDetail(BackupOut):
    log: str | None = Field(description="The tail of the dump tool's output, secrets redacted")
    manifest: dict[str, object] | None


class BackupListQuery(PageQuery):
    project_id: uuid.UUID | None = None
    database_id: uuid.UUID | None = None
    schedule_id: uuid.UUID | None = None
    status: BackupStatus | None = None
    trigger: BackupTrigger | None = None
    since: datetime | None = Field(default=None, description="Queued at or after (ISO 8601)")
    until: datetime | None = Field(default=None, description="Queued before (ISO 8601)")


class ConnectionTestOut(Output):
    ok: bool
    executor_id: str
    engine: str | None
    server_version: str | None
    database_size_bytes: int | None
    latency_ms: float | None
    error_code: str | None
    error: str | None
