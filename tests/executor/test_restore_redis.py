"""Redis restores against real servers: the RDB is loaded into a temporary
redis-server and every key of every logical database copied to another server with
DUMP/RESTORE — strings, hashes, lists, sets, sorted sets, streams, binary and unicode
keys, TTLs kept; into-empty refuses a target database with keys (nothing written);
replace overwrites the dump's keys and leaves others alone; a corrupted artifact
writes nothing; an RDB newer than the target is refused with a clear message."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest

from proto.jobs import RestoreRequested
from services.common.db.enums import BackupStatus, DatabaseEngine, RestoreMode, RestoreStatus
from services.common.db.models import Database, Restore
from services.executor.adapters import adapter_for
from services.executor.adapters.base import DatabaseError, Target
from services.executor.adapters.redis import rdb_version_of
from services.executor.backup import BackupRun
from services.executor.context import ExecutorContext
from services.executor.restore import RestoreRun
from tests.executor.conftest import Seeded, load_backup, queue_backup
from tests.executor.test_backup_redis import client, seeded_redis, ttls
from tests.servers import RedisServer, ServerBinaryMissing

pytestmark = pytest.mark.integration

Snapshot = dict[tuple[int, bytes], tuple[str, Any]]


@pytest.fixture
def target_server() -> Iterator[RedisServer]:
    server = RedisServer()
    try:
        server.start()
    except ServerBinaryMissing as exc:
        pytest.skip(str(exc))
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
async def source(redis_server: RedisServer) -> RedisServer:
    conn = client(redis_server.host, redis_server.port, redis_server.password)
    try:
        await conn.config_set("repl-diskless-sync-delay", 0)
        await conn.set("plain", "value")
        await conn.set("ünïcødé:🔑", "漢字 🎉")
        await conn.set(b"binary\x00key", bytes(range(256)))
        await conn.set("big", b"\x00\xff" * 1_000_000)
        await conn.set("with-ttl", "soon gone", ex=3600)
        await conn.hset("hash", mapping={"a": "1", "b": "ü", "c": b"\x00\xff"})
        await conn.rpush("list", "one", "two", "two", b"\x00")
        await conn.sadd("set", "x", "y", "z")
        await conn.zadd("zset", {"low": -1.5, "mid": 0, "high": 1e10})
        await conn.xadd("stream", {"field": "v1"}, id="1-1")
        await conn.xadd("stream", {"field": "v2", "ü": b"\x00"}, id="2-5")
        await conn.hset("hash-ttl", "k", "v")
        await conn.expire("hash-ttl", 1800)
        async with conn.pipeline(transaction=False) as pipe:
            for i in range(450):
                pipe.set(f"bulk:{i}", f"payload {i} " * 20)
            await pipe.execute()
        other = client(redis_server.host, redis_server.port, redis_server.password, db=3)
        try:
            await other.set("in-db-3", "yes")
            await other.lpush("list-db-3", "a", "b")
        finally:
            await other.aclose()
    finally:
        await conn.aclose()
    return redis_server


async def snapshot(server: RedisServer) -> Snapshot:
    found: Snapshot = {}
    for db in (0, 3):
        conn = client(server.host, server.port, server.password, db=db)
        try:
            async for key in conn.scan_iter(count=1000):
                raw = await conn.type(key)
                kind = raw.decode() if isinstance(raw, bytes) else raw
                value: Any
                if kind == "string":
                    value = await conn.get(key)
                elif kind == "hash":
                    value = await conn.hgetall(key)
                elif kind == "list":
                    value = await conn.lrange(key, 0, -1)
                elif kind == "set":
                    value = sorted(await conn.smembers(key))
                elif kind == "zset":
                    value = await conn.zrange(key, 0, -1, withscores=True)
                elif kind == "stream":
                    value = await conn.xrange(key)
                else:
                    raise AssertionError(f"unexpected type {kind}")
                found[(db, key)] = (kind, (value, await conn.pttl(key) > 0))
        finally:
            await conn.aclose()
    return found


async def target_row(executor: ExecutorContext, seeded: Seeded, server: RedisServer) -> Database:
    async with executor.sessions() as session, session.begin():
        token = executor.cipher.encrypt(server.password).encode()
        row = Database(project_id=seeded.project.id, name=f"copy {uuid.uuid4().hex[:6]}",
                       engine=DatabaseEngine.REDIS, host=server.host, port=server.port,
                       database_name="0", username="", encrypted_password=token)  # fmt: skip
        session.add(row)
    return row


async def backed_up(executor: ExecutorContext, tmp_path: Path,
                    server: RedisServer) -> tuple[Seeded, uuid.UUID]:  # fmt: skip
    seeded = await seeded_redis(executor, tmp_path, server)
    job = await queue_backup(executor, seeded)
    await BackupRun(executor, job).execute()
    backup = await load_backup(executor, job.backup_id)
    assert backup.status is BackupStatus.SUCCEEDED, backup.error_message
    return seeded, job.backup_id


async def restore_into(
    executor: ExecutorContext, seeded: Seeded, backup_id: uuid.UUID, target: Database,
    mode: RestoreMode = RestoreMode.INTO_EMPTY,
) -> Restore:  # fmt: skip
    async with executor.sessions() as session, session.begin():
        row = Restore(backup_id=backup_id, target_database_id=target.id, target_name="0",
                      mode=mode)  # fmt: skip
        session.add(row)
    job = RestoreRequested(restore_id=row.id, project_id=seeded.project.id, backup_id=backup_id,
                           target_database_id=target.id, mode=mode)  # fmt: skip
    await RestoreRun(executor, job).execute()
    async with executor.sessions() as session:
        final = await session.get(Restore, row.id)
        assert final is not None
        return final


async def test_round_trip_copies_every_key_with_its_ttl(
    executor: ExecutorContext, tmp_path: Path, source: RedisServer, target_server: RedisServer
) -> None:
    seeded, backup_id = await backed_up(executor, tmp_path, source)
    manifest = (await load_backup(executor, backup_id)).manifest or {}
    assert manifest["counts"]["objects"] == {"db0": 461, "db3": 2}
    assert manifest["counts"]["volatile"] == {"db0": 2}
    target = await target_row(executor, seeded, target_server)

    result = await restore_into(executor, seeded, backup_id, target)
    assert result.status is RestoreStatus.SUCCEEDED, result.error_message
    expected = await snapshot(source)
    assert len(expected) == 463
    assert await snapshot(target_server) == expected
    before = await ttls(source.host, source.port, source.password)
    after = await ttls(target_server.host, target_server.port, target_server.password)
    for key in (b"with-ttl", b"hash-ttl"):
        assert 0 < after[key] <= before[key] + 1000, key
        assert after[key] > before[key] - 120_000, key
    assert "db0: 461 keys restored" in (result.log_tail or "")
    assert target_server.password not in (result.log_tail or "")

    # into-empty refuses the now non-empty target and writes nothing
    extra = client(target_server.host, target_server.port, target_server.password)
    try:
        await extra.set("plain", "changed")
        await extra.set("not-in-the-dump", "stays")
        refused = await restore_into(executor, seeded, backup_id, target)
        assert (refused.status, refused.error_code) == (RestoreStatus.FAILED, "target_not_empty")
        assert "database 0" in (refused.error_message or "")
        assert await extra.get("plain") == b"changed"

        replaced = await restore_into(executor, seeded, backup_id, target, RestoreMode.REPLACE)
        assert replaced.status is RestoreStatus.SUCCEEDED, replaced.error_message
        assert await extra.get("plain") == b"value"
        assert await extra.get("not-in-the-dump") == b"stays"
    finally:
        await extra.aclose()


async def test_corrupted_artifact_writes_nothing(
    executor: ExecutorContext, tmp_path: Path, source: RedisServer, target_server: RedisServer
) -> None:
    seeded, backup_id = await backed_up(executor, tmp_path, source)
    backup = await load_backup(executor, backup_id)
    artifact = seeded.storage / (backup.artifact_key or "")
    raw = bytearray(artifact.read_bytes())
    raw[len(raw) // 2] ^= 0xFF
    artifact.write_bytes(bytes(raw))
    target = await target_row(executor, seeded, target_server)
    result = await restore_into(executor, seeded, backup_id, target)
    assert (result.status, result.error_code) == (RestoreStatus.FAILED, "checksum_mismatch")
    conn = client(target_server.host, target_server.port, target_server.password)
    try:
        assert await conn.dbsize() == 0
    finally:
        await conn.aclose()


async def test_an_rdb_newer_than_the_target_is_refused(
    target_server: RedisServer, tmp_path: Path
) -> None:
    async def dump() -> AsyncIterator[bytes]:
        yield b"REDIS0099" + b"\xfa" * 10

    target = Target(engine="redis", host=target_server.host, port=target_server.port,
                    database="0", username="", password=target_server.password)  # fmt: skip
    with pytest.raises(DatabaseError) as info:
        await adapter_for("redis").restore(target, dump(), mode="into-empty", workdir=tmp_path)
    assert info.value.code == "rdb_version_mismatch"
    assert "RDB version 99" in str(info.value)
    assert "reads RDB up to version" in str(info.value)


@pytest.mark.parametrize(
    ("release", "rdb"),
    [("2.8.24", 6), ("3.2.12", 7), ("4.0.14", 8), ("6.2.14", 9), ("7.0.15", 10),
     ("7.2.4", 11), ("7.4.1", 12), ("8.0.0", 12), ("unknown", 12)],
)  # fmt: skip
def test_rdb_version_per_release(release: str, rdb: int) -> None:
    assert rdb_version_of(release) == rdb
