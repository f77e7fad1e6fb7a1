"""Storage tests: a migrated SQLite metadata DB, real local destinations in temporary
directories with real artifacts and manifests (made with the executor's own key and
manifest functions), a real NATS for the events, and a clock the test moves."""

from __future__ import annotations

import asyncio
import hashlib
import json
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import nats
import pytest
from nats.aio.client import Client as NATS
from nats.aio.msg import Msg
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from proto import subjects
from proto.base import Message
from proto.registry import decode_subject
from proto.values import Trigger
from services.common.artifacts import manifest_key
from services.common.db.engine import create_engine, session_factory
from services.common.db.enums import (
    BackupStatus,
    Compression,
    CopyStatus,
    DatabaseEngine,
    DestinationKind,
)
from services.common.db.models import Backup, BackupCopy, Database, Destination, Project, Schedule
from services.common.db.types import utcnow
from services.common.migrate import upgrade
from services.common.settings import Settings
from services.common.streams import ensure_streams
from services.executor.backup import artifact_key
from services.executor.manifest import manifest_document
from services.storage.context import StorageContext
from tests.servers import NatsServer

Sessions = async_sessionmaker[AsyncSession]


class Clock:
    """The service's "now", moved by the test (starts at the real now, so file times
    written by the test are comparable)."""

    def __init__(self) -> None:
        self.now = utcnow()

    def __call__(self) -> datetime:
        return self.now

    def advance(self, **delta: float) -> None:
        self.now += timedelta(**delta)


@pytest.fixture
def storage_settings(tmp_path: Path, sqlite_url: str) -> Settings:
    return Settings(data_dir=tmp_path / "data", database_url=sqlite_url, orphan_grace_s=3600,
                    integrity_rate_bps=1 << 30)  # fmt: skip


@pytest.fixture
async def sessions(storage_settings: Settings) -> AsyncIterator[Sessions]:
    await upgrade(storage_settings.database_url)
    engine = create_engine(storage_settings.database_url)
    yield session_factory(engine)
    await engine.dispose()


@pytest.fixture
async def nc(nats_server: NatsServer) -> AsyncIterator[NATS]:
    client = await nats.connect(nats_server.url)
    await ensure_streams(client.jetstream())
    yield client
    await client.close()


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def ctx(storage_settings: Settings, sessions: Sessions, nc: NATS, clock: Clock) -> StorageContext:
    return StorageContext(settings=storage_settings, sessions=sessions, nc=nc, clock=clock)


class Events:
    """Every ``bm.v1`` message seen on core NATS (stored events included)."""

    def __init__(self) -> None:
        self.seen: list[Message] = []

    async def _on(self, msg: Msg) -> None:
        if msg.subject in subjects.EVENT_SUBJECTS:
            self.seen.append(decode_subject(msg.subject, msg.data))

    def of(self, kind: type[Message]) -> list[Any]:
        return [m for m in self.seen if isinstance(m, kind)]

    async def settle(self) -> None:
        await asyncio.sleep(0.3)


@pytest.fixture
async def events(nc: NATS) -> AsyncIterator[Events]:
    found = Events()
    sub = await nc.subscribe(subjects.WILDCARD, cb=found._on)
    await nc.flush()
    yield found
    await sub.unsubscribe()


