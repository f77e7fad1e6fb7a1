"""Shared fixtures: real servers from ``tests/servers.py`` and a SQLite metadata URL.

Server processes are sync fixtures. PostgreSQL and MariaDB run once per session and
hand each test a fresh, uniquely named, empty database; Redis and NATS are started
fresh for every test. A missing server binary skips the test, naming the binary.
Tests using any of these fixtures are marked ``integration``.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TypeVar

import pytest

from tests.servers import (
    Database,
    MariaDBServer,
    NatsServer,
    PostgresServer,
    RedisServer,
    ServerBinaryMissing,
    unique_name,
)

SERVER_FIXTURES = frozenset(
    {
        "pg_server",
        "pg_database",
        "pg_url",
        "mariadb_server",
        "mariadb_database",
        "mariadb_url",
        "redis_server",
        "nats_server",
    }
)

S = TypeVar("S", PostgresServer, MariaDBServer, RedisServer, NatsServer)


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Mark every test that (directly or not) uses a real server as ``integration``."""
    for item in items:
        if SERVER_FIXTURES.intersection(getattr(item, "fixturenames", ())):
            item.add_marker(pytest.mark.integration)


def _serve(factory: Callable[[], S]) -> Iterator[S]:
    server = factory()
    try:
        server.start()
    except ServerBinaryMissing as exc:
        pytest.skip(str(exc))
    try:
        yield server
    finally:
        server.stop()


# -- PostgreSQL ---------------------------------------------------------------


@pytest.fixture(scope="session")
def pg_server() -> Iterator[PostgresServer]:
    yield from _serve(PostgresServer)


@pytest.fixture
def pg_database(pg_server: PostgresServer) -> Iterator[Database]:
    name = unique_name("t")
    pg_server.create_database(name)
    try:
        yield Database(name=name, url=pg_server.url(name), dsn=pg_server.dsn(name))
    finally:
        pg_server.drop_database(name)


@pytest.fixture
def pg_url(pg_database: Database) -> str:
    return pg_database.url


# -- MariaDB ------------------------------------------------------------------


@pytest.fixture(scope="session")
def mariadb_server() -> Iterator[MariaDBServer]:
    yield from _serve(MariaDBServer)


@pytest.fixture
def mariadb_database(mariadb_server: MariaDBServer) -> Iterator[Database]:
    name = unique_name("t")
    mariadb_server.create_database(name)
    try:
        yield Database(
            name=name,
            url=mariadb_server.url(name),
            dsn=mariadb_server.url(name, driver="mysql"),
        )
    finally:
        mariadb_server.drop_database(name)


@pytest.fixture
def mariadb_url(mariadb_database: Database) -> str:
    return mariadb_database.url


# -- Redis, NATS, SQLite --------------------------------------------------------


@pytest.fixture
def redis_server() -> Iterator[RedisServer]:
    yield from _serve(RedisServer)


@pytest.fixture
def nats_server() -> Iterator[NatsServer]:
    yield from _serve(NatsServer)


@pytest.fixture
def sqlite_url(tmp_path: Path) -> str:
    return f"sqlite+aiosqlite:///{tmp_path}/meta.db"
