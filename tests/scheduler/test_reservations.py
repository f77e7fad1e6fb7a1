"""Slots reserved ahead (row written ``queued`` ``LEAD`` before the slot) and released at
their time: the job goes out only then; a change before the slot re-reserves it or
cancels it; a reservation left behind by a stopped scheduler still fires once, or is
recorded as missed once it is no longer owed."""

from __future__ import annotations

from datetime import timedelta

import pytest
from nats.aio.client import Client as NATS
from sqlalchemy import select

from proto.backup_events import BackupMissed, BackupSkipped
from proto.codec import decode
from proto.jobs import BackupRequested
from proto.subjects import BACKUP_MISSED, BACKUP_SKIPPED
from proto.values import Trigger
from services.common.db.enums import BackupStatus, Compression
from services.common.db.models import Backup
from services.scheduler.context import SchedulerContext
from services.scheduler.recorder import LEAD
from services.scheduler.scheduler import Scheduler
from tests.scheduler.conftest import T0, Sessions, TestClock, World, data, events, jobs, minutes

pytestmark = pytest.mark.integration

SLOT = T0 + minutes(60)
BEFORE = SLOT - LEAD / 2


async def idle(scheduler: Scheduler) -> None:
    """Run rounds until the scheduler has nothing left to do right now."""
    while await scheduler.tick() == 0:
        pass


async def test_a_slot_is_reserved_ahead_and_published_at_its_time(
    scheduler: Scheduler, world: World, clock: TestClock, nc: NATS
) -> None:
    schedule = await world.schedule("0 * * * *")
    clock.set(SLOT - LEAD - timedelta(seconds=1))
    delay = await scheduler.tick()
    assert await world.backups(schedule) == []
    assert delay == pytest.approx(1.0, abs=0.01)  # it wakes to reserve, LEAD before

    clock.set(BEFORE)
    delay = await scheduler.tick()
    [backup] = await world.backups(schedule)
    assert (backup.status, backup.queued_at) == (BackupStatus.QUEUED, SLOT)
    assert await jobs(nc) == []
    assert delay == pytest.approx((SLOT - BEFORE).total_seconds(), abs=0.01)

    clock.set(SLOT)
    await scheduler.tick()
    [msg] = await jobs(nc)
    assert decode(BackupRequested, data(msg)).backup_id == backup.id
    cursor = await world.cursor(schedule)
    assert cursor is not None
    assert (cursor.last_slot_at, cursor.next_slot_at) == (SLOT, SLOT + minutes(60))


async def test_disabling_a_reserved_slot_cancels_it(
    scheduler: Scheduler, world: World, clock: TestClock, nc: NATS
) -> None:
    schedule = await world.schedule("0 * * * *")
    clock.set(BEFORE)
    await scheduler.tick()
    await world.update(schedule, BEFORE, enabled=False)
    scheduler.schedule_changed(schedule.id)  # as the event does
    await scheduler.tick()
    clock.set(SLOT + timedelta(seconds=1))
    await scheduler.tick()

    [backup] = await world.backups(schedule)
    assert (backup.status, backup.error_code) == (BackupStatus.CANCELLED, "schedule_changed")
    assert "disabled, deleted or given another time just before this slot" in (
        backup.error_message or ""
    )
    assert await jobs(nc) == []
    cursor = await world.cursor(schedule)
    assert cursor is not None
    assert cursor.next_slot_at is None


async def test_deleting_or_re_timing_a_reserved_schedule_cancels_its_slot(
    scheduler: Scheduler, world: World, clock: TestClock, nc: NATS, sessions: Sessions
) -> None:
    deleted = await world.schedule("0 * * * *")
    retimed = await world.schedule("0 * * * *")
    kept = await world.schedule("0 * * * *")
    clock.set(BEFORE)
    await scheduler.tick()
    async with sessions() as session, session.begin():
        row = await session.get(type(deleted), deleted.id)
        await session.delete(row)
    await world.update(retimed, BEFORE, cron="30 * * * *")
    await world.update(kept, BEFORE, cron="0,30 * * * *")  # the slot stays
    for schedule in (deleted, retimed, kept):
        scheduler.schedule_changed(schedule.id)
    await scheduler.tick()
    clock.set(SLOT)
    await scheduler.tick()

    async with sessions() as session:
        rows = list(await session.scalars(select(Backup).where(Backup.slot_at == SLOT)))
    orphaned = [b for b in rows if b.schedule_id is None]  # its schedule is gone
    assert [b.status for b in orphaned] == [BackupStatus.CANCELLED]
    assert [b.status for b in await world.backups(retimed)] == [BackupStatus.CANCELLED]
    assert [b.status for b in await world.backups(kept)] == [BackupStatus.QUEUED]
    [msg] = await jobs(nc)
    assert decode(BackupRequested, data(msg)).schedule_id == kept.id


