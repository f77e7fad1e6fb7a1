r"""PostgreSQL: probe with asyncpg, dump with ``pg_dump -Fc -Z0`` (we compress), using
the newest installed pg_dump whose major version is at least the server's. The
password reaches pg_dump through a 0600 passfile (PGPASSFILE), never argv or env.

The dump runs in a snapshot exported by a transaction of our own
(``pg_export_snapshot()`` + ``pg_dump --snapshot``), which then counts the rows of
every table in that same snapshot for the manifest. Restores use ``pg_restore``
(custom format) or ``psql`` (plain SQL uploads: ``ON_ERROR_STOP``, one transaction,
and ``\restrict`` with a random key so the script can run no meta-command)."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import re
import secrets
import socket
import ssl
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import ClassVar

import asyncpg

from services.common.db.enums import DatabaseEngine
from services.common.dump_formats import POSTGRES_PLAIN
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
    secret_file,
    target_not_empty,
    timed_out,
    tls_problem,
    unreachable,
)
from services.executor.adapters.pg_tools import choose_pg_dump

log = logging.getLogger(__name__)

FILTER_OPTIONS = ("schemas", "exclude_schemas", "tables", "exclude_tables", "exclude_table_data")
SSL_MODES = {"disable", "allow", "prefer", "require", "verify-ca", "verify-full"}


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
        async with (
            _exported_snapshot(target) as (snapshot, counter),
            self._pg_dump(target, tool, tool_version, snapshot) as spec,
        ):
            yield dataclasses.replace(spec, counter=counter, count_while_dumping=bool(snapshot))

    @contextlib.asynccontextmanager
    async def _pg_dump(
        self, target: Target, tool: str, tool_version: str, snapshot: str | None
    ) -> AsyncIterator[DumpSpec]:
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
                *([f"--snapshot={snapshot}"] if snapshot else []), *pg_dump_options(target),
            ]  # fmt: skip
            yield DumpSpec(argv, env, "postgresql-custom", "pgdump", tool_version)

    async def prepare_restore(self, target: Target, mode: str) -> None:
        await prepare_postgres_restore(target, mode)

    @contextlib.asynccontextmanager
    async def restore_command(
        self, target: Target, server_version: str, mode: str, *, no_owner: bool,
        dump_format: str = "", source_database: str = "",
    ) -> AsyncIterator[DumpSpec]:  # fmt: skip
        dump_tool, version = choose_pg_dump(server_version)
        if dump_format == POSTGRES_PLAIN:
            async with _psql_command(target, str(Path(dump_tool).with_name("psql")),
                                     version) as spec:  # fmt: skip
                yield spec
            return
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

    async def drop_database(self, target: Target) -> None:
        admin = await _connect(target, "postgres")
        try:
            await admin.execute(f"DROP DATABASE IF EXISTS {_ident(target.database)} WITH (FORCE)")
        finally:
            await admin.close(timeout=5)

    async def count_objects(self, target: Target) -> Counts:
        conn = await _connect(target, target.database)
        try:
            async with conn.transaction(isolation="repeatable_read", readonly=True):
                return await _count_tables(conn, target, "rows per table in one snapshot")
        finally:
            await conn.close(timeout=5)


@contextlib.asynccontextmanager
async def _exported_snapshot(
    target: Target,
) -> AsyncIterator[tuple[str | None, Callable[[], Awaitable[Counts]]]]:
    """A transaction whose snapshot pg_dump imports, kept open while the dump runs;
    the counter counts rows in that same snapshot. If the snapshot cannot be exported
    (e.g. a standby of an old server), pg_dump takes its own and the counts are taken
    afterwards in a snapshot of their own (and say so)."""
    try:
        conn = await _connect(target, target.database)
    except DatabaseError as exc:
        log.warning("no snapshot for counting: %s", exc)
        yield None, lambda: PostgresAdapter().count_objects(target)
        return
    transaction = conn.transaction(isolation="repeatable_read", readonly=True)
    try:
        await transaction.start()
        snapshot = str(await conn.fetchval("SELECT pg_export_snapshot()"))
    except asyncpg.PostgresError as exc:
        log.warning("pg_export_snapshot failed (%s); counts taken after the dump", exc)
        await conn.close(timeout=5)
        yield None, lambda: PostgresAdapter().count_objects(target)
        return

    async def count() -> Counts:
        return await _count_tables(conn, target, "rows per table in the dump's own snapshot")

    try:
        yield snapshot, count
    finally:
        with contextlib.suppress(Exception):
            await transaction.rollback()
        with contextlib.suppress(Exception):
            await conn.close(timeout=5)


_COUNTED_TABLES = """
SELECT n.nspname, c.relname FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
WHERE c.relkind = 'r' AND n.nspname NOT IN ('pg_catalog', 'information_schema')
  AND n.nspname NOT LIKE 'pg_toast%' AND n.nspname NOT LIKE 'pg_temp%'
  AND NOT EXISTS (SELECT 1 FROM pg_depend d WHERE d.classid = 'pg_class'::regclass
                  AND d.objid = c.oid AND d.deptype = 'e')
