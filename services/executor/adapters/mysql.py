r"""MySQL and MariaDB: probe with aiomysql, dump with ``mariadb-dump`` (or ``mysqldump``)
in one consistent transaction, restore with the ``mariadb`` (or ``mysql``) client
reading the SQL on stdin and stopping at the first error. Credentials, host, port and
TLS settings reach the tools through a 0600 ``--defaults-extra-file`` that is deleted
when the tool ends: never argv, never the environment.

The restore client runs with ``--binary-mode`` (no client commands such as ``\!`` or
``source`` from the input, no CR/LF rewriting), ``--sandbox`` where the client has it,
and ``--local-infile=0``: an uploaded script cannot reach the executor's shell or
files."""

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
from dataclasses import dataclass
from functools import lru_cache
from typing import Any, ClassVar

import aiomysql

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
    secret_file,
    target_not_empty,
    timed_out,
    tls_problem,
    unreachable,
    version_of,
)
from services.executor.tool import ToolMissing

DUMP_TOOLS = ("mariadb-dump", "mysqldump")
"""Looked up on PATH in this order (Debian's ``mysqldump`` is a link to mariadb-dump)."""
RESTORE_TOOLS = ("mariadb", "mysql")

FIXED_FLAGS = (
    "--single-transaction",  # one consistent snapshot of InnoDB tables, no global lock
    "--quick",  # stream rows instead of buffering each table
    "--routines",
    "--triggers",
    "--events",
    "--hex-blob",  # binary columns as hex literals: the dump stays valid text
    "--no-tablespaces",  # needs PROCESS privilege on MySQL 8; irrelevant for one database
    "--default-character-set=utf8mb4",
)

# Access denied (1045), unknown database (1049), access denied to a database (1044),
# can't connect (2003), unknown host (2005), SSL connection error (2026),
# insecure transport refused by --require-secure-transport (3159).
ER_ACCESS_DENIED, ER_BAD_DB, ER_DB_ACCESS_DENIED = 1045, 1049, 1044
CR_CONN_HOST_ERROR, CR_UNKNOWN_HOST, CR_SSL_CONNECTION_ERROR = 2003, 2005, 2026
ER_SECURE_TRANSPORT_REQUIRED = 3159

_STDERR_ERROR = re.compile(r"Got error|Couldn't execute|\bError\b|error:", re.IGNORECASE)
_PASSWORD_WARNING = "password on the command line"  # noqa: S105 (a message, not a secret)


@dataclass(frozen=True)
class DumpTool:
    path: str
    version: str

    @property
    def mariadb(self) -> bool:
        return "mariadb" in self.version.lower()


@lru_cache(maxsize=1)
def installed_dump_tools() -> tuple[DumpTool, ...]:
    """Every distinct dump tool on PATH, in :data:`DUMP_TOOLS` order."""
    found: list[DumpTool] = []
    for name in DUMP_TOOLS:
        path = shutil.which(name)
        if path is None:
            continue
        text = version_of(path)
        if text is None:
            continue
        if all(tool.version != text for tool in found):  # mysqldump -> mariadb-dump link
            found.append(DumpTool(path, text))
    return tuple(found)


def choose_dump_tool(server_version: str) -> DumpTool:
    """mariadb-dump first; for an Oracle MySQL server, MySQL's own mysqldump if it is
    installed (it knows MySQL-only objects best)."""
    tools = installed_dump_tools()
    if not tools:
        raise ToolMissing(
            "neither mariadb-dump nor mysqldump is installed on this executor "
            "(apt-get install mariadb-client)"
        )
    if "mariadb" not in server_version.lower():
        for tool in tools:
            if not tool.mariadb:
                return tool
    return tools[0]


@lru_cache(maxsize=1)
def restore_client() -> tuple[DumpTool, bool]:
    """The ``mariadb``/``mysql`` client on PATH, and whether it knows ``--sandbox``."""
    for name in RESTORE_TOOLS:
        path = shutil.which(name)
        if path is None:
            continue
        try:
            version = subprocess.run(
                [path, "--version"], capture_output=True, text=True, timeout=10, check=True
            ).stdout.strip()
            helptext = subprocess.run(
                [path, "--no-defaults", "--help"], capture_output=True, text=True, timeout=10,
                check=False,
            ).stdout  # fmt: skip
        except (OSError, subprocess.SubprocessError):
            continue
        return DumpTool(path, version), "--sandbox" in helptext
    raise ToolMissing(
        "neither the mariadb nor the mysql client is installed on this executor "
        "(apt-get install mariadb-client)"
    )


