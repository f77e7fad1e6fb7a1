"""A slot as plain data: its message id and backup id (the same on every replica), its
row, and its job built from the schedule's settings — or a failed row saying why the
settings cannot make one."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta

import pytest

from proto.values import Trigger
from services.common.cron import next_slot
from services.common.db.enums import BackupStatus, Compression, Encryption, OverlapPolicy
from services.scheduler.catchup import Action, Kind
from services.scheduler.slots import backup_id_for, row_of, slot_key, with_job
from services.scheduler.store import JobConfig

T0 = datetime(2024, 3, 1, 12, 0, tzinfo=UTC)
SID = uuid.UUID(int=7)
SLOT = next_slot("0 * * * *", "UTC", T0)


def config(**changes: object) -> JobConfig:
    values: dict[str, object] = {
        "id": SID, "database_id": uuid.UUID(int=2), "project_id": uuid.UUID(int=3),
        "enabled": True, "overlap_policy": OverlapPolicy.QUEUE,
        "compression": Compression.ZSTD, "compression_level": 5,
        "encryption": Encryption.NONE, "encryption_recipient": None, "timeout_s": 900,
        "destinations": [uuid.UUID(int=4), uuid.UUID(int=5)],
    }  # fmt: skip
    values.update(changes)
    return JobConfig(**values)  # type: ignore[arg-type]


def test_the_message_id_names_the_schedule_and_the_slot_in_utc() -> None:
    assert slot_key(SID, SLOT) == f"{SID}:2024-03-01T13:00:00Z"
    assert slot_key(SID, SLOT.utc) == slot_key(SID, SLOT)


def test_the_backup_id_is_derived_from_the_slot() -> None:
    later = next_slot("0 * * * *", "UTC", SLOT.utc)
    assert backup_id_for(SID, SLOT) == backup_id_for(SID, SLOT)
    assert backup_id_for(SID, SLOT) != backup_id_for(SID, later)
    assert backup_id_for(SID, SLOT) != backup_id_for(uuid.UUID(int=8), SLOT)
    assert with_job(Action(SID, SLOT, Kind.FIRE), config()).backup_id == backup_id_for(SID, SLOT)


def test_the_job_carries_the_schedule_settings() -> None:
    item = with_job(Action(SID, SLOT, Kind.FIRE), config())
    assert item.status is BackupStatus.QUEUED
    assert item.job is not None
    job = item.job
    assert (job.backup_id, job.schedule_id, job.trigger, job.slot_at) == (
        item.backup_id, SID, Trigger.SCHEDULE, SLOT.utc
    )  # fmt: skip
    assert (job.database_id, job.project_id) == (uuid.UUID(int=2), uuid.UUID(int=3))
    assert (job.compression.algorithm.value, job.compression.level, job.timeout_s) == (
        "zstd", 5, 900
    )  # fmt: skip
    assert job.destination_ids == (uuid.UUID(int=4), uuid.UUID(int=5))
    assert (job.overlap, job.age_recipients) == (OverlapPolicy.QUEUE, ())


def test_an_age_recipient_is_passed_on() -> None:
    recipient = "age1" + "q" * 58
    item = with_job(Action(SID, SLOT, Kind.FIRE),
                    config(encryption=Encryption.AGE, encryption_recipient=recipient))  # fmt: skip
    assert item.job is not None
    assert item.job.age_recipients == (recipient,)


@pytest.mark.parametrize(
    ("changes", "mentions"),
    [
        ({"compression": Compression.NONE, "compression_level": 3}, "compression"),
        ({"destinations": []}, "destination_ids"),
        ({"encryption": Encryption.AGE, "encryption_recipient": "not-a-key"}, "age_recipients"),
    ],
)
def test_settings_that_cannot_make_a_job_fail_the_slot_with_a_reason(
    changes: dict[str, object], mentions: str
) -> None:
    item = with_job(Action(SID, SLOT, Kind.FIRE), config(**changes))
    assert (item.status, item.job) == (BackupStatus.FAILED, None)
    assert item.reason is not None
    assert mentions in item.reason
    assert item.reason.startswith("Not run: the schedule's settings cannot make a backup job")


def test_rows() -> None:
    ahead = with_job(Action(SID, SLOT, Kind.FIRE), config())
    row = row_of(ahead, SLOT.utc - timedelta(seconds=5))
    assert row["queued_at"] == SLOT.utc  # reserved ahead: queued as of its slot
    assert (row["status"], row["finished_at"], row["error_code"]) == (
        BackupStatus.QUEUED, None, None
    )  # fmt: skip
    assert (row["schedule_id"], row["slot_at"], row["trigger"]) == (SID, SLOT.utc, Trigger.SCHEDULE)

    late = row_of(ahead, SLOT.utc + timedelta(minutes=3))
    assert late["queued_at"] == SLOT.utc + timedelta(minutes=3)

    missed = with_job(Action(SID, SLOT, Kind.FIRE), config())
    missed.status, missed.reason = BackupStatus.MISSED, "why"
    now = SLOT.utc + timedelta(hours=2)
    row = row_of(missed, now)
    assert (row["status"], row["finished_at"], row["error_code"], row["error_message"]) == (
        BackupStatus.MISSED, now, "missed", "why"
    )  # fmt: skip
