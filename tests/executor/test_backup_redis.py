"""Redis backups end to end against a real redis-server and the real redis-cli: the
RDB artifact loads into a fresh redis-server with the same keys, values and TTLs; the
password reaches redis-cli on its stdin only; failures leave a failed row, no artifact
and no password anywhere."""

from __future__ import annotations

import asyncio
import contextlib
import json
import shutil
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
import redis.asyncio as aioredis
import redis.exceptions
import zstandard
from nats.aio.msg import Msg
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff

from services.common.db.enums import BackupStatus, DatabaseEngine
from services.executor.adapters import adapter_for
from services.executor.adapters.base import Target
from services.executor.adapters.redis import RedisAdapter
from services.executor.backup import BackupRun
from services.executor.context import ExecutorContext
from services.executor.manifest import MANIFEST_SUFFIX
from tests.executor.conftest import Seeded, load_backup, queue_backup, seed, stored_files
from tests.executor.standin.procfs import exposed
from tests.servers import RedisServer, free_port, unique_name

pytestmark = pytest.mark.integration

Snapshot = dict[tuple[int, bytes], tuple[str, Any]]


def client(host: str, port: int, password: str | None = None, db: int = 0) -> aioredis.Redis:
    return aioredis.Redis(host=host, port=port, password=password, db=db,
                          retry=Retry(NoBackoff(), 0), socket_timeout=10)  # fmt: skip


@pytest.fixture
async def source(redis_server: RedisServer) -> RedisServer:
    """The per-test server with data in databases 0 and 3, starting full syncs at once
    (the default waits ``repl-diskless-sync-delay`` = 5 s for more replicas)."""
    conn = client(redis_server.host, redis_server.port, redis_server.password)
    try:
        await conn.config_set("repl-diskless-sync-delay", 0)
        await conn.set("plain", "value")
        await conn.set("ünïcødé:🔑", "漢字 🎉")
        await conn.set(b"binary\x00key", bytes(range(256)))
        await conn.set("with-ttl", "soon gone", ex=3600)
        await conn.set("with-pttl", "also", px=7_200_000)
        await conn.hset("hash", mapping={"a": "1", "b": "ü", "c": b"\x00\xff"})
        await conn.rpush("list", "one", "two", "two", b"\x00")
        await conn.sadd("set", "x", "y", "z")
        await conn.zadd("zset", {"low": -1.5, "mid": 0, "high": 1e10})
        await conn.hset("hash-ttl", "k", "v")
        await conn.expire("hash-ttl", 1800)
        async with conn.pipeline(transaction=False) as pipe:
            for i in range(500):
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


async def snapshot(host: str, port: int, password: str | None = None) -> Snapshot:
    """Every key of databases 0 and 3 with its type, value and whether it expires."""
    found: Snapshot = {}
    for db in (0, 3):
        conn = client(host, port, password, db=db)
        try:
            async for key in conn.scan_iter(count=1000):
                found[(db, key)] = await _entry(conn, key)
        finally:
            await conn.aclose()
    return found


async def _entry(conn: aioredis.Redis, key: bytes) -> tuple[str, Any]:
    kind = await conn.type(key)
    kind = kind.decode() if isinstance(kind, bytes) else kind
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
    else:
        raise AssertionError(f"unexpected type {kind} of {key!r}")
    return kind, (value, await conn.pttl(key) > 0)


async def ttls(host: str, port: int, password: str | None = None) -> dict[bytes, int]:
    conn = client(host, port, password)
    try:
        return {key: await conn.pttl(key) for key in (b"with-ttl", b"with-pttl", b"hash-ttl")}
    finally:
        await conn.aclose()


@pytest.fixture
async def rdb_loader(tmp_path: Path) -> AsyncIterator[Any]:
    """Starts throw-away redis-servers on 127.0.0.1 that load a given RDB file; each
    answers (host, port) once the file is loaded."""
    processes: list[asyncio.subprocess.Process] = []

    async def load(rdb: bytes) -> tuple[str, int]:
        binary = shutil.which("redis-server")
        assert binary is not None
        directory = tmp_path / unique_name("load")
        directory.mkdir()
        (directory / "dump.rdb").write_bytes(rdb)
        port = free_port()
        process = await asyncio.create_subprocess_exec(
            binary, "--port", str(port), "--bind", "127.0.0.1", "--dir", str(directory),
            "--dbfilename", "dump.rdb", "--save", "", "--appendonly", "no",
            stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.DEVNULL,
        )  # fmt: skip
        processes.append(process)
        conn = client("127.0.0.1", port)
        try:
            async with asyncio.timeout(20):
                while True:
                    with contextlib.suppress(redis.exceptions.RedisError):
                        if await conn.ping():  # not while it is still loading the file
                            return "127.0.0.1", port
                    assert process.returncode is None, "redis-server refused the RDB file"
                    await asyncio.sleep(0.05)
        finally:
            await conn.aclose()

    yield load
    for process in processes:
        process.terminate()
        await process.wait()


