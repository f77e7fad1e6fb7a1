"""What happens to a backup: published by the executor (run lifecycle), the scheduler
(missed and skipped slots) and the storage service (deletions, integrity)."""

from __future__ import annotations

import uuid
from typing import Annotated, ClassVar

from pydantic import Field, NonNegativeFloat, NonNegativeInt, PositiveInt, StringConstraints

from proto import subjects
from proto.base import ArtifactKey, ErrorCode, Event, SafeText, Sha256, UtcDatetime
from proto.values import ArtifactCopy, Compression, Engine, Trigger

ExecutorId = Annotated[str, StringConstraints(min_length=1, max_length=255)]


class BackupEvent(Event):
    """Fields every backup event carries (not a subject of its own)."""

    backup_id: uuid.UUID
    project_id: uuid.UUID
    database_id: uuid.UUID
    schedule_id: uuid.UUID | None = None
    """The schedule behind the run; ``None`` for a manual backup."""


class BackupStarted(BackupEvent):
    SUBJECT: ClassVar[str] = subjects.BACKUP_STARTED

    trigger: Trigger
    engine: Engine
    executor_id: ExecutorId
    attempt: PositiveInt = 1
    """Delivery attempt of the job (1 on the first try)."""
    slot_at: UtcDatetime | None = None


class BackupProgressed(BackupEvent):
    """Throttled progress of a running backup (core NATS only, not stored)."""

    SUBJECT: ClassVar[str] = subjects.BACKUP_PROGRESSED

    bytes_in: NonNegativeInt
    """Bytes read from the dump tool so far."""
    bytes_out: NonNegativeInt
    """Bytes written to the destination(s) so far (after compression/encryption)."""
    rate_bps: NonNegativeFloat
    """Recent rate of ``bytes_in`` in bytes per second."""
    elapsed_s: NonNegativeFloat
    estimated_total_bytes: NonNegativeInt | None = None
    """The database size reported by the engine, when it reports one."""


class BackupCompleted(BackupEvent):
    """The artifact is stored and re-checked; its row is final."""

    SUBJECT: ClassVar[str] = subjects.BACKUP_COMPLETED

    engine: Engine
    artifact_key: ArtifactKey
    size_bytes: NonNegativeInt
    """Size of the stored artifact."""
    raw_bytes: NonNegativeInt
    """Bytes the dump tool produced, before compression."""
    sha256: Sha256
    """Digest of the stored artifact's bytes (after compression and encryption)."""
    compression: Compression
    encrypted: bool
    copies: tuple[ArtifactCopy, ...] = Field(min_length=1)
    started_at: UtcDatetime
    finished_at: UtcDatetime
    duration_s: NonNegativeFloat
    warnings: tuple[SafeText, ...] = ()
    """E.g. the size fell far below the previous successful run."""


class BackupFailed(BackupEvent):
    SUBJECT: ClassVar[str] = subjects.BACKUP_FAILED

    code: ErrorCode
    """``timeout``, ``stalled``, ``tool_failed``, ``unreachable``, ``auth_failed``,
    ``destination_failed``, ``cancelled``, ..."""
    message: SafeText
    attempt: PositiveInt = 1
    will_retry: bool = False
    """Whether the job will be delivered again (``max_deliver`` not reached)."""
    duration_s: NonNegativeFloat | None = None


class BackupDeleted(BackupEvent):
    """An artifact copy (or every copy and the row) was deleted."""

    SUBJECT: ClassVar[str] = subjects.BACKUP_DELETED

    artifact_key: ArtifactKey
    destination_id: uuid.UUID | None = None
    """The destination whose copy went; ``None`` when every copy went."""
    size_bytes: NonNegativeInt
    reason: SafeText
    """``retention: keep_last 7``, ``deleted by a user``, ..."""
    deleted_by: uuid.UUID | None = None
    """The user who deleted it; ``None`` for retention."""


class BackupVerified(BackupEvent):
    """A test restore of the backup ran; ``passed`` says whether it proved the backup."""

    SUBJECT: ClassVar[str] = subjects.BACKUP_VERIFIED

    passed: bool
    restore_id: uuid.UUID | None = None
    """The verification's restore run."""
    detail: SafeText | None = None
    """What did not match, when it failed."""
    duration_s: NonNegativeFloat | None = None


class BackupMissed(BackupEvent):
    """A slot passed beyond the catch-up grace and was recorded as missed."""

    SUBJECT: ClassVar[str] = subjects.BACKUP_MISSED

    schedule_id: uuid.UUID
    slot_at: UtcDatetime
    reason: SafeText


class BackupSkipped(BackupEvent):
    """A run was not started, per the overlap policy ``skip``."""

    SUBJECT: ClassVar[str] = subjects.BACKUP_SKIPPED

    slot_at: UtcDatetime | None = None
    reason: SafeText
    running_backup_id: uuid.UUID | None = None
    """The run of the same database that was still in progress."""


class BackupCorrupted(BackupEvent):
    """The integrity sweep found a stored copy that no longer matches its checksum."""

    SUBJECT: ClassVar[str] = subjects.BACKUP_CORRUPTED

    destination_id: uuid.UUID
    artifact_key: ArtifactKey
    expected_sha256: Sha256
    actual_sha256: Sha256 | None = None
    """``None`` when the artifact could not be read at all."""
    expected_size: NonNegativeInt
    actual_size: NonNegativeInt | None = None
    detail: SafeText | None = None
