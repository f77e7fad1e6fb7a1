"""After downtime: the newest owed slot within the grace fires once, older ones are
recorded as missed (row and event), and nothing is owed from before a schedule
existed, while it was disabled, or under a cron it no longer has."""

from __future__ import annotations

from datetime import timedelta

import pytest
from nats.aio.client import Client as NATS

from proto.backup_events import BackupMissed
from proto.codec import decode
from proto.subjects import BACKUP_MISSED
from services.common.db.enums import BackupStatus
from services.common.settings import Settings
from services.scheduler.context import SchedulerContext
from services.scheduler.scheduler import Scheduler
from tests.scheduler.conftest import T0, TestClock, World, data, events, jobs, minutes

pytestmark = pytest.mark.integration


async def test_slots_missed_beyond_the_grace_are_recorded_and_the_newest_fires(
    scheduler: Scheduler, world: World, clock: TestClock, nc: NATS
) -> None:
    schedule = await world.schedule("0 * * * *")
    clock.set(T0 + minutes(185))  # down since T0: 13:00 and 14:00 are beyond the 1 h grace
    await scheduler.tick()

    backups = await world.backups(schedule)
    assert [(b.slot_at, b.status) for b in backups] == [
        (T0 + minutes(60), BackupStatus.MISSED),
        (T0 + minutes(120), BackupStatus.MISSED),
        (T0 + minutes(180), BackupStatus.QUEUED),
    ]
    assert "longer than the catch-up grace of 1 h" in (backups[0].error_message or "")
    assert backups[0].error_code == "missed"
    assert backups[0].finished_at == T0 + minutes(185)
    assert len(await jobs(nc)) == 1
    missed = [decode(BackupMissed, data(m)) for m in await events(nc, BACKUP_MISSED)]
    assert sorted((e.slot_at, e.backup_id) for e in missed) == [
        (b.slot_at, b.id) for b in backups[:2]
    ]
    assert all(e.schedule_id == schedule.id and e.reason for e in missed)
    cursor = await world.cursor(schedule)
    assert cursor is not None
    assert (cursor.last_slot_at, cursor.next_slot_at) == (T0 + minutes(180), T0 + minutes(240))

    # A restart records nothing twice.
    clock.set(T0 + minutes(190))
    await Scheduler(scheduler.ctx).tick()
    assert len(await world.backups(schedule)) == 3
    assert len(await events(nc, BACKUP_MISSED)) == 2


async def test_owed_slots_within_the_grace_fire_once(
    scheduler: Scheduler, world: World, clock: TestClock, nc: NATS
) -> None:
    schedule = await world.schedule("*/10 * * * *")
    clock.set(T0 + minutes(35))
    await scheduler.tick()
    backups = await world.backups(schedule)
    assert [b.status for b in backups] == [BackupStatus.MISSED] * 2 + [BackupStatus.QUEUED]
    assert "One catch-up run was started for the later slot 2024-03-01 12:30:00 UTC" in (
        backups[0].error_message or ""
    )
    assert len(await jobs(nc)) == 1


async def test_a_slot_beyond_the_grace_alone_is_missed_and_nothing_fires(
    scheduler: Scheduler, world: World, clock: TestClock, nc: NATS
) -> None:
    schedule = await world.schedule("0 13 * * *")
    clock.set(T0 + timedelta(hours=3))
    await scheduler.tick()
    [backup] = await world.backups(schedule)
    assert (backup.slot_at, backup.status) == (T0 + minutes(60), BackupStatus.MISSED)
    assert await jobs(nc) == []
    assert len(await events(nc, BACKUP_MISSED)) == 1


async def test_a_long_gap_records_the_newest_missed_slots_and_says_how_far_back(
    scheduler_settings: Settings,
    ctx: SchedulerContext,
    world: World,
    clock: TestClock,
    nc: NATS,
) -> None:
    ctx.settings = scheduler_settings.model_copy(update={"scheduler_max_missed": 5})
    schedule = await world.schedule("* * * * *")
    clock.set(T0 + timedelta(days=3))
    await Scheduler(ctx).tick()
    backups = await world.backups(schedule)
    assert [b.status for b in backups] == [BackupStatus.MISSED] * 5 + [BackupStatus.QUEUED]
    assert [b.slot_at for b in backups] == [
        T0 + timedelta(days=3, minutes=-n) for n in range(5, -1, -1)
    ]
    assert "Earlier slots since 2024-03-01 12:00:00 UTC were missed too" in (
        backups[0].error_message or ""
    )
    cursor = await world.cursor(schedule)
    assert cursor is not None
    assert cursor.next_slot_at == T0 + timedelta(days=3, minutes=1)