async def seeded_redis(executor: ExecutorContext, tmp_path: Path, server: RedisServer, *,
                       password: str | None = None, username: str = "",
                       database: str = "0") -> Seeded:  # fmt: skip
    return await seed(executor, tmp_path, engine=DatabaseEngine.REDIS, host=server.host,
                      port=server.port, database_name=database, username=username,
                      password=server.password if password is None else password)  # fmt: skip


async def subscribe_events(executor: ExecutorContext) -> tuple[list[bytes], Any]:
    received: list[bytes] = []

    async def collect(msg: Msg) -> None:
        received.append(msg.data)

    return received, await executor.nc.subscribe("bm.v1.>", cb=collect)


def decompress(data: bytes) -> bytes:
    return zstandard.ZstdDecompressor().decompressobj().decompress(data)


async def test_backup_loads_into_a_fresh_server_with_the_same_keys(
    executor: ExecutorContext, tmp_path: Path, source: RedisServer, rdb_loader: Any
) -> None:
    seeded = await seeded_redis(executor, tmp_path, source)
    job = await queue_backup(executor, seeded)
    await BackupRun(executor, job).execute()

    backup = await load_backup(executor, job.backup_id)
    assert backup.status is BackupStatus.SUCCEEDED, backup.error_message
    assert backup.artifact_key is not None
    assert backup.artifact_key.endswith(f"-{job.backup_id}.rdb.zst")
    artifact = seeded.storage / backup.artifact_key
    assert stored_files(seeded.storage) == sorted([artifact, Path(f"{artifact}{MANIFEST_SUFFIX}")])
    manifest = json.loads(Path(f"{artifact}{MANIFEST_SUFFIX}").read_text())
    assert manifest["database"]["engine"] == "redis"
    assert manifest["tool_version"].startswith("redis-cli")
    assert source.password not in json.dumps(manifest)
    assert source.password not in (backup.log_tail or "")

    rdb = decompress(artifact.read_bytes())
    assert rdb.startswith(b"REDIS")
    assert len(rdb) == backup.bytes_in

    host, port = await rdb_loader(rdb)
    expected = await snapshot(source.host, source.port, source.password)
    assert len(expected) == 512
    assert await snapshot(host, port) == expected
    before, after = await ttls(source.host, source.port, source.password), await ttls(host, port)
    for key, ttl in before.items():
        assert 0 < after[key] <= ttl + 1000, key  # kept, not extended
        assert after[key] > ttl - 120_000, key  # and not cut short


async def test_acl_user_is_passed_and_missing_sync_permission_fails_the_run(
    executor: ExecutorContext, tmp_path: Path, source: RedisServer, rdb_loader: Any
) -> None:
    conn = client(source.host, source.port, source.password)
    try:
        await conn.acl_setuser("backup", enabled=True, passwords=["+backup-pw-42"],
                               keys=["*"], commands=["+@all"])  # fmt: skip
        await conn.acl_setuser("reader", enabled=True, passwords=["+reader-pw-42"],
                               keys=["*"], commands=["+@read", "+ping", "+info"])  # fmt: skip
    finally:
        await conn.aclose()

    good = await seeded_redis(executor, tmp_path, source, username="backup",
                              password="backup-pw-42")  # fmt: skip
    job = await queue_backup(executor, good)
    await BackupRun(executor, job).execute()
    backup = await load_backup(executor, job.backup_id)
    assert backup.status is BackupStatus.SUCCEEDED, backup.error_message

    limited = await seeded_redis(executor, tmp_path, source, username="reader",
                                 password="reader-pw-42")  # fmt: skip
    job = await queue_backup(executor, limited)
    await BackupRun(executor, job).execute()
    backup = await load_backup(executor, job.backup_id)
    assert (backup.status, backup.error_code) == (BackupStatus.FAILED, "dump_failed")
    assert "SYNC" in (backup.error_message or "")
    assert "reader-pw-42" not in (backup.error_message or "") + (backup.log_tail or "")
    assert not [path for path in stored_files(limited.storage) if str(job.backup_id) in path.name]


