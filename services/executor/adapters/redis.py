"""Redis: probe with redis.asyncio, dump with ``redis-cli --rdb -``, which asks the
server for a replication snapshot and streams the RDB file to stdout (every logical
database, not only the configured one).

The password reaches redis-cli on its stdin (``--askpass``), so it is in neither argv
nor the tool's environment (``REDISCLI_AUTH`` would show in /proc/<pid>/environ).

A restore never touches the target's files: the RDB is loaded into a temporary
``redis-server`` on 127.0.0.1 (random port and password, no persistence), and every
key of every logical database is copied to the same database number on the target
with DUMP/RESTORE, keeping TTLs (``REPLACE`` in replace mode; into-empty refuses a
target database that already has keys). The DUMP payloads carry the RDB version of
the local redis-server, so it may not be newer than the target's."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import re
import socket
import ssl
import time
from collections.abc import AsyncIterator
from functools import lru_cache
from pathlib import Path
from typing import Any, ClassVar

import redis.asyncio as aioredis
import redis.exceptions
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff

from services.common.db.enums import DatabaseEngine
from services.common.dump_formats import rdb_version
from services.common.dump_options import dump_argv
from services.executor.adapters.base import (
    Adapter,
    Counts,
    DatabaseError,
    DumpSpec,
    ProbeResult,
    Target,
    auth_failed,
    refused,
    require_tool,
    timed_out,
    tls_problem,
    unreachable,
    version_of,
)

log = logging.getLogger(__name__)

DEFAULT_USER = "default"
"""Redis's implicit ACL user: no ``--user`` (works with Redis < 6 too)."""

# What redis-cli prints on stderr when the transfer itself failed. Other lines can
# mention "error" harmlessly: an older server that does not know REPLCONF rdb-only
# answers with an error and the transfer goes on.
_FATAL = re.compile(
    r"AUTH failed|SYNC with master failed|Error writing to master|I/O error|"
    r"Fail to fsync|TLS Error|Could not connect|Server I/O Error|NOAUTH|WRONGPASS",
    re.IGNORECASE,
)


COPY_BATCH = 200
"""Keys per DUMP and RESTORE pipeline."""

# The newest RDB version each Redis release reads (and writes in DUMP payloads).
RDB_VERSIONS: tuple[tuple[tuple[int, int], int], ...] = (
    ((2, 6), 6), ((3, 2), 7), ((4, 0), 8), ((5, 0), 9), ((7, 0), 10), ((7, 2), 11), ((7, 4), 12),
)  # fmt: skip
_VERSION = re.compile(r"(\d+)\.(\d+)")


def rdb_version_of(redis_version: str) -> int:
    """The newest RDB version a Redis server of ``redis_version`` reads."""
    match = _VERSION.search(redis_version)
    if match is None:
        return RDB_VERSIONS[-1][1]
    release = (int(match.group(1)), int(match.group(2)))
    readable = RDB_VERSIONS[0][1]
    for since, version in RDB_VERSIONS:
        if release >= since:
            readable = version
    return readable


@lru_cache(maxsize=1)
def redis_server_version() -> str:
    """The version of the local redis-server (which loads RDB files for restores)."""
    path = require_tool(
        "redis-server",
        "redis-server is not installed on this executor; a Redis restore loads the RDB "
        "into a temporary one (apt-get install redis-server)",
    )
    text = version_of(path) or ""
    match = re.search(r"v=(\S+)", text)
    return match.group(1) if match else "unknown"


@lru_cache(maxsize=1)
def redis_cli() -> tuple[str, str]:
    """(path, version text) of redis-cli on PATH."""
    path = require_tool(
        "redis-cli", "redis-cli is not installed on this executor (apt-get install redis-tools)"
    )
    return path, version_of(path) or ""


def logical_db(target: Target) -> int:
    """The configured logical database (``""`` means 0)."""
    name = target.database.strip()
    if not name:
        return 0
    if not name.isdigit():
        raise DatabaseError(
            f"Redis database {target.database!r} on {target.where} is not a number (0, 1, …)",
            code="database_missing",
        )
    return int(name)


def acl_user(target: Target) -> str | None:
    user = target.username.strip()
    return user if user and user != DEFAULT_USER else None


