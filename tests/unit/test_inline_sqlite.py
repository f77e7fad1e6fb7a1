"""Read-only SQLite sessions on the event loop (``common.db.inline_sqlite``): they
read what the normal engine wrote, refuse to write, never start a thread, and exist
only for SQLite files."""

from __future__ import annotations

import threading
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from sqlalchemy import text
from sqlalchemy.exc import OperationalError
from sqlalchemy.ext.asyncio import AsyncEngine

from services.common.db.engine import create_engine, read_engine


@pytest.fixture
async def engines(sqlite_url: str) -> AsyncIterator[tuple[AsyncEngine, AsyncEngine]]:
    """The normal engine, after creating table ``t``, and the read-only one."""
    writer = create_engine(sqlite_url)
    reads = read_engine(sqlite_url)
    assert reads is not None
    async with writer.begin() as conn:
        await conn.execute(text("CREATE TABLE t (n INTEGER)"))
    yield writer, reads
    await reads.dispose()
    await writer.dispose()


async def test_reads_what_the_normal_engine_wrote_without_a_thread(
    engines: tuple[AsyncEngine, AsyncEngine],
) -> None:
    writer, reads = engines
    async with writer.begin() as conn:
        await conn.execute(text("INSERT INTO t VALUES (1), (2)"))
    threads = threading.active_count()
    async with reads.connect() as conn:
        assert (await conn.execute(text("SELECT sum(n) FROM t"))).scalar_one() == 3
        assert threading.active_count() == threads  # nothing ran on another thread
        assert (await conn.execute(text("PRAGMA busy_timeout"))).scalar_one() == 200
    async with writer.begin() as conn:
        await conn.execute(text("INSERT INTO t VALUES (4)"))
    async with reads.connect() as conn:  # a pooled connection sees the new row
        assert (await conn.execute(text("SELECT sum(n) FROM t"))).scalar_one() == 7


async def test_refuses_to_write(engines: tuple[AsyncEngine, AsyncEngine]) -> None:
    _, reads = engines
    with pytest.raises(OperationalError, match="readonly"):
        async with reads.begin() as conn:
            await conn.execute(text("INSERT INTO t VALUES (1)"))


def test_only_for_sqlite_files(tmp_path: Path) -> None:
    assert read_engine("sqlite+aiosqlite:///:memory:") is None
    assert read_engine("postgresql+asyncpg://u@localhost/db") is None
    assert read_engine(f"sqlite:///{tmp_path}/x.db") is not None
