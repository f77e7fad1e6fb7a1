"""Migrations up and down on SQLite and a real PostgreSQL, models and migrations in
agreement, the schema's guarantees, and SQLite shared by several writers."""

from __future__ import annotations

import asyncio
import sys
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import alembic.op
import pytest
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import Connection, delete, func, inspect, select, text, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession

from services.common import migrate
from services.common.db import Base, create_engine, ping, session_factory
from services.common.db.enums import (
    AuditOutcome,
    BackupStatus,
    BackupTrigger,
    DatabaseEngine,
    ProjectRole,
)
from services.common.db.models import (
    ApiToken,
    AuditEntry,
    Backup,
    Database,
    Project,
    ProjectMember,
    Schedule,
    User,
)

REPO_ROOT = Path(__file__).resolve().parents[2]
TABLES = set(Base.metadata.tables)


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.integration)])
def db_url(request: pytest.FixtureRequest) -> str:
    """An empty metadata DB on each backend."""
    url: str = request.getfixturevalue("sqlite_url" if request.param == "sqlite" else "pg_url")
    return url


@pytest.fixture
async def migrated(db_url: str) -> AsyncIterator[AsyncEngine]:
    await migrate.upgrade(db_url)
    engine = create_engine(db_url)
    try:
        yield engine
    finally:
        await engine.dispose()


async def table_names(url: str) -> set[str]:
    engine = create_engine(url)
    try:
        async with engine.connect() as conn:
            names: list[str] = await conn.run_sync(lambda sync: inspect(sync).get_table_names())
    finally:
        await engine.dispose()
    return set(names)


def schema_differences(connection: Connection) -> list[Any]:
    context = MigrationContext.configure(
        connection, opts=migrate.context_options(connection.dialect.name)
    )
    differences: list[Any] = compare_metadata(context, Base.metadata)
    return differences


# -- migrations -----------------------------------------------------------------


async def test_upgrade_downgrade_upgrade(db_url: str) -> None:
    assert await migrate.current(db_url) is None

    await migrate.upgrade(db_url)
    assert await migrate.current(db_url) == migrate.head()
    assert await table_names(db_url) == TABLES | {"alembic_version"}

    await migrate.downgrade(db_url, "base")
    assert await migrate.current(db_url) is None
    assert await table_names(db_url) <= {"alembic_version"}

    await migrate.upgrade(db_url)
    assert await migrate.current(db_url) == migrate.head()
    assert await table_names(db_url) == TABLES | {"alembic_version"}


async def test_models_and_migrations_agree(migrated: AsyncEngine) -> None:
    async with migrated.connect() as conn:
        differences = await conn.run_sync(schema_differences)
    assert differences == []


async def test_the_comparison_would_see_a_drift(migrated: AsyncEngine) -> None:
    async with migrated.begin() as conn:
        await conn.exec_driver_sql("DROP INDEX ix_backups_status_queued_at")
        await conn.exec_driver_sql("ALTER TABLE users ADD COLUMN nickname VARCHAR(20)")
        differences = await conn.run_sync(schema_differences)
    kinds = sorted(difference[0] for difference in differences)
    assert kinds == ["add_index", "remove_column"], differences


async def test_upgrade_twice_is_a_no_op(migrated: AsyncEngine, db_url: str) -> None:
    await migrate.upgrade(db_url)
    assert await migrate.current(db_url) == migrate.head()


async def test_replicas_may_migrate_at_the_same_time(db_url: str) -> None:
    await asyncio.gather(*(migrate.upgrade(db_url) for _ in range(4)))
    assert await migrate.current(db_url) == migrate.head()
    assert await table_names(db_url) == TABLES | {"alembic_version"}