async def test_changed_settings_before_the_slot_are_in_its_job(
    scheduler: Scheduler, world: World, clock: TestClock, nc: NATS
) -> None:
    schedule = await world.schedule("0 * * * *", timeout_s=600)
    clock.set(BEFORE)
    await scheduler.tick()
    await world.update(schedule, BEFORE, timeout_s=1200, compression=Compression.GZIP)
    scheduler.schedule_changed(schedule.id)
    await idle(scheduler)
    clock.set(SLOT)
    await scheduler.tick()
    [msg] = await jobs(nc)
    job = decode(BackupRequested, data(msg))
    assert (job.timeout_s, job.compression.algorithm.value) == (1200, "gzip")
    assert len(await world.backups(schedule)) == 1


async def test_a_reservation_left_by_a_stopped_scheduler_fires_once(
    ctx: SchedulerContext, world: World, clock: TestClock, nc: NATS
) -> None:
    schedule = await world.schedule("0 * * * *")
    clock.set(BEFORE)
    stopped = Scheduler(ctx)
    await stopped.tick()
    stopped.stop()
    clock.set(SLOT + timedelta(seconds=3))
    first, second = Scheduler(ctx), Scheduler(ctx)  # a restart, and another replica
    await first.tick()
    await second.tick()
    assert len(await jobs(nc)) == 1
    [backup] = await world.backups(schedule)
    assert backup.status is BackupStatus.QUEUED


async def test_two_replicas_reserving_and_releasing_publish_once(
    ctx: SchedulerContext, world: World, clock: TestClock, nc: NATS
) -> None:
    schedules = [await world.schedule("0 * * * *") for _ in range(10)]
    first, second = Scheduler(ctx), Scheduler(ctx)
    clock.set(BEFORE)
    await first.tick()
    await second.tick()
    clock.set(SLOT)
    await second.tick()
    await first.tick()
    assert len(await jobs(nc)) == 10
    for schedule in schedules:
        assert len(await world.backups(schedule)) == 1


async def test_an_orphaned_reservation_is_recorded_missed_once_beyond_the_grace(
    ctx: SchedulerContext, world: World, clock: TestClock, nc: NATS
) -> None:
    schedule = await world.schedule("0 * * * *")
    clock.set(BEFORE)
    await Scheduler(ctx).tick()  # reserved, then the scheduler died
    await world.update(schedule, BEFORE + timedelta(seconds=1), enabled=False)  # while down

    clock.set(SLOT + timedelta(minutes=30))  # within the grace: left alone
    restarted = Scheduler(ctx)
    await restarted.tick()
    [backup] = await world.backups(schedule)
    assert backup.status is BackupStatus.QUEUED

    clock.set(SLOT + timedelta(hours=1, seconds=1))
    await restarted.reconcile()
    await Scheduler(ctx).reconcile()  # a second replica sweeping too changes nothing
    [backup] = await world.backups(schedule)
    assert (backup.status, backup.error_code) == (BackupStatus.MISSED, "missed")
    [event] = [decode(BackupMissed, data(m)) for m in await events(nc, BACKUP_MISSED)]
    assert (event.backup_id, event.slot_at) == (backup.id, SLOT)
    assert await jobs(nc) == []


async def test_a_run_started_after_the_reservation_makes_the_slot_skipped(
    ctx: SchedulerContext, world: World, clock: TestClock, nc: NATS, sessions: Sessions
) -> None:
    schedule = await world.schedule("0 * * * *")
    first, second = Scheduler(ctx), Scheduler(ctx)
    clock.set(BEFORE)
    await first.tick()
    await second.tick()
    async with sessions() as session, session.begin():
        running = Backup(
            database_id=world.database.id,
            trigger=Trigger.MANUAL,
            status=BackupStatus.RUNNING,
            started_at=BEFORE,
        )
        session.add(running)
    clock.set(SLOT)
    await first.tick()
    await second.tick()
    [backup] = await world.backups(schedule)
    assert backup.status is BackupStatus.SKIPPED
    [event] = [decode(BackupSkipped, data(m)) for m in await events(nc, BACKUP_SKIPPED)]
    assert (event.backup_id, event.running_backup_id) == (backup.id, running.id)
    assert await jobs(nc) == []


async def test_a_reservation_released_after_the_grace_is_missed_not_fired(
    scheduler: Scheduler, world: World, clock: TestClock, nc: NATS
) -> None:
    schedule = await world.schedule("0 * * * *")
    clock.set(BEFORE)
    await scheduler.tick()
    clock.set(SLOT + timedelta(hours=2))  # the process was suspended meanwhile
    await scheduler.tick()
    statuses = [(b.slot_at, b.status) for b in await world.backups(schedule)]
    assert statuses == [
        (SLOT, BackupStatus.MISSED),
        (SLOT + minutes(60), BackupStatus.MISSED),
        (SLOT + minutes(120), BackupStatus.QUEUED),
    ]
    assert len(await events(nc, BACKUP_MISSED)) == 2
    assert len(await jobs(nc)) == 1
