"""Verification: a backup restored into a scratch database on a temporary server
(PostgreSQL, MariaDB, Redis) or on the source server passes when the restored counts
equal the manifest's and fails when they do not; the result lands on the backup and
as ``bm.v1.backup.verified``; the scratch server or database is gone afterwards; a
scheduled backup asks for its own verification when the schedule says so."""

from __future__ import annotations

import asyncio
import copy
import glob
import json
import uuid
from datetime import timedelta
from pathlib import Path
from typing import Any

import asyncpg
import pytest
from nats.aio.msg import Msg
from sqlalchemy import select, update

from proto.jobs import RestoreRequested
from proto.subjects import JOBS_STREAM
from proto.values import RestorePurpose, Trigger
from services.common.db.enums import (
    BackupStatus,
    DatabaseEngine,
    RestoreMode,
    RestoreStatus,
    VerifyMode,
    VerifyStatus,
)
from services.common.db.models import Backup, Restore, Schedule
from services.executor import verify
from services.executor.adapters.base import Counts
from services.executor.backup import BackupRun
from services.executor.context import ExecutorContext
from services.executor.verify import VerifyRun, compare, scratch_name
from tests.executor.conftest import Seeded, load_backup, queue_backup, seed
from tests.executor.test_backup_mysql import query, seeded_mariadb
from tests.executor.test_backup_redis import seeded_redis
from tests.executor.test_restore_mysql import rich
from tests.executor.test_restore_postgres import RICH_SCHEMA
from tests.servers import Database, MariaDBServer, PostgresServer, RedisServer

pytestmark = pytest.mark.integration


def counts(objects: dict[str, int], **kw: Any) -> Counts:
    return Counts("rows", objects, **kw)


@pytest.mark.parametrize(
    ("expected", "actual", "problems"),
    [
        (counts({"a": 1, "b": 0}), counts({"a": 1, "b": 0}), []),
        (counts({"a": 1}), counts({"a": 2}), ["a: 2 rows restored, 1 backed up"]),
        (
            counts({"a": 1, "b": 3}),
            counts({"a": 1}),
            ["b: missing from the restore (3 rows backed up)"],
        ),
        (counts({"a": 1}), counts({"a": 1, "x": 4}), ["x: 4 rows restored, none recorded"]),
        (counts({"a": 1}), counts({"a": 1, "x": 0}), []),
        (counts({"a": 5, "b": 2}, filtered=True), counts({"a": 0}), []),  # excluded data/table
        (Counts("keys", {"db0": 10}, {"db0": 4}), Counts("keys", {"db0": 7}), []),
        (
            Counts("keys", {"db0": 10}, {"db0": 4}),
            Counts("keys", {"db0": 5}),
            ["db0: 5 keys restored, 10 backed up, of which 4 may have expired"],
        ),
        (Counts("keys", {"db0": 2}, {"db0": 2}), Counts("keys", {}), []),
    ],
)
def test_compare(expected: Counts, actual: Counts, problems: list[str]) -> None:
    assert compare(expected, actual) == problems


def test_counts_survive_the_manifest() -> None:
    value = Counts("keys", {"db0": 3}, {"db0": 1}, filtered=False, how="INFO")
    assert Counts.from_json(json.loads(json.dumps(value.to_json()))) == value


async def backed_up(executor: ExecutorContext, data: Seeded) -> uuid.UUID:
    job = await queue_backup(executor, data)
    await BackupRun(executor, job).execute()
    backup = await load_backup(executor, job.backup_id)
    assert backup.status is BackupStatus.SUCCEEDED, backup.error_message
    return job.backup_id


async def run_verification(
    executor: ExecutorContext, data: Seeded, backup_id: uuid.UUID
) -> tuple[Restore, Backup, list[dict[str, Any]]]:
    received: list[dict[str, Any]] = []

    async def collect(msg: Msg) -> None:
        received.append(json.loads(msg.data))

    subscription = await executor.nc.subscribe("bm.v1.backup.verified", cb=collect)
    restore_id = uuid.uuid4()
    async with executor.sessions() as session, session.begin():
        session.add(Restore(id=restore_id, backup_id=backup_id, target_database_id=None,
                            target_name=scratch_name(restore_id),
                            mode=RestoreMode.INTO_EMPTY))  # fmt: skip
    job = RestoreRequested(restore_id=restore_id, project_id=data.project.id,
                           purpose=RestorePurpose.VERIFY, backup_id=backup_id,
                           target_database_name=scratch_name(restore_id))  # fmt: skip
    await VerifyRun(executor, job).execute()
    await executor.nc.flush()
    await asyncio.sleep(0.05)
    await subscription.unsubscribe()
    async with executor.sessions() as session:
        restore = await session.get(Restore, restore_id)
        backup = await session.get(Backup, backup_id)
    assert restore is not None
    assert backup is not None
    return restore, backup, received