ORDER BY 1, 2
"""


def _ident(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


async def _count_tables(conn: asyncpg.Connection, target: Target, how: str) -> Counts:
    """Rows of every user table (not extension members), as ``schema.table``."""
    counts: dict[str, int] = {}
    for schema, table in await conn.fetch(_COUNTED_TABLES):
        rows = await conn.fetchval(f"SELECT count(*) FROM {_ident(schema)}.{_ident(table)}")  # noqa: S608
        counts[f"{schema}.{table}"] = int(rows)
    filtered = any(target.options.get(name) for name in FILTER_OPTIONS)
    return Counts("rows", counts, filtered=filtered, how=how)


@contextlib.asynccontextmanager
async def _psql_command(target: Target, tool: str, version: str) -> AsyncIterator[DumpSpec]:
    r"""``psql`` for a plain SQL script: stop at the first error, all in one
    transaction, output discarded, and ``\restrict`` with a key only we know first —
    the script can then run no meta-command (``\!``, ``\copy``, ``\i``, …). A
    pg_dump script's own ``\restrict``/``\unrestrict`` lines are taken out."""
    with secret_file(_passfile_line(target), suffix=".pgpass") as passfile:
        env = {"PATH": "/usr/bin:/bin", "PGPASSFILE": str(passfile),
               "PGSSLMODE": _ssl_arg(target.tls_mode), "PGAPPNAME": "backupmanager"}  # fmt: skip
        argv = [
            tool, "--no-psqlrc", "--no-password", "--quiet", "--set=ON_ERROR_STOP=1",
            "--single-transaction", "--output=/dev/null", f"--host={target.host}",
            f"--port={target.port}", f"--username={target.username}",
            f"--dbname={target.database}", "--file=-",
        ]  # fmt: skip
        key = secrets.token_hex(24)
        yield DumpSpec(argv, env, POSTGRES_PLAIN, "sql", version,
                       transform=lambda chunks: restricted(chunks, key))  # fmt: skip


_RESTRICT = re.compile(rb"^\\restrict ([A-Za-z0-9]+)[ \t]*\r?$", re.MULTILINE)
HEADER_BYTES = 64 * 1024
TAIL_BYTES = 4096


async def restricted(chunks: AsyncIterator[bytes], key: str) -> AsyncIterator[bytes]:
    r"""``\restrict <key>`` followed by the script, without the script's own
    ``\restrict K`` line (searched in its first 64 KiB, before any ``COPY``) and its
    matching final ``\unrestrict K`` line (searched in its last 4 KiB)."""
    yield f"\\restrict {key}\n".encode()
    head = b""
    iterator = aiter(chunks)
    async for chunk in iterator:
        head += chunk
        if len(head) >= HEADER_BYTES:
            break
    window = head[:HEADER_BYTES]
    copy_at = window.find(b"\nCOPY ")
    match = _RESTRICT.search(window, 0, copy_at if copy_at >= 0 else len(window))
    their_key = match.group(1) if match else None
    if match:
        head = head[: match.start()] + head[match.end() :]
    pending = head
    async for chunk in iterator:
        pending += chunk
        if len(pending) > 2 * TAIL_BYTES:
            cut = len(pending) - TAIL_BYTES
            yield pending[:cut]
            pending = pending[cut:]
    if their_key is not None:
        line = re.compile(rb"^\\unrestrict " + re.escape(their_key) + rb"[ \t]*\r?$", re.MULTILINE)
        pending = line.sub(b"", pending, count=1)
    yield pending


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
