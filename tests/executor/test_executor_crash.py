"""An executor killed with SIGKILL in the middle of a backup: JetStream redelivers
the job to the next executor, which takes the run over, discards the half-written
file and finishes — exactly one successful backup, no orphan file."""

from __future__ import annotations

import asyncio
import os
import signal
from collections.abc import Awaitable, Callable
from pathlib import Path

import asyncpg
import pytest
from sqlalchemy import select

from services.common.db.enums import BackupStatus, DatabaseEngine
from services.common.db.models import Backup
from services.common.streams import publish
from services.executor.context import ExecutorContext
from tests.executor.conftest import load_backup, queue_backup, seed, stored_files
from tests.processes import ServiceProcess, service_env, wait_for_status
from tests.servers import Database, NatsServer, PostgresServer

pytestmark = pytest.mark.integration


async def wait_until(check: Callable[[], Awaitable[bool]], within_s: float, what: str) -> None:
    try:
        async with asyncio.timeout(within_s):
            while not await check():
                await asyncio.sleep(0.1)
    except TimeoutError:
        raise AssertionError(f"timed out after {within_s}s waiting for {what}") from None


async def test_sigkill_mid_run_ends_in_one_good_backup(
    executor: ExecutorContext, tmp_path: Path, nats_server: NatsServer, sqlite_url: str,
    pg_server: PostgresServer, pg_database: Database,
) -> None:  # fmt: skip
    pg_server.execute(
        "CREATE TABLE orders AS SELECT i AS id, md5(i::text) AS note "
        "FROM generate_series(1, 1000) AS i", dbname=pg_database.name,
    )  # fmt: skip
    data = await seed(executor, tmp_path, engine=DatabaseEngine.POSTGRESQL, host=pg_server.host,
                      port=pg_server.port, database_name=pg_database.name,
                      username=pg_server.user, password=pg_server.password)  # fmt: skip
    job = await queue_backup(executor, data)

    # Hold a lock so pg_dump waits mid-run, with its output file open.
    blocker = await asyncpg.connect(pg_database.dsn)
    await blocker.execute("BEGIN; LOCK TABLE orders IN ACCESS EXCLUSIVE MODE")

    env = service_env(executor.settings.data_dir, nats_server.url, sqlite_url,
                      BM_JOB_ACK_WAIT_S="3")  # fmt: skip
    first = ServiceProcess("executor", env, tmp_path / "executor-1.log").start()
    second: ServiceProcess | None = None
    try:
        wait_for_status(f"{first.base_url}/readyz", 200, timeout=30)
        await publish(executor.nc, job)

        async def partial_file_open() -> bool:
            backup = await load_backup(executor, job.backup_id)
            return backup.status is BackupStatus.RUNNING and bool(stored_files(data.storage))

        await wait_until(partial_file_open, 30, "the first attempt to start writing")
        assert first.process is not None
        os.killpg(first.process.pid, signal.SIGKILL)
        first.wait(timeout=10)

        second = ServiceProcess("executor", env, tmp_path / "executor-2.log").start()
        wait_for_status(f"{second.base_url}/readyz", 200, timeout=30)
        await blocker.execute("COMMIT")

        async def finished() -> bool:
            backup = await load_backup(executor, job.backup_id)
            return backup.status is not BackupStatus.RUNNING

        await wait_until(finished, 60, "the redelivered run to finish")
    finally:
        await blocker.close()
        first.stop()
        if second is not None:
            second.stop()

    async with executor.sessions() as session:
        backups = list(await session.scalars(
            select(Backup).where(Backup.database_id == data.database.id)
        ))  # fmt: skip
    assert [(b.status, b.attempts) for b in backups] == [(BackupStatus.SUCCEEDED, 2)]
    artifact = data.storage / (backups[0].artifact_key or "")
    assert stored_files(data.storage) == sorted([artifact, Path(f"{artifact}.manifest.json")])
    assert "discarded a partial artifact" in second.log()