def leftover_scratch_dirs() -> list[str]:
    return glob.glob("/tmp/bm-verify-*")


async def edit_counts(executor: ExecutorContext, backup_id: uuid.UUID, name: str,
                      value: int) -> None:  # fmt: skip
    backup = await load_backup(executor, backup_id)
    manifest = copy.deepcopy(backup.manifest or {})
    manifest["counts"]["objects"][name] = value
    async with executor.sessions() as session, session.begin():
        await session.execute(update(Backup).where(Backup.id == backup_id)
                              .values(manifest=manifest))  # fmt: skip


async def test_postgres_verification_passes_then_fails_on_a_count_mismatch(
    executor: ExecutorContext, tmp_path: Path, pg_server: PostgresServer, pg_database: Database
) -> None:
    pg_server.execute(RICH_SCHEMA, dbname=pg_database.name)
    data = await seed(executor, tmp_path, engine=DatabaseEngine.POSTGRESQL, host=pg_server.host,
                      port=pg_server.port, database_name=pg_database.name,
                      username=pg_server.user, password=pg_server.password)  # fmt: skip
    backup_id = await backed_up(executor, data)
    manifest = (await load_backup(executor, backup_id)).manifest or {}
    assert manifest["counts"]["objects"] == {"public.audit": 0, "public.customers": 3}
    assert "snapshot" in manifest["counts"]["how"]
    before = set(leftover_scratch_dirs())

    restore, backup, events = await run_verification(executor, data, backup_id)
    assert restore.status is RestoreStatus.SUCCEEDED, restore.error_message
    assert backup.verify_status is VerifyStatus.PASSED, backup.verify_message
    assert backup.verified_at is not None
    assert "2 tables" in (backup.verify_message or "")
    assert [(e["backup_id"], e["passed"]) for e in events] == [(str(backup_id), True)]
    assert set(leftover_scratch_dirs()) == before

    await edit_counts(executor, backup_id, "public.customers", 4)
    restore, backup, events = await run_verification(executor, data, backup_id)
    assert (restore.status, restore.error_code) == (RestoreStatus.FAILED, "counts_differ")
    assert backup.verify_status is VerifyStatus.FAILED
    assert "public.customers: 3 rows restored, 4 backed up" in (backup.verify_message or "")
    assert [e["passed"] for e in events] == [False]
    assert "public.customers" in events[0]["detail"]


async def test_verification_on_the_source_server_drops_its_scratch_database(
    executor: ExecutorContext, tmp_path: Path, pg_server: PostgresServer, pg_database: Database
) -> None:
    pg_server.execute("CREATE TABLE t AS SELECT i FROM generate_series(1, 500) i",
                      dbname=pg_database.name)  # fmt: skip
    executor.settings = executor.settings.model_copy(update={"verify_scratch": "source"})
    data = await seed(executor, tmp_path, engine=DatabaseEngine.POSTGRESQL, host=pg_server.host,
                      port=pg_server.port, database_name=pg_database.name,
                      username=pg_server.user, password=pg_server.password)  # fmt: skip
    backup_id = await backed_up(executor, data)
    restore, backup, _ = await run_verification(executor, data, backup_id)
    assert restore.status is RestoreStatus.SUCCEEDED, restore.error_message
    assert backup.verify_status is VerifyStatus.PASSED
    conn = await asyncpg.connect(pg_server.dsn("postgres"))
    try:
        assert await conn.fetchval("SELECT count(*) FROM pg_database WHERE datname = $1",
                                   restore.target_name) == 0  # fmt: skip
    finally:
        await conn.close()


async def test_mariadb_verification_on_a_temporary_server(
    executor: ExecutorContext, tmp_path: Path, mariadb_server: MariaDBServer,
    mariadb_database: Database,
) -> None:  # fmt: skip
    await rich(mariadb_server, mariadb_database.name)
    data = await seeded_mariadb(executor, tmp_path, mariadb_server, mariadb_database.name)
    backup_id = await backed_up(executor, data)
    restore, backup, _ = await run_verification(executor, data, backup_id)
    assert restore.status is RestoreStatus.SUCCEEDED, restore.error_message
    assert backup.verify_status is VerifyStatus.PASSED, backup.verify_message
    assert "temporary MariaDB server" in (restore.log_tail or "")
    # the source was not touched
    assert await query(mariadb_server, mariadb_database.name, "SELECT COUNT(*) FROM items") == [
        (301,)
    ]