class RedisAdapter(Adapter):
    engine: ClassVar[str] = "redis"
    default_port: ClassVar[int] = 6379
    magic: ClassVar[tuple[bytes, ...]] = (b"REDIS",)
    restores_itself: ClassVar[bool] = True

    async def probe(self, target: Target, timeout_s: float) -> ProbeResult:
        db = logical_db(target)
        client = aioredis.Redis(
            host=target.host,
            port=target.port,
            db=db,
            username=acl_user(target),
            password=target.password or None,
            socket_connect_timeout=timeout_s,
            socket_timeout=timeout_s,
            retry=Retry(NoBackoff(), 0),
            single_connection_client=True,
            **_ssl_kwargs(target.tls_mode),
        )
        started = time.perf_counter()
        try:
            async with asyncio.timeout(timeout_s):
                await client.ping()
                latency_ms = (time.perf_counter() - started) * 1000
                info: dict[str, Any] = await client.info("server")
                memory: dict[str, Any] = await client.info("memory")
        except Exception as exc:
            raise _translate(exc, target, timeout_s) from None
        finally:
            with contextlib.suppress(Exception):
                await client.aclose()
        size = memory.get("used_memory_dataset", memory.get("used_memory"))
        return ProbeResult(
            str(info.get("redis_version", "unknown")),
            round(latency_ms, 2),
            int(size) if size is not None else None,
        )

    @contextlib.asynccontextmanager
    async def dump_command(self, target: Target, server_version: str) -> AsyncIterator[DumpSpec]:
        dump_argv(DatabaseEngine.REDIS, target.options, database=target.database)  # none allowed
        path, version = redis_cli()
        argv = [path, "-h", target.host, "-p", str(target.port), *_tls_flags(target.tls_mode)]
        user = acl_user(target)
        if user is not None:
            argv += ["--user", user]
        stdin = None
        if target.password:
            argv.append("--askpass")  # one line read from stdin, never echoed to stdout
            stdin = target.password.encode() + b"\n"
        argv += ["--rdb", "-"]  # redis-cli 7 writes its status lines to stderr
        yield DumpSpec(argv, {"PATH": "/usr/bin:/bin"}, "redis-rdb", "rdb", version, stdin,
                       counter=lambda: self.count_objects(target))  # fmt: skip

    # -- counting and restoring --------------------------------------------------------

    async def count_objects(self, target: Target) -> Counts:
        """Keys per logical database (``INFO keyspace``), and how many carry a TTL."""
        client = _client(target, logical_db(target))
        try:
            keyspace: dict[str, Any] = await client.info("keyspace")
        except Exception as exc:
            raise _translate(exc, target, 15) from None
        finally:
            with contextlib.suppress(Exception):
                await client.aclose()
        objects = {name: int(info["keys"]) for name, info in keyspace.items()
                   if isinstance(info, dict) and int(info.get("keys", 0))}  # fmt: skip
        volatile = {name: int(keyspace[name].get("expires", 0)) for name in objects}
        return Counts("keys", objects, {k: v for k, v in volatile.items() if v},
                      how="keys per logical database (INFO keyspace)")  # fmt: skip

    async def prepare_restore(self, target: Target, mode: str) -> None:
        """Nothing to create: logical databases always exist. Emptiness is checked per
        database once the RDB is loaded and its databases are known."""

    async def restore(
        self, target: Target, dump: AsyncIterator[bytes], *, mode: str, workdir: Path
    ) -> str:
        # imported here: scratch.py imports this package (adapters.base)
        from services.executor.scratch import TemporaryRedis, running

        loader_dir = workdir / "loader"
        loader_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
        rdb = loader_dir / "restore.rdb"
        size = 0
        with rdb.open("wb") as handle:
            os.fchmod(handle.fileno(), 0o600)
            async for chunk in dump:  # raises at its end if the bytes were not verified
                size += len(chunk)
                await asyncio.to_thread(handle.write, chunk)
        with rdb.open("rb") as handle:
            version = rdb_version(handle.read(9))
        if version is None:
            raise DatabaseError("the file is not a Redis RDB file", code="not_a_dump")
        await self._check_versions(target, version)
        lines = [f"RDB version {version}, {size} bytes, loaded into a temporary redis-server"]
        async with running(TemporaryRedis(loader_dir, rdb)) as source:
            copied = await _copy_all(source, target, replace=mode == "replace")
        for db, count in sorted(copied.items()):
            lines.append(f"db{db}: {count} keys restored")
        if not copied:
            lines.append("the RDB holds no keys; nothing was written")
        return "\n".join(lines) + "\n"

    async def _check_versions(self, target: Target, dump_version: int) -> None:
        client = _client(target, logical_db(target))
        try:
            info: dict[str, Any] = await client.info("server")
        except Exception as exc:
            raise _translate(exc, target, 15) from None
        finally:
            with contextlib.suppress(Exception):
                await client.aclose()
        target_release = str(info.get("redis_version", "unknown"))
        readable = rdb_version_of(target_release)
        if dump_version > readable:
            raise DatabaseError(
                f"The backup is RDB version {dump_version}, but the target {target.where} "
                f"runs Redis {target_release}, which reads RDB up to version {readable}: "
                "restore into a Redis server at least as new as the one backed up",
                code="rdb_version_mismatch",
            )
        local_release = redis_server_version()
        local = rdb_version_of(local_release)
        if dump_version > local:
            raise DatabaseError(
                f"The backup is RDB version {dump_version}, but this executor's redis-server "
                f"{local_release} reads RDB up to version {local}: install a newer "
                "redis-server on the executor",
                code="rdb_version_mismatch",
            )
        if local > readable:
            raise DatabaseError(
                f"This executor's redis-server {local_release} writes DUMP payloads of RDB "
                f"version {local}, which the target's Redis {target_release} (up to "
                f"{readable}) cannot read: restore with an executor whose redis-server is "
                "not newer than the target",
                code="rdb_version_mismatch",
            )

    def stderr_error(self, stderr: str) -> str | None:
        for line in stderr.splitlines():
            if _FATAL.search(line):
                return line.strip()
        return None