async def test_a_new_schedule_owes_nothing_from_before_it_existed(
    scheduler: Scheduler, world: World, clock: TestClock, nc: NATS
) -> None:
    schedule = await world.schedule("*/5 * * * *", created_at=T0 + minutes(21))
    clock.set(T0 + minutes(22))
    await scheduler.tick()
    assert await world.backups(schedule) == []
    cursor = await world.cursor(schedule)
    assert cursor is not None
    assert cursor.next_slot_at == T0 + minutes(25)


async def test_a_re_enabled_schedule_owes_nothing_from_its_disabled_spell(
    scheduler: Scheduler, world: World, clock: TestClock, nc: NATS
) -> None:
    schedule = await world.schedule("0 * * * *")
    clock.set(T0 + minutes(60))
    await scheduler.tick()  # fires 13:00
    await world.update(schedule, T0 + minutes(70), enabled=False)
    clock.set(T0 + minutes(71))
    await scheduler.reconcile()
    cursor = await world.cursor(schedule)
    assert cursor is not None
    assert (cursor.last_slot_at, cursor.next_slot_at) == (T0 + minutes(60), None)

    # Down from here; enabled again at 17:30 while the scheduler was stopped.
    await world.update(schedule, T0 + minutes(330), enabled=True)
    clock.set(T0 + minutes(335))
    await Scheduler(scheduler.ctx).tick()
    assert [b.slot_at for b in await world.backups(schedule)] == [T0 + minutes(60)]
    cursor = await world.cursor(schedule)
    assert cursor is not None
    assert cursor.next_slot_at == T0 + minutes(360)


async def test_a_changed_cron_owes_nothing_from_before_the_change(
    scheduler: Scheduler, world: World, clock: TestClock, nc: NATS
) -> None:
    schedule = await world.schedule("0 13 * * *")
    clock.set(T0 + minutes(60))
    await scheduler.tick()  # fires 13:00
    # While the scheduler is down the cron becomes hourly (at 15:30).
    await world.update(schedule, T0 + minutes(210), cron="0 * * * *")
    clock.set(T0 + minutes(245))
    await Scheduler(scheduler.ctx).tick()
    assert [b.slot_at for b in await world.backups(schedule)] == [
        T0 + minutes(60),
        T0 + minutes(240),  # 16:00, the first hourly slot after the change
    ]


async def test_an_edit_that_keeps_the_timing_still_owes_the_slots(
    scheduler: Scheduler, world: World, clock: TestClock, nc: NATS
) -> None:
    schedule = await world.schedule("0 * * * *")
    clock.set(T0 + minutes(60))
    await scheduler.tick()
    await world.update(schedule, T0 + minutes(150), name="renamed")  # while down
    clock.set(T0 + minutes(185))
    await Scheduler(scheduler.ctx).tick()
    assert [(b.slot_at, b.status) for b in await world.backups(schedule)] == [
        (T0 + minutes(60), BackupStatus.QUEUED),
        (T0 + minutes(120), BackupStatus.MISSED),
        (T0 + minutes(180), BackupStatus.QUEUED),
    ]


async def test_a_queued_slot_whose_job_was_lost_beyond_the_grace_becomes_missed(
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
    clock.set(T0 + minutes(125))  # restarted after the grace of that slot
    await Scheduler(ctx).tick()
    backups = await world.backups(schedule)
    assert [(b.slot_at, b.status) for b in backups] == [
        (T0 + minutes(60), BackupStatus.MISSED),
        (T0 + minutes(120), BackupStatus.QUEUED),
    ]
    assert [decode(BackupMissed, data(m)).backup_id for m in await events(nc, BACKUP_MISSED)] == [
        backups[0].id
    ]
    assert len(await jobs(nc)) == 1