async def test_redis_verification_on_a_temporary_server(
    executor: ExecutorContext, tmp_path: Path, redis_server: RedisServer
) -> None:
    from tests.executor.test_backup_redis import client

    conn = client(redis_server.host, redis_server.port, redis_server.password)
    try:
        await conn.config_set("repl-diskless-sync-delay", 0)
        await conn.mset({f"k{i}": i for i in range(100)})
        await conn.set("ttl", "x", ex=600)
        await conn.xadd("events", {"a": "1"})
    finally:
        await conn.aclose()
    data = await seeded_redis(executor, tmp_path, redis_server)
    backup_id = await backed_up(executor, data)
    restore, backup, _ = await run_verification(executor, data, backup_id)
    assert restore.status is RestoreStatus.SUCCEEDED, restore.error_message
    assert backup.verify_status is VerifyStatus.PASSED, backup.verify_message

    await edit_counts(executor, backup_id, "db0", 150)
    restore, backup, _ = await run_verification(executor, data, backup_id)
    assert backup.verify_status is VerifyStatus.FAILED
    assert "db0: 102 keys restored, 150 backed up" in (backup.verify_message or "")


async def test_a_backup_without_counts_is_not_verified(
    executor: ExecutorContext, tmp_path: Path, pg_server: PostgresServer, pg_database: Database
) -> None:
    data = await seed(executor, tmp_path, engine=DatabaseEngine.POSTGRESQL, host=pg_server.host,
                      port=pg_server.port, database_name=pg_database.name,
                      username=pg_server.user, password=pg_server.password)  # fmt: skip
    backup_id = await backed_up(executor, data)
    backup = await load_backup(executor, backup_id)
    manifest = dict(backup.manifest or {})
    manifest.pop("counts")
    async with executor.sessions() as session, session.begin():
        await session.execute(update(Backup).where(Backup.id == backup_id)
                              .values(manifest=manifest))  # fmt: skip
    restore, backup, _ = await run_verification(executor, data, backup_id)
    assert (restore.status, restore.error_code) == (RestoreStatus.FAILED, "no_counts")
    assert backup.verify_status is VerifyStatus.FAILED


async def test_a_scheduled_backup_asks_for_its_verification(
    executor: ExecutorContext, tmp_path: Path, pg_server: PostgresServer, pg_database: Database
) -> None:
    data = await seed(executor, tmp_path, engine=DatabaseEngine.POSTGRESQL, host=pg_server.host,
                      port=pg_server.port, database_name=pg_database.name,
                      username=pg_server.user, password=pg_server.password)  # fmt: skip
    async with executor.sessions() as session, session.begin():
        schedule = Schedule(database_id=data.database.id, name="nightly", cron="0 2 * * *",
                            verify=VerifyMode.EVERY_RUN, timeout_s=900)  # fmt: skip
        session.add(schedule)

    async def scheduled_backup() -> uuid.UUID:
        job = await queue_backup(executor, data)
        async with executor.sessions() as session, session.begin():
            await session.execute(update(Backup).where(Backup.id == job.backup_id)
                                  .values(schedule_id=schedule.id))  # fmt: skip
        job = job.model_copy(update={"schedule_id": schedule.id, "trigger": Trigger.MANUAL})
        await BackupRun(executor, job).execute()
        return job.backup_id

    async def verifications() -> list[Restore]:
        async with executor.sessions() as session:
            return list(await session.scalars(
                select(Restore).where(Restore.target_name.startswith("bm_verify_"))
            ))  # fmt: skip

    first = await scheduled_backup()
    queued = await verifications()
    assert [(r.backup_id, r.status, r.target_database_id) for r in queued] == [
        (first, RestoreStatus.QUEUED, None)
    ]
    info = await executor.nc.jetstream().stream_info(JOBS_STREAM)
    assert info.state.messages == 1  # the verification job

    await scheduled_backup()  # one is still pending: no second one
    assert len(await verifications()) == 1

    # daily: a verification an hour ago is recent enough
    async with executor.sessions() as session, session.begin():
        await session.execute(update(Restore).values(status=RestoreStatus.SUCCEEDED))
        await session.execute(update(Schedule).values(verify=VerifyMode.DAILY))
        await session.execute(update(Backup).where(Backup.id == first).values(
            verified_at=executor.clock() - timedelta(hours=1),
            verify_status=VerifyStatus.PASSED))  # fmt: skip
    await scheduled_backup()
    assert len(await verifications()) == 1
    async with executor.sessions() as session, session.begin():
        await session.execute(update(Backup).where(Backup.id == first).values(
            verified_at=executor.clock() - timedelta(days=2)))  # fmt: skip
    third = await scheduled_backup()
    assert [r.backup_id for r in await verifications()][-1:] == [third] or third in [
        r.backup_id for r in await verifications()
    ]
    assert len(await verifications()) == 2


def test_scratch_setting_defaults_to_local(executor_settings: Any) -> None:
    assert verify.verify_scratch(executor_settings) == "local"
