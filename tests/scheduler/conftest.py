"""Scheduler tests: a migrated metadata DB, a real NATS with the streams set up, rows
seeded directly, and a clock the test sets (frozen, or running at real speed from
an instant) so that no test waits for, or depends on, the wall clock reaching a slot.

How the tests get to a slot: schedules are created with ``created_at`` in the past
(a fixed instant), the test clock is set just past the slot to fire, and the test
calls ``Scheduler.tick()`` itself (in-process) or sets the clock file and wakes the
process with SIGUSR1 (``tests/scheduler/clocked.py``).
"""

from __future__ import annotations

import time
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import nats
import pytest
from nats.aio.client import Client as NATS
from nats.js import JetStreamContext
from nats.js.api import RawStreamMsg
from nats.js.errors import NotFoundError
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from proto.subjects import EVENTS_STREAM, JOBS_STREAM
from proto.values import OverlapPolicy
from services.common.db.engine import create_engine, session_factory
from services.common.db.enums import DatabaseEngine, DestinationKind
from services.common.db.models import (
    Backup,
    Database,
    Destination,
    Project,
    Schedule,
    SchedulerCursor,
    schedule_destinations,
)
from services.common.migrate import upgrade
from services.common.settings import Settings
from services.common.streams import ensure_streams
from services.scheduler.context import SchedulerContext
from services.scheduler.scheduler import Scheduler
from tests.servers import NatsServer

Sessions = async_sessionmaker[AsyncSession]
T0 = datetime(2024, 3, 1, 12, 0, tzinfo=UTC)
"""When the seeded schedules were created (a Friday)."""


class TestClock:
    """Frozen at an instant, or running at real speed from it."""

    __test__ = False

    def __init__(self, at: datetime = T0, *, running: bool = False) -> None:
        self.set(at, running=running)

    def set(self, at: datetime, *, running: bool = False) -> None:
        self._at, self._running, self._since = at, running, time.monotonic()

    def __call__(self) -> datetime:
        if not self._running:
            return self._at
        return self._at + timedelta(seconds=time.monotonic() - self._since)


@dataclass
class World:
    sessions: Sessions
    project: Project
    database: Database
    destination: Destination

    @property
    def destination_path(self) -> Path:
        return Path(self.destination.config["path"])

    async def schedule(
        self,
        cron: str = "0 * * * *",
        *,
        timezone: str = "UTC",
        created_at: datetime = T0,
        enabled: bool = True,
        overlap: OverlapPolicy = OverlapPolicy.SKIP,
        database: Database | None = None,
        **values: Any,
    ) -> Schedule:
        async with self.sessions() as session, session.begin():
            schedule = Schedule(
                database_id=(database or self.database).id,
                name=f"s-{uuid.uuid4().hex[:8]}",
                cron=cron,
                timezone=timezone,
                enabled=enabled,
                overlap_policy=overlap,
                created_at=created_at,
                updated_at=created_at,
                **values,
            )
            session.add(schedule)
            await session.flush()
            await session.execute(
                schedule_destinations.insert().values(
                    schedule_id=schedule.id, destination_id=self.destination.id
                )
            )
        return schedule

    async def another_database(self, name: str) -> Database:
        async with self.sessions() as session, session.begin():
            database = Database(
                project_id=self.project.id,
                name=name,
                engine=DatabaseEngine.POSTGRESQL,
                host="127.0.0.1",
                port=5432,
                database_name=name,
            )
            session.add(database)
        return database

    async def update(self, schedule: Schedule, at: datetime, **values: Any) -> None:
        async with self.sessions() as session, session.begin():
            row = await session.get(Schedule, schedule.id)
            assert row is not None
            for name, value in values.items():
                setattr(row, name, value)
            row.updated_at = at

    async def backups(self, schedule: Schedule) -> list[Backup]:
        async with self.sessions() as session:
            rows = await session.scalars(
                select(Backup).where(Backup.schedule_id == schedule.id).order_by(Backup.slot_at)
            )
            return list(rows)

    async def cursor(self, schedule: Schedule) -> SchedulerCursor | None:
        async with self.sessions() as session:
            return await session.get(SchedulerCursor, schedule.id)


async def seed_world(sessions: Sessions, storage: Path) -> World:
    async with sessions() as session, session.begin():
        project = Project(name="Shop", slug=f"shop-{uuid.uuid4().hex[:6]}")
        session.add(project)
        await session.flush()
        database = Database(
            project_id=project.id,
            name="orders",
            engine=DatabaseEngine.POSTGRESQL,
            host="127.0.0.1",
            port=5432,
            database_name="orders",
        )
        destination = Destination(
            name="local", kind=DestinationKind.LOCAL, config={"path": str(storage)}
        )
        session.add_all([database, destination])
    return World(sessions, project, database, destination)


@pytest.fixture
def scheduler_settings(tmp_path: Path, sqlite_url: str) -> Settings:
    # Reconciliation only when a test asks for it: changes must work without it.
    return Settings(data_dir=tmp_path / "data", database_url=sqlite_url, scheduler_reconcile_s=3600)


@pytest.fixture
async def sessions(scheduler_settings: Settings) -> AsyncIterator[Sessions]:
    await upgrade(scheduler_settings.database_url)
    engine = create_engine(scheduler_settings.database_url)
    yield session_factory(engine)
    await engine.dispose()


@pytest.fixture
async def world(sessions: Sessions, tmp_path: Path) -> World:
    return await seed_world(sessions, tmp_path / "storage")


@pytest.fixture
async def nc(nats_server: NatsServer) -> AsyncIterator[NATS]:
    client: NATS = await nats.connect(nats_server.url)
    await ensure_streams(client.jetstream())
    yield client
    await client.close()


@pytest.fixture
def clock() -> TestClock:
    return TestClock()


@pytest.fixture
def ctx(
    scheduler_settings: Settings, sessions: Sessions, nc: NATS, clock: TestClock
) -> SchedulerContext:
    return SchedulerContext(settings=scheduler_settings, sessions=sessions, nc=nc, clock=clock)


@pytest.fixture
def scheduler(ctx: SchedulerContext) -> Scheduler:
    return Scheduler(ctx)


async def stored(
    js: JetStreamContext, stream: str, subject: str | None = None
) -> list[RawStreamMsg]:
    """Every message still in ``stream`` (on ``subject``), oldest first."""
    state = (await js.stream_info(stream)).state
    found: list[RawStreamMsg] = []
    if state.messages == 0:
        return found
    for seq in range(max(1, state.first_seq), state.last_seq + 1):
        try:
            msg = await js.get_msg(stream, seq)
        except NotFoundError:
            continue
        if subject is None or msg.subject == subject:
            found.append(msg)
    return found


async def jobs(nc: NATS) -> list[RawStreamMsg]:
    return await stored(nc.jetstream(), JOBS_STREAM)


async def events(nc: NATS, subject: str) -> list[RawStreamMsg]:
    return await stored(nc.jetstream(), EVENTS_STREAM, subject)


def data(msg: RawStreamMsg) -> bytes:
    assert msg.data is not None
    return msg.data


def msg_ids(msgs: list[RawStreamMsg]) -> list[str]:
    return [(m.headers or {}).get("Nats-Msg-Id", "") for m in msgs]


def minutes(n: float) -> timedelta:
    return timedelta(minutes=n)