def _client(target: Target, db: int) -> aioredis.Redis:
    return aioredis.Redis(
        host=target.host, port=target.port, db=db, username=acl_user(target),
        password=target.password or None, socket_connect_timeout=15, socket_timeout=120,
        retry=Retry(NoBackoff(), 0), **_ssl_kwargs(target.tls_mode),
    )  # fmt: skip


async def _copy_all(source: Target, target: Target, *, replace: bool) -> dict[int, int]:
    """Copy every key of every logical database of ``source`` to the same database of
    ``target``; returns keys copied per database. In into-empty mode (no ``replace``)
    every database the source uses is checked to be empty first."""
    probe = _client(source, 0)
    try:
        keyspace: dict[str, Any] = await probe.info("keyspace")
    finally:
        await probe.aclose()
    dbs = sorted(
        int(name[2:]) for name, info in keyspace.items()
        if name.startswith("db") and isinstance(info, dict) and info.get("keys")
    )  # fmt: skip
    if not replace:
        for db in dbs:
            client = _client(target, db)
            try:
                keys = await client.dbsize()
            except Exception as exc:
                raise _translate(exc, target, 15) from None
            finally:
                await client.aclose()
            if keys:
                raise DatabaseError(
                    f"Redis database {db} on {target.where} is not empty ({keys} keys): restore "
                    "in 'replace' mode, or empty it first",
                    code="target_not_empty",
                )
    copied = {}
    for db in dbs:
        copied[db] = await _copy_db(source, target, db, replace=replace)
    return copied


async def _copy_db(source: Target, target: Target, db: int, *, replace: bool) -> int:
    src, dst = _client(source, db), _client(target, db)
    copied = 0
    try:
        batch: list[bytes] = []
        async for key in src.scan_iter(count=1000):
            batch.append(key)
            if len(batch) >= COPY_BATCH:
                copied += await _copy_batch(src, dst, batch, target, replace=replace)
                batch = []
        if batch:
            copied += await _copy_batch(src, dst, batch, target, replace=replace)
    except DatabaseError:
        raise
    except Exception as exc:
        raise _translate(exc, target, 120) from None
    finally:
        await src.aclose()
        await dst.aclose()
    return copied


