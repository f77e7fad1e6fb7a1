"""Jobs: commands stored in the work-queue stream and pulled by executors.

No secret travels in a job: the executor looks the database's credentials up in the
metadata DB by ``database_id``. Age recipients are public keys.
"""

from __future__ import annotations

import uuid
from typing import Annotated, ClassVar

from pydantic import Field, PositiveInt, StringConstraints, model_validator

from proto import subjects
from proto.base import Job, UtcDatetime
from proto.values import Compression, OverlapPolicy, RestoreMode, RestorePurpose, Trigger

DEFAULT_TIMEOUT_S = 6 * 3600

AgeRecipient = Annotated[str, StringConstraints(pattern=r"^age1[0-9a-z]{20,}$")]


class BackupRequested(Job):
    """Run one backup of a database. The scheduler publishes it with
    ``Nats-Msg-Id = "<schedule_id>:<slot_at>"`` so a slot is enqueued once."""

    SUBJECT: ClassVar[str] = subjects.BACKUP_REQUESTED

    backup_id: uuid.UUID
    """The backup row (status ``queued``) created by whoever enqueued the job."""
    project_id: uuid.UUID
    database_id: uuid.UUID
    schedule_id: uuid.UUID | None = None
    """The schedule that fired; ``None`` for a manual backup."""
    trigger: Trigger
    slot_at: UtcDatetime | None = None
    """The cron slot this run fills (UTC); required when ``trigger`` is ``schedule``."""
    requested_by: uuid.UUID | None = None
    """The user who asked; ``None`` when the scheduler fired it."""
    timeout_s: PositiveInt = DEFAULT_TIMEOUT_S
    """The run fails with a timeout after this many seconds."""
    compression: Compression = Compression()
    age_recipients: tuple[AgeRecipient, ...] = ()
    """Encrypt to these age public keys; empty means not encrypted."""
    destination_ids: tuple[uuid.UUID, ...] = Field(min_length=1)
    """Every destination gets a copy, written from one pass over the dump."""
    overlap: OverlapPolicy = OverlapPolicy.SKIP
    """What to do when a run of the same database is still in progress."""

    @model_validator(mode="after")
    def _schedule_fields(self) -> BackupRequested:
        if self.trigger is Trigger.SCHEDULE and (self.schedule_id is None or self.slot_at is None):
            raise ValueError("a scheduled backup needs schedule_id and slot_at")
        return self


class RestoreRequested(Job):
    """Restore a backup (or an uploaded dump) into a database, or — with purpose
    ``verify`` — into a scratch database to prove the backup restores."""

    SUBJECT: ClassVar[str] = subjects.RESTORE_REQUESTED

    restore_id: uuid.UUID
    """The restore row (status ``queued``) created by whoever enqueued the job."""
    project_id: uuid.UUID
    purpose: RestorePurpose = RestorePurpose.RESTORE
    backup_id: uuid.UUID | None = None
    """The backup to restore; ``None`` when restoring an upload."""
    upload_key: Annotated[str, StringConstraints(min_length=1, max_length=1024)] | None = None
    """Where the API staged a user's uploaded dump; ``None`` when restoring a backup."""
    source_destination_id: uuid.UUID | None = None
    """Which stored copy to read; ``None`` means any stored copy."""
    target_database_id: uuid.UUID | None = None
    """The database to restore into; ``None`` only for verification (scratch database)."""
    target_database_name: Annotated[str, StringConstraints(min_length=1, max_length=255)] | None = (
        None
    )
    """Restore into this database name (created where the engine allows); ``None``
    means the target database's own name."""
    mode: RestoreMode = RestoreMode.INTO_EMPTY
    no_owner: bool = False
    """PostgreSQL: do not restore object ownership."""
    requested_by: uuid.UUID | None = None
    timeout_s: PositiveInt = DEFAULT_TIMEOUT_S

    @model_validator(mode="after")
    def _source_and_target(self) -> RestoreRequested:
        if (self.backup_id is None) == (self.upload_key is None):
            raise ValueError("exactly one of backup_id and upload_key is needed")
        if self.purpose is RestorePurpose.RESTORE and self.target_database_id is None:
            raise ValueError("a restore needs target_database_id")
        if self.purpose is RestorePurpose.VERIFY and self.backup_id is None:
            raise ValueError("a verification needs backup_id")
        return self
