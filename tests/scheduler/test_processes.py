"""Scheduler processes (``tests/scheduler/clocked.py``: the real service with a clock
the test sets): two replicas together enqueue each slot once, on SQLite and on
PostgreSQL; a scheduler killed with SIGKILL and restarted across a slot enqueues it
exactly once."""

from __future__ import annotations

import asyncio
import os
import re
import signal
import urllib.request
from collections.abc import AsyncIterator, Iterator
from datetime import timedelta
from pathlib import Path

import pytest
from nats.aio.client import Client as NATS

from services.common.db.engine import create_engine, session_factory
from services.common.db.enums import BackupStatus
from services.common.migrate import upgrade
from tests.processes import ServiceProcess, service_env, wait_for_status
from tests.scheduler.clocked import set_clock
from tests.scheduler.conftest import T0, World, jobs, minutes, msg_ids, seed_world
from tests.servers import NatsServer

pytestmark = pytest.mark.integration


@pytest.fixture(params=["sqlite", "postgresql"])
def metadata_url(request: pytest.FixtureRequest, sqlite_url: str) -> str:
    if request.param == "sqlite":
        return sqlite_url
    url: str = request.getfixturevalue("pg_url")
    return url


@pytest.fixture
async def meta_world(metadata_url: str, tmp_path: Path) -> AsyncIterator[World]:
    await upgrade(metadata_url)
    engine = create_engine(metadata_url)
    yield await seed_world(session_factory(engine), tmp_path / "storage")
    await engine.dispose()


class Schedulers:
    def __init__(self, tmp_path: Path, nats_url: str, database_url: str) -> None:
        self.tmp_path, self.nats_url, self.database_url = tmp_path, nats_url, database_url
        self.clock_file = tmp_path / "clock"
        self.started: list[ServiceProcess] = []

    def set_clock(self, at: object) -> None:
        set_clock(self.clock_file, at)  # type: ignore[arg-type]

    def start(self) -> ServiceProcess:
        n = len(self.started) + 1
        env = service_env(
            self.tmp_path / "data",
            self.nats_url,
            self.database_url,
            BM_TEST_CLOCK_FILE=str(self.clock_file),
            BM_SCHEDULER_RECONCILE_S="3600",
        )
        process = ServiceProcess("scheduler", env, self.tmp_path / f"scheduler-{n}.log")
        self.started.append(process.start("tests.scheduler.clocked"))
        wait_for_status(f"{process.base_url}/readyz", 200, timeout=30)
        return process

    def stop(self) -> None:
        for process in self.started:
            process.stop()


@pytest.fixture
def schedulers(tmp_path: Path, nats_server: NatsServer, metadata_url: str) -> Iterator[Schedulers]:
    group = Schedulers(tmp_path, nats_server.url, metadata_url)
    yield group
    group.stop()


def metric(process: ServiceProcess, name: str) -> float:
    with urllib.request.urlopen(f"{process.base_url}/metrics", timeout=5) as response:  # noqa: S310
        text = response.read().decode()
    match = re.search(rf"^{re.escape(name)} ([0-9.e+]+)$", text, re.MULTILINE)
    return float(match.group(1)) if match else 0.0


async def wake_and_wait(processes: list[ServiceProcess]) -> None:
    """SIGUSR1 each process, then wait until each has finished a round since."""
    rounds = [metric(p, "bm_scheduler_rounds_total") for p in processes]
    for process in processes:
        process.signal(signal.SIGUSR1)
    async with asyncio.timeout(30):
        for process, before in zip(processes, rounds, strict=True):
            while metric(process, "bm_scheduler_rounds_total") <= before:
                await asyncio.sleep(0.05)


def fired(processes: list[ServiceProcess]) -> float:
    return sum(metric(p, 'bm_scheduler_slots_total{outcome="fired"}') for p in processes)


async def test_two_replicas_enqueue_each_slot_once(
    schedulers: Schedulers, meta_world: World, nc: NATS
) -> None:
    schedules = [await meta_world.schedule("*/5 * * * *") for _ in range(30)]
    schedulers.set_clock(T0 + minutes(4))
    replicas = [schedulers.start(), schedulers.start()]
    # The first slot is already due when they see it; the second they both reserve
    # ahead (rows written 10 s before it) and release at its time.
    schedulers.set_clock(T0 + minutes(5) + timedelta(seconds=1))
    await wake_and_wait(replicas)
    schedulers.set_clock(T0 + minutes(10) - timedelta(seconds=10))
    await wake_and_wait(replicas)
    reserved = [b for s in schedules for b in await meta_world.backups(s)]
    assert len(reserved) == 60  # the second slot's rows are written ...
    assert all(m.endswith("T12:05:00Z") for m in msg_ids(await jobs(nc)))  # ... not its jobs
    schedulers.set_clock(T0 + minutes(10))
    await wake_and_wait(replicas)

    found = msg_ids(await jobs(nc))
    expected = {f"{s.id}:2024-03-01T12:{m:02d}:00Z" for s in schedules for m in (5, 10)}
    assert sorted(found) == sorted(expected)
    assert fired(replicas) == 60  # each slot announced by the replica that recorded it
    for schedule in schedules:
        backups = await meta_world.backups(schedule)
        assert [(b.slot_at, b.status) for b in backups] == [
            (T0 + minutes(5), BackupStatus.QUEUED),
            (T0 + minutes(10), BackupStatus.QUEUED),
        ]
        cursor = await meta_world.cursor(schedule)
        assert cursor is not None
        assert (cursor.last_slot_at, cursor.next_slot_at) == (T0 + minutes(10), T0 + minutes(15))


async def test_a_scheduler_killed_and_restarted_across_a_slot_enqueues_it_once(
    schedulers: Schedulers, meta_world: World, nc: NATS
) -> None:
    schedule = await meta_world.schedule("*/5 * * * *")
    schedulers.set_clock(T0 + minutes(4))
    first = schedulers.start()
    cursor = await meta_world.cursor(schedule)
    assert cursor is not None
    assert cursor.next_slot_at == T0 + minutes(5)
    assert first.process is not None
    os.killpg(first.process.pid, signal.SIGKILL)
    first.wait(timeout=10)

    # Down across the slot; the restarted scheduler catches up before it is ready.
    schedulers.set_clock(T0 + minutes(5) + timedelta(seconds=30))
    second = schedulers.start()
    assert msg_ids(await jobs(nc)) == [f"{schedule.id}:2024-03-01T12:05:00Z"]
    assert second.process is not None
    os.killpg(second.process.pid, signal.SIGKILL)
    second.wait(timeout=10)

    # Killed right after firing: the next one must not fire the slot again.
    third = schedulers.start()
    await wake_and_wait([third])
    assert len(await jobs(nc)) == 1
    assert [b.status for b in await meta_world.backups(schedule)] == [BackupStatus.QUEUED]
    assert "Traceback" not in third.log()