async def test_a_failed_migration_leaves_nothing_behind(
    db_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    def fail(*_args: object, **_kwargs: object) -> None:
        raise RuntimeError("boom, after some tables were created")

    monkeypatch.setattr(alembic.op, "create_index", fail)
    with pytest.raises(RuntimeError, match="boom"):
        await migrate.upgrade(db_url)
    monkeypatch.undo()

    assert await migrate.current(db_url) is None
    assert await table_names(db_url) == set()
    await migrate.upgrade(db_url)
    assert await migrate.current(db_url) == migrate.head()


def test_cli_upgrades_the_database_named_by_the_environment(
    sqlite_url: str, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("BM_DATABASE_URL", sqlite_url)
    assert migrate.main(["upgrade"]) == 0
    assert migrate.main(["current"]) == 0
    assert capsys.readouterr().out.strip() == migrate.head()
    assert migrate.main(["downgrade", "base"]) == 0
    assert migrate.main(["current"]) == 0
    assert capsys.readouterr().out.strip() == "base"


# -- what the schema guarantees --------------------------------------------------


async def add_database(session: AsyncSession) -> tuple[Project, Database, Schedule]:
    project = Project(name="Shop", slug=f"shop-{uuid.uuid4().hex[:8]}")
    session.add(project)
    await session.flush()
    database = Database(
        project_id=project.id,
        name="orders",
        engine=DatabaseEngine.POSTGRESQL,
        host="10.0.0.5",
        port=5432,
        database_name="orders",
        username="backup",
        encrypted_password=b"gAAAAA-fernet-token",
    )
    session.add(database)
    await session.flush()
    schedule = Schedule(database_id=database.id, name="nightly", cron="0 3 * * *")
    session.add(schedule)
    await session.flush()
    return project, database, schedule


async def test_a_slot_is_recorded_once(migrated: AsyncEngine) -> None:
    slot = datetime(2024, 3, 31, 1, 0, tzinfo=UTC)
    factory = session_factory(migrated)
    async with factory() as session:
        _, database, schedule = await add_database(session)
        session.add(
            Backup(
                database_id=database.id,
                schedule_id=schedule.id,
                trigger=BackupTrigger.SCHEDULE,
                slot_at=slot,
            )
        )
        await session.commit()

    async with factory() as session:
        session.add(
            Backup(
                database_id=database.id,
                schedule_id=schedule.id,
                trigger=BackupTrigger.SCHEDULE,
                slot_at=slot,
            )
        )
        with pytest.raises(IntegrityError):
            await session.commit()

    async with factory() as session:
        # Manual runs (no slot) never conflict.
        for _ in range(2):
            session.add(Backup(database_id=database.id, trigger=BackupTrigger.MANUAL))
        await session.commit()
        stored = await session.scalar(select(Backup.slot_at).where(Backup.slot_at.is_not(None)))
        assert stored == slot


async def test_one_running_backup_per_database(migrated: AsyncEngine) -> None:
    factory = session_factory(migrated)
    async with factory() as session:
        _, database, _ = await add_database(session)
        _, other, _ = await add_database(session)
        first, second, elsewhere = (
            Backup(database_id=database.id, trigger=BackupTrigger.MANUAL),
            Backup(database_id=database.id, trigger=BackupTrigger.MANUAL),
            Backup(database_id=other.id, trigger=BackupTrigger.MANUAL),
        )
        session.add_all([first, second, elsewhere])
        await session.commit()

    async def set_status(backup: Backup, status: BackupStatus) -> None:
        async with factory() as session, session.begin():
            await session.execute(
                update(Backup).where(Backup.id == backup.id).values(status=status)
            )

    await set_status(first, BackupStatus.RUNNING)
    await set_status(elsewhere, BackupStatus.RUNNING)
    with pytest.raises(IntegrityError):
        await set_status(second, BackupStatus.RUNNING)
    await set_status(first, BackupStatus.SUCCEEDED)
    await set_status(second, BackupStatus.RUNNING)


async def test_deletes_cascade_config_and_keep_history(migrated: AsyncEngine) -> None:
    factory = session_factory(migrated)
    async with factory() as session:
        project, database, schedule = await add_database(session)
        user = User(email=f"{uuid.uuid4().hex}@example.com", password_hash="x")
        session.add(user)
        await session.flush()
        session.add_all(
            [
                ProjectMember(project_id=project.id, user_id=user.id, role=ProjectRole.OWNER),
                ApiToken(user_id=user.id, name="ci", token_hash=uuid.uuid4().hex),
                AuditEntry(
                    user_id=user.id,
                    project_id=project.id,
                    action="database.create",
                    outcome=AuditOutcome.SUCCESS,
                ),
                Backup(
                    database_id=database.id,
                    schedule_id=schedule.id,
                    trigger=BackupTrigger.SCHEDULE,
                    slot_at=datetime.now(UTC) - timedelta(hours=1),
                ),
            ]
        )
        await session.commit()

    async with factory() as session:
        # A database with backups cannot go (its artifacts must be removed first).
        with pytest.raises(IntegrityError):
            async with session.begin():
                await session.execute(delete(Database).where(Database.id == database.id))

    async with factory() as session, session.begin():
        # A schedule can; its runs stay, detached.
        await session.execute(delete(Schedule).where(Schedule.id == schedule.id))
        assert await session.scalar(select(Backup.schedule_id)) is None
        # The user too; audit entries stay without a user.
        await session.execute(delete(User).where(User.id == user.id))
        assert await session.scalar(select(func.count()).select_from(ApiToken)) == 0
        assert await session.scalar(select(func.count()).select_from(ProjectMember)) == 0
        assert await session.scalar(select(AuditEntry.user_id)) is None

    async with factory() as session, session.begin():
        await session.execute(delete(Backup))
        # Without backups, the project takes its databases along.
        await session.execute(delete(Project).where(Project.id == project.id))
        assert await session.scalar(select(func.count()).select_from(Database)) == 0
        assert await session.scalar(select(AuditEntry.project_id)) is None


# -- engines ----------------------------------------------------------------------


async def test_sqlite_connections_are_set_up_for_sharing(sqlite_url: str) -> None:
    engine = create_engine(sqlite_url)
    try:
        async with engine.connect() as first, engine.connect() as second:
            for conn in (first, second):
                pragma = conn.exec_driver_sql
                assert (await pragma("PRAGMA journal_mode")).scalar() == "wal"
                assert (await pragma("PRAGMA busy_timeout")).scalar() == 10_000
                assert (await pragma("PRAGMA foreign_keys")).scalar() == 1
                assert (await pragma("PRAGMA synchronous")).scalar() == 1  # NORMAL
    finally:
        await engine.dispose()


@pytest.mark.integration
async def test_postgresql_engine_names_itself_and_survives_a_dropped_connection(
    pg_url: str,
) -> None:
    engine = create_engine(pg_url, application_name="bm-test")
    killer = create_engine(pg_url)
    try:
        async with engine.connect() as conn:
            assert (await conn.exec_driver_sql("SHOW application_name")).scalar() == "bm-test"
            pid = (await conn.exec_driver_sql("SELECT pg_backend_pid()")).scalar()
        # The pooled connection dies (server restart, idle timeout, ...).
        async with killer.connect() as conn:
            await conn.execute(text("SELECT pg_terminate_backend(:pid)"), {"pid": pid})
        # Pre-ping notices and replaces it: the caller never sees the dead one.
        await ping(engine)
        async with engine.connect() as conn:
            assert (await conn.exec_driver_sql("SELECT pg_backend_pid()")).scalar() != pid
    finally:
        await killer.dispose()
        await engine.dispose()


WRITER = """
import asyncio, sys
from services.common.db import create_engine, session_factory
from services.common.db.models import AuditEntry

async def main(url: str, count: int) -> None:
    engine = create_engine(url)
    try:
        for i in range(count):
            async with session_factory(engine)() as session, session.begin():
                session.add(AuditEntry(action="child.write", outcome="success"))
                await session.flush()
                await asyncio.sleep(0.002)
    finally:
        await engine.dispose()

asyncio.run(main(sys.argv[1], int(sys.argv[2])))
"""


async def test_sqlite_takes_concurrent_writers(sqlite_url: str) -> None:
    """Two engines (as two services would have) and a child process write the same
    file at once, each holding the write lock for a while: nobody sees
    "database is locked"."""
    await migrate.upgrade(sqlite_url)
    per_writer, writers_per_engine, child_writes = 25, 4, 60
    engines = [create_engine(sqlite_url) for _ in range(2)]

    async def write(engine: AsyncEngine, writer: int) -> None:
        factory = session_factory(engine)
        for i in range(per_writer):
            async with factory() as session, session.begin():
                # Read, then write, in one transaction.
                seen = await session.scalar(select(func.count()).select_from(AuditEntry))
                session.add(
                    AuditEntry(
                        action="engine.write",
                        outcome=AuditOutcome.SUCCESS,
                        details={"writer": writer, "i": i, "seen": seen},
                    )
                )
                await session.flush()
                await asyncio.sleep(0.002)  # hold the lock while others wait for it

    child = await asyncio.create_subprocess_exec(
        sys.executable, "-c", WRITER, sqlite_url, str(child_writes), cwd=REPO_ROOT
    )
    try:
        async with asyncio.TaskGroup() as tasks:
            for n, engine in enumerate(engines):
                for w in range(writers_per_engine):
                    tasks.create_task(write(engine, n * writers_per_engine + w))
        assert await asyncio.wait_for(child.wait(), timeout=60) == 0
    finally:
        if child.returncode is None:
            child.kill()
            await child.wait()
        for engine in engines:
            await engine.dispose()

    engine = create_engine(sqlite_url)
    try:
        async with engine.connect() as conn:
            total = await conn.scalar(select(func.count()).select_from(AuditEntry))
    finally:
        await engine.dispose()
    assert total == 2 * writers_per_engine * per_writer + child_writes
