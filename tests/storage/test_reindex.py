"""Disaster recovery: back up a real PostgreSQL database, lose the metadata DB, re-index
the destination into a freshly migrated one (twice: idempotent), then download the
artifact through the API and restore it with pg_restore into a fresh database."""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import asyncpg
import pytest
import zstandard
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer
from nats.aio.client import Client as NATS
from sqlalchemy import select

from services.api.app import setup_api
from services.api.context import API, ApiContext
from services.common.credentials import CredentialCipher
from services.common.db.engine import create_engine, session_factory
from services.common.db.enums import BackupStatus, CopyStatus, DatabaseEngine
from services.common.db.models import Backup, BackupCopy, Database, Destination, Project
from services.common.migrate import upgrade
from services.common.secrets import resolve_secrets
from services.common.settings import Settings
from services.executor.backup import BackupRun
from services.executor.context import ExecutorContext
from services.manage.reindex import REINDEXED_HOST, reindex
from tests.api.client import Api
from tests.executor.conftest import queue_backup, seed
from tests.processes import REPO
from tests.servers import Database as ServerDatabase
from tests.servers import PostgresServer, unique_name
from tests.storage.conftest import Sessions, make_world

pytestmark = pytest.mark.integration

SEED_SQL = """
CREATE TABLE orders (id serial PRIMARY KEY, customer text NOT NULL, total numeric(10,2),
                     payload jsonb);
INSERT INTO orders (customer, total, payload)
SELECT 'customer ' || i, i * 1.5, jsonb_build_object('n', i) FROM generate_series(1, 2000) i;
"""


async def table_rows(dsn: str) -> list[tuple[object, ...]]:
    conn = await asyncpg.connect(dsn)
    try:
        return [tuple(r) for r in await conn.fetch("SELECT * FROM orders ORDER BY id")]
    finally:
        await conn.close()


@pytest.fixture
def fresh_settings(tmp_path: Path) -> Settings:
    """A second installation's settings: its own, empty metadata DB."""
    return Settings(data_dir=tmp_path / "fresh", bcrypt_rounds=4,
                    database_url=f"sqlite+aiosqlite:///{tmp_path}/fresh.db")  # fmt: skip


@pytest.fixture
async def fresh_api(fresh_settings: Settings, nc: NATS) -> AsyncIterator[Api]:
    await upgrade(fresh_settings.database_url)
    engine = create_engine(fresh_settings.database_url)
    secrets = resolve_secrets(fresh_settings)
    ctx = ApiContext(settings=fresh_settings, secrets=secrets, sessions=session_factory(engine),
                     nc=nc, cipher=CredentialCipher(secrets.credential_keys))  # fmt: skip
    app = web.Application()
    setup_api(app)
    app[API] = ctx
    async with TestClient(TestServer(app)) as client:
        yield Api(client, ctx)
    await engine.dispose()


