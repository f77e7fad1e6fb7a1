"""The storage service with real backups and as a real process: retention runs after
each ``bm.v1.backup.completed`` (PostgreSQL backups made by the executor's own code),
and the service process applies retention on its sweep and on events, serves its
metrics and stops cleanly."""

from __future__ import annotations

import asyncio
import signal
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from nats.aio.client import Client as NATS

from proto.backup_events import BackupCompleted
from proto.jobs import BackupRequested
from proto.values import ArtifactCopy, Compression, CopyStatus, Engine, Trigger
from services.common.credentials import CredentialCipher
from services.common.db.enums import BackupStatus, DatabaseEngine
from services.common.db.models import Backup, Schedule
from services.common.secrets import resolve_secrets
from services.common.streams import publish
from services.common.work import WorkTracker
from services.executor.backup import BackupRun
from services.executor.context import ExecutorContext
from services.storage.context import StorageContext
from services.storage.listener import CompletedListener
from services.storage.prune import PruneReport, apply_retention
from tests.executor.conftest import Seeded, seed
from tests.processes import ServiceProcess, http_status, service_env, wait_for_status
from tests.servers import Database, NatsServer, PostgresServer
from tests.storage.conftest import Clock, Sessions, backup_ids, load, make_world

pytestmark = pytest.mark.integration


@pytest.fixture
def executor(ctx: StorageContext, nc: NATS) -> ExecutorContext:
    secrets = resolve_secrets(ctx.settings)
    return ExecutorContext(settings=ctx.settings, sessions=ctx.sessions, nc=nc,
                           cipher=CredentialCipher(secrets.credential_keys),
                           executor_id="storage-test-executor")  # fmt: skip


@pytest.fixture
async def listener(ctx: StorageContext, nc: NATS) -> AsyncIterator[list[PruneReport]]:
    """The service's event handling, in this process: retention after each backup."""
    reports: list[PruneReport] = []

    async def after_backup(event: BackupCompleted) -> None:
        reports.append(await apply_retention(ctx, event.database_id))

    work = WorkTracker()
    found = CompletedListener(nc.jetstream(), work, after_backup)
    await found.start()
    yield reports
    await found.stop_taking_work()
    await work.drain(5)


async def scheduled_job(executor: ExecutorContext, seeded: Seeded, schedule: Schedule,
                        slot: datetime) -> BackupRequested:  # fmt: skip
    async with executor.sessions() as session, session.begin():
        backup = Backup(database_id=seeded.database.id, schedule_id=schedule.id,
                        trigger=Trigger.SCHEDULE, slot_at=slot, queued_at=slot)  # fmt: skip
        session.add(backup)
    return BackupRequested(
        backup_id=backup.id, project_id=seeded.project.id, database_id=seeded.database.id,
        schedule_id=schedule.id, trigger=Trigger.SCHEDULE, slot_at=slot,
        destination_ids=(seeded.destination.id,), compression=Compression(),
    )  # fmt: skip


async def wait_until_gone(sessions: Sessions, backup_id: uuid.UUID) -> None:
    async with asyncio.timeout(30):
        while await load(sessions, backup_id) is not None:
            await asyncio.sleep(0.1)


async def test_retention_runs_after_each_completed_backup(
    ctx: StorageContext, executor: ExecutorContext, listener: list[PruneReport],
    tmp_path: Path, pg_server: PostgresServer, pg_database: Database,
) -> None:  # fmt: skip
    pg_server.execute("CREATE TABLE t AS SELECT i FROM generate_series(1, 500) i",
                      dbname=pg_database.name)  # fmt: skip
    seeded = await seed(
        executor, tmp_path, engine=DatabaseEngine.POSTGRESQL, host=pg_server.host,
        port=pg_server.port, database_name=pg_database.name, username=pg_server.user,
        password=pg_server.password,
    )  # fmt: skip
    async with ctx.sessions() as session, session.begin():
        schedule = Schedule(database_id=seeded.database.id, name="hourly", cron="0 * * * *",
                            retention={"keep_last": 1})  # fmt: skip
        session.add(schedule)
    first_slot = datetime.now(UTC).replace(minute=0, second=0, microsecond=0) - timedelta(hours=1)

    first = await scheduled_job(executor, seeded, schedule, first_slot)
    await BackupRun(executor, first).execute()
    done = await load(ctx.sessions, first.backup_id)
    assert done is not None
    assert done.status is BackupStatus.SUCCEEDED, done.error_message
    assert done.artifact_key is not None
    artifact = seeded.storage / done.artifact_key
    async with asyncio.timeout(30):
        while not listener:
            await asyncio.sleep(0.1)
    assert listener[0].deleted == []  # the only good backup stays

    second = await scheduled_job(executor, seeded, schedule, first_slot + timedelta(hours=1))
    await BackupRun(executor, second).execute()
    await wait_until_gone(ctx.sessions, first.backup_id)
    assert not artifact.exists()
    assert await backup_ids(ctx.sessions) == {second.backup_id}
    kept = await load(ctx.sessions, second.backup_id)
    assert kept is not None
    assert kept.artifact_key is not None
    assert (seeded.storage / kept.artifact_key).exists()


async def test_the_service_process_prunes_on_its_sweep_and_on_events(
    sessions: Sessions, nc: NATS, nats_server: NatsServer, sqlite_url: str, tmp_path: Path,
    clock: Clock,
) -> None:  # fmt: skip
    world = await make_world(sessions, tmp_path, retention={"keep_last": 1})
    for hours in (3, 2):
        await world.add(f"b{hours}", clock.now - timedelta(hours=hours))
    env = service_env(tmp_path / "svc", nats_server.url, sqlite_url,
                      BM_STORAGE_SWEEP_INTERVAL_S="3600")  # fmt: skip
    process = ServiceProcess("storage", env, tmp_path / "storage.log").start()
    try:
        wait_for_status(f"{process.base_url}/readyz", 200, timeout=30)
        # The first sweep runs at start.
        await wait_until_gone(sessions, world.backups["b3"].id)
        # Later backups are pruned when their completion is announced.
        newest = await world.add("b1", clock.now - timedelta(hours=1))
        await publish(nc, BackupCompleted(
            backup_id=newest.id, project_id=world.project.id, database_id=world.database.id,
            schedule_id=world.schedule.id, engine=Engine.POSTGRESQL,
            artifact_key=newest.artifact_key or "", size_bytes=newest.bytes_out or 0,
            raw_bytes=0, sha256=newest.sha256 or "0" * 64, compression=Compression(),
            encrypted=False, copies=(ArtifactCopy(destination_id=world.destinations[0].id,
                                                  status=CopyStatus.STORED),),
            started_at=clock.now, finished_at=clock.now, duration_s=1.0,
        ))  # fmt: skip
        await wait_until_gone(sessions, world.backups["b2"].id)
        assert await backup_ids(sessions) == {newest.id}
        assert http_status(f"{process.base_url}/metrics") == 200
        process.signal(signal.SIGTERM)
        assert process.wait(timeout=15) == 0
        log = process.log()
        assert "Traceback" not in log, log
        assert "storage stopped" in log
    finally:
        process.stop()
