"""PostgreSQL restores against a real server: a backup of every common kind of
object restores into a fresh database with exactly the same content; a corrupted
artifact is refused before anything is written; into-empty refuses a non-empty
target; replace drops what the dump contains first; a restore tool killed midway is
reported failed and its single transaction leaves nothing behind."""

from __future__ import annotations

import asyncio
import os
import signal
import uuid
from pathlib import Path

import asyncpg
import pytest

from proto.jobs import RestoreRequested
from services.common.db.enums import BackupStatus, DatabaseEngine, RestoreMode, RestoreStatus
from services.common.db.models import Restore
from services.executor.backup import BackupRun
from services.executor.context import ExecutorContext
from services.executor.restore import RestoreRun
from tests.executor.conftest import Seeded, load_backup, queue_backup, seed
from tests.servers import Database, PostgresServer

pytestmark = pytest.mark.integration

RICH_SCHEMA = """
CREATE TABLE customers (
    id serial PRIMARY KEY, name text NOT NULL, email text UNIQUE, note text,
    photo bytea, balance numeric(12, 2), joined timestamptz, tags text[], meta jsonb);
CREATE INDEX customers_name_idx ON customers (lower(name));
INSERT INTO customers (name, email, note, photo, balance, joined, tags, meta) VALUES
 ('Zoë Ünïcødé 日本', 'z@example.com', NULL, '\\x00ff10', 12.50, '2024-02-29 23:59:59+00',
  ARRAY['a', 'b'], '{"k": [1, 2, {"x": null}]}'),
 ('Empty', NULL, '', '', 0, NULL, '{}', 'null'),
 ('Big row', 'big@example.com', repeat('x', 200000), decode(repeat('ab', 50000), 'hex'),
  -99999.99, now(), NULL, NULL);
CREATE TABLE audit (id bigserial PRIMARY KEY, customer_id int REFERENCES customers(id),
                    what text, at timestamptz DEFAULT now());
CREATE FUNCTION log_customer() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN INSERT INTO audit (customer_id, what) VALUES (NEW.id, TG_OP); RETURN NEW; END $$;
CREATE TRIGGER customers_audit AFTER INSERT ON customers
    FOR EACH ROW EXECUTE FUNCTION log_customer();
CREATE VIEW rich_customers AS SELECT id, name FROM customers WHERE balance > 10;
CREATE FUNCTION add(a int, b int) RETURNS int LANGUAGE sql IMMUTABLE AS 'SELECT a + b';
SELECT setval('customers_id_seq', 1000);
"""

SNAPSHOT_QUERIES = {
    "customers": "SELECT * FROM customers ORDER BY id",
    "audit": "SELECT id, customer_id, what FROM audit ORDER BY id",
    "view": "SELECT * FROM rich_customers ORDER BY id",
    "function": "SELECT add(2, 3)",
    "sequence": "SELECT last_value FROM customers_id_seq",
    "indexes": "SELECT indexname FROM pg_indexes WHERE schemaname = 'public' ORDER BY 1",
    "triggers": "SELECT tgname FROM pg_trigger WHERE NOT tgisinternal ORDER BY 1",
}


async def snapshot(dsn: str) -> dict[str, list[tuple[object, ...]]]:
    conn = await asyncpg.connect(dsn)
    try:
        return {name: [tuple(r) for r in await conn.fetch(sql)]
                for name, sql in SNAPSHOT_QUERIES.items()}  # fmt: skip
    finally:
        await conn.close()


async def user_tables(dsn: str) -> list[str]:
    conn = await asyncpg.connect(dsn)
    try:
        rows = await conn.fetch("SELECT tablename FROM pg_tables WHERE schemaname = 'public'")
        return sorted(r[0] for r in rows)
    finally:
        await conn.close()


async def backed_up(executor: ExecutorContext, tmp_path: Path, pg: PostgresServer,
                    db: Database) -> tuple[Seeded, uuid.UUID]:  # fmt: skip
    data = await seed(executor, tmp_path, engine=DatabaseEngine.POSTGRESQL, host=pg.host,
                      port=pg.port, database_name=db.name, username=pg.user,
                      password=pg.password)  # fmt: skip
    job = await queue_backup(executor, data)
    await BackupRun(executor, job).execute()
    backup = await load_backup(executor, job.backup_id)
    assert backup.status is BackupStatus.SUCCEEDED, backup.error_message
    return data, job.backup_id


async def restore(executor: ExecutorContext, data: Seeded, backup_id: uuid.UUID, name: str,
                  mode: RestoreMode = RestoreMode.INTO_EMPTY) -> Restore:  # fmt: skip
    async with executor.sessions() as session, session.begin():
        row = Restore(backup_id=backup_id, target_database_id=data.database.id,
                      target_name=name, mode=mode)  # fmt: skip
        session.add(row)
    job = RestoreRequested(restore_id=row.id, project_id=data.project.id, backup_id=backup_id,
                           target_database_id=data.database.id, target_database_name=name,
                           mode=mode)  # fmt: skip
    run = RestoreRun(executor, job)
    await run.execute()
    async with executor.sessions() as session:
        final = await session.get(Restore, row.id)
        assert final is not None
        return final