def quote_name(name: str) -> str:
    return "`" + name.replace("`", "``") + "`"


def option_value(value: str) -> str:
    """``value`` quoted for a MySQL option file: inside double quotes ``#`` is not a
    comment and spaces are kept; backslash escapes what would end or bend the string."""
    escaped = (
        value.replace("\\", "\\\\")
        .replace('"', '\\"')
        .replace("\n", "\\n")
        .replace("\r", "\\r")
        .replace("\t", "\\t")
    )
    return f'"{escaped}"'


def defaults_file(target: Target, tool: DumpTool) -> str:
    """The ``[client]`` group with everything secret or connection-related."""
    lines = [
        "[client]",
        f"host={option_value(target.host)}",
        f"port={int(target.port)}",
        "protocol=TCP",  # "localhost" would otherwise mean the local unix socket
        f"user={option_value(target.username)}",
    ]
    if target.password:
        lines.append(f"password={option_value(target.password)}")
    lines += _tls_lines(target.tls_mode, mariadb=tool.mariadb)
    if not tool.mariadb:
        # MySQL 8's mysqldump queries COLUMN_STATISTICS, which MariaDB servers lack;
        # "loose-" keeps older mysqldump versions from failing on the unknown option.
        lines.append("loose-column-statistics=0")
    return "\n".join(lines) + "\n"


def _tls_lines(tls_mode: str, *, mariadb: bool) -> list[str]:
    if not mariadb:
        mode = {
            "disable": "DISABLED",
            "prefer": "PREFERRED",
            "require": "REQUIRED",
            "verify-ca": "VERIFY_CA",
            "verify-full": "VERIFY_IDENTITY",
        }.get(tls_mode, "PREFERRED")
        return [f"ssl-mode={mode}"]
    if tls_mode == "disable":
        return ["skip-ssl"]
    if tls_mode == "require":
        return ["ssl", "skip-ssl-verify-server-cert"]
    if tls_mode in ("verify-ca", "verify-full"):
        return ["ssl", "ssl-verify-server-cert"]
    return []  # prefer: the client's own default


def mysql_dump_options(target: Target) -> tuple[list[str], list[str]]:
    """(flags, table names) from the database's allow-listed options, validated again."""
    engine = DatabaseEngine(target.engine)
    extra = dump_argv(engine, target.options, database=target.database)
    return list(extra.flags), list(extra.names)


