"""MariaDB restores against a real server with the real client: a backup of every
common kind of object (unicode, binary, large rows, NULLs, auto-increment, a view,
functions and procedures, indexes, triggers, an event) restores into a new database
with exactly the same content; into-empty refuses a non-empty target; replace works
over a restored copy; a corrupted artifact writes nothing (not even the database); an
unreachable target and a client killed midway fail the run; the password never shows
in the running client's argv or environment."""

from __future__ import annotations

import asyncio
import os
import signal
import uuid
from pathlib import Path
from typing import Any

import pytest

from proto.jobs import RestoreRequested
from services.common.db.enums import BackupStatus, DatabaseEngine, RestoreMode, RestoreStatus
from services.common.db.models import Database as DatabaseRow
from services.common.db.models import Restore
from services.executor.backup import BackupRun
from services.executor.context import ExecutorContext
from services.executor.restore import RestoreRun
from tests.executor.conftest import Seeded, load_backup, queue_backup, seed
from tests.executor.standin.procfs import exposed
from tests.executor.test_backup_mysql import connect, fill, query, seeded_mariadb
from tests.executor.test_restore_postgres import restore
from tests.servers import Database, MariaDBServer, free_port, unique_name

pytestmark = pytest.mark.integration

EXTRA = [
    "CREATE INDEX items_name ON items (name(50))",
    "CREATE VIEW cheap_items AS SELECT id, name, price FROM items WHERE price < 10",
    "INSERT INTO items (name, data, note) VALUES ('large', REPEAT(UNHEX('00FF27'), 700000), "
    "REPEAT('ü', 30000))",
    "ALTER TABLE items AUTO_INCREMENT = 5000",
]
SNAPSHOT = {
    "rows": "SELECT * FROM items ORDER BY id",
    "view": "SELECT * FROM cheap_items ORDER BY id",
    "secret": "SELECT * FROM secret_table ORDER BY id",
    "function": "SELECT with_tax(10)",
    "auto_increment": "SELECT auto_increment FROM information_schema.tables "
    "WHERE table_schema = DATABASE() AND table_name = 'items'",
    "indexes": "SELECT index_name, column_name, seq_in_index FROM information_schema.statistics "
    "WHERE table_schema = DATABASE() ORDER BY 1, 2, 3",
    "routines": "SELECT routine_name, routine_type FROM information_schema.routines "
    "WHERE routine_schema = DATABASE() ORDER BY 1",
    "triggers": "SELECT trigger_name FROM information_schema.triggers "
    "WHERE trigger_schema = DATABASE() ORDER BY 1",
    "events": "SELECT event_name FROM information_schema.events "
    "WHERE event_schema = DATABASE() ORDER BY 1",
}


async def snapshot(server: MariaDBServer, dbname: str) -> dict[str, list[tuple[Any, ...]]]:
    return {name: await query(server, dbname, sql) for name, sql in SNAPSHOT.items()}


async def rich(server: MariaDBServer, dbname: str) -> None:
    await fill(server, dbname, rows=300)
    for statement in EXTRA:
        await query(server, dbname, statement)


async def backed_up(executor: ExecutorContext, tmp_path: Path, server: MariaDBServer,
                    dbname: str) -> tuple[Seeded, uuid.UUID]:  # fmt: skip
    data = await seeded_mariadb(executor, tmp_path, server, dbname)
    job = await queue_backup(executor, data)
    await BackupRun(executor, job).execute()
    backup = await load_backup(executor, job.backup_id)
    assert backup.status is BackupStatus.SUCCEEDED, backup.error_message
    return data, job.backup_id


async def database_exists(server: MariaDBServer, name: str) -> bool:
    rows = await query(server, "mysql", "SELECT 1 FROM information_schema.schemata "
                       "WHERE schema_name = %s", name)  # fmt: skip
    return bool(rows)


@pytest.fixture
async def rich_db(mariadb_server: MariaDBServer, mariadb_database: Database) -> Database:
    await rich(mariadb_server, mariadb_database.name)
    return mariadb_database


async def test_round_trip_restores_exactly_the_same_content(
    executor: ExecutorContext, tmp_path: Path, mariadb_server: MariaDBServer, rich_db: Database
) -> None:
    data, backup_id = await backed_up(executor, tmp_path, mariadb_server, rich_db.name)
    backup = await load_backup(executor, backup_id)
    counts = (backup.manifest or {})["counts"]
    assert "objects" in counts, counts
    assert counts["objects"] == {"items": 301, "secret_table": 1}
    name = unique_name("restored")
    try:
        result = await restore(executor, data, backup_id, name)
        assert result.status is RestoreStatus.SUCCEEDED, result.error_message
        original = await snapshot(mariadb_server, rich_db.name)
        assert len(original["rows"]) == 301
        assert await snapshot(mariadb_server, name) == original
        # the trigger is alive in the copy, and auto-increment goes on where it was
        await query(mariadb_server, name, "INSERT INTO items (name) VALUES ('fresh')")
        assert await query(mariadb_server, name,
                           "SELECT id, name_upper FROM items WHERE name = 'fresh'") == [
            (5000, "FRESH")
        ]  # fmt: skip

        again = await restore(executor, data, backup_id, name)
        assert (again.status, again.error_code) == (RestoreStatus.FAILED, "target_not_empty")

        replaced = await restore(executor, data, backup_id, name, RestoreMode.REPLACE)
        assert replaced.status is RestoreStatus.SUCCEEDED, replaced.error_message
        assert await snapshot(mariadb_server, name) == original
    finally:
        mariadb_server.drop_database(name)


