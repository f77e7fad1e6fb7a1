"""Schema migrations of the metadata DB (Alembic), run from Python or the CLI.

    python -m services.common.migrate upgrade [REVISION] [--url URL]
    python -m services.common.migrate downgrade REVISION [--url URL]
    python -m services.common.migrate current [--url URL]
    python -m services.common.migrate revision -m "add x" [--url URL]   (developers)

The URL defaults to ``BM_DATABASE_URL`` (else the settings' SQLite default).
Alembic is configured here, not by an ``alembic.ini``, so migrations run the same
from a source tree and from an installed package.

Several processes may migrate at once (every replica may call :func:`upgrade` at
start): on PostgreSQL a transaction-level advisory lock serialises them; on SQLite
the migration holds the write lock from its first statement (``BEGIN IMMEDIATE``).
Either way the whole migration is one transaction.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from alembic import command
from alembic.autogenerate.api import AutogenContext
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import Connection, Enum, event, text
from sqlalchemy.engine import URL
from sqlalchemy.ext.asyncio import AsyncEngine
from sqlalchemy.pool import ConnectionPoolEntry, NullPool

from services.common.db import models  # noqa: F401 - registers every table
from services.common.db.base import Base
from services.common.db.engine import create_engine, normalize_url
from services.common.db.types import UTCDateTime

MIGRATIONS_DIR = Path(__file__).resolve().parent / "migrations"
# pg_advisory_xact_lock key: "bmmigr" in ASCII.
_PG_LOCK_KEY = 0x626D6D696772

log = logging.getLogger(__name__)


class MigrationError(RuntimeError):
    """A migration left the schema inconsistent (e.g. a broken foreign key)."""


def alembic_config(url: str | URL | None = None) -> Config:
    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS_DIR))
    # Files named like 0002_add_x.py ('%%' because Config interpolates).
    cfg.set_main_option("file_template", "%%(rev)s_%%(slug)s")
    if url is not None:
        rendered = normalize_url(url).render_as_string(hide_password=False)
        cfg.set_main_option("sqlalchemy.url", rendered.replace("%", "%%"))
    return cfg


def render_item(type_: str, obj: Any, autogen_context: AutogenContext) -> str | bool:
    """Render our column types as plain SQLAlchemy types, so that migrations never
    import application code (which changes after the migration is written)."""
    if type_ != "type":
        return False
    if isinstance(obj, UTCDateTime):
        return "sa.DateTime(timezone=True)"
    if isinstance(obj, Enum) and not obj.native_enum:
        # Values are checked in Python only: the column is a plain VARCHAR.
        return f"sa.String(length={obj.length})"
    return False


def context_options(dialect_name: str) -> dict[str, Any]:
    """Options for ``context.configure`` (besides the connection) — shared by env.py
    and the tests' model vs. migration comparison, so both see the schema alike."""
    return {
        "target_metadata": Base.metadata,
        # SQLite cannot ALTER most things: later migrations recreate tables instead.
        "render_as_batch": dialect_name == "sqlite",
        "compare_type": True,
        "compare_server_default": True,
        "render_item": render_item,
    }


def head() -> str | None:
    """The newest revision this code knows (what :func:`upgrade` goes to)."""
    return ScriptDirectory.from_config(alembic_config()).get_current_head()


async def upgrade(url: str | URL, revision: str = "head") -> None:
    """Bring the database at ``url`` up to ``revision``; a no-op when it is there."""
    await _locked(url, lambda cfg: command.upgrade(cfg, revision))


async def downgrade(url: str | URL, revision: str) -> None:
    """Take the database back to ``revision`` (``"base"``: no tables but Alembic's)."""
    await _locked(url, lambda cfg: command.downgrade(cfg, revision))


async def current(url: str | URL) -> str | None:
    """The revision the database is at; None for an empty (never migrated) one."""

    def read(connection: Connection) -> str | None:
        return MigrationContext.configure(connection).get_current_revision()

    engine = create_engine(url, poolclass=NullPool)
    try:
        async with engine.connect() as conn:
            return await conn.run_sync(read)
    finally:
        await engine.dispose()


