"""PostgreSQL: probe with asyncpg, dump with ``pg_dump -Fc -Z0`` (we compress), using
the newest installed pg_dump whose major version is at least the server's. The
password reaches pg_dump through a 0600 passfile (PGPASSFILE), never argv or env."""

from __future__ import annotations

import asyncio
import contextlib
import glob
import re
import shutil
import socket
import ssl
import subprocess
import time
from collections.abc import AsyncIterator
from functools import lru_cache
from pathlib import Path
from typing import ClassVar

import asyncpg

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
    target_not_empty,
    timed_out,
    tls_problem,
    unreachable,
)

PG_BIN_GLOB = "/usr/lib/postgresql/*/bin"
_VERSION = re.compile(r"(\d+)(?:\.(\d+))?")
SSL_MODES = {"disable", "allow", "prefer", "require", "verify-ca", "verify-full"}


def major_of(version: str) -> int:
    match = _VERSION.search(version)
    if match is None:
        raise ValueError(f"no version number in {version!r}")
    return int(match.group(1))


@lru_cache(maxsize=1)
def installed_pg_dumps() -> tuple[tuple[int, str, str], ...]:
    """(major, path, version text) of every pg_dump found, newest first."""
    candidates = [str(Path(d) / "pg_dump") for d in glob.glob(PG_BIN_GLOB)]
    on_path = shutil.which("pg_dump")
    if on_path:
        candidates.append(on_path)
    found: dict[str, tuple[int, str, str]] = {}
    for path in candidates:
        try:
            text = subprocess.run(
                [path, "--version"], capture_output=True, text=True, timeout=10, check=True
            ).stdout.strip()
        except (OSError, subprocess.SubprocessError):
            continue
        real = str(Path(path).resolve())
        found.setdefault(real, (major_of(text.rsplit(" ", 1)[-1]), path, text))
    return tuple(sorted(found.values(), reverse=True))


def choose_pg_dump(server_version: str) -> tuple[str, str]:
    server_major = major_of(server_version)
    tools = installed_pg_dumps()
    fitting = [tool for tool in tools if tool[0] >= server_major]
    if not fitting:
        have = ", ".join(f"{major} ({path})" for major, path, _ in tools) or "none"
        raise DatabaseError(
            f"No pg_dump fits PostgreSQL server {server_version}: pg_dump must be version "
            f"{server_major} or newer; installed: {have}",
            code="tool_version_mismatch",
        )
    _, path, text = fitting[0]
    return path, text


def _passfile_line(target: Target) -> str:
    def escape(value: str) -> str:
        return value.replace("\\", "\\\\").replace(":", "\\:")

    return f"*:*:*:*:{escape(target.password or '')}\n"


class PostgresAdapter(Adapter):
    engine: ClassVar[str] = "postgresql"
    default_port: ClassVar[int] = 5432
    magic: ClassVar[tuple[bytes, ...]] = (b"PGDMP",)

    async def probe(self, target: Target, timeout_s: float) -> ProbeResult:
        started = time.perf_counter()
        try:
            conn = await asyncpg.connect(
                host=target.host,
                port=target.port,
                user=target.username,
                password=target.password or None,
                database=target.database,
                timeout=timeout_s,
                ssl=_ssl_arg(target.tls_mode),
            )
        except Exception as exc:
            raise _translate(exc, target, timeout_s) from None
        try:
            await conn.fetchval("SELECT 1")
            latency_ms = (time.perf_counter() - started) * 1000
            version = await conn.fetchval("SHOW server_version")
            size = await conn.fetchval("SELECT pg_database_size(current_database())")
        finally:
            await conn.close(timeout=5)
        return ProbeResult(str(version).split(" ")[0], round(latency_ms, 2), int(size))

    @contextlib.asynccontextmanager
    async def dump_command(self, target: Target, server_version: str) -> AsyncIterator[DumpSpec]:
        tool, tool_version = choose_pg_dump(server_version)
        with secret_file(_passfile_line(target), suffix=".pgpass") as passfile:
            env = {
                "PATH": "/usr/bin:/bin",
                "PGPASSFILE": str(passfile),
                "PGSSLMODE": target.tls_mode if target.tls_mode in SSL_MODES else "prefer",
                "PGCONNECT_TIMEOUT": "15",
                "PGAPPNAME": "backupmanager",
            }
            argv = [
                tool, "--format=custom", "--compress=0", "--no-password",
                f"--host={target.host}", f"--port={target.port}",
                f"--username={target.username}", f"--dbname={target.database}",
                *pg_dump_options(target),
            ]  # fmt: skip
            yield DumpSpec(argv, env, "postgresql-custom", "pgdump", tool_version)

    async def prepare_restore(self, target: Target, mode: str) -> None:
        await prepare_postgres_restore(target, mode)

    @contextlib.asynccontextmanager
    async def restore_command(
        self, target: Target, server_version: str, mode: str, *, no_owner: bool
    ) -> AsyncIterator[DumpSpec]:
        dump_tool, version = choose_pg_dump(server_version)
        tool = str(Path(dump_tool).with_name("pg_restore"))
        with secret_file(_passfile_line(target), suffix=".pgpass") as passfile:
            env = {
                "PATH": "/usr/bin:/bin",
                "PGPASSFILE": str(passfile),
                "PGSSLMODE": _ssl_arg(target.tls_mode),
                "PGAPPNAME": "backupmanager",
            }
            argv = [
                tool, "--exit-on-error", "--single-transaction", "--no-password",
                f"--host={target.host}", f"--port={target.port}",
                f"--username={target.username}", f"--dbname={target.database}",
                *(["--clean", "--if-exists"] if mode == "replace" else []),
                *(["--no-owner", "--no-privileges"] if no_owner else []),
            ]  # fmt: skip
            yield DumpSpec(argv, env, "postgresql-custom", "pgdump", version)

    def stderr_error(self, stderr: str) -> str | None:
        for line in stderr.splitlines():
            lowered = line.lower()
            if "error:" in lowered or lowered.startswith(("pg_dump: fatal", "pg_restore: fatal")):
                return line.strip()
        return None


