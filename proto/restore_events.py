"""What happens to a restore (including verification restores), published by the
executor that runs it."""

from __future__ import annotations

import uuid
from typing import Annotated, ClassVar

from pydantic import NonNegativeFloat, NonNegativeInt, PositiveInt, StringConstraints

from proto import subjects
from proto.base import ErrorCode, Event, SafeText
from proto.values import RestoreMode, RestorePurpose


class RestoreEvent(Event):
    """Fields every restore event carries (not a subject of its own)."""

    restore_id: uuid.UUID
    project_id: uuid.UUID
    purpose: RestorePurpose = RestorePurpose.RESTORE
    backup_id: uuid.UUID | None = None
    """The backup being restored; ``None`` for an uploaded dump."""
    target_database_id: uuid.UUID | None = None
    """``None`` for a verification into a scratch database."""


class RestoreStarted(RestoreEvent):
    SUBJECT: ClassVar[str] = subjects.RESTORE_STARTED

    mode: RestoreMode
    executor_id: Annotated[str, StringConstraints(min_length=1, max_length=255)]
    attempt: PositiveInt = 1


class RestoreProgressed(RestoreEvent):
    """Throttled progress of a running restore (core NATS only, not stored)."""

    SUBJECT: ClassVar[str] = subjects.RESTORE_PROGRESSED

    bytes_in: NonNegativeInt
    """Artifact bytes read so far."""
    bytes_out: NonNegativeInt
    """Decompressed bytes fed to the restore tool so far."""
    rate_bps: NonNegativeFloat
    elapsed_s: NonNegativeFloat
    total_bytes: NonNegativeInt | None = None
    """Size of the artifact, when known, for a percentage."""


class RestoreCompleted(RestoreEvent):
    SUBJECT: ClassVar[str] = subjects.RESTORE_COMPLETED

    target_database_name: Annotated[str, StringConstraints(max_length=255)] | None = None
    bytes_restored: NonNegativeInt
    """Decompressed bytes the restore tool consumed."""
    duration_s: NonNegativeFloat
    warnings: tuple[SafeText, ...] = ()


class RestoreFailed(RestoreEvent):
    SUBJECT: ClassVar[str] = subjects.RESTORE_FAILED

    code: ErrorCode
    """``checksum_mismatch``, ``target_not_empty``, ``tool_failed``, ``unreachable``, ..."""
    message: SafeText
    attempt: PositiveInt = 1
    will_retry: bool = False
    duration_s: NonNegativeFloat | None = None
