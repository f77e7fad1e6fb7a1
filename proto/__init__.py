"""Wire contracts of BackupManager v1: subjects, one frozen pydantic model per subject,
JSON encoding, and the JSON Schemas exported to ``proto/schemas/`` for outside
subscribers (``python -m proto.export``). Nothing here touches NATS."""

from proto.backup_events import (
    BackupCompleted,
    BackupCorrupted,
    BackupDeleted,
    BackupEvent,
    BackupFailed,
    BackupMissed,
    BackupProgressed,
    BackupSkipped,
    BackupStarted,
    BackupVerified,
)
from proto.base import Envelope, Event, Job, Message, Reply, Request
from proto.codec import ProtoError, decode, encode
from proto.jobs import BackupRequested, RestoreRequested
from proto.registry import MODELS, REPLIES, decode_subject, model_for
from proto.requests import DatabaseTestReply, DatabaseTestRequest
from proto.restore_events import (
    RestoreCompleted,
    RestoreEvent,
    RestoreFailed,
    RestoreProgressed,
    RestoreStarted,
)
from proto.schedule_events import ScheduleChanged
from proto.storage_events import StorageLowSpaceDetected, StorageOrphansFound

__all__ = [
    "MODELS",
    "REPLIES",
    "BackupCompleted",
    "BackupCorrupted",
    "BackupDeleted",
    "BackupEvent",
    "BackupFailed",
    "BackupMissed",
    "BackupProgressed",
    "BackupRequested",
    "BackupSkipped",
    "BackupStarted",
    "BackupVerified",
    "DatabaseTestReply",
    "DatabaseTestRequest",
    "Envelope",
    "Event",
    "Job",
    "Message",
    "ProtoError",
    "Reply",
    "Request",
    "RestoreCompleted",
    "RestoreEvent",
    "RestoreFailed",
    "RestoreProgressed",
    "RestoreRequested",
    "RestoreStarted",
    "ScheduleChanged",
    "StorageLowSpaceDetected",
    "StorageOrphansFound",
    "decode",
    "decode_subject",
    "encode",
    "model_for",
]
