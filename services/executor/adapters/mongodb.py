"""MongoDB: probe with motor, dump with ``mongodump --archive`` (one archive stream on
stdout). The password reaches mongodump through a 0600 YAML ``--config`` file deleted
when the dump ends; host, port, user and authentication database are plain flags."""

from __future__ import annotations

import asyncio
import contextlib
import json
import re
import shutil
import ssl
import subprocess
import time
from collections.abc import AsyncIterator
from functools import lru_cache
from typing import Any, ClassVar

import pymongo.errors
from motor.motor_asyncio import AsyncIOMotorClient

from services.common.db.enums import DatabaseEngine
from services.common.dump_options import dump_argv
from services.executor.adapters.base import (
    Adapter,
    DatabaseError,
    DumpSpec,
    ProbeResult,
    Target,
    auth_failed,
    database_missing,
    refused,
    secret_file,
    timed_out,
    tls_problem,
    unreachable,
)
from services.executor.tool import ToolMissing

ARCHIVE_MAGIC = bytes.fromhex("6de29981")
"""mongodump's archive starts with the magic number 0x8199e26d, little-endian."""
DEFAULT_AUTH_DB = "admin"
GUARD_S = 2.0
AUTH_FAILED = 18  # MongoDB's AuthenticationFailed error code
_FAILED = re.compile(r"(^|\s)Failed: ")


@lru_cache(maxsize=1)
def mongodump() -> tuple[str, str]:
    """(path, version line) of mongodump on PATH."""
    path = shutil.which("mongodump")
    if path is None:
        raise ToolMissing(
            "mongodump is not installed on this executor (install MongoDB Database Tools)"
        )
    try:
        text = subprocess.run(
            [path, "--version"], capture_output=True, text=True, timeout=10, check=True
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        text = ""
    return path, text.splitlines()[0] if text else ""


def auth_database(target: Target) -> str:
    value = target.options.get("authentication_database")
    return value if isinstance(value, str) and value else DEFAULT_AUTH_DB


def config_yaml(target: Target) -> str:
    """mongodump's ``--config`` file: only the password. A JSON string is a valid YAML
    double-quoted scalar, so any character survives the trip."""
    return f"password: {json.dumps(target.password or '')}\n"


def mongodump_argv(tool: str, target: Target, config: str) -> list[str]:
    extra = dump_argv(DatabaseEngine.MONGODB, target.options, database=target.database)
    argv = [tool, f"--config={config}", f"--host={target.host}", f"--port={target.port}"]
    if target.username:
        argv.append(f"--username={target.username}")
        if "authentication_database" not in target.options:
            argv.append(f"--authenticationDatabase={DEFAULT_AUTH_DB}")
    argv += _tls_flags(target.tls_mode)
    argv += [f"--db={target.database}", *extra.flags, "--archive"]  # no value: stdout
    return argv


class MongoAdapter(Adapter):
    engine: ClassVar[str] = "mongodb"
    default_port: ClassVar[int] = 27017
    magic: ClassVar[tuple[bytes, ...]] = (ARCHIVE_MAGIC,)

    async def probe(self, target: Target, timeout_s: float) -> ProbeResult:
        timeout_ms = max(int(timeout_s * 1000), 1)
        credentials: dict[str, Any] = {}
        if target.username:
            credentials = {
                "username": target.username,
                "password": target.password or "",
                "authSource": auth_database(target),
            }
        client: AsyncIOMotorClient[dict[str, Any]] = AsyncIOMotorClient(
            host=target.host,
            port=target.port,
            serverSelectionTimeoutMS=timeout_ms,
            connectTimeoutMS=timeout_ms,
            socketTimeoutMS=timeout_ms,
            appname="backupmanager",
            **credentials,
            **_tls_kwargs(target.tls_mode),
        )
        started = time.perf_counter()
        try:
            # the driver's own timeouts answer first, with the reason (refused, …)
            async with asyncio.timeout(timeout_s + GUARD_S):
                await client.admin.command("ping")
                latency_ms = (time.perf_counter() - started) * 1000
                info = await client.admin.command("buildInfo")
                stats = await client[target.database].command("dbStats")
        except Exception as exc:
            raise _translate(exc, target, timeout_s) from None
        finally:
            client.close()
        if not stats.get("collections"):
            raise database_missing(target)  # MongoDB databases exist once they hold data
        return ProbeResult(
            str(info.get("version", "unknown")), round(latency_ms, 2), int(stats["dataSize"])
        )

    @contextlib.asynccontextmanager
    async def dump_command(self, target: Target, server_version: str) -> AsyncIterator[DumpSpec]:
        tool, version = mongodump()
        with secret_file(config_yaml(target), suffix=".yaml") as config:
            argv = mongodump_argv(tool, target, str(config))
            yield DumpSpec(argv, {"PATH": "/usr/bin:/bin"}, "mongodump-archive", "archive",
                           version)  # fmt: skip

    def stderr_error(self, stderr: str) -> str | None:
        for line in stderr.splitlines():
            if _FAILED.search(line):
                return line.strip()
        return None


def _tls_flags(tls_mode: str) -> list[str]:
    """MongoDB has no opportunistic TLS: ``prefer`` means plain TCP."""
    if tls_mode == "require":
        return ["--ssl", "--sslAllowInvalidCertificates", "--sslAllowInvalidHostnames"]
    if tls_mode == "verify-ca":
        return ["--ssl", "--sslAllowInvalidHostnames"]
    if tls_mode == "verify-full":
        return ["--ssl"]
    return []


def _tls_kwargs(tls_mode: str) -> dict[str, Any]:
    if tls_mode == "require":
        return {"tls": True, "tlsInsecure": True}
    if tls_mode == "verify-ca":
        return {"tls": True, "tlsAllowInvalidHostnames": True}
    if tls_mode == "verify-full":
        return {"tls": True}
    return {}


def _translate(exc: BaseException, target: Target, timeout_s: float) -> DatabaseError:
    if isinstance(exc, DatabaseError):
        return exc
    if isinstance(exc, pymongo.errors.OperationFailure):
        if exc.code == AUTH_FAILED or "Authentication failed" in str(exc):
            return auth_failed(target)
        if exc.code == 13:  # Unauthorized
            return DatabaseError(
                f"User {target.username!r} on {target.where} may not read database "
                f"{target.database!r} — grant it the backup role",
                code="access_denied",
            )
        return DatabaseError(f"MongoDB at {target.where} refused the request: {exc.details}")
    if isinstance(exc, TimeoutError):
        return timed_out(target, timeout_s)
    if isinstance(exc, pymongo.errors.ConfigurationError):
        return DatabaseError(f"Cannot connect to {target.where}: {exc}", code="config_error")
    if isinstance(exc, pymongo.errors.ConnectionFailure):
        text = str(exc)
        if "Connection refused" in text:
            return refused(target)
        if "Name or service not known" in text or "nodename nor servname" in text:
            return unreachable(target, "unknown host name")
        if "SSL" in text or "TLS" in text or "certificate" in text:
            return tls_problem(target, text.split(" (configured timeouts")[0])
        if "timed out" in text or isinstance(exc, pymongo.errors.ServerSelectionTimeoutError):
            return timed_out(target, timeout_s)
        return unreachable(target, text)
    if isinstance(exc, ssl.SSLError):
        return tls_problem(target, exc.reason or str(exc))
    if isinstance(exc, OSError):
        return unreachable(target, exc.strerror or str(exc))
    return DatabaseError(f"Cannot connect to {target.where}: {type(exc).__name__}")