class MySQLAdapter(Adapter):
    """MySQL; :class:`MariaDBAdapter` is the same adapter under the other engine name."""

    engine: ClassVar[str] = "mysql"
    default_port: ClassVar[int] = 3306
    magic: ClassVar[tuple[bytes, ...]] = (
        b"/*M!999999",  # MariaDB >= 10.5.25 / 10.6.18 / 10.11.8: sandbox-mode line first
        b"/*!999999",  # MySQL's form of the same line
        b"-- MariaDB dump",
        b"-- MySQL dump",
    )

    async def probe(self, target: Target, timeout_s: float) -> ProbeResult:
        started = time.perf_counter()
        try:
            async with asyncio.timeout(timeout_s):
                conn = await aiomysql.connect(
                    host=target.host,
                    port=target.port,
                    user=target.username,
                    password=_wire_password(target.password),
                    db=target.database,
                    connect_timeout=timeout_s,
                    ssl=_ssl_context(target.tls_mode),
                    autocommit=True,
                    charset="utf8mb4",
                )
        except Exception as exc:
            raise _translate(exc, target, timeout_s) from None
        try:
            async with asyncio.timeout(timeout_s), conn.cursor() as cur:
                await cur.execute("SELECT 1")
                await cur.fetchall()
                latency_ms = (time.perf_counter() - started) * 1000
                if target.tls_mode in ("require", "verify-ca", "verify-full"):
                    await _ensure_encrypted(cur, target)
                await cur.execute("SELECT VERSION()")
                (version,) = await cur.fetchone()
                await cur.execute(
                    "SELECT COALESCE(SUM(data_length + index_length), 0) "
                    "FROM information_schema.tables WHERE table_schema = %s",
                    (target.database,),
                )
                (size,) = await cur.fetchone()
        except TimeoutError:
            raise timed_out(target, timeout_s) from None
        finally:
            conn.close()
        return ProbeResult(str(version), round(latency_ms, 2), int(size))

    @contextlib.asynccontextmanager
    async def dump_command(self, target: Target, server_version: str) -> AsyncIterator[DumpSpec]:
        tool = choose_dump_tool(server_version)
        flags, tables = mysql_dump_options(target)
        with secret_file(defaults_file(target, tool), suffix=".cnf") as config:
            argv = [
                tool.path,
                f"--defaults-extra-file={config}",  # must be the first argument
                *FIXED_FLAGS,
                *flags,
                "--",
                target.database,
                *tables,
            ]
            env = {"PATH": "/usr/bin:/bin", "LC_ALL": "C.UTF-8"}  # no HOME: no ~/.my.cnf
            yield DumpSpec(argv, env, "sql", "sql", tool.version,
                           counter=lambda: self.count_objects(target))  # fmt: skip

    # -- restore -------------------------------------------------------------------

    async def prepare_restore(self, target: Target, mode: str) -> None:
        """Create the database when missing; in into-empty mode refuse one that holds
        tables, views, routines or events."""
        conn = await _connect(target, None)
        try:
            async with conn.cursor() as cur:
                await cur.execute(
                    "SELECT COUNT(*) FROM information_schema.schemata WHERE schema_name = %s",
                    (target.database,),
                )
                (exists,) = await cur.fetchone()
                if not exists:  # (IF NOT EXISTS would still warn about an existing one)
                    await cur.execute(
                        f"CREATE DATABASE IF NOT EXISTS {quote_name(target.database)} "
                        "CHARACTER SET utf8mb4"
                    )
                    return
                if mode != "into-empty":
                    return
                await cur.execute(
                    "SELECT (SELECT COUNT(*) FROM information_schema.tables "
                    "WHERE table_schema = %s) + (SELECT COUNT(*) FROM "
                    "information_schema.routines WHERE routine_schema = %s) + (SELECT "
                    "COUNT(*) FROM information_schema.events WHERE event_schema = %s)",
                    (target.database,) * 3,
                )
                (objects,) = await cur.fetchone()
        finally:
            conn.close()
        if objects:
            raise target_not_empty(target)

    @contextlib.asynccontextmanager
    async def restore_command(
        self, target: Target, server_version: str, mode: str, *, no_owner: bool,
        dump_format: str = "", source_database: str = "",
    ) -> AsyncIterator[DumpSpec]:  # fmt: skip
        """The dump's own ``DROP … IF EXISTS`` statements (mysqldump writes them for
        tables, views, routines and events) make ``replace`` mode work; the client
        stops at the first error (no ``--force``)."""
        tool, sandbox = restore_client()
        with secret_file(defaults_file(target, tool), suffix=".cnf") as config:
            argv = [
                tool.path,
                f"--defaults-extra-file={config}",  # must be the first argument
                "--default-character-set=utf8mb4",
                "--binary-mode",
                "--local-infile=0",
                *(["--sandbox"] if sandbox else []),
                "--batch",
                "--",
                target.database,
            ]
            env = {"PATH": "/usr/bin:/bin", "LC_ALL": "C.UTF-8"}
            yield DumpSpec(argv, env, "sql", "sql", tool.version)

    async def drop_database(self, target: Target) -> None:
        conn = await _connect(target, None)
        try:
            async with conn.cursor() as cur:
                await cur.execute(f"DROP DATABASE IF EXISTS {quote_name(target.database)}")
        finally:
            conn.close()

    async def count_objects(self, target: Target) -> Counts:
        """Rows per base table, all in one consistent snapshot; only the tables a dump
        with the database's options holds (``no_data``: every table empty)."""
        flags, only = mysql_dump_options(target)
        excluded = {flag.split(".", 1)[1] for flag in flags
                    if flag.startswith("--ignore-table=")}  # fmt: skip
        conn = await _connect(target, target.database)
        counts: dict[str, int] = {}
        try:
            async with conn.cursor() as cur:
                await cur.execute("SET SESSION TRANSACTION ISOLATION LEVEL REPEATABLE READ")
                await cur.execute("START TRANSACTION WITH CONSISTENT SNAPSHOT")
                await cur.execute(
                    "SELECT table_name FROM information_schema.tables WHERE table_schema = %s "
                    "AND table_type IN ('BASE TABLE', 'SYSTEM VERSIONED') ORDER BY 1",
                    (target.database,),
                )
                names = [str(row[0]) for row in await cur.fetchall()]
                names = [n for n in names if (not only or n in only) and n not in excluded]
                for name in names:
                    if "--no-data" in flags:
                        counts[name] = 0
                        continue
                    await cur.execute(f"SELECT COUNT(*) FROM {quote_name(name)}")  # noqa: S608
                    (rows,) = await cur.fetchone()
                    counts[name] = int(rows)
                await cur.execute("COMMIT")
        finally:
            conn.close()
        return Counts("rows", counts, filtered=bool(only or excluded),
                      how="rows per table in one consistent snapshot")  # fmt: skip

    def stderr_error(self, stderr: str) -> str | None:
        for line in stderr.splitlines():
            lowered = line.lower()
            if _PASSWORD_WARNING in lowered:
                return "the dump tool warned that a password was on its command line"
            if "warning" in lowered:
                continue
            if _STDERR_ERROR.search(line):
                return line.strip()
        return None


