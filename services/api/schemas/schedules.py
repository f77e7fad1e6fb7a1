"""Request and response models of schedules and the cron preview."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from typing import Annotated

from pydantic import (
    AfterValidator,
    AwareDatetime,
    BaseModel,
    ConfigDict,
    Field,
    StringConstraints,
    ValidationError,
    ValidationInfo,
    field_validator,
)
from pydantic_core import PydanticCustomError

from proto import values
from services.api.schemas.common import Input, Name, Output
from services.api.web.pagination import PageQuery
from services.common.cron import CronError, parse_cron, parse_timezone
from services.common.db.enums import Compression, Encryption, OverlapPolicy, VerifyMode
from services.common.db.models.catalog import DEFAULT_TIMEOUT_S
from services.common.retention_policy import RetentionPolicy

MIN_TIMEOUT_S = 60
MAX_TIMEOUT_S = 7 * 24 * 3600
MAX_DESTINATIONS = 10
PREVIEW_MAX = 50
EARLIEST_AFTER = datetime(1900, 1, 1, tzinfo=UTC)
LATEST_AFTER = datetime(9000, 1, 1, tzinfo=UTC)


def _cron(value: str) -> str:
    try:
        return parse_cron(value).expr
    except CronError as exc:
        raise PydanticCustomError("cron", "{reason}", {"reason": str(exc)}) from None


def _timezone(value: str) -> str:
    try:
        return parse_timezone(value).key
    except CronError as exc:
        raise PydanticCustomError("timezone", "{reason}", {"reason": str(exc)}) from None


CronExpr = Annotated[
    str,
    StringConstraints(max_length=200),
    AfterValidator(_cron),
    Field(
        description="5 fields (minute hour day-of-month month day-of-week) or @hourly, "
        "@daily, @weekly, @monthly, @yearly; stored in normal form",
        examples=["30 2 * * *", "0 */6 * * mon-fri", "@daily"],
    ),
]
TimezoneName = Annotated[
    str,
    StringConstraints(max_length=200),
    AfterValidator(_timezone),
    Field(description="IANA time zone the cron is evaluated in", examples=["Europe/Berlin"]),
]
Level = Annotated[
    int,
    Field(description="zstd -7..22, gzip 1..9, none: no level; null: the default level"),
]
Timeout = Annotated[
    int,
    Field(ge=MIN_TIMEOUT_S, le=MAX_TIMEOUT_S, description="Seconds before a run is stopped"),
]
DestinationIds = Annotated[
    list[uuid.UUID],
    Field(
        min_length=1,
        max_length=MAX_DESTINATIONS,
        description="Every run is written to each; global or of the database's project",
    ),
]


def _no_age(value: Encryption) -> Encryption:
    if value is not Encryption.NONE:
        raise PydanticCustomError("encryption", "encryption 'age' is not available yet; use none")
    return value


def _no_recipient(value: str | None) -> str | None:
    if value is not None:
        raise PydanticCustomError("encryption", "a recipient needs encryption 'age' (not yet)")
    return value


NoEncryption = Annotated[Encryption, AfterValidator(_no_age)]
Recipient = Annotated[
    str | None, AfterValidator(_no_recipient), Field(description="Reserved for age encryption")
]


def level_problem(algorithm: Compression, level: int | None) -> str | None:
    """Why ``level`` does not suit ``algorithm`` (the wire contract's rule), or None."""
    try:
        values.Compression(algorithm=algorithm, level=level)
    except ValidationError as exc:
        return str(exc.errors()[0]["msg"]).removeprefix("Value error, ")
    return None


class ScheduleCreate(Input):
    database_id: uuid.UUID
    name: Name
    cron: CronExpr
    timezone: TimezoneName = "UTC"
    enabled: bool = True
    destination_ids: DestinationIds | None = Field(
        default=None,
        description="Omitted: the default destination (see the docs); an error if there is none",
    )
    compression: Compression = Compression.ZSTD
    compression_level: Level | None = None
    timeout_s: Timeout = DEFAULT_TIMEOUT_S
    overlap_policy: OverlapPolicy = OverlapPolicy.SKIP
    retention: RetentionPolicy = Field(
        default_factory=RetentionPolicy, description="Empty: keep every backup"
    )
    verify: VerifyMode = VerifyMode.OFF
    encryption: NoEncryption = Encryption.NONE
    encryption_recipient: Recipient = None

    @field_validator("compression_level")
    @classmethod
    def _level_fits(cls, value: int | None, info: ValidationInfo) -> int | None:
        algorithm = info.data.get("compression")
        problem = level_problem(algorithm, value) if algorithm is not None else None
        if problem:
            raise PydanticCustomError("compression_level", "{reason}", {"reason": problem})
        return value


class ScheduleUpdate(Input):
    """Only the fields sent change; the others keep their values. A new compression
    without a level resets the level to the algorithm's default."""

    name: Name | None = None
    cron: CronExpr | None = None
    timezone: TimezoneName | None = None
    enabled: bool | None = None
    destination_ids: DestinationIds | None = None
    compression: Compression | None = None
    compression_level: Level | None = Field(default=None, description="null: the default level")
    timeout_s: Timeout | None = None
    overlap_policy: OverlapPolicy | None = None
    retention: RetentionPolicy | None = None
    verify: VerifyMode | None = None
    encryption: NoEncryption | None = None
    encryption_recipient: Recipient = None


class RunTime(BaseModel):
    utc: datetime = Field(description="The run's instant in UTC")
    local: datetime = Field(description="The same instant in the schedule's zone")
    shifted: bool = Field(
        description="The cron's wall time did not exist that day (DST gap); the run "
        "moved to the first instant after the gap"
    )


class ScheduleOut(Output):
    id: uuid.UUID
    database_id: uuid.UUID
    project_id: uuid.UUID
    name: str
    cron: str
    timezone: str
    enabled: bool
    destination_ids: list[uuid.UUID]
    compression: Compression
    compression_level: int | None
    timeout_s: int
    overlap_policy: OverlapPolicy
    retention: RetentionPolicy
    verify: VerifyMode
    encryption: Encryption
    encryption_recipient: str | None
    description: str = Field(description="The cron in words")
    next_run_at: datetime | None = Field(description="UTC; null when disabled")
    created_at: datetime
    updated_at: datetime


class ScheduleDetail(ScheduleOut):
    upcoming: list[RunTime] = Field(description="The next few runs (none when disabled)")


class ScheduleListQuery(PageQuery):
    database_id: uuid.UUID | None = None
    project_id: uuid.UUID | None = None
    enabled: bool | None = None


class CronPreviewQuery(BaseModel):
    model_config = ConfigDict(extra="forbid")

    expr: CronExpr
    tz: TimezoneName = "UTC"
    count: int = Field(default=5, ge=1, le=PREVIEW_MAX, description="How many runs")
    after: AwareDatetime | None = Field(
        default=None, description="List runs after this instant instead of now (ISO 8601)"
    )

    @field_validator("after")
    @classmethod
    def _plausible(cls, value: datetime | None) -> datetime | None:
        if value is not None and not EARLIEST_AFTER <= value <= LATEST_AFTER:
            raise PydanticCustomError("after", "after must lie between years 1900 and 9000")
        return value


class CronPreview(BaseModel):
    expr: str = Field(description="The expression in normal form")
    timezone: str
    description: str
    runs: list[RunTime]
