"""Every NATS subject, stream and durable consumer name of wire version 1, defined once.

Naming
    ``bm.v1.<noun>.<verb-in-past-tense>`` for events (``bm.v1.backup.completed``),
    ``bm.v1.<noun>.requested`` for jobs (commands that go through the work queue) and
    ``bm.v1.<noun>.<verb>`` for request/reply (``bm.v1.database.test``). When the verb
    needs an object it comes first, joined by ``_`` (``bm.v1.storage.orphans_found``).

Where each subject lives
    * Jobs are stored in the work-queue stream :data:`JOBS_STREAM`; executors pull them
      through the shared durable consumer :data:`EXECUTOR_DURABLE`.
    * Lifecycle events are stored in the limits-retention stream :data:`EVENTS_STREAM`
      so that a subscriber that was down can catch up.
    * Progress events (:data:`CORE_EVENT_SUBJECTS`) are core NATS only: they are
      throttled, only interesting while a run is live (SSE progress bars), and would
      otherwise crowd the events stream out of its byte limit. Subscribe to them with a
      plain core subscription; nothing replays them.
    * Requests (:data:`REQUEST_SUBJECTS`) are core NATS request/reply to executors.

Why explicit subject lists rather than wildcards
    A JetStream server refuses two streams whose subjects overlap, and the job subjects
    share the ``bm.v1.backup.`` prefix with the backup events (both spellings are part
    of the contract). So neither stream uses a wildcard: each lists its subjects
    exactly. Adding an event subject means adding it here; ``ensure_streams`` then
    updates the events stream's subject list on the next start. Outside subscribers may
    still use ``bm.v1.>`` on core NATS, or :data:`EVENTS_STREAM` to replay.
"""

from __future__ import annotations

from typing import Final

PREFIX: Final = "bm.v1"
WILDCARD: Final = f"{PREFIX}.>"
"""Every v1 subject (core NATS subscriptions only; no stream uses it)."""

# Jobs (work queue) -----------------------------------------------------------------
BACKUP_REQUESTED: Final = "bm.v1.backup.requested"
RESTORE_REQUESTED: Final = "bm.v1.restore.requested"

# Requests (core NATS request/reply) ------------------------------------------------
DATABASE_TEST: Final = "bm.v1.database.test"

# Backup lifecycle events -----------------------------------------------------------
BACKUP_STARTED: Final = "bm.v1.backup.started"
BACKUP_PROGRESSED: Final = "bm.v1.backup.progressed"
BACKUP_COMPLETED: Final = "bm.v1.backup.completed"
BACKUP_FAILED: Final = "bm.v1.backup.failed"
BACKUP_DELETED: Final = "bm.v1.backup.deleted"
BACKUP_VERIFIED: Final = "bm.v1.backup.verified"
BACKUP_MISSED: Final = "bm.v1.backup.missed"
BACKUP_SKIPPED: Final = "bm.v1.backup.skipped"
BACKUP_CORRUPTED: Final = "bm.v1.backup.corrupted"

# Restore lifecycle events ----------------------------------------------------------
RESTORE_STARTED: Final = "bm.v1.restore.started"
RESTORE_PROGRESSED: Final = "bm.v1.restore.progressed"
RESTORE_COMPLETED: Final = "bm.v1.restore.completed"
RESTORE_FAILED: Final = "bm.v1.restore.failed"

# Schedule and storage events -------------------------------------------------------
SCHEDULE_CHANGED: Final = "bm.v1.schedule.changed"
STORAGE_LOW_SPACE_DETECTED: Final = "bm.v1.storage.low_space_detected"
STORAGE_ORPHANS_FOUND: Final = "bm.v1.storage.orphans_found"

# Internal (core NATS between processes of one service; not part of the contract) ----
API_CACHES_STALE: Final = "bm.internal.api.caches_stale"
"""An API process made a change: the others forget what they remembered (payload: the
sender's instance id)."""

# Groups ----------------------------------------------------------------------------
JOB_SUBJECTS: Final = (BACKUP_REQUESTED, RESTORE_REQUESTED)
REQUEST_SUBJECTS: Final = (DATABASE_TEST,)
CORE_EVENT_SUBJECTS: Final = (BACKUP_PROGRESSED, RESTORE_PROGRESSED)
STORED_EVENT_SUBJECTS: Final = (
    BACKUP_STARTED,
    BACKUP_COMPLETED,
    BACKUP_FAILED,
    BACKUP_DELETED,
    BACKUP_VERIFIED,
    BACKUP_MISSED,
    BACKUP_SKIPPED,
    BACKUP_CORRUPTED,
    RESTORE_STARTED,
    RESTORE_COMPLETED,
    RESTORE_FAILED,
    SCHEDULE_CHANGED,
    STORAGE_LOW_SPACE_DETECTED,
    STORAGE_ORPHANS_FOUND,
)
EVENT_SUBJECTS: Final = STORED_EVENT_SUBJECTS + CORE_EVENT_SUBJECTS
ALL_SUBJECTS: Final = JOB_SUBJECTS + REQUEST_SUBJECTS + EVENT_SUBJECTS

# Streams and consumers -------------------------------------------------------------
JOBS_STREAM: Final = "BM_JOBS"
"""Work-queue stream holding :data:`JOB_SUBJECTS`."""
EVENTS_STREAM: Final = "BM_EVENTS"
"""Limits-retention stream holding :data:`STORED_EVENT_SUBJECTS`."""
EXECUTOR_DURABLE: Final = "bm-executors"
"""Durable pull consumer on :data:`JOBS_STREAM` shared by every executor replica."""


def stream_of(subject: str) -> str | None:
    """The stream that stores ``subject``, or ``None`` for core-NATS-only subjects."""
    if subject in JOB_SUBJECTS:
        return JOBS_STREAM
    if subject in STORED_EVENT_SUBJECTS:
        return EVENTS_STREAM
    return None
