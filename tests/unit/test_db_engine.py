"""Quick checks of the metadata DB layer on throwaway SQLite files (no migrations)."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path

import pytest
from alembic.script import ScriptDirectory
from sqlalchemy import Dialect, select, text
from sqlalchemy.dialects.postgresql.base import PGDialect
from sqlalchemy.dialects.sqlite.base import SQLiteDialect
from sqlalchemy.exc import StatementError
from sqlalchemy.ext.asyncio import AsyncEngine

from services.common import migrate
from services.common.db import Base, create_engine, normalize_url, ping, session_factory
from services.common.db.enums import DatabaseEngine, ProjectRole, RestoreMode, RestoreStatus
from services.common.db.models import AuditEntry, Database, Project, Restore
from services.common.db.types import UTCDateTime

EXPECTED_TABLES = {
    "users",
    "refresh_tokens",
    "api_tokens",
    "projects",
    "project_members",
    "databases",
    "destinations",
    "schedules",
    "schedule_destinations",
    "scheduler_cursor",
    "backups",
    "backup_copies",
    "restores",
    "audit_log",
}


@pytest.fixture
async def engine(tmp_path: Path) -> AsyncIterator[AsyncEngine]:
    engine = create_engine(f"sqlite+aiosqlite:///{tmp_path}/unit.db")
    try:
        async with engine.begin() as conn:
            await conn.run_sync(Base.metadata.create_all)
        yield engine
    finally:
        await engine.dispose()


@pytest.mark.parametrize(
    ("given", "expected"),
    [
        ("sqlite:///data/meta.db", "sqlite+aiosqlite:///data/meta.db"),
        ("sqlite+aiosqlite:////abs/meta.db", "sqlite+aiosqlite:////abs/meta.db"),
        ("postgresql://u:p@h:5432/bm", "postgresql+asyncpg://u:p@h:5432/bm"),
        ("postgres://u@h/bm", "postgresql+asyncpg://u@h/bm"),
        ("postgresql+asyncpg://u@h/bm", "postgresql+asyncpg://u@h/bm"),
    ],
)
def test_normalize_url_picks_async_drivers(given: str, expected: str) -> None:
    assert normalize_url(given).render_as_string(hide_password=False) == expected


def test_every_table_is_registered_with_named_constraints() -> None:
    assert set(Base.metadata.tables) == EXPECTED_TABLES
    for table in Base.metadata.tables.values():
        names = [c.name for c in table.constraints] + [i.name for i in table.indexes]
        for name in names:
            assert isinstance(name, str), f"unnamed constraint or index on {table.name}"
            assert len(name) <= 63, f"{name} is longer than PostgreSQL's identifier limit"


def test_migrations_form_one_line_ending_at_head() -> None:
    script = ScriptDirectory.from_config(migrate.alembic_config())
    assert script.get_heads() == [migrate.head()]
    newest_first = list(script.walk_revisions())
    # Numbered in order, each revising the one before: no branch, no gap.
    numbers = [f"{n:04d}" for n in range(1, len(newest_first) + 1)]
    assert [r.revision for r in reversed(newest_first)] == numbers
    assert [r.down_revision for r in reversed(newest_first)] == [None, *numbers[:-1]]
    assert migrate.head() == numbers[-1]


async def test_create_engine_makes_the_parent_directory(tmp_path: Path) -> None:
    target = tmp_path / "nested" / "dir" / "meta.db"
    engine = create_engine(f"sqlite:///{target}")
    try:
        await ping(engine)
    finally:
        await engine.dispose()
    assert target.exists()


async def test_aware_datetimes_round_trip_as_utc(engine: AsyncEngine) -> None:
    berlin_summer = timezone(timedelta(hours=2))
    moment = datetime(2024, 3, 31, 3, 30, 15, 123456, tzinfo=berlin_summer)
    project_id = uuid.uuid4()
    async with session_factory(engine)() as session:
        session.add(Project(id=project_id, name="p", slug="p", created_at=moment))
        await session.commit()

    async with session_factory(engine)() as session:
        project = await session.get(Project, project_id)
        assert project is not None
        # Defaults are aware too.
        assert project.updated_at.tzinfo is UTC
        await session.refresh(project)
        assert project.created_at == moment
        assert project.created_at.tzinfo is UTC
        assert project.created_at.hour == 1

        # Comparisons bind through the same type: an aware bound in any zone works.
        found = await session.scalar(
            select(Project.id).where(Project.created_at >= moment - timedelta(microseconds=1))
        )
        assert found == project_id

    # On disk: naive UTC text, which sorts by instant.
    async with engine.connect() as conn:
        raw = await conn.scalar(text("SELECT created_at FROM projects"))
    assert str(raw).startswith("2024-03-31 01:30:15.123456")


async def test_naive_datetimes_are_refused(engine: AsyncEngine) -> None:
    async with session_factory(engine)() as session:
        session.add(Project(name="p", slug="p", created_at=datetime(2024, 1, 1)))
        with pytest.raises(StatementError, match="naive datetime"):
            await session.commit()


@pytest.mark.parametrize(
    "dialect",
    [SQLiteDialect(), PGDialect()],  # type: ignore[no-untyped-call]
    ids=["sqlite", "postgresql"],
)
def test_utc_datetime_type_on_each_backend(dialect: Dialect) -> None:
    kind = UTCDateTime()
    assert kind.process_bind_param(None, dialect) is None
    assert kind.process_result_value(None, dialect) is None
    moment = datetime(2024, 10, 27, 2, 30, tzinfo=timezone(timedelta(hours=1)))
    bound = kind.process_bind_param(moment, dialect)
    assert bound is not None
    if dialect.name == "sqlite":
        assert bound == datetime(2024, 10, 27, 1, 30)  # naive UTC on disk
    else:
        assert bound == moment
        assert bound.tzinfo is UTC
    assert kind.process_result_value(datetime(2024, 10, 27, 1, 30), dialect) == moment


async def test_enums_store_their_values(engine: AsyncEngine) -> None:
    async with session_factory(engine)() as session:
        project = Project(name="p", slug="p")
        session.add(project)
        await session.flush()
        database = Database(
            project_id=project.id,
            name="orders",
            engine=DatabaseEngine.POSTGRESQL,
            host="db",
            port=5432,
        )
        session.add(database)
        await session.flush()
        session.add(Restore(target_database_id=database.id, target_name="x", mode="into-empty"))
        await session.commit()
        restore = await session.scalar(select(Restore))
        assert restore is not None
        assert restore.mode is RestoreMode.INTO_EMPTY
        assert restore.status is RestoreStatus.QUEUED

    async with engine.connect() as conn:
        row = (await conn.execute(text("SELECT mode, status FROM restores"))).one()
    assert tuple(row) == ("into-empty", "queued")


async def test_json_dicts_track_in_place_changes(engine: AsyncEngine) -> None:
    factory = session_factory(engine)
    async with factory() as session:
        project = Project(name="p", slug="p")
        session.add(project)
        await session.flush()
        database = Database(
            project_id=project.id, name="d", engine=DatabaseEngine.REDIS, host="r", port=6379
        )
        session.add(database)
        await session.commit()
        assert database.options == {}
        database.options["db"] = 3
        await session.commit()

    async with factory() as session:
        stored = await session.scalar(select(Database.options))
    assert stored == {"db": 3}


async def test_session_objects_stay_usable_after_commit(engine: AsyncEngine) -> None:
    async with session_factory(engine)() as session:
        entry = AuditEntry(action="auth.login", outcome="success", actor="a@example.com")
        session.add(entry)
        await session.commit()
        # No lazy reload (which async code could not do) is needed.
        assert entry.action == "auth.login"
        assert entry.details == {}


def test_role_values_are_the_api_names() -> None:
    assert [role.value for role in ProjectRole] == ["owner", "operator", "viewer"]
