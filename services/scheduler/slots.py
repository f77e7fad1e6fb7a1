"""A slot on its way to the wire, as plain data: its deterministic key and backup id,
its row, its job (built from the schedule's settings). No I/O here."""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Final

from pydantic import ValidationError

from proto.jobs import BackupRequested
from proto.values import Compression, Trigger
from services.common.cron import Slot
from services.common.db.enums import BackupStatus, Encryption
from services.scheduler.catchup import Action
from services.scheduler.store import Existing, JobConfig

SLOT_NAMESPACE: Final = uuid.UUID("5c1e0d7a-3b8f-4f2e-9a61-0b5d6c2e8f47")
CODES: Final = {
    BackupStatus.MISSED: "missed",
    BackupStatus.SKIPPED: "overlap",
    BackupStatus.FAILED: "invalid_schedule",
    BackupStatus.CANCELLED: "schedule_changed",
}


def slot_key(schedule_id: uuid.UUID, slot: Slot | datetime) -> str:
    """``<schedule_id>:<slot in UTC>``: the job's ``Nats-Msg-Id``."""
    at = slot.utc if isinstance(slot, Slot) else slot
    return f"{schedule_id}:{at.strftime('%Y-%m-%dT%H:%M:%SZ')}"


def backup_id_for(schedule_id: uuid.UUID, slot: Slot) -> uuid.UUID:
    """The same id for the same slot on every replica and after every restart."""
    return uuid.uuid5(SLOT_NAMESPACE, slot_key(schedule_id, slot))


@dataclass
class Item:
    """One slot on its way: its row's fate and, to fire it, its job."""

    action: Action
    config: JobConfig
    status: BackupStatus
    reason: str | None = None
    job: BackupRequested | None = None
    mine: bool = False
    """This scheduler inserted the row."""
    found: Existing | None = None
    """The row someone else (or this scheduler earlier) recorded."""
    msg_id: str = field(init=False)
    backup_id: uuid.UUID = field(init=False)

    def __post_init__(self) -> None:
        self.msg_id = slot_key(self.action.schedule_id, self.action.slot)
        self.backup_id = uuid.uuid5(SLOT_NAMESPACE, self.msg_id)

    @property
    def key(self) -> tuple[uuid.UUID, datetime]:
        return self.action.schedule_id, self.action.slot.utc

    @property
    def row_id(self) -> uuid.UUID:
        return self.found.id if self.found is not None else self.backup_id

    @property
    def queued(self) -> bool:
        """The row is queued and ours to act on (whoever inserted it)."""
        if self.mine:
            return self.status is BackupStatus.QUEUED
        return self.found is not None and self.found.status is BackupStatus.QUEUED


def with_job(action: Action, config: JobConfig) -> Item:
    item = Item(action, config, BackupStatus.QUEUED)
    age = config.encryption is Encryption.AGE and config.encryption_recipient
    try:
        item.job = BackupRequested(
            backup_id=item.backup_id,
            project_id=config.project_id,
            database_id=config.database_id,
            schedule_id=action.schedule_id,
            trigger=Trigger.SCHEDULE,
            slot_at=action.slot.utc,
            timeout_s=config.timeout_s,
            compression=Compression(algorithm=config.compression, level=config.compression_level),
            age_recipients=(config.encryption_recipient,) if age else (),
            destination_ids=tuple(config.destinations),
            overlap=config.overlap_policy,
        )
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(map(str, e['loc']))}: {e['msg']}"
            for e in exc.errors(include_url=False, include_input=False)
        )
        item.status = BackupStatus.FAILED
        item.reason = f"Not run: the schedule's settings cannot make a backup job ({problems})."
    return item


def row_of(item: Item, now: datetime) -> dict[str, Any]:
    """A reserved slot is queued as of its own time (the job goes out then)."""
    final = item.status is not BackupStatus.QUEUED
    queued_at = max(now, item.key[1])
    return {
        "id": item.backup_id,
        "database_id": item.config.database_id,
        "schedule_id": item.action.schedule_id,
        "trigger": Trigger.SCHEDULE,
        "status": item.status,
        "slot_at": item.action.slot.utc,
        "queued_at": queued_at,
        "finished_at": queued_at if final else None,
        "attempts": 0,
        "error_code": CODES.get(item.status),
        "error_message": item.reason,
    }
