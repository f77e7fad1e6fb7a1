"""What a backup tells the world: started, progressed (core NATS), completed or
failed — with no secret in any of them — and a second run of a database that is
still being backed up is skipped with the reason, not run twice at once."""

from __future__ import annotations

import asyncio
from pathlib import Path

import nats
import pytest
from nats.aio.msg import Msg

from proto.backup_events import BackupCompleted
from proto.registry import decode_subject
from proto.subjects import WILDCARD
from services.common.db.enums import BackupStatus, DatabaseEngine
from services.executor.backup import BackupRun
from services.executor.context import ExecutorContext
from tests.executor.conftest import load_backup, queue_backup, seed
from tests.executor.test_backup_failures import ScriptAdapter
from tests.servers import Database, NatsServer, PostgresServer

pytestmark = pytest.mark.integration


async def test_events_of_a_good_and_a_failed_backup_carry_no_secret(
    executor: ExecutorContext, tmp_path: Path, nats_server: NatsServer,
    pg_server: PostgresServer, pg_database: Database,
) -> None:  # fmt: skip
    pg_server.execute("CREATE TABLE t AS SELECT i FROM generate_series(1, 300000) i",
                      dbname=pg_database.name)  # fmt: skip
    received: list[Msg] = []
    listener = await nats.connect(nats_server.url)

    async def collect(msg: Msg) -> None:
        received.append(msg)

    await listener.subscribe(WILDCARD, cb=collect)
    try:
        good = await seed(executor, tmp_path, engine=DatabaseEngine.POSTGRESQL,
                          host=pg_server.host, port=pg_server.port, database_name=pg_database.name,
                          username=pg_server.user, password=pg_server.password)  # fmt: skip
        job = await queue_backup(executor, good)
        await BackupRun(executor, job).execute()
        bad = await seed(executor, tmp_path / "bad", engine=DatabaseEngine.POSTGRESQL,
                         host=pg_server.host, port=pg_server.port, database_name=pg_database.name,
                         username=pg_server.user, password="s3cret-wrong-pw")  # fmt: skip
        failing = await queue_backup(executor, bad)
        await BackupRun(executor, failing).execute()
        await listener.flush()
        await asyncio.sleep(0.2)
    finally:
        await listener.close()

    subjects = [(m.subject, decode_subject(m.subject, m.data)) for m in received]
    mine = [s for s, e in subjects if getattr(e, "backup_id", None) == job.backup_id]
    assert mine[0] == "bm.v1.backup.started"
    assert mine[-1] == "bm.v1.backup.completed"
    theirs = [s for s, e in subjects if getattr(e, "backup_id", None) == failing.backup_id]
    assert theirs[-1] == "bm.v1.backup.failed"
    completed = next(e for _, e in subjects if isinstance(e, BackupCompleted))
    backup = await load_backup(executor, job.backup_id)
    assert completed.sha256 == backup.sha256
    for message in received:
        assert pg_server.password.encode() not in message.data
        assert b"s3cret-wrong-pw" not in message.data


async def test_second_run_of_a_busy_database_is_skipped(
    executor: ExecutorContext,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from services.executor import adapters

    adapter = ScriptAdapter()
    adapter.mode = "slow"
    monkeypatch.setitem(adapters.ADAPTERS, "postgresql", adapter)
    data = await seed(executor, tmp_path, engine=DatabaseEngine.POSTGRESQL, host="127.0.0.1",
                      port=5432, database_name="db", username="u", password="pw")  # fmt: skip
    first_job = await queue_backup(executor, data, timeout_s=3)
    second_job = await queue_backup(executor, data)
    first = asyncio.create_task(BackupRun(executor, first_job).execute())
    async with asyncio.timeout(10):
        while (await load_backup(executor, first_job.backup_id)).status is not BackupStatus.RUNNING:
            await asyncio.sleep(0.05)
    await BackupRun(executor, second_job).execute()
    second = await load_backup(executor, second_job.backup_id)
    assert (second.status, second.error_code) == (BackupStatus.SKIPPED, "overlap")
    assert str(first_job.backup_id) in (second.error_message or "")
    await first
    assert (await load_backup(executor, first_job.backup_id)).status is BackupStatus.FAILED