async def test_corrupted_artifact_writes_nothing(
    executor: ExecutorContext, tmp_path: Path, mariadb_server: MariaDBServer, rich_db: Database
) -> None:
    data, backup_id = await backed_up(executor, tmp_path, mariadb_server, rich_db.name)
    backup = await load_backup(executor, backup_id)
    artifact = data.storage / (backup.artifact_key or "")
    raw = bytearray(artifact.read_bytes())
    raw[len(raw) // 2] ^= 0xFF
    artifact.write_bytes(bytes(raw))
    name = unique_name("never")
    result = await restore(executor, data, backup_id, name)
    assert (result.status, result.error_code) == (RestoreStatus.FAILED, "checksum_mismatch")
    assert "nothing was written" in (result.error_message or "")
    assert not await database_exists(mariadb_server, name)


async def test_unreachable_target_fails_clearly(
    executor: ExecutorContext, tmp_path: Path, mariadb_server: MariaDBServer, rich_db: Database
) -> None:
    data, backup_id = await backed_up(executor, tmp_path, mariadb_server, rich_db.name)
    port = free_port()
    closed = await seed(executor, tmp_path, engine=DatabaseEngine.MARIADB, host="127.0.0.1",
                        port=port, database_name="x", username="u", password="p")  # fmt: skip
    async with executor.sessions() as session, session.begin():
        row = Restore(backup_id=backup_id, target_database_id=closed.database.id,
                      target_name="x", mode=RestoreMode.INTO_EMPTY)  # fmt: skip
        session.add(row)
    job = RestoreRequested(restore_id=row.id, project_id=data.project.id, backup_id=backup_id,
                           target_database_id=closed.database.id)  # fmt: skip
    await RestoreRun(executor, job).execute()
    async with executor.sessions() as session:
        final = await session.get(Restore, row.id)
    assert final is not None
    assert (final.status, final.error_code) == (RestoreStatus.FAILED, "connection_refused")
    assert f"127.0.0.1:{port}" in (final.error_message or "")


async def test_client_killed_midway_fails_and_hides_the_password(
    executor: ExecutorContext, tmp_path: Path, mariadb_server: MariaDBServer,
    mariadb_database: Database,
) -> None:  # fmt: skip
    conn = await connect(mariadb_server, mariadb_database.name)
    try:
        async with conn.cursor() as cur:
            await cur.execute("CREATE TABLE big (id INT PRIMARY KEY, filler TEXT)")
            for start in range(0, 60000, 5000):
                rows = [(i, f"{i:08d}" * 40) for i in range(start, start + 5000)]
                await cur.executemany("INSERT INTO big VALUES (%s, %s)", rows)
    finally:
        conn.close()
    data, backup_id = await backed_up(executor, tmp_path, mariadb_server, mariadb_database.name)
    name = unique_name("killed")
    async with executor.sessions() as session, session.begin():
        row = Restore(backup_id=backup_id, target_database_id=data.database.id,
                      target_name=name, mode=RestoreMode.INTO_EMPTY)  # fmt: skip
        session.add(row)
    job = RestoreRequested(restore_id=row.id, project_id=data.project.id, backup_id=backup_id,
                           target_database_id=data.database.id,
                           target_database_name=name)  # fmt: skip
    run = RestoreRun(executor, job)
    task = asyncio.create_task(run.execute())
    try:
        async with asyncio.timeout(60):
            while run.tool is None or run.bytes_in == 0:
                await asyncio.sleep(0.005)
        tree = exposed(run.tool.pid)
        assert tree
        argv = tree[0].cmdline.split(b"\0")
        assert Path(argv[0].decode()).name in ("mariadb", "mysql")
        assert argv[1].startswith(b"--defaults-extra-file=")
        assert b"--binary-mode" in argv
        for process in tree:
            assert not process.mentions(mariadb_server.password)
        os.killpg(run.tool.pid, signal.SIGKILL)
        await task
        async with executor.sessions() as session:
            final = await session.get(Restore, row.id)
        assert final is not None
        assert (final.status, final.error_code) == (RestoreStatus.FAILED, "restore_failed")
        assert mariadb_server.password not in (final.log_tail or "") + (final.error_message or "")
    finally:
        mariadb_server.drop_database(name)


async def test_mysql_target_row_restores_a_mariadb_backup(
    executor: ExecutorContext, tmp_path: Path, mariadb_server: MariaDBServer, rich_db: Database
) -> None:
    """The ``mysql`` engine name restores through the same client."""
    data, backup_id = await backed_up(executor, tmp_path, mariadb_server, rich_db.name)
    async with executor.sessions() as session, session.begin():
        row = await session.get(DatabaseRow, data.database.id)
        assert row is not None
        row.engine = DatabaseEngine.MYSQL
    name = unique_name("as_mysql")
    try:
        result = await restore(executor, data, backup_id, name)
        assert result.status is RestoreStatus.SUCCEEDED, result.error_message
        assert await query(mariadb_server, name, "SELECT COUNT(*) FROM items") == [(301,)]
    finally:
        mariadb_server.drop_database(name)
