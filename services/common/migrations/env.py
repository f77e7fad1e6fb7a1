"""Alembic environment of the metadata DB.

:mod:`services.common.migrate` runs every command on a connection it opened (in
``config.attributes["connection"]``); this file only configures the context. Plain
``alembic`` use without such a connection falls back to ``sqlalchemy.url``.
"""

from __future__ import annotations

import asyncio

from alembic import context
from sqlalchemy import Connection, make_url

from services.common.migrate import context_options, migration_engine


def run_with(connection: Connection) -> None:
    context.configure(connection=connection, **context_options(connection.dialect.name))
    with context.begin_transaction():
        context.run_migrations()


async def run_with_new_engine(url: str) -> None:
    engine = migration_engine(url)
    try:
        async with engine.begin() as conn:
            await conn.run_sync(run_with)
    finally:
        await engine.dispose()


def run_offline(url: str) -> None:
    context.configure(
        url=url,
        literal_binds=True,
        dialect_opts={"paramstyle": "named"},
        **context_options(make_url(url).get_backend_name()),
    )
    with context.begin_transaction():
        context.run_migrations()


def run() -> None:
    config = context.config
    connection = config.attributes.get("connection")
    if connection is not None:
        run_with(connection)
        return
    url = config.get_main_option("sqlalchemy.url")
    if not url:
        raise RuntimeError("no database: use services.common.migrate or set sqlalchemy.url")
    if context.is_offline_mode():
        run_offline(url)
    else:
        asyncio.run(run_with_new_engine(url))


run()
