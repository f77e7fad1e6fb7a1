"""The closed vocabularies stored in the metadata DB (values are what is stored)."""

from __future__ import annotations

from enum import StrEnum

# The vocabularies that also travel on the wire are defined once, in proto.
from proto.values import CompressionAlgorithm as Compression
from proto.values import Engine as DatabaseEngine
from proto.values import OverlapPolicy, RestoreMode
from proto.values import Trigger as BackupTrigger

__all__ = [
    "FINAL_BACKUP_STATUSES",
    "AuditOutcome",
    "BackupStatus",
    "BackupTrigger",
    "Compression",
    "CopyStatus",
    "DatabaseEngine",
    "DestinationKind",
    "Encryption",
    "OverlapPolicy",
    "ProjectRole",
    "RestoreMode",
    "RestoreSource",
    "RestoreStatus",
    "TlsMode",
    "VerifyMode",
    "VerifyStatus",
]


class ProjectRole(StrEnum):
    OWNER = "owner"
    OPERATOR = "operator"
    VIEWER = "viewer"


class TlsMode(StrEnum):
    DISABLE = "disable"
    PREFER = "prefer"
    REQUIRE = "require"
    VERIFY_CA = "verify-ca"
    VERIFY_FULL = "verify-full"


class DestinationKind(StrEnum):
    LOCAL = "local"
    S3 = "s3"
    AZURE = "azure"


class Encryption(StrEnum):
    NONE = "none"
    AGE = "age"


class VerifyMode(StrEnum):
    OFF = "off"
    EVERY_RUN = "every_run"
    DAILY = "daily"
    WEEKLY = "weekly"


class BackupStatus(StrEnum):
    QUEUED = "queued"
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    CANCELLED = "cancelled"
    MISSED = "missed"
    SKIPPED = "skipped"
    CORRUPT = "corrupt"


# A run in one of these states is over; its row changes only through verification,
# the integrity sweep (-> corrupt) or retention (row deleted).
FINAL_BACKUP_STATUSES = frozenset(
    {
        BackupStatus.SUCCEEDED,
        BackupStatus.FAILED,
        BackupStatus.CANCELLED,
        BackupStatus.MISSED,
        BackupStatus.SKIPPED,
        BackupStatus.CORRUPT,
    }
)


class VerifyStatus(StrEnum):
    PASSED = "passed"
    FAILED = "failed"


class CopyStatus(StrEnum):
    """One backup's copy on one destination."""

    WRITING = "writing"
    STORED = "stored"
    FAILED = "failed"
    MISSING = "missing"
    CORRUPT = "corrupt"


class RestoreSource(StrEnum):
    BACKUP = "backup"
    UPLOAD = "upload"


class RestoreStatus(StrEnum):
    QUEUED = "queued"
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    CANCELLED = "cancelled"


class AuditOutcome(StrEnum):
    SUCCESS = "success"
    FAILURE = "failure"
    DENIED = "denied"