def pg_dump_options(target: Target) -> list[str]:
    """Extra flags from the database's allow-listed options (validated again here:
    the row could have been written by an older version)."""
    extra = dump_argv(DatabaseEngine.POSTGRESQL, target.options, database=target.database)
    return list(extra.flags)


def _ssl_arg(tls_mode: str) -> str:
    return tls_mode if tls_mode in SSL_MODES else "prefer"


def _translate(exc: BaseException, target: Target, timeout_s: float) -> DatabaseError:
    if isinstance(
        exc, asyncpg.InvalidPasswordError | asyncpg.InvalidAuthorizationSpecificationError
    ):
        text = str(exc)
        if "SSL" in text or "encryption" in text:
            return tls_problem(target, f"the server requires a different TLS setting ({text})")
        if isinstance(exc, asyncpg.InvalidPasswordError):
            return auth_failed(target)
        return DatabaseError(
            f"The server at {target.where} refused user {target.username!r}: {text}",
            code="authentication_failed",
        )
    if isinstance(exc, asyncpg.InvalidCatalogNameError):
        return database_missing(target)
    if isinstance(exc, ConnectionRefusedError):
        return refused(target)
    if isinstance(exc, TimeoutError | asyncio.TimeoutError):
        return timed_out(target, timeout_s)
    if isinstance(exc, socket.gaierror):
        return unreachable(target, "unknown host name")
    if isinstance(exc, ssl.SSLError):
        return tls_problem(target, str(exc))
    if isinstance(exc, OSError):
        return unreachable(target, exc.strerror or str(exc))
    if isinstance(exc, asyncpg.PostgresError):
        return DatabaseError(f"PostgreSQL at {target.where} refused the connection: {exc}")
    return DatabaseError(f"Cannot connect to {target.where}: {type(exc).__name__}")


# -- restore -----------------------------------------------------------------------

_USER_RELATIONS = """
SELECT count(*) FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
WHERE n.nspname NOT IN ('pg_catalog', 'information_schema')
  AND n.nspname NOT LIKE 'pg_toast%' AND n.nspname NOT LIKE 'pg_temp%'
  AND c.relkind IN ('r', 'v', 'm', 'S', 'f', 'p')
"""


async def _connect(target: Target, database: str, timeout_s: float = 15) -> asyncpg.Connection:
    try:
        return await asyncpg.connect(
            host=target.host, port=target.port, user=target.username,
            password=target.password or None, database=database, timeout=timeout_s,
            ssl=_ssl_arg(target.tls_mode),
        )  # fmt: skip
    except Exception as exc:
        raise _translate(exc, target, timeout_s) from None


async def prepare_postgres_restore(target: Target, mode: str) -> None:
    admin = await _connect(target, "postgres")
    try:
        exists = await admin.fetchval(
            "SELECT 1 FROM pg_database WHERE datname = $1", target.database
        )
        if not exists:
            quoted = '"' + target.database.replace('"', '""') + '"'
            await admin.execute(f"CREATE DATABASE {quoted}")
            return
    finally:
        await admin.close(timeout=5)
    if mode == "into-empty":
        conn = await _connect(target, target.database)
        try:
            if await conn.fetchval(_USER_RELATIONS):
                raise target_not_empty(target)
        finally:
            await conn.close(timeout=5)
