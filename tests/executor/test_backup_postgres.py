"""PostgreSQL backups end to end against a real server and the real pg_dump: the
artifact is complete, stored atomically, checksummed, described by its manifest,
and restores to the same data. Failures leave a failed row and no artifact."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
from pathlib import Path

import asyncpg
import pytest
import zstandard
from sqlalchemy import select

from services.common.db.enums import BackupStatus, CopyStatus, DatabaseEngine, DestinationKind
from services.common.db.models import BackupCopy, Destination
from services.executor.backup import BackupRun
from services.executor.context import ExecutorContext
from services.executor.manifest import MANIFEST_SUFFIX
from tests.executor.conftest import Seeded, load_backup, queue_backup, seed, stored_files
from tests.servers import Database, PostgresServer

pytestmark = pytest.mark.integration

SEED_SQL = """
CREATE TABLE orders (id serial PRIMARY KEY, customer text NOT NULL, total numeric(10,2),
                     placed_at timestamptz DEFAULT now(), payload jsonb, blob bytea);
INSERT INTO orders (customer, total, payload, blob)
SELECT 'customer ' || i || ' ünïcødé', i * 1.5, jsonb_build_object('n', i),
       decode(md5(i::text), 'hex')
FROM generate_series(1, 5000) AS i;
"""


@pytest.fixture
def orders_db(pg_server: PostgresServer, pg_database: Database) -> Database:
    pg_server.execute(SEED_SQL, dbname=pg_database.name)
    return pg_database


async def rows(dsn: str) -> list[tuple[object, ...]]:
    conn = await asyncpg.connect(dsn)
    try:
        records = await conn.fetch(
            "SELECT id, customer, total, payload, blob FROM orders ORDER BY id"
        )
        return [tuple(record) for record in records]
    finally:
        await conn.close()


async def seeded_pg(executor: ExecutorContext, tmp_path: Path, server: PostgresServer,
                    dbname: str, password: str | None = None) -> Seeded:  # fmt: skip
    return await seed(
        executor, tmp_path, engine=DatabaseEngine.POSTGRESQL, host=server.host, port=server.port,
        database_name=dbname, username=server.user,
        password=server.password if password is None else password,
    )  # fmt: skip


async def test_backup_is_complete_verified_and_restores(
    executor: ExecutorContext,
    tmp_path: Path,
    pg_server: PostgresServer,
    orders_db: Database,
) -> None:
    seeded = await seeded_pg(executor, tmp_path, pg_server, orders_db.name)
    job = await queue_backup(executor, seeded)
    await BackupRun(executor, job).execute()

    backup = await load_backup(executor, job.backup_id)
    assert backup.status is BackupStatus.SUCCEEDED, backup.error_message
    assert backup.artifact_key is not None
    assert backup.artifact_key.startswith(f"{seeded.project.slug}/orders-db/")
    assert backup.artifact_key.endswith(f"-{job.backup_id}.pgdump.zst")
    artifact = seeded.storage / backup.artifact_key
    data = artifact.read_bytes()
    assert hashlib.sha256(data).hexdigest() == backup.sha256
    assert len(data) == backup.bytes_out
    assert stored_files(seeded.storage) == sorted([artifact, Path(f"{artifact}{MANIFEST_SUFFIX}")])

    manifest = json.loads(Path(f"{artifact}{MANIFEST_SUFFIX}").read_text())
    assert manifest["sha256"] == backup.sha256
    assert manifest["database"]["engine"] == "postgresql"
    assert manifest["server_version"].startswith("15")
    assert pg_server.password not in json.dumps(manifest)

    dump = zstandard.ZstdDecompressor().decompressobj().decompress(data)
    assert dump.startswith(b"PGDMP")
    assert len(dump) == backup.bytes_in
    pg_server.create_database("restored_copy")
    try:
        dump_file = tmp_path / "dump.pgdump"
        dump_file.write_bytes(dump)
        env = {**os.environ, "PGPASSWORD": pg_server.password}
        subprocess.run(
            [str(pg_server.bindir / "pg_restore"), "--exit-on-error", "--no-owner",
             f"--host={pg_server.host}", f"--port={pg_server.port}",
             f"--username={pg_server.user}", "--dbname=restored_copy", str(dump_file)],
            check=True, env=env, capture_output=True,
        )  # fmt: skip
        assert await rows(pg_server.dsn("restored_copy")) == await rows(orders_db.dsn)
    finally:
        pg_server.drop_database("restored_copy")


async def test_wrong_password_fails_clearly_and_stores_nothing(
    executor: ExecutorContext,
    tmp_path: Path,
    pg_server: PostgresServer,
    orders_db: Database,
) -> None:
    seeded = await seeded_pg(executor, tmp_path, pg_server, orders_db.name, password="wrong-pw-123")
    job = await queue_backup(executor, seeded)
    await BackupRun(executor, job).execute()
    backup = await load_backup(executor, job.backup_id)
    assert backup.status is BackupStatus.FAILED
    assert backup.error_code == "authentication_failed"
    assert "check the username and password" in (backup.error_message or "")
    assert "wrong-pw-123" not in (backup.error_message or "")
    assert stored_files(seeded.storage) == []


async def test_missing_database_and_unreachable_host(
    executor: ExecutorContext,
    tmp_path: Path,
    pg_server: PostgresServer,
) -> None:
    seeded = await seeded_pg(executor, tmp_path, pg_server, "no_such_db")
    job = await queue_backup(executor, seeded)
    await BackupRun(executor, job).execute()
    backup = await load_backup(executor, job.backup_id)
    assert (backup.status, backup.error_code) == (BackupStatus.FAILED, "database_missing")

    closed = await seed(executor, tmp_path, engine=DatabaseEngine.POSTGRESQL, host="127.0.0.1",
                        port=1, database_name="x", username="u", password="p")  # fmt: skip
    job = await queue_backup(executor, closed)
    await BackupRun(executor, job).execute()
    backup = await load_backup(executor, job.backup_id)
    assert (backup.status, backup.error_code) == (BackupStatus.FAILED, "connection_refused")
    assert "127.0.0.1:1" in (backup.error_message or "")


async def test_unwritable_destination_fails_without_leftovers(
    executor: ExecutorContext,
    tmp_path: Path,
    pg_server: PostgresServer,
    orders_db: Database,
) -> None:
    seeded = await seeded_pg(executor, tmp_path, pg_server, orders_db.name)
    seeded.storage.mkdir()
    seeded.storage.chmod(0o500)
    if os.access(seeded.storage, os.W_OK):  # root ignores permissions: use a file instead
        seeded.storage.chmod(0o700)
        seeded.storage.rmdir()
        seeded.storage.write_text("not a directory")
    job = await queue_backup(executor, seeded)
    await BackupRun(executor, job).execute()
    backup = await load_backup(executor, job.backup_id)
    assert backup.status is BackupStatus.FAILED
    assert backup.error_code == "destination_error"


async def test_one_failing_destination_loses_only_its_copy(
    executor: ExecutorContext,
    tmp_path: Path,
    pg_server: PostgresServer,
    orders_db: Database,
) -> None:
    seeded = await seeded_pg(executor, tmp_path, pg_server, orders_db.name)
    blocked = tmp_path / "blocked"
    blocked.write_text("a file where a directory should be")
    async with executor.sessions() as session, session.begin():
        broken = Destination(name="broken", kind=DestinationKind.LOCAL,
                             config={"path": str(blocked / "inside")})  # fmt: skip
        session.add(broken)
    job = await queue_backup(executor, seeded)
    job = job.model_copy(update={"destination_ids": (seeded.destination.id, broken.id)})
    await BackupRun(executor, job).execute()

    backup = await load_backup(executor, job.backup_id)
    assert backup.status is BackupStatus.SUCCEEDED, backup.error_message
    assert "broken" in (backup.warning or "")
    async with executor.sessions() as session:
        copies = {c.destination_id: c for c in await session.scalars(
            select(BackupCopy).where(BackupCopy.backup_id == job.backup_id))}  # fmt: skip
    assert copies[seeded.destination.id].status is CopyStatus.STORED
    assert copies[broken.id].status is CopyStatus.FAILED
    assert copies[broken.id].error_message
    artifact = seeded.storage / (backup.artifact_key or "")
    assert hashlib.sha256(artifact.read_bytes()).hexdigest() == backup.sha256