@pytest.fixture
def rich_db(pg_server: PostgresServer, pg_database: Database) -> Database:
    pg_server.execute(RICH_SCHEMA, dbname=pg_database.name)
    return pg_database


async def test_round_trip_restores_exactly_the_same_content(
    executor: ExecutorContext,
    tmp_path: Path,
    pg_server: PostgresServer,
    rich_db: Database,
) -> None:
    data, backup_id = await backed_up(executor, tmp_path, pg_server, rich_db)
    name = f"restored_{uuid.uuid4().hex[:8]}"
    try:
        result = await restore(executor, data, backup_id, name)
        assert result.status is RestoreStatus.SUCCEEDED, result.error_message
        assert result.target_name == name
        assert await snapshot(pg_server.dsn(name)) == await snapshot(rich_db.dsn)
        # The trigger is alive in the copy, not just present.
        conn = await asyncpg.connect(pg_server.dsn(name))
        try:
            await conn.execute("INSERT INTO customers (name) VALUES ('new')")
            assert (
                await conn.fetchval("SELECT what FROM audit ORDER BY id DESC LIMIT 1") == "INSERT"
            )
        finally:
            await conn.close()

        again = await restore(executor, data, backup_id, name)
        assert (again.status, again.error_code) == (RestoreStatus.FAILED, "target_not_empty")
        assert "not empty" in (again.error_message or "")

        replaced = await restore(executor, data, backup_id, name, RestoreMode.REPLACE)
        assert replaced.status is RestoreStatus.SUCCEEDED, replaced.error_message
        assert await snapshot(pg_server.dsn(name)) == await snapshot(rich_db.dsn)
    finally:
        pg_server.drop_database(name)


async def test_corrupted_artifact_writes_nothing(
    executor: ExecutorContext,
    tmp_path: Path,
    pg_server: PostgresServer,
    rich_db: Database,
) -> None:
    data, backup_id = await backed_up(executor, tmp_path, pg_server, rich_db)
    backup = await load_backup(executor, backup_id)
    artifact = data.storage / (backup.artifact_key or "")
    raw = bytearray(artifact.read_bytes())
    raw[len(raw) // 2] ^= 0xFF
    artifact.write_bytes(bytes(raw))
    name = f"never_{uuid.uuid4().hex[:8]}"
    result = await restore(executor, data, backup_id, name)
    assert (result.status, result.error_code) == (RestoreStatus.FAILED, "checksum_mismatch")
    assert "nothing was written" in (result.error_message or "")
    conn = await asyncpg.connect(pg_server.dsn("postgres"))
    try:
        assert await conn.fetchval("SELECT 1 FROM pg_database WHERE datname = $1", name) is None
    finally:
        await conn.close()


async def test_restore_tool_killed_midway_fails_and_leaves_nothing(
    executor: ExecutorContext,
    tmp_path: Path,
    pg_server: PostgresServer,
    pg_database: Database,
) -> None:
    pg_server.execute("CREATE TABLE big AS SELECT i, repeat(md5(i::text), 8) AS filler "
                      "FROM generate_series(1, 300000) AS i", dbname=pg_database.name)  # fmt: skip
    data, backup_id = await backed_up(executor, tmp_path, pg_server, pg_database)
    name = f"killed_{uuid.uuid4().hex[:8]}"
    async with executor.sessions() as session, session.begin():
        row = Restore(backup_id=backup_id, target_database_id=data.database.id,
                      target_name=name, mode=RestoreMode.INTO_EMPTY)  # fmt: skip
        session.add(row)
    job = RestoreRequested(
        restore_id=row.id,
        project_id=data.project.id,
        backup_id=backup_id,
        target_database_id=data.database.id,
        target_database_name=name,
    )
    run = RestoreRun(executor, job)
    task = asyncio.create_task(run.execute())
    try:
        async with asyncio.timeout(30):
            while run.tool is None or run.bytes_in == 0:
                await asyncio.sleep(0.005)
        assert pg_server.password.encode() not in Path(f"/proc/{run.tool.pid}/cmdline").read_bytes()
        os.killpg(run.tool.pid, signal.SIGKILL)
        await task
        async with executor.sessions() as session:
            final = await session.get(Restore, row.id)
        assert final is not None
        assert (final.status, final.error_code) == (RestoreStatus.FAILED, "restore_failed")
        assert await user_tables(pg_server.dsn(name)) == []
    finally:
        pg_server.drop_database(name)