@dataclass
class World:
    """One project with one database, a schedule and local destinations."""

    sessions: Sessions
    project: Project
    database: Database
    schedule: Schedule
    destinations: list[Destination]
    roots: list[Path]
    backups: dict[str, Backup] = field(default_factory=dict)

    def path(self, backup: str, destination: int = 0) -> Path:
        key = self.backups[backup].artifact_key
        assert key is not None
        return self.roots[destination] / key

    async def add(
        self,
        name: str,
        finished_at: datetime,
        status: BackupStatus = BackupStatus.SUCCEEDED,
        *,
        scheduled: bool = True,
        content: bytes | None = None,
        destinations: list[int] | None = None,
    ) -> Backup:
        """A backup row; succeeded ones get a real artifact and manifest on each
        destination (and a stored copy row)."""
        backup_id = uuid.uuid4()
        with_files = status in {BackupStatus.SUCCEEDED, BackupStatus.CORRUPT}
        data = content if content is not None else f"dump of {name} ".encode() * 100
        key = artifact_key(self.project.slug, self.database.name, backup_id, finished_at,
                           "pgdump.zst")  # fmt: skip
        digest = hashlib.sha256(data).hexdigest()
        backup = Backup(
            id=backup_id, database_id=self.database.id,
            schedule_id=self.schedule.id if scheduled else None,
            trigger=Trigger.SCHEDULE if scheduled else Trigger.MANUAL, status=status,
            slot_at=finished_at if scheduled else None, queued_at=finished_at,
            started_at=finished_at, finished_at=finished_at,
            bytes_out=len(data) if with_files else None, sha256=digest if with_files else None,
            artifact_key=key if with_files else None,
            compression=Compression.ZSTD if with_files else None,
        )  # fmt: skip
        chosen = range(len(self.destinations)) if destinations is None else destinations
        copies = []
        if with_files:
            manifest = _manifest(self, backup, data, digest, finished_at)
            for index in chosen:
                path = self.roots[index] / key
                await asyncio.to_thread(_write, path, data, manifest)
                copies.append(BackupCopy(
                    backup_id=backup_id, destination_id=self.destinations[index].id,
                    artifact_key=key, status=CopyStatus.STORED, size_bytes=len(data),
                    sha256=digest, stored_at=finished_at, created_at=finished_at,
                ))  # fmt: skip
        async with self.sessions() as session, session.begin():
            session.add(backup)
            await session.flush()
            session.add_all(copies)
        self.backups[name] = backup
        return backup


def _manifest(world: World, backup: Backup, data: bytes, digest: str, at: datetime) -> str:
    assert backup.artifact_key is not None
    return manifest_document(
        backup_id=str(backup.id),
        project={"id": str(world.project.id), "slug": world.project.slug, "name": "Shop"},
        database={"id": str(world.database.id), "name": world.database.name,
                  "engine": "postgresql", "database": "orders"},
        trigger=backup.trigger.value, schedule_id=str(backup.schedule_id) if backup.schedule_id
        else None, slot_at=backup.slot_at, server_version="16.1", tool_version="16.1",
        dump_format="postgresql-custom", compression={"algorithm": "zstd", "level": None},
        artifact_key=backup.artifact_key, size=len(data), raw_size=len(data) * 3, sha256=digest,
        started_at=at, finished_at=at,
    )  # fmt: skip


def _write(path: Path, data: bytes, manifest: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    Path(manifest_key(str(path))).write_text(manifest)


@pytest.fixture
async def world(sessions: Sessions, tmp_path: Path) -> World:
    return await make_world(sessions, tmp_path, retention={"keep_last": 2}, destinations=2)


async def make_world(
    sessions: Sessions, tmp_path: Path, *, retention: dict[str, Any], destinations: int = 1,
    timezone: str = "UTC",
) -> World:  # fmt: skip
    roots = [tmp_path / f"dest{i}" for i in range(destinations)]
    for root in roots:
        root.mkdir(parents=True, exist_ok=True)
    async with sessions() as session, session.begin():
        project = Project(name="Shop", slug=f"shop-{uuid.uuid4().hex[:6]}")
        session.add(project)
        await session.flush()
        database = Database(
            project_id=project.id, name="Orders DB", engine=DatabaseEngine.POSTGRESQL,
            host="127.0.0.1", port=5432, database_name="orders",
        )  # fmt: skip
        rows = [
            Destination(name=f"disk{i}", kind=DestinationKind.LOCAL, config={"path": str(root)})
            for i, root in enumerate(roots)
        ]
        session.add(database)
        session.add_all(rows)
        await session.flush()
        schedule = Schedule(database_id=database.id, name="nightly", cron="0 2 * * *",
                            timezone=timezone, retention=retention)  # fmt: skip
        session.add(schedule)
    return World(sessions, project, database, schedule, rows, roots)


async def backup_ids(sessions: Sessions) -> set[uuid.UUID]:
    async with sessions() as session:
        return set(await session.scalars(select(Backup.id)))


async def copy_of(
    sessions: Sessions, backup_id: uuid.UUID, destination_id: uuid.UUID
) -> BackupCopy:
    async with sessions() as session:
        copy = await session.get(BackupCopy, (backup_id, destination_id))
        assert copy is not None
        return copy


async def load(sessions: Sessions, backup_id: uuid.UUID) -> Backup | None:
    async with sessions() as session:
        return await session.get(Backup, backup_id)


def manifest_json(path: Path) -> dict[str, Any]:
    data: dict[str, Any] = json.loads(Path(manifest_key(str(path))).read_text())
    return data
