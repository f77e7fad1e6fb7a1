from __future__ import annotations

import uuid
from datetime import datetime

from pydantic import Field

from services.api.schemas.common import Input, Output
from services.api.web.pagination import PageQuery
from services.common.db.enums import RestoreMode, RestoreSource, RestoreStatus


class RestoreCreate(Input):
    target_database_id: uuid.UUID | None = Field(
        default=None, description="Database to restore into; default: the backup's own"
    )
    target_database_name: str | None = Field(
        default=None,
        min_length=1,
        max_length=255,
        pattern=r"^[^\x00-\x1f/\\]+$",
        description="Name on the target server (created where the engine allows); default: "
        "the target database's own name",
    )
    mode: RestoreMode = RestoreMode.INTO_EMPTY
    confirm_overwrite_source: bool = Field(
        default=False,
        description="Must be true to restore over the very database the backup came from",
    )
    no_owner: bool = Field(default=False, description="PostgreSQL: skip ownership and grants")


class RestoreUploadQuery(Input):
    """``POST /databases/{id}/restore-upload``: the body is the raw dump file; these
    say where and how to restore it."""

    target_database_name: str | None = Field(
        default=None,
        min_length=1,
        max_length=255,
        pattern=r"^[^\x00-\x1f/\\]+$",
        description="Name on the database's server (created where the engine allows); "
        "default: the database's own name",
    )
    mode: RestoreMode = RestoreMode.INTO_EMPTY
    confirm_overwrite_source: bool = Field(
        default=False,
        description="Must be true to restore into the database's own name (the database "
        "this entry backs up)",
    )
    no_owner: bool = Field(default=False, description="PostgreSQL: skip ownership and grants")


class RestoreOut(Output):
    id: uuid.UUID
    source: RestoreSource
    backup_id: uuid.UUID | None
    target_database_id: uuid.UUID | None
    target_name: str
    mode: RestoreMode
    status: RestoreStatus
    queued_at: datetime
    started_at: datetime | None
    finished_at: datetime | None
    bytes_in: int | None
    error_code: str | None
    error_message: str | None
    purpose: str = Field(
        default="restore",
        description="restore, or verify: a test restore into a scratch database whose "
        "result is recorded on the backup",
    )


class RestoreDetail(RestoreOut):
    log: str | None = Field(description="The tail of the restore tool's output, redacted")


class RestoreListQuery(PageQuery):
    backup_id: uuid.UUID | None = None
    target_database_id: uuid.UUID | None = None
    status: RestoreStatus | None = None
