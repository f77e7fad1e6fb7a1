"""The server fixtures give working, isolated, password-protected real servers."""

from __future__ import annotations

import asyncio

import aiomysql
import asyncpg  # type: ignore[import-untyped, unused-ignore]
import nats
import pytest
import redis.asyncio as aioredis
import redis.exceptions
from nats.js.api import StreamConfig
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from sqlalchemy import text
from sqlalchemy.ext.asyncio import create_async_engine

from tests.servers import (
    Database,
    MariaDBServer,
    NatsServer,
    PostgresServer,
    RedisServer,
    ServerBinaryMissing,
    find_binary,
    free_port,
    unique_name,
)

# -- PostgreSQL ---------------------------------------------------------------


async def test_pg_database_roundtrip(pg_database: Database, pg_url: str) -> None:
    conn = await asyncpg.connect(pg_database.dsn)
    try:
        await conn.execute("CREATE TABLE t (id int PRIMARY KEY, name text)")
        await conn.execute("INSERT INTO t VALUES (1, 'one')")
        assert await conn.fetchval("SELECT name FROM t WHERE id = 1") == "one"
        assert await conn.fetchval("SELECT current_database()") == pg_database.name
    finally:
        await conn.close()

    assert pg_url == pg_database.url
    assert pg_url.startswith("postgresql+asyncpg://")
    engine = create_async_engine(pg_url)
    try:
        async with engine.connect() as sa_conn:
            rows = (await sa_conn.execute(text("SELECT id, name FROM t"))).all()
        assert [tuple(row) for row in rows] == [(1, "one")]
    finally:
        await engine.dispose()


async def test_pg_databases_are_isolated(pg_server: PostgresServer, pg_database: Database) -> None:
    conn = await asyncpg.connect(pg_database.dsn)
    try:
        await conn.execute("CREATE TABLE only_here (id int)")
    finally:
        await conn.close()

    other = unique_name()
    assert other != pg_database.name
    await asyncio.to_thread(pg_server.create_database, other)
    try:
        conn = await asyncpg.connect(pg_server.dsn(other))
        try:
            assert await conn.fetchval("SELECT to_regclass('only_here')") is None
        finally:
            await conn.close()
    finally:
        await asyncio.to_thread(pg_server.drop_database, other)


async def test_pg_refuses_wrong_password(pg_server: PostgresServer) -> None:
    bad = pg_server.dsn().replace(pg_server.password, "wrong")
    with pytest.raises(asyncpg.InvalidPasswordError):
        await asyncpg.connect(bad)


# -- MariaDB ------------------------------------------------------------------


async def test_mariadb_database_roundtrip(
    mariadb_server: MariaDBServer, mariadb_database: Database, mariadb_url: str
) -> None:
    conn = await aiomysql.connect(
        host=mariadb_server.host,
        port=mariadb_server.port,
        user=mariadb_server.user,
        password=mariadb_server.password,
        db=mariadb_database.name,
        autocommit=True,
    )
    try:
        async with conn.cursor() as cur:
            await cur.execute("CREATE TABLE t (id INT PRIMARY KEY, name TEXT)")
            await cur.execute("INSERT INTO t VALUES (1, 'one')")
            await cur.execute("SELECT name FROM t WHERE id = 1")
            assert await cur.fetchone() == ("one",)
    finally:
        conn.close()

    assert mariadb_url == mariadb_database.url
    assert mariadb_url.startswith("mysql+aiomysql://")
    engine = create_async_engine(mariadb_url)
    try:
        async with engine.connect() as sa_conn:
            assert (await sa_conn.execute(text("SELECT DATABASE()"))).scalar() == (
                mariadb_database.name
            )
            rows = (await sa_conn.execute(text("SELECT id, name FROM t"))).all()
        assert [tuple(row) for row in rows] == [(1, "one")]
    finally:
        await engine.dispose()


async def test_mariadb_databases_are_isolated(
    mariadb_server: MariaDBServer, mariadb_database: Database
) -> None:
    await asyncio.to_thread(
        mariadb_server.execute, f"CREATE TABLE {mariadb_database.name}.only_here (id INT)"
    )
    rows = await asyncio.to_thread(
        mariadb_server.execute,
        "SELECT table_schema FROM information_schema.tables WHERE table_name = 'only_here'",
    )
    assert rows == [(mariadb_database.name,)]


