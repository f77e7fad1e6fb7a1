"""Executor tests: a migrated SQLite metadata DB, a real NATS, real database servers
and real dump tools; rows seeded directly, runs executed in-process."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import nats
import pytest
from nats.aio.client import Client as NATS

from proto.jobs import BackupRequested
from proto.values import Compression, CompressionAlgorithm, OverlapPolicy, Trigger
from services.common.credentials import CredentialCipher
from services.common.db.engine import create_engine, session_factory
from services.common.db.enums import DatabaseEngine, DestinationKind
from services.common.db.models import Backup, Database, Destination, Project
from services.common.migrate import upgrade
from services.common.secrets import resolve_secrets
from services.common.settings import Settings
from services.common.streams import ensure_streams
from services.executor.context import ExecutorContext
from tests.servers import NatsServer


@dataclass
class Seeded:
    project: Project
    database: Database
    destination: Destination
    storage: Path


@pytest.fixture
def executor_settings(tmp_path: Path, sqlite_url: str) -> Settings:
    return Settings(data_dir=tmp_path / "data", database_url=sqlite_url,
                    progress_interval_s=0.2)  # fmt: skip


@pytest.fixture
async def executor(
    executor_settings: Settings, nats_server: NatsServer
) -> AsyncIterator[ExecutorContext]:
    await upgrade(executor_settings.database_url)
    engine = create_engine(executor_settings.database_url)
    nc: NATS = await nats.connect(nats_server.url)
    await ensure_streams(nc.jetstream())
    secrets = resolve_secrets(executor_settings)
    yield ExecutorContext(
        settings=executor_settings, sessions=session_factory(engine), nc=nc,
        cipher=CredentialCipher(secrets.credential_keys), executor_id="test-executor",
    )  # fmt: skip
    await nc.close()
    await engine.dispose()


async def seed(
    ctx: ExecutorContext,
    tmp_path: Path,
    *,
    engine: DatabaseEngine,
    host: str,
    port: int,
    database_name: str,
    username: str,
    password: str | None,
    options: dict[str, object] | None = None,
) -> Seeded:
    storage = tmp_path / "storage"
    async with ctx.sessions() as session, session.begin():
        project = Project(name="Shop", slug=f"shop-{uuid.uuid4().hex[:6]}")
        session.add(project)
        await session.flush()
        database = Database(
            project_id=project.id, name="Orders DB", engine=engine, host=host, port=port,
            database_name=database_name, username=username,
            encrypted_password=ctx.cipher.encrypt(password).encode() if password else None,
            options=options or {},
        )  # fmt: skip
        destination = Destination(
            name="local", kind=DestinationKind.LOCAL, config={"path": str(storage)}
        )
        session.add_all([database, destination])
    return Seeded(project, database, destination, storage)


async def queue_backup(
    ctx: ExecutorContext,
    seeded: Seeded,
    *,
    algorithm: CompressionAlgorithm = CompressionAlgorithm.ZSTD,
    timeout_s: int = 600,
    overlap: OverlapPolicy = OverlapPolicy.SKIP,
) -> BackupRequested:
    async with ctx.sessions() as session, session.begin():
        backup = Backup(database_id=seeded.database.id, trigger=Trigger.MANUAL)
        session.add(backup)
    return BackupRequested(
        backup_id=backup.id, project_id=seeded.project.id, database_id=seeded.database.id,
        trigger=Trigger.MANUAL, compression=Compression(algorithm=algorithm),
        destination_ids=(seeded.destination.id,), timeout_s=timeout_s, overlap=overlap,
    )  # fmt: skip


async def load_backup(ctx: ExecutorContext, backup_id: uuid.UUID) -> Backup:
    async with ctx.sessions() as session:
        backup = await session.get(Backup, backup_id)
        assert backup is not None
        return backup


def stored_files(storage: Path) -> list[Path]:
    return sorted(p for p in storage.rglob("*") if p.is_file()) if storage.exists() else []