async def _copy_batch(src: aioredis.Redis, dst: aioredis.Redis, keys: list[bytes],
                      target: Target, *, replace: bool) -> int:  # fmt: skip
    async with src.pipeline(transaction=False) as pipe:
        for key in keys:
            pipe.pttl(key)
            pipe.dump(key)
        answers = await pipe.execute()
    entries = [(key, answers[2 * i], answers[2 * i + 1]) for i, key in enumerate(keys)]
    entries = [(key, ttl, payload) for key, ttl, payload in entries if payload is not None]
    if not entries:
        return 0
    async with dst.pipeline(transaction=False) as pipe:
        for key, ttl, payload in entries:
            pipe.restore(key, max(int(ttl), 0) if int(ttl) > 0 else 0, payload, replace=replace)
        results = await pipe.execute(raise_on_error=False)
    for (key, _, _), result in zip(entries, results, strict=True):
        if isinstance(result, Exception):
            raise _restore_error(result, key, target)
    return len(entries)


def _restore_error(exc: Exception, key: bytes, target: Target) -> DatabaseError:
    text = str(exc)
    name = key.decode("utf-8", errors="replace")[:100]
    if "BUSYKEY" in text:
        return DatabaseError(
            f"Key {name!r} already exists on {target.where} (written by someone else during "
            "the restore?): restore in 'replace' mode",
            code="target_not_empty",
        )
    if "payload version" in text:
        return DatabaseError(
            f"The target {target.where} cannot read the key payloads (RDB version of this "
            "executor's redis-server is newer than the target's): " + text,
            code="rdb_version_mismatch",
        )
    if isinstance(exc, redis.exceptions.ResponseError):
        return DatabaseError(f"The target {target.where} refused key {name!r}: {text}",
                             code="restore_error")  # fmt: skip
    return _translate(exc, target, 120)


def _tls_flags(tls_mode: str) -> list[str]:
    """Redis has no opportunistic TLS: ``prefer`` means plain TCP."""
    if tls_mode == "require":
        return ["--tls", "--insecure"]
    if tls_mode in ("verify-ca", "verify-full"):
        return ["--tls"]
    return []


def _ssl_kwargs(tls_mode: str) -> dict[str, Any]:
    if tls_mode == "require":
        return {"ssl": True, "ssl_cert_reqs": "none", "ssl_check_hostname": False}
    if tls_mode == "verify-ca":
        return {"ssl": True, "ssl_cert_reqs": "required", "ssl_check_hostname": False}
    if tls_mode == "verify-full":
        return {"ssl": True, "ssl_cert_reqs": "required", "ssl_check_hostname": True}
    return {}


def _root_cause(exc: BaseException) -> BaseException:
    seen = {id(exc)}
    while (inner := exc.__cause__ or exc.__context__) is not None and id(inner) not in seen:
        seen.add(id(inner))
        exc = inner
    return exc


def _translate(exc: BaseException, target: Target, timeout_s: float) -> DatabaseError:
    if isinstance(exc, DatabaseError):
        return exc
    text = str(exc)
    if isinstance(exc, redis.exceptions.AuthenticationError) or any(
        word in text for word in ("NOAUTH", "WRONGPASS", "invalid password")
    ):
        return auth_failed(target)
    if isinstance(exc, redis.exceptions.NoPermissionError):
        return DatabaseError(
            f"User {target.username!r} on {target.where} may not run a command the probe "
            f"needs: {text}",
            code="access_denied",
        )
    if isinstance(exc, TimeoutError | redis.exceptions.TimeoutError):
        return timed_out(target, timeout_s)
    cause = _root_cause(exc)
    if isinstance(cause, ConnectionRefusedError) or "Connection refused" in text:
        return refused(target)
    if isinstance(cause, socket.gaierror):
        return unreachable(target, "unknown host name")
    if isinstance(cause, ssl.SSLError):
        return tls_problem(target, cause.reason or str(cause))
    if isinstance(cause, TimeoutError):
        return timed_out(target, timeout_s)
    if isinstance(exc, redis.exceptions.ResponseError) and "DB index" in text:
        return DatabaseError(
            f"Redis database {target.database!r} does not exist on {target.where}",
            code="database_missing",
        )
    if isinstance(cause, OSError):
        return unreachable(target, cause.strerror or str(cause))
    if isinstance(exc, redis.exceptions.ConnectionError):
        return unreachable(target, text)
    return DatabaseError(f"Cannot connect to {target.where}: {type(exc).__name__}")