async def test_reindex_round_trip(
    sessions: Sessions, nc: NATS, tmp_path: Path, pg_server: PostgresServer,
    pg_database: ServerDatabase, storage_settings: Settings, fresh_settings: Settings,
    fresh_api: Api,
) -> None:  # fmt: skip
    pg_server.execute(SEED_SQL, dbname=pg_database.name)
    settings = storage_settings
    secrets = resolve_secrets(settings)
    executor = ExecutorContext(settings=settings, sessions=sessions, nc=nc,
                               cipher=CredentialCipher(secrets.credential_keys))  # fmt: skip
    seeded = await seed(
        executor, tmp_path, engine=DatabaseEngine.POSTGRESQL, host=pg_server.host,
        port=pg_server.port, database_name=pg_database.name, username=pg_server.user,
        password=pg_server.password,
    )  # fmt: skip
    job = await queue_backup(executor, seeded)
    await BackupRun(executor, job).execute()
    async with sessions() as session:
        original = await session.get(Backup, job.backup_id)
    assert original is not None
    assert original.status is BackupStatus.SUCCEEDED, original.error_message
    # Some noise on the destination that re-indexing must pass over.
    (seeded.storage / "notes.txt").write_text("not a backup")

    # The metadata DB is lost; a new installation re-indexes the destination.
    report = await reindex(fresh_settings.database_url, seeded.storage)
    assert (report.manifests, report.backups_created, report.problems) == (1, 1, [])
    assert report.projects_created == [seeded.project.slug]
    assert report.databases_created == [f"{seeded.project.slug}/Orders DB"]
    again = await reindex(fresh_settings.database_url, seeded.storage)
    assert (again.backups_created, again.backups_existing, again.copies_added) == (0, 1, 0)
    assert again.destination_id == report.destination_id
    assert "1 backup(s) added" in report.summary()

    async with fresh_api.ctx.transaction() as session:
        rebuilt = await session.get(Backup, job.backup_id)
        copies = list(await session.scalars(select(BackupCopy)))
        database = await session.get(Database, seeded.database.id)
        project = await session.get(Project, seeded.project.id)
        destinations = list(await session.scalars(select(Destination)))
    assert rebuilt is not None
    assert rebuilt.status is BackupStatus.SUCCEEDED
    for column in ("artifact_key", "sha256", "bytes_out", "bytes_in", "finished_at",
                   "database_id", "compression"):  # fmt: skip
        assert getattr(rebuilt, column) == getattr(original, column), column
    assert rebuilt.manifest is not None
    assert rebuilt.manifest["sha256"] == original.sha256
    assert [(c.status, c.destination_id) for c in copies] == [
        (CopyStatus.STORED, destinations[0].id)
    ]
    assert [d.config["path"] for d in destinations] == [str(seeded.storage)]
    assert database is not None
    assert (database.host, database.engine, database.encrypted_password) == (
        REINDEXED_HOST,
        DatabaseEngine.POSTGRESQL,
        None,
    )
    assert database.database_name == pg_database.name
    assert project is not None
    assert project.slug == seeded.project.slug

    # Download through the API of the new installation and restore-check it.
    admin = await fresh_api.user("admin", admin=True)
    response = await fresh_api.client.get(
        f"/api/v1/backups/{job.backup_id}/download",
        headers={"Authorization": f"Bearer {admin.token}"},
    )
    assert response.status == 200
    data = await response.read()
    assert hashlib.sha256(data).hexdigest() == original.sha256
    dump = zstandard.ZstdDecompressor().decompressobj().decompress(data)
    restored = unique_name("restored")
    pg_server.create_database(restored)
    try:
        dump_file = tmp_path / "dump.pgdump"
        dump_file.write_bytes(dump)
        subprocess.run(
            [str(pg_server.bindir / "pg_restore"), "--exit-on-error", "--no-owner",
             f"--host={pg_server.host}", f"--port={pg_server.port}",
             f"--username={pg_server.user}", f"--dbname={restored}", str(dump_file)],
            check=True, capture_output=True, env={**os.environ, "PGPASSWORD": pg_server.password},
        )  # fmt: skip
        assert await table_rows(pg_server.dsn(restored)) == await table_rows(pg_database.dsn)
    finally:
        pg_server.drop_database(restored)


async def test_reindex_command_line(tmp_path: Path, sessions: Sessions) -> None:
    world = await make_world(sessions, tmp_path, retention={})
    await world.add("a", datetime.now(UTC) - timedelta(days=1))
    await world.add("b", datetime.now(UTC))
    env = {k: v for k, v in os.environ.items() if not k.startswith("BM_")}
    env.update(BM_DATA_DIR=str(tmp_path / "cli"),
               BM_DATABASE_URL=f"sqlite+aiosqlite:///{tmp_path}/cli.db")  # fmt: skip

    def run(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "services.manage", "reindex", *args],
            cwd=REPO, env=env, capture_output=True, text=True, timeout=60, check=False,
        )  # fmt: skip

    other = await reindex(f"sqlite+aiosqlite:///{tmp_path}/other.db", world.roots[0],
                          projects=["someone-else"])  # fmt: skip
    assert (other.manifests, other.backups_created) == (0, 0)
    done = run("--destination-path", str(world.roots[0]), "--project", world.project.slug)
    assert done.returncode == 0, done.stderr
    assert "2 manifest(s), 2 backup(s) added" in done.stdout
    assert "set host and credentials" in done.stdout
    missing = run("--destination-path", str(tmp_path / "nope"))
    assert missing.returncode == 2
    assert "is not a directory" in missing.stderr
