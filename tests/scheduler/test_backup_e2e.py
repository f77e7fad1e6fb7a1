"""A schedule fires and the backup completes: the scheduler (in-process, its clock set
just past the slot) enqueues the job, a real executor process runs ``pg_dump`` against
a real PostgreSQL, and the slot's row ends ``succeeded`` with its artifact stored."""

from __future__ import annotations

import asyncio
from datetime import timedelta
from pathlib import Path

import pytest
from nats.aio.client import Client as NATS

from services.common.credentials import CredentialCipher
from services.common.db.enums import BackupStatus, DatabaseEngine
from services.common.db.models import Database as DatabaseRow
from services.common.secrets import resolve_secrets
from services.common.settings import Settings
from services.scheduler.scheduler import Scheduler
from tests.processes import ServiceProcess, service_env, wait_for_status
from tests.scheduler.conftest import T0, TestClock, World, minutes
from tests.servers import Database, NatsServer, PostgresServer

pytestmark = pytest.mark.integration


async def test_a_scheduled_backup_runs_to_completion(
    scheduler: Scheduler,
    world: World,
    clock: TestClock,
    nc: NATS,
    tmp_path: Path,
    scheduler_settings: Settings,
    sqlite_url: str,
    nats_server: NatsServer,
    pg_server: PostgresServer,
    pg_database: Database,
) -> None:
    pg_server.execute(
        "CREATE TABLE orders AS SELECT i AS id FROM generate_series(1, 500) i",
        dbname=pg_database.name,
    )
    cipher = CredentialCipher(resolve_secrets(scheduler_settings).credential_keys)
    async with world.sessions() as session, session.begin():
        target = DatabaseRow(
            project_id=world.project.id,
            name="real",
            engine=DatabaseEngine.POSTGRESQL,
            host=pg_server.host,
            port=pg_server.port,
            database_name=pg_database.name,
            username=pg_server.user,
            encrypted_password=cipher.encrypt(pg_server.password).encode(),
        )
        session.add(target)
    schedule = await world.schedule("30 * * * *", database=target)

    env = service_env(scheduler_settings.data_dir, nats_server.url, sqlite_url)
    executor = ServiceProcess("executor", env, tmp_path / "executor.log").start()
    try:
        wait_for_status(f"{executor.base_url}/readyz", 200, timeout=30)
        clock.set(T0 + minutes(30) + timedelta(seconds=1))
        await scheduler.tick()
        async with asyncio.timeout(60):
            while (backups := await world.backups(schedule))[0].status in (
                BackupStatus.QUEUED,
                BackupStatus.RUNNING,
            ):
                await asyncio.sleep(0.2)
    finally:
        executor.stop()

    [backup] = backups
    assert backup.status is BackupStatus.SUCCEEDED, (backup.error_message, executor.log())
    assert backup.slot_at == T0 + minutes(30)
    assert backup.artifact_key is not None
    assert (world.destination_path / backup.artifact_key).stat().st_size == backup.bytes_out
