"""MongoDB: probe with motor, dump with ``mongodump --archive`` (one archive stream on
stdout), restore with ``mongorestore --archive`` reading it on stdin (``--drop`` in
replace mode, renamed to the target database with ``--nsFrom``/``--nsTo``). The
password reaches the tools through a 0600 YAML ``--config`` file deleted when the tool
ends; host, port, user and authentication database are plain flags."""

from __future__ import annotations

import asyncio
import contextlib
import json
import re
import ssl
import time
from collections.abc import AsyncIterator
from functools import lru_cache
from typing import Any, ClassVar

import bson
import pymongo.errors
from motor.motor_asyncio import AsyncIOMotorClient

from services.common.db.enums import DatabaseEngine
from services.common.dump_options import dump_argv
from services.executor.adapters.base import (
    Adapter,
    Counts,
    DatabaseError,
    DumpSpec,
    ProbeResult,
    Target,
    auth_failed,
    database_missing,
    refused,
    require_tool,
    secret_file,
    target_not_empty,
    timed_out,
    tls_problem,
    unreachable,
    version_of,
)

ARCHIVE_MAGIC = bytes.fromhex("6de29981")
"""mongodump's archive starts with the magic number 0x8199e26d, little-endian."""
DEFAULT_AUTH_DB = "admin"
GUARD_S = 2.0
AUTH_FAILED = 18  # MongoDB's AuthenticationFailed error code
_FAILED = re.compile(r"(^|\s)Failed: ")


@lru_cache(maxsize=1)
def mongodump() -> tuple[str, str]:
    """(path, version line) of mongodump on PATH."""
    path = require_tool(
        "mongodump", "mongodump is not installed on this executor (install MongoDB Database Tools)"
    )
    text = version_of(path) or ""
    return path, text.splitlines()[0] if text else ""


@lru_cache(maxsize=1)
def mongorestore() -> tuple[str, str]:
    """(path, version line) of mongorestore on PATH."""
    path = require_tool(
        "mongorestore",
        "mongorestore is not installed on this executor (install MongoDB Database Tools)",
    )
    text = version_of(path) or ""
    return path, text.splitlines()[0] if text else ""


def archive_databases(head: bytes) -> list[str]:
    """The databases named in a mongodump archive's prelude (its header document, one
    metadata document per collection, then a -1 terminator), as far as ``head``
    holds them."""
    if not head.startswith(ARCHIVE_MAGIC):
        return []
    names: set[str] = set()
    position = len(ARCHIVE_MAGIC)
    first = True
    try:
        while position + 4 <= len(head):
            size = int.from_bytes(head[position : position + 4], "little", signed=True)
            if size == -1 or size < 5 or position + size > len(head):
                break
            document = bson.decode(head[position : position + size])
            position += size
            if not first and isinstance(document.get("db"), str):
                names.add(document["db"])
            first = False
    except (bson.errors.BSONError, ValueError):
        return sorted(names)
    return sorted(names)


def auth_database(target: Target) -> str:
    value = target.options.get("authentication_database")
    return value if isinstance(value, str) and value else DEFAULT_AUTH_DB


def config_yaml(target: Target) -> str:
    """mongodump's ``--config`` file: only the password. A JSON string is a valid YAML
    double-quoted scalar, so any character survives the trip."""
    return f"password: {json.dumps(target.password or '')}\n"


def _connection_argv(tool: str, target: Target, config: str) -> list[str]:
    argv = [tool, f"--config={config}", f"--host={target.host}", f"--port={target.port}"]
    if target.username:
        argv.append(f"--username={target.username}")
        if "authentication_database" not in target.options:
            argv.append(f"--authenticationDatabase={DEFAULT_AUTH_DB}")
    return argv + _tls_flags(target.tls_mode)


def mongodump_argv(tool: str, target: Target, config: str) -> list[str]:
    extra = dump_argv(DatabaseEngine.MONGODB, target.options, database=target.database)
    argv = _connection_argv(tool, target, config)
    argv += [f"--db={target.database}", *extra.flags, "--archive"]  # no value: stdout
    return argv