async def test_mariadb_refuses_wrong_password(mariadb_server: MariaDBServer) -> None:
    with pytest.raises(aiomysql.OperationalError) as info:
        await aiomysql.connect(
            host=mariadb_server.host,
            port=mariadb_server.port,
            user="root",
            password="wrong",
        )
    assert info.value.args[0] == 1045  # access denied


# -- Redis --------------------------------------------------------------------


async def test_redis_set_get_with_password(redis_server: RedisServer) -> None:
    client = aioredis.Redis.from_url(redis_server.url())
    try:
        await client.set("k", "v")
        assert await client.get("k") == b"v"
    finally:
        await client.aclose()


@pytest.mark.parametrize("password", [None, "wrong"])
async def test_redis_refuses_bad_auth(redis_server: RedisServer, password: str | None) -> None:
    client = aioredis.Redis(
        host=redis_server.host,
        port=redis_server.port,
        password=password,
        retry=Retry(NoBackoff(), retries=0),  # refusal is final: do not retry it
    )
    try:
        with pytest.raises(redis.exceptions.AuthenticationError):
            await client.ping()
    finally:
        await client.aclose()


async def test_redis_halt_and_resume_keep_the_port(redis_server: RedisServer) -> None:
    port = redis_server.port
    client = aioredis.Redis.from_url(redis_server.url(), retry=Retry(NoBackoff(), retries=0))
    try:
        await asyncio.to_thread(redis_server.halt)
        assert not redis_server.running
        with pytest.raises(redis.exceptions.ConnectionError):
            await client.ping()
        await asyncio.to_thread(redis_server.resume)
        assert redis_server.port == port
        assert await client.ping()
    finally:
        await client.aclose()


def test_redis_servers_are_fresh_per_test(redis_server: RedisServer) -> None:
    # the key written by test_redis_set_get_with_password is not here: new server
    assert redis_server.running
    assert redis_server.url().endswith("/0")
    assert redis_server.url(3).endswith("/3")


# -- NATS ---------------------------------------------------------------------


async def test_nats_publish_subscribe(nats_server: NatsServer) -> None:
    nc = await nats.connect(nats_server.url)
    try:
        sub = await nc.subscribe("bm.test.ping")
        await nc.publish("bm.test.ping", b"hello")
        msg = await sub.next_msg(timeout=2)
        assert msg.data == b"hello"
    finally:
        await nc.close()


async def test_nats_jetstream_survives_restart(nats_server: NatsServer) -> None:
    port = nats_server.port
    nc = await nats.connect(nats_server.url, max_reconnect_attempts=-1, reconnect_time_wait=0.1)
    try:
        js = nc.jetstream()
        await js.add_stream(StreamConfig(name="BMTEST", subjects=["bm.test.>"]))
        ack = await js.publish("bm.test.one", b"1")
        assert ack.stream == "BMTEST"

        await asyncio.to_thread(nats_server.restart)
        assert nats_server.port == port
        assert nats_server.url == f"nats://127.0.0.1:{port}"

        ack = await js.publish("bm.test.two", b"2", timeout=5)  # after reconnect
        assert ack.seq == 2  # the stream and its first message survived
    finally:
        await nc.close()


async def test_nats_on_a_chosen_port() -> None:
    port = free_port()
    with NatsServer(port=port) as server:
        assert server.url == f"nats://127.0.0.1:{port}"
        nc = await nats.connect(server.url)
        await nc.close()
    assert not server.running
    assert server.tmpdir is None


# -- SQLite and plumbing --------------------------------------------------------


async def test_sqlite_url(sqlite_url: str) -> None:
    assert sqlite_url.startswith("sqlite+aiosqlite:///")
    engine = create_async_engine(sqlite_url)
    try:
        async with engine.connect() as conn:
            assert (await conn.execute(text("SELECT 1"))).scalar() == 1
    finally:
        await engine.dispose()


def test_server_tests_are_marked_integration(
    request: pytest.FixtureRequest, redis_server: RedisServer
) -> None:
    assert request.node.get_closest_marker("integration") is not None


def test_missing_binary_names_itself() -> None:
    with pytest.raises(ServerBinaryMissing, match="no-such-server not found: apt-get install"):
        find_binary("no-such-server", "apt-get install no-such-server")
