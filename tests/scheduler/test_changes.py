"""The running service: schedule changes applied live from ``bm.v1.schedule.changed``,
periodic reconciliation when an event was lost, overlap ``skip``, sleeping until the
earliest slot rather than polling, and a clean stop."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import UTC, datetime, timedelta

import pytest
from nats.aio.client import Client as NATS

from proto.backup_events import BackupSkipped
from proto.codec import decode
from proto.schedule_events import ScheduleChanged
from proto.subjects import BACKUP_SKIPPED
from proto.values import OverlapPolicy, ScheduleChange, Trigger
from services.common.db.engine import create_engine
from services.common.db.enums import BackupStatus
from services.common.db.models import Backup, Schedule
from services.common.lifecycle import Runtime
from services.common.secrets import resolve_secrets
from services.common.settings import Settings
from services.common.streams import publish
from services.scheduler.scheduler import Scheduler
from services.scheduler.service import SchedulerService
from tests.scheduler.conftest import T0, Sessions, TestClock, World, data, events, jobs, minutes

pytestmark = pytest.mark.integration


async def wait_until(check: Callable[[], Awaitable[bool]], what: str, within_s: float = 10) -> None:
    try:
        async with asyncio.timeout(within_s):
            while not await check():
                await asyncio.sleep(0.02)
    except TimeoutError:
        raise AssertionError(f"timed out after {within_s}s waiting for {what}") from None


@pytest.fixture
async def service(
    scheduler_settings: Settings, sessions: Sessions, nc: NATS, clock: TestClock
) -> AsyncIterator[SchedulerService]:
    engine = create_engine(scheduler_settings.database_url)
    runtime = Runtime(
        "scheduler",
        scheduler_settings,
        resolve_secrets(scheduler_settings),
        engine,
        nc,
        nc.jetstream(),
        asyncio.Event(),
    )
    service = SchedulerService(clock=clock)
    await service.start(runtime)
    yield service
    await service.stop_taking_work()
    assert await runtime.work.drain(5) == 0  # the loop ended by itself
    await engine.dispose()


def loop_of(service: SchedulerService) -> Scheduler:
    assert service.scheduler is not None
    return service.scheduler


async def next_round(scheduler: Scheduler) -> None:
    """Wake the loop and wait until it has run a whole round."""
    seen = scheduler.rounds
    scheduler.wake()

    async def done() -> bool:
        return scheduler.rounds > seen

    await wait_until(done, "a round of the scheduler loop")


async def announce(
    nc: NATS, world: World, schedule: Schedule, change: ScheduleChange, enabled: bool
) -> None:
    await publish(
        nc,
        ScheduleChanged(
            schedule_id=schedule.id,
            project_id=world.project.id,
            database_id=schedule.database_id,
            change=change,
            enabled=enabled,
        ),
    )


async def test_disabling_stops_firing_at_once(
    service: SchedulerService, world: World, clock: TestClock, nc: NATS
) -> None:
    clock.set(T0 + minutes(59))
    disabled = await world.schedule("0 * * * *", created_at=T0 + minutes(58))
    other = await world.schedule("0 * * * *", created_at=T0 + minutes(58))
    await announce(nc, world, disabled, ScheduleChange.CREATED, True)
    await announce(nc, world, other, ScheduleChange.CREATED, True)

    async def both_loaded() -> bool:
        return disabled.id in loop_of(service).table and other.id in loop_of(service).table

    await wait_until(both_loaded, "the created schedules to be loaded")
    cursor = await world.cursor(disabled)
    assert cursor is not None
    assert cursor.next_slot_at == T0 + minutes(60)

    await world.update(disabled, T0 + minutes(59), enabled=False)
    await announce(nc, world, disabled, ScheduleChange.DISABLED, False)

    async def paused() -> bool:
        cursor = await world.cursor(disabled)
        return cursor is not None and cursor.next_slot_at is None

    await wait_until(paused, "the disabled schedule to be paused")
    assert disabled.id not in loop_of(service).table

    clock.set(T0 + minutes(60) + timedelta(seconds=1))
    await next_round(loop_of(service))
    assert await world.backups(disabled) == []
    assert len(await world.backups(other)) == 1  # the same round fired the other one
    assert len(await jobs(nc)) == 1


async def test_a_schedule_disabled_without_an_event_does_not_fire(
    scheduler: Scheduler, world: World, clock: TestClock, nc: NATS
) -> None:
    schedule = await world.schedule("0 * * * *")
    clock.set(T0 + minutes(30))
    await scheduler.tick()
    await world.update(schedule, T0 + minutes(40), enabled=False)  # the event was lost
    clock.set(T0 + minutes(60))
    await scheduler.tick()  # the row is read again as the slot fires
    assert await world.backups(schedule) == []
    assert schedule.id not in scheduler.table
    await scheduler.tick()
    cursor = await world.cursor(schedule)
    assert cursor is not None
    assert cursor.next_slot_at is None


async def test_changes_apply_live_create_update_delete(
    service: SchedulerService, world: World, clock: TestClock, nc: NATS, sessions: Sessions
) -> None:
    clock.set(T0 + minutes(10))
    schedule = await world.schedule("0 * * * *", created_at=T0 + minutes(5))
    await announce(nc, world, schedule, ScheduleChange.CREATED, True)

    async def next_at(expected: object) -> bool:
        cursor = await world.cursor(schedule)
        return cursor is not None and cursor.next_slot_at == expected

    await wait_until(lambda: next_at(T0 + minutes(60)), "the new schedule's next run")
    await world.update(schedule, T0 + minutes(11), cron="30 * * * *")
    await announce(nc, world, schedule, ScheduleChange.UPDATED, True)
    await wait_until(lambda: next_at(T0 + minutes(30)), "the updated schedule's next run")

    async with sessions() as session, session.begin():
        await session.delete(await session.get(Schedule, schedule.id))
    await announce(nc, world, schedule, ScheduleChange.DELETED, False)

    async def gone() -> bool:
        return schedule.id not in loop_of(service).table

    await wait_until(gone, "the deleted schedule to leave the timetable")


async def test_reconciliation_applies_a_change_whose_event_was_lost(
    scheduler: Scheduler, world: World, clock: TestClock, nc: NATS
) -> None:
    schedule = await world.schedule("0 * * * *")
    clock.set(T0 + minutes(10))
    await scheduler.tick()
    await world.update(schedule, T0 + minutes(11), cron="15 * * * *")
    await scheduler.tick()  # not reconciled yet: BM_SCHEDULER_RECONCILE_S is an hour here
    assert (await world.cursor(schedule)).next_slot_at == T0 + minutes(60)  # type: ignore[union-attr]
    await scheduler.reconcile()
    assert (await world.cursor(schedule)).next_slot_at == T0 + minutes(15)  # type: ignore[union-attr]


async def test_overlap_skip_records_the_skipped_slot_once(
    scheduler: Scheduler, world: World, clock: TestClock, nc: NATS, sessions: Sessions
) -> None:
    skip = await world.schedule("0 * * * *", overlap=OverlapPolicy.SKIP)
    queue_db = await world.another_database("invoices")
    queue = await world.schedule("0 * * * *", overlap=OverlapPolicy.QUEUE, database=queue_db)
    async with sessions() as session, session.begin():
        running = [
            Backup(
                database_id=db.id,
                trigger=Trigger.MANUAL,
                status=BackupStatus.RUNNING,
                started_at=T0 + minutes(50),
            )
            for db in (world.database, queue_db)
        ]
        session.add_all(running)
    clock.set(T0 + minutes(60))
    await scheduler.tick()

    [skipped] = await world.backups(skip)
    assert (skipped.status, skipped.error_code) == (BackupStatus.SKIPPED, "overlap")
    assert str(running[0].id) in (skipped.error_message or "")
    [event] = [decode(BackupSkipped, data(m)) for m in await events(nc, BACKUP_SKIPPED)]
    assert (event.backup_id, event.slot_at, event.running_backup_id) == (
        skipped.id,
        T0 + minutes(60),
        running[0].id,
    )
    [queued] = await world.backups(queue)
    assert queued.status is BackupStatus.QUEUED  # the executor waits for the running one
    assert len(await jobs(nc)) == 1

    # A second replica (or a restart) finds the slot recorded: no second event.
    await Scheduler(scheduler.ctx).tick()
    assert len(await events(nc, BACKUP_SKIPPED)) == 1
    assert len(await world.backups(skip)) == 1


async def test_the_loop_sleeps_until_the_earliest_slot_and_wakes_for_it(
    service: SchedulerService, world: World, clock: TestClock, nc: NATS
) -> None:
    scheduler = loop_of(service)
    schedule = await world.schedule("0 * * * *")
    clock.set(T0 + minutes(60) - timedelta(seconds=1.5), running=True)
    slot_in_real_time = datetime.now(UTC) + timedelta(seconds=1.5)
    await announce(nc, world, schedule, ScheduleChange.CREATED, True)

    async def loaded() -> bool:
        return schedule.id in scheduler.table

    await wait_until(loaded, "the schedule to be loaded")  # its slot is < 1.5 s away
    rounds = scheduler.rounds

    async def fired() -> bool:
        return len(await world.backups(schedule)) == 1

    await wait_until(fired, "the slot to fire")
    [backup] = await world.backups(schedule)
    assert backup.queued_at == T0 + minutes(60)  # reserved ahead, queued as of its slot

    async def published() -> bool:
        return len(await jobs(nc)) == 1

    await wait_until(published, "the job")
    [job] = await jobs(nc)
    assert job.time is not None
    assert job.time >= slot_in_real_time - timedelta(milliseconds=5)  # not before its time
    # It slept until the slot: a round or two, not one per poll interval.
    assert scheduler.rounds - rounds <= 3
