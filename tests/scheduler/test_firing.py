"""Firing slots in-process against a real NATS and metadata DB: the queued row, the job
with its message id, the cursor; and exactly once when a second replica fires the
same slot or a scheduler died between the steps of a firing."""

from __future__ import annotations

from datetime import timedelta

import pytest
from nats.aio.client import Client as NATS

from proto.codec import decode
from proto.jobs import BackupRequested
from proto.values import Trigger
from services.common.db.enums import BackupStatus, Compression, Encryption
from services.scheduler.context import SchedulerContext
from services.scheduler.firing import Firing
from services.scheduler.scheduler import Scheduler
from tests.scheduler.conftest import T0, TestClock, World, data, jobs, minutes, msg_ids

pytestmark = pytest.mark.integration


async def test_a_due_slot_is_recorded_published_and_the_cursor_advanced(
    scheduler: Scheduler, world: World, clock: TestClock, nc: NATS
) -> None:
    schedule = await world.schedule(
        "0 * * * *", compression=Compression.GZIP, compression_level=4, timeout_s=900
    )
    clock.set(T0 + minutes(30))
    await scheduler.tick()
    assert await world.backups(schedule) == []
    cursor = await world.cursor(schedule)
    assert cursor is not None
    assert (cursor.last_slot_at, cursor.next_slot_at) == (None, T0 + minutes(60))

    clock.set(T0 + minutes(60) + timedelta(seconds=1))
    await scheduler.tick()
    [backup] = await world.backups(schedule)
    assert (backup.status, backup.trigger, backup.slot_at) == (
        BackupStatus.QUEUED,
        Trigger.SCHEDULE,
        T0 + minutes(60),
    )
    [msg] = await jobs(nc)
    assert msg_ids([msg]) == [f"{schedule.id}:2024-03-01T13:00:00Z"]
    job = decode(BackupRequested, data(msg))
    assert job.backup_id == backup.id
    assert (job.schedule_id, job.database_id, job.project_id) == (
        schedule.id,
        world.database.id,
        world.project.id,
    )
    assert (job.slot_at, job.timeout_s, job.destination_ids) == (
        T0 + minutes(60),
        900,
        (world.destination.id,),
    )
    assert (job.compression.algorithm.value, job.compression.level) == ("gzip", 4)
    cursor = await world.cursor(schedule)
    assert cursor is not None
    assert (cursor.last_slot_at, cursor.next_slot_at) == (T0 + minutes(60), T0 + minutes(120))

    await scheduler.tick()  # nothing new is due
    assert len(await jobs(nc)) == 1
    assert len(await world.backups(schedule)) == 1


async def test_two_replicas_firing_the_same_slot_enqueue_it_once(
    ctx: SchedulerContext, world: World, clock: TestClock, nc: NATS
) -> None:
    schedules = [await world.schedule("*/5 * * * *") for _ in range(20)]
    clock.set(T0 + minutes(4))
    first, second = Scheduler(ctx), Scheduler(ctx)
    await first.tick()
    await second.tick()
    clock.set(T0 + minutes(5))
    await first.tick()
    await second.tick()

    assert len(await jobs(nc)) == 20
    for schedule in schedules:
        assert [b.status for b in await world.backups(schedule)] == [BackupStatus.QUEUED]


async def test_a_crash_between_the_row_and_the_job_is_healed_by_the_next_scheduler(
    ctx: SchedulerContext,
    world: World,
    clock: TestClock,
    nc: NATS,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    schedule = await world.schedule("0 * * * *")
    clock.set(T0 + minutes(60))

    async def lost(*_: object) -> None:
        raise ConnectionError("NATS went away")

    crashed = Scheduler(ctx)
    monkeypatch.setattr(crashed.firing, "_fire", lost)
    await crashed.tick()
    [backup] = await world.backups(schedule)
    assert backup.status is BackupStatus.QUEUED
    assert await jobs(nc) == []
    cursor = await world.cursor(schedule)
    assert cursor is None or cursor.last_slot_at is None

    clock.set(T0 + minutes(61))
    await Scheduler(ctx).tick()  # the restarted scheduler
    [msg] = await jobs(nc)
    assert decode(BackupRequested, data(msg)).backup_id == backup.id
    assert len(await world.backups(schedule)) == 1


async def test_a_crash_before_the_cursor_moved_does_not_enqueue_twice(
    ctx: SchedulerContext,
    world: World,
    clock: TestClock,
    nc: NATS,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    schedule = await world.schedule("0 * * * *")
    clock.set(T0 + minutes(60))

    async def lost(writes: list[object], *_: object) -> None:
        if writes:
            raise ConnectionError("the metadata DB went away")

    crashed = Scheduler(ctx)
    monkeypatch.setattr(crashed.store, "write_cursors", lost)
    await crashed.tick()
    assert len(await jobs(nc)) == 1

    clock.set(T0 + minutes(62))
    await Scheduler(ctx).tick()
    assert len(await jobs(nc)) == 1  # sent again, and deduplicated by its message id
    assert len(await world.backups(schedule)) == 1
    cursor = await world.cursor(schedule)
    assert cursor is not None
    assert cursor.last_slot_at == T0 + minutes(60)


async def test_a_failed_publish_is_retried_and_the_slot_fires_once(
    scheduler: Scheduler,
    world: World,
    clock: TestClock,
    nc: NATS,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    schedule = await world.schedule("0 * * * *")
    clock.set(T0 + minutes(60))
    send = Firing._fire
    calls = 0

    async def flaky(self: Firing, *args: object) -> None:
        nonlocal calls
        calls += 1
        if calls == 1:
            raise TimeoutError
        await send(self, *args)  # type: ignore[arg-type]

    monkeypatch.setattr(Firing, "_fire", flaky)
    delay = await scheduler.tick()
    assert await jobs(nc) == []
    assert 0 < delay <= 5.01  # tries again soon

    clock.set(T0 + minutes(60) + timedelta(seconds=6))
    await scheduler.tick()
    assert len(await jobs(nc)) == 1
    assert len(await world.backups(schedule)) == 1


async def test_encryption_and_settings_that_cannot_make_a_job_are_recorded(
    scheduler: Scheduler, world: World, clock: TestClock, nc: NATS
) -> None:
    recipient = "age1" + "q" * 58
    encrypted = await world.schedule(
        "0 * * * *", encryption=Encryption.AGE, encryption_recipient=recipient
    )
    broken = await world.schedule("0 * * * *", compression=Compression.NONE, compression_level=3)
    clock.set(T0 + minutes(60))
    await scheduler.tick()

    [msg] = await jobs(nc)
    assert decode(BackupRequested, data(msg)).age_recipients == (recipient,)
    [failed] = await world.backups(broken)
    assert failed.status is BackupStatus.FAILED
    assert failed.error_code == "invalid_schedule"
    assert "compression" in (failed.error_message or "")
    assert len(await world.backups(encrypted)) == 1
