"""Findings of the storage service's sweeps (usage and reconciliation)."""

from __future__ import annotations

import uuid
from typing import ClassVar

from pydantic import Field, NonNegativeInt

from proto import subjects
from proto.base import ArtifactKey, Event

MAX_LISTED = 100
"""At most this many keys / ids are listed in one event; the counts are complete."""


class StorageLowSpaceDetected(Event):
    """A local destination's free space fell under its warning threshold."""

    SUBJECT: ClassVar[str] = subjects.STORAGE_LOW_SPACE_DETECTED

    destination_id: uuid.UUID
    free_bytes: NonNegativeInt
    total_bytes: NonNegativeInt
    threshold_bytes: NonNegativeInt
    """The warning threshold that was crossed."""


class StorageOrphansFound(Event):
    """A reconciliation sweep found artifacts without rows and/or rows without artifacts."""

    SUBJECT: ClassVar[str] = subjects.STORAGE_ORPHANS_FOUND

    destination_id: uuid.UUID
    orphan_count: NonNegativeInt
    """Artifacts (or leftover temporary files) that no backup row points to."""
    orphan_bytes: NonNegativeInt
    orphan_keys: tuple[ArtifactKey, ...] = Field(default=(), max_length=MAX_LISTED)
    """The first orphans found (at most 100)."""
    missing_count: NonNegativeInt
    """Backup rows whose artifact is gone from this destination."""
    missing_backup_ids: tuple[uuid.UUID, ...] = Field(default=(), max_length=MAX_LISTED)
    """The first such rows (at most 100)."""
    removed_count: NonNegativeInt = 0
    """Orphans older than the grace period that the sweep removed."""
    removed_bytes: NonNegativeInt = 0
