"""Opening the metadata DB: a SQLite file (default) or PostgreSQL, both async.

SQLite is tuned so the four services can share one file: WAL (readers never block
the writer), a busy timeout (a writer waits for the lock instead of failing with
"database is locked"), foreign keys enforced, ``synchronous=NORMAL`` (durable
across a process crash; safe with WAL).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from sqlalchemy import event, make_url, text
from sqlalchemy.engine import URL
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker
from sqlalchemy.ext.asyncio import create_async_engine as _create_async_engine
from sqlalchemy.pool import ConnectionPoolEntry

from services.common.db.inline_sqlite import connect_inline

SQLITE_BUSY_TIMEOUT_MS = 10_000
SQLITE_READ_BUSY_TIMEOUT_MS = 200

# Plain driver names map to the async drivers we ship with.
_ASYNC_DRIVERS = {
    "sqlite": "sqlite+aiosqlite",
    "postgresql": "postgresql+asyncpg",
    "postgres": "postgresql+asyncpg",
}


def normalize_url(url: str | URL) -> URL:
    """``sqlite:///x.db`` -> ``sqlite+aiosqlite:///x.db``, ``postgresql://`` ->
    ``postgresql+asyncpg://``; URLs naming a driver are left alone."""
    parsed = make_url(url)
    driver = _ASYNC_DRIVERS.get(parsed.drivername)
    return parsed.set(drivername=driver) if driver else parsed


def sqlite_path(url: URL) -> Path | None:
    """The file behind a SQLite URL; None for an in-memory database."""
    database = url.database
    if not database or database == ":memory:" or database.startswith("file::memory:"):
        return None
    if database.startswith("file:"):  # URI form: file:path?mode=...
        database = database[len("file:") :].split("?", 1)[0]
    return Path(database)


def create_engine(
    url: str | URL, *, application_name: str | None = None, **kwargs: Any
) -> AsyncEngine:
    """An async engine for ``url``, set up for its backend.

    ``application_name`` shows in PostgreSQL's ``pg_stat_activity``. Extra keyword
    arguments go to :func:`sqlalchemy.ext.asyncio.create_async_engine`.
    """
    parsed = normalize_url(url)
    backend = parsed.get_backend_name()
    if backend == "sqlite":
        path = sqlite_path(parsed)
        if path is not None:
            path.expanduser().absolute().parent.mkdir(parents=True, exist_ok=True)
        engine = _create_async_engine(parsed, **kwargs)
        event.listen(engine.sync_engine, "connect", _sqlite_on_connect(file=path is not None))
        return engine
    if backend == "postgresql":
        kwargs.setdefault("pool_pre_ping", True)
        if application_name and parsed.get_driver_name() == "asyncpg":
            connect_args = dict(kwargs.pop("connect_args", {}))
            settings = dict(connect_args.get("server_settings", {}))
            settings.setdefault("application_name", application_name)
            connect_args["server_settings"] = settings
            kwargs["connect_args"] = connect_args
    return _create_async_engine(parsed, **kwargs)


def read_engine(url: str | URL) -> AsyncEngine | None:
    """For a SQLite file: an engine for read-only sessions run on the event loop
    (``inline_sqlite``); ``None`` for anything else (PostgreSQL's driver has no thread
    to skip, so its reads go through the normal engine)."""
    parsed = normalize_url(url)
    if parsed.get_backend_name() != "sqlite" or sqlite_path(parsed) is None:
        return None
    # Pooled: a new connection would parse the schema again before its first query.
    engine = _create_async_engine(
        parsed, connect_args={"async_creator_fn": connect_inline}, pool_size=2, max_overflow=8
    )
    event.listen(engine.sync_engine, "connect", _sqlite_on_connect(file=True, read_only=True))
    return engine


def _sqlite_on_connect(*, file: bool, read_only: bool = False) -> Any:
    def on_connect(dbapi_connection: Any, _record: ConnectionPoolEntry) -> None:
        cursor = dbapi_connection.cursor()
        try:
            if read_only:  # never wait long: the event loop waits with it
                cursor.execute(f"PRAGMA busy_timeout = {SQLITE_READ_BUSY_TIMEOUT_MS}")
                cursor.execute("PRAGMA query_only = ON")
                return
            # First, so that switching to WAL (which needs a lock) waits too.
            cursor.execute(f"PRAGMA busy_timeout = {SQLITE_BUSY_TIMEOUT_MS}")
            if file:
                cursor.execute("PRAGMA journal_mode")
                if str(cursor.fetchone()[0]).lower() != "wal":
                    cursor.execute("PRAGMA journal_mode = WAL")
            cursor.execute("PRAGMA synchronous = NORMAL")
            cursor.execute("PRAGMA foreign_keys = ON")
        finally:
            cursor.close()

    return on_connect


def session_factory(engine: AsyncEngine) -> async_sessionmaker[AsyncSession]:
    """Sessions whose objects stay usable after commit (no implicit reloads, which
    async code could not do lazily anyway)."""
    return async_sessionmaker(engine, expire_on_commit=False)


async def ping(engine: AsyncEngine) -> None:
    """``SELECT 1``; raises if the metadata DB cannot be reached (for ``/readyz``).
    Callers bound the wait with their own timeout."""
    async with engine.connect() as conn:
        await conn.execute(text("SELECT 1"))