async def revision(url: str | URL, message: str, *, autogenerate: bool = True) -> str:
    """Write a new migration file (for developers), compared against ``url``'s
    schema, numbered after the current head. Returns the new revision id."""
    latest = head()
    rev_id = f"{int(latest) + 1:04d}" if latest and latest.isdigit() else "0001"
    await _locked(
        url,
        lambda cfg: command.revision(cfg, message, autogenerate=autogenerate, rev_id=rev_id),
    )
    return rev_id


async def _locked(url: str | URL, run: Callable[[Config], object]) -> None:
    """Run an Alembic command on one connection inside one exclusive transaction."""
    cfg = alembic_config(url)
    engine = migration_engine(url)

    def in_transaction(connection: Connection) -> None:
        dialect = connection.dialect.name
        if dialect == "postgresql":
            connection.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": _PG_LOCK_KEY})
        cfg.attributes["connection"] = connection
        run(cfg)
        if dialect == "sqlite":
            broken = connection.exec_driver_sql("PRAGMA foreign_key_check").fetchall()
            if broken:
                raise MigrationError(f"migration broke foreign keys: {broken[:5]}")

    try:
        async with engine.begin() as conn:
            await conn.run_sync(in_transaction)
    finally:
        await engine.dispose()


def migration_engine(url: str | URL) -> AsyncEngine:
    """A one-connection engine whose transactions are real on SQLite too."""
    engine = create_engine(url, poolclass=NullPool)
    if engine.dialect.name == "sqlite":
        # After the engine's own connect hook: foreign keys off while batch mode
        # rebuilds tables (checked with foreign_key_check before commit), and our
        # own BEGIN IMMEDIATE so DDL is transactional and holds the write lock.
        event.listen(engine.sync_engine, "connect", _sqlite_migration_connect)
        event.listen(engine.sync_engine, "begin", _sqlite_begin_immediate)
    return engine


def _sqlite_migration_connect(dbapi_connection: Any, _record: ConnectionPoolEntry) -> None:
    cursor = dbapi_connection.cursor()
    try:
        cursor.execute("PRAGMA foreign_keys = OFF")
    finally:
        cursor.close()
    dbapi_connection.isolation_level = None


def _sqlite_begin_immediate(connection: Connection) -> None:
    connection.exec_driver_sql("BEGIN IMMEDIATE")


def _default_url() -> str:
    from services.common.settings import Settings  # only the CLI needs it

    return Settings().database_url


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m services.common.migrate", description="Migrate the metadata DB."
    )
    parser.add_argument("--url", help="database URL (default: BM_DATABASE_URL)")
    sub = parser.add_subparsers(dest="command", required=True)
    up = sub.add_parser("upgrade", help="upgrade to a revision (default: head)")
    up.add_argument("revision", nargs="?", default="head")
    down = sub.add_parser("downgrade", help="downgrade to a revision ('base': empty)")
    down.add_argument("revision")
    sub.add_parser("current", help="print the database's revision")
    new = sub.add_parser("revision", help="write a new migration (developers)")
    new.add_argument("-m", "--message", required=True)
    new.add_argument("--empty", action="store_true", help="do not autogenerate")
    args = parser.parse_args(argv)

    logging.basicConfig(level=logging.INFO, format="%(message)s")
    url = normalize_url(args.url or _default_url())
    where = url.render_as_string(hide_password=True)
    if args.command == "upgrade":
        asyncio.run(upgrade(url, args.revision))
        log.info("%s is at %s", where, asyncio.run(current(url)) or "base")
    elif args.command == "downgrade":
        asyncio.run(downgrade(url, args.revision))
        log.info("%s is at %s", where, asyncio.run(current(url)) or "base")
    elif args.command == "current":
        print(asyncio.run(current(url)) or "base")
    else:
        rev_id = asyncio.run(revision(url, args.message, autogenerate=not args.empty))
        log.info("wrote revision %s", rev_id)
    return 0


if __name__ == "__main__":
    sys.exit(main())