def mongorestore_argv(
    tool: str, target: Target, config: str, *, mode: str, source_database: str
) -> list[str]:
    """Restore the archive from stdin into ``target.database``: documents of
    ``source_database`` are renamed to it (``--nsFrom``/``--nsTo``); without a known
    source, only namespaces of the target's own name are restored."""
    argv = _connection_argv(tool, target, config)
    if source_database and source_database != target.database:
        argv += [f"--nsFrom={source_database}.*", f"--nsTo={target.database}.*"]
    else:
        argv.append(f"--nsInclude={target.database}.*")
    argv += ["--archive", "--stopOnError", *(["--drop"] if mode == "replace" else [])]
    return argv


class MongoAdapter(Adapter):
    engine: ClassVar[str] = "mongodb"
    default_port: ClassVar[int] = 27017
    magic: ClassVar[tuple[bytes, ...]] = (ARCHIVE_MAGIC,)

    async def probe(self, target: Target, timeout_s: float) -> ProbeResult:
        client = _client(target, timeout_s)
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
                           version, counter=lambda: self.count_objects(target))  # fmt: skip

    # -- restore and counting ----------------------------------------------------------

    async def prepare_restore(self, target: Target, mode: str) -> None:
        """MongoDB creates a database on its first write; into-empty refuses one that
        already has collections."""
        if mode != "into-empty":
            return
        client = _client(target, 15)
        try:
            names = await client[target.database].list_collection_names()
        except Exception as exc:
            raise _translate(exc, target, 15) from None
        finally:
            client.close()
        if [name for name in names if not name.startswith("system.")]:
            raise target_not_empty(target)

    @contextlib.asynccontextmanager
    async def restore_command(
        self, target: Target, server_version: str, mode: str, *, no_owner: bool,
        dump_format: str = "", source_database: str = "",
    ) -> AsyncIterator[DumpSpec]:  # fmt: skip
        tool, version = mongorestore()
        with secret_file(config_yaml(target), suffix=".yaml") as config:
            argv = mongorestore_argv(tool, target, str(config), mode=mode,
                                     source_database=source_database)  # fmt: skip
            yield DumpSpec(argv, {"PATH": "/usr/bin:/bin"}, "mongodump-archive", "archive",
                           version)  # fmt: skip

    async def drop_database(self, target: Target) -> None:
        client = _client(target, 30)
        try:
            await client.drop_database(target.database)
        finally:
            client.close()

    def dumped_database(self, head: bytes) -> str:
        names = archive_databases(head)
        return names[0] if len(names) == 1 else ""

    async def count_objects(self, target: Target) -> Counts:
        """Documents per collection (``count_documents``, exact), only the collections
        a dump with the database's options holds."""
        only = target.options.get("collection")
        excluded = set(target.options.get("exclude_collections") or [])
        client = _client(target, 30)
        counts: dict[str, int] = {}
        try:
            database = client[target.database]
            names = await database.list_collection_names(filter={"type": "collection"})
            for name in sorted(names):
                if name.startswith("system.") or name in excluded or (only and name != only):
                    continue
                counts[name] = int(await database[name].count_documents({}))
        except Exception as exc:
            raise _translate(exc, target, 30) from None
        finally:
            client.close()
        return Counts("documents", counts, filtered=bool(only or excluded),
                      how="documents per collection, counted after the dump")  # fmt: skip

    def stderr_error(self, stderr: str) -> str | None:
        for line in stderr.splitlines():
            if _FAILED.search(line):
                return line.strip()
        return None


def _client(target: Target, timeout_s: float) -> AsyncIOMotorClient[dict[str, Any]]:
    timeout_ms = max(int(timeout_s * 1000), 1)
    credentials: dict[str, Any] = {}
    if target.username:
        credentials = {
            "username": target.username,
            "password": target.password or "",
            "authSource": auth_database(target),
        }
    return AsyncIOMotorClient(
        host=target.host,
        port=target.port,
        serverSelectionTimeoutMS=timeout_ms,
        connectTimeoutMS=timeout_ms,
        socketTimeoutMS=timeout_ms,
        appname="backupmanager",
        **credentials,
        **_tls_kwargs(target.tls_mode),
    )


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