class MariaDBAdapter(MySQLAdapter):
    engine: ClassVar[str] = "mariadb"


async def _connect(target: Target, database: str | None, timeout_s: float = 15) -> Any:
    try:
        async with asyncio.timeout(timeout_s):
            return await aiomysql.connect(
                host=target.host, port=target.port, user=target.username,
                password=_wire_password(target.password), db=database,
                connect_timeout=timeout_s, ssl=_ssl_context(target.tls_mode),
                autocommit=True, charset="utf8mb4",
            )  # fmt: skip
    except Exception as exc:
        raise _translate(exc, target, timeout_s) from None


def _wire_password(password: str | None) -> str:
    """aiomysql encodes the password as latin-1; the dump tools (and the server, for
    ``IDENTIFIED BY`` in a utf8mb4 session) use UTF-8. Handing aiomysql the UTF-8 bytes
    spelled as latin-1 characters makes it send exactly those bytes."""
    return (password or "").encode("utf-8").decode("latin-1")


def _ssl_context(tls_mode: str) -> ssl.SSLContext | None:
    """aiomysql upgrades to TLS only when the server offers it, so ``prefer`` and
    ``require`` share an unverified context (``require`` is checked after login)."""
    if tls_mode == "disable":
        return None
    context = ssl.create_default_context()
    if tls_mode == "verify-full":
        return context
    context.check_hostname = False
    if tls_mode != "verify-ca":
        context.verify_mode = ssl.CERT_NONE
    return context


async def _ensure_encrypted(cur: Any, target: Target) -> None:
    await cur.execute("SHOW SESSION STATUS LIKE 'Ssl_cipher'")
    row = await cur.fetchone()
    if not row or not row[1]:
        raise tls_problem(
            target, f"TLS mode {target.tls_mode!r} was asked for, but the server does not offer TLS"
        )


def _translate(exc: BaseException, target: Target, timeout_s: float) -> DatabaseError:
    if isinstance(exc, TimeoutError):
        return timed_out(target, timeout_s)
    if isinstance(exc, aiomysql.Error) and exc.args and isinstance(exc.args[0], int):
        code = exc.args[0]
        text = str(exc.args[1]) if len(exc.args) > 1 else ""
        if code == ER_ACCESS_DENIED:
            return auth_failed(target)
        if code == ER_BAD_DB:
            return database_missing(target)
        if code == ER_DB_ACCESS_DENIED:
            return DatabaseError(
                f"User {target.username!r} may not use database {target.database!r} on "
                f"{target.where} (or it does not exist) — grant access or check the name",
                code="access_denied",
            )
        if code in (CR_SSL_CONNECTION_ERROR, ER_SECURE_TRANSPORT_REQUIRED):
            return tls_problem(target, text)
        if code in (CR_CONN_HOST_ERROR, CR_UNKNOWN_HOST):
            cause = exc.__cause__
            if cause is not None and cause is not exc:
                return _translate(cause, target, timeout_s)
            return unreachable(target, text or "cannot connect")
        return DatabaseError(f"The server at {target.where} refused the connection: {text}")
    if isinstance(exc, ConnectionRefusedError):
        return refused(target)
    if isinstance(exc, socket.gaierror):
        return unreachable(target, "unknown host name")
    if isinstance(exc, ssl.SSLError):
        return tls_problem(target, exc.reason or str(exc))
    if isinstance(exc, OSError):
        return unreachable(target, exc.strerror or str(exc))
    return DatabaseError(f"Cannot connect to {target.where}: {type(exc).__name__}")
