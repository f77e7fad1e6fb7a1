"""Enumerations and small value objects shared by several messages.

Adding a member to one of these enums is a v2 change (a v1 consumer would refuse the
new value); open sets such as error codes are plain constrained strings instead.
"""

from __future__ import annotations

import uuid
from enum import StrEnum

from pydantic import model_validator

from proto.base import SafeText, WireModel


class Engine(StrEnum):
    POSTGRESQL = "postgresql"
    MYSQL = "mysql"
    MARIADB = "mariadb"
    MONGODB = "mongodb"
    REDIS = "redis"


class Trigger(StrEnum):
    """Why a backup run exists."""

    SCHEDULE = "schedule"
    MANUAL = "manual"
    RETRY = "retry"


class OverlapPolicy(StrEnum):
    """What an executor does with a job whose database already has a run in progress."""

    SKIP = "skip"
    QUEUE = "queue"


class RestoreMode(StrEnum):
    INTO_EMPTY = "into-empty"
    REPLACE = "replace"


class RestorePurpose(StrEnum):
    RESTORE = "restore"
    VERIFY = "verify"


class ScheduleChange(StrEnum):
    CREATED = "created"
    UPDATED = "updated"
    DELETED = "deleted"
    ENABLED = "enabled"
    DISABLED = "disabled"


class CompressionAlgorithm(StrEnum):
    ZSTD = "zstd"
    GZIP = "gzip"
    NONE = "none"


_LEVELS = {
    CompressionAlgorithm.ZSTD: range(-7, 23),
    CompressionAlgorithm.GZIP: range(1, 10),
}


class Compression(WireModel):
    """How an artifact is (or is to be) compressed."""

    algorithm: CompressionAlgorithm = CompressionAlgorithm.ZSTD
    level: int | None = None
    """Level for the algorithm (zstd -7..22, gzip 1..9); ``None`` means its default."""

    @model_validator(mode="after")
    def _level_fits(self) -> Compression:
        if self.level is None:
            return self
        levels = _LEVELS.get(self.algorithm)
        if levels is None:
            raise ValueError(f"compression {self.algorithm} takes no level")
        if self.level not in levels:
            raise ValueError(
                f"{self.algorithm} level must be between {levels.start} and {levels.stop - 1}"
            )
        return self


class CopyStatus(StrEnum):
    STORED = "stored"
    FAILED = "failed"


class ArtifactCopy(WireModel):
    """One destination's copy of an artifact."""

    destination_id: uuid.UUID
    status: CopyStatus
    error: SafeText | None = None
    """Why the copy failed; ``None`` when it was stored."""