async def test_wrong_password_fails_clearly_and_leaks_nothing(
    executor: ExecutorContext,
    tmp_path: Path,
    source: RedisServer,
    caplog: pytest.LogCaptureFixture,
) -> None:
    received, subscription = await subscribe_events(executor)
    seeded = await seeded_redis(executor, tmp_path, source, password="wrong-pw-123")
    job = await queue_backup(executor, seeded)
    await BackupRun(executor, job).execute()
    await executor.nc.flush()
    await subscription.unsubscribe()

    backup = await load_backup(executor, job.backup_id)
    assert (backup.status, backup.error_code) == (BackupStatus.FAILED, "authentication_failed")
    assert "check the username and password" in (backup.error_message or "")
    for text in (backup.error_message or "", backup.log_tail or "", caplog.text,
                 *(data.decode() for data in received)):  # fmt: skip
        assert "wrong-pw-123" not in text
    assert stored_files(seeded.storage) == []


async def test_refused_port_and_bad_database_index(
    executor: ExecutorContext, tmp_path: Path, source: RedisServer
) -> None:
    port = free_port()
    closed = await seed(executor, tmp_path, engine=DatabaseEngine.REDIS, host="127.0.0.1",
                        port=port, database_name="0", username="", password="p")  # fmt: skip
    job = await queue_backup(executor, closed)
    await BackupRun(executor, job).execute()
    backup = await load_backup(executor, job.backup_id)
    assert (backup.status, backup.error_code) == (BackupStatus.FAILED, "connection_refused")
    assert f"127.0.0.1:{port}" in (backup.error_message or "")

    target = Target(engine="redis", host=source.host, port=source.port, database="99",
                    username="", password=source.password)  # fmt: skip
    with pytest.raises(Exception, match="does not exist") as info:
        await adapter_for("redis").probe(target, 5)
    assert getattr(info.value, "code", "") == "database_missing"


async def test_probe_reports_version_size_and_latency(source: RedisServer) -> None:
    target = Target(engine="redis", host=source.host, port=source.port, database="0",
                    username="", password=source.password)  # fmt: skip
    result = await adapter_for("redis").probe(target, 5)
    assert result.server_version[0].isdigit()
    assert result.database_size_bytes is not None
    assert result.database_size_bytes > 0
    assert result.latency_ms > 0


async def test_running_dump_exposes_no_password(
    executor: ExecutorContext, tmp_path: Path, source: RedisServer
) -> None:
    conn = client(source.host, source.port, source.password)
    try:  # 0.2 s per key while the snapshot is written: the dump runs for a while
        await conn.config_set("rdb-key-save-delay", 200_000)
        await conn.flushall()
        await conn.mset({f"slow:{i}": i for i in range(15)})
    finally:
        await conn.aclose()
    seeded = await seeded_redis(executor, tmp_path, source)
    job = await queue_backup(executor, seeded)
    run = BackupRun(executor, job)
    task = asyncio.create_task(run.execute())
    watcher = client(source.host, source.port, source.password)
    try:
        async with asyncio.timeout(30):  # until redis-cli has logged in and is syncing
            while not any("S" in c["flags"] for c in await watcher.client_list()):
                await asyncio.sleep(0.02)
        tool = run.tool
        assert tool is not None
        tree = exposed(tool.pid)
        assert tool.process is not None
        assert tool.process.returncode is None  # still running
        assert tree
        assert tree[0].pid == tool.pid
        argv = tree[0].cmdline.split(b"\0")
        assert Path(argv[0].decode()).name == "redis-cli"
        assert b"--askpass" in argv
        for process in tree:
            assert not process.mentions(source.password), process.pid
            assert b"REDISCLI_AUTH" not in process.environ
    finally:
        await watcher.aclose()
        await task
    backup = await load_backup(executor, job.backup_id)
    assert backup.status is BackupStatus.SUCCEEDED, backup.error_message


def test_stderr_lines_that_fail_a_dump() -> None:
    adapter = RedisAdapter()
    ok = (
        "sending REPLCONF capa eof\nsending REPLCONF rdb-only 1\n"
        "REPLCONF rdb-only error: ERR Unrecognized REPLCONF option: rdb-only\n"
        "SYNC sent to master, writing bytes of bulk transfer until EOF marker to '-'\n"
        "Transfer finished with success after 182 bytes\n"
    )
    assert adapter.stderr_error(ok) is None
    assert adapter.stderr_error("AUTH failed: WRONGPASS invalid username-password pair") == (
        "AUTH failed: WRONGPASS invalid username-password pair"
    )
    assert adapter.stderr_error("SYNC with master failed: -NOPERM no permission") is not None
    assert adapter.stderr_error("I/O error\n") == "I/O error"
