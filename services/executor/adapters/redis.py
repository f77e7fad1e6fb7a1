"""Redis: probe with redis.asyncio, dump with ``redis-cli --rdb -``, which asks the
server for a replication snapshot and streams the RDB file to stdout (every logical
database, not only the configured one).

The password reaches redis-cli on its stdin (``--askpass``), so it is in neither argv
nor the tool's environment (``REDISCLI_AUTH`` would show in /proc/<pid>/environ)."""

from __future__ import annotations

import asyncio
import contextlib
import re
import shutil
import socket
import ssl
import subprocess
import time
from collections.abc import AsyncIterator
from functools import lru_cache
from typing import Any, ClassVar

import redis.asyncio as aioredis
import redis.exceptions
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff

from services.common.db.enums import DatabaseEngine
from services.common.dump_options import dump_argv
from services.executor.adapters.base import (
    Adapter,
    DatabaseError,
    DumpSpec,
    ProbeResult,
    Target,
    auth_failed,
    refused,
    timed_out,
    tls_problem,
    unreachable,
)
from services.executor.tool import ToolMissing

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


@lru_cache(maxsize=1)
def redis_cli() -> tuple[str, str]:
    """(path, version text) of redis-cli on PATH."""
    path = shutil.which("redis-cli")
    if path is None:
        raise ToolMissing(
            "redis-cli is not installed on this executor (apt-get install redis-tools)"
        )
    try:
        version = subprocess.run(
            [path, "--version"], capture_output=True, text=True, timeout=10, check=True
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        version = ""
    return path, version


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
        yield DumpSpec(argv, {"PATH": "/usr/bin:/bin"}, "redis-rdb", "rdb", version, stdin)

    def stderr_error(self, stderr: str) -> str | None:
        for line in stderr.splitlines():
            if _FATAL.search(line):
                return line.strip()
        return None


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
