"""Temporary database servers the executor starts for itself on 127.0.0.1: a Redis
server that loads an RDB file (every Redis restore goes through one), and the
scratch PostgreSQL, MariaDB and Redis servers a verification restores into.

Each runs from a private temporary directory on a free port, with a random password
for its superuser kept in a 0600 file (never argv), no persistence beyond that
directory, and is stopped (politely, then killed) and removed when its block ends.
Binaries are found like the dump tools: PostgreSQL in ``/usr/lib/postgresql/*/bin``
then PATH, MariaDB and Redis on PATH (and ``/usr/sbin``). As root, PostgreSQL runs as
``nobody`` (it refuses root); MariaDB is told ``--user=root``."""

from __future__ import annotations

import asyncio
import contextlib
import glob
import logging
import os
import pwd
import re
import secrets
import shutil
import signal
import socket
import tempfile
from collections.abc import AsyncIterator, Sequence
from pathlib import Path

from services.executor.adapters.base import DatabaseError, Target
from services.executor.adapters.pg_tools import PG_BIN_GLOB
from services.executor.tool import ToolMissing, stop_process_group

log = logging.getLogger(__name__)

HOST = "127.0.0.1"
READY_TIMEOUT_S = 60.0
STOP_TIMEOUT_S = 15.0
UNPRIVILEGED = "nobody"
PORT_ATTEMPTS = 3


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((HOST, 0))
        port: int = sock.getsockname()[1]
        return port


def find(names: Sequence[str], hint: str, dirs: Sequence[str] = ()) -> str:
    for name in names:
        for directory in dirs:
            candidate = Path(directory) / name
            if candidate.is_file() and os.access(candidate, os.X_OK):
                return str(candidate)
        found = shutil.which(name)
        if found:
            return found
    raise ToolMissing(f"{names[0]} is not installed on this executor ({hint})")


def postgres_bindir(min_major: int) -> Path:
    """The newest PostgreSQL bin directory with ``initdb``; its major must be at least
    ``min_major`` (a dump restores into the same or a newer server)."""

    def major(path: Path) -> int:
        found = re.findall(r"/(\d+)/bin$", str(path))
        return int(found[0]) if found else 0

    dirs = [Path(d) for d in glob.glob(PG_BIN_GLOB) if Path(d, "initdb").exists()]
    on_path = shutil.which("initdb")
    if on_path:
        dirs.append(Path(on_path).resolve().parent)
    if not dirs:
        raise ToolMissing("initdb is not installed on this executor (apt-get install postgresql)")
    best = max(dirs, key=major)
    if major(best) and major(best) < min_major:
        raise DatabaseError(
            f"The newest PostgreSQL server on this executor is {major(best)}, older than the "
            f"backup's server ({min_major}): install PostgreSQL {min_major} or newer, or "
            "verify on the source server (BM_VERIFY_SCRATCH=source)",
            code="tool_version_mismatch",
        )
    return best


class TemporaryServer:
    """One server process in its own directory; subclasses say how to set it up,
    start it and tell that it is ready."""

    name = "server"
    binaries_hint = ""

    def __init__(self, directory: Path) -> None:
        self.dir = directory
        self.password = secrets.token_hex(16)
        self.port = 0
        self.process: asyncio.subprocess.Process | None = None
        self.run_as: str | None = None

    @property
    def log_path(self) -> Path:
        return self.dir / f"{self.name}.log"

    def log_tail(self, lines: int = 15) -> str:
        try:
            text = self.log_path.read_text(errors="replace")
        except OSError:
            return ""
        return "\n".join(text.strip().splitlines()[-lines:])

    async def start(self) -> Target:
        self.dir.mkdir(parents=True, exist_ok=True)
        os.chmod(self.dir, 0o700)
        await self.prepare()
        for attempt in range(PORT_ATTEMPTS):
            self.port = free_port()
            await self.spawn(self.argv())
            try:
                await self.wait_ready()
                return self.target()
            except DatabaseError:
                await self.stop()
                if attempt + 1 < PORT_ATTEMPTS and "in use" in self.log_tail().lower():
                    continue
                raise
        raise AssertionError("unreachable")

    async def prepare(self) -> None:
        """One-time set-up of the directory."""

    def argv(self) -> list[str]:
        raise NotImplementedError

    def target(self) -> Target:
        raise NotImplementedError

    async def ready(self) -> bool:
        raise NotImplementedError

    async def spawn(self, argv: list[str]) -> None:
        with self.log_path.open("ab") as output:
            self.process = await asyncio.create_subprocess_exec(
                *argv, stdin=asyncio.subprocess.DEVNULL, stdout=output,
                stderr=asyncio.subprocess.STDOUT, cwd=self.dir, start_new_session=True,
                env={"PATH": "/usr/bin:/bin", "LC_ALL": "C"}, user=self.run_as,
            )  # fmt: skip

    async def run(self, argv: list[str]) -> None:
        """A set-up command, to completion, its output in the log."""
        with self.log_path.open("ab") as output:
            process = await asyncio.create_subprocess_exec(
                *argv, stdin=asyncio.subprocess.DEVNULL, stdout=output,
                stderr=asyncio.subprocess.STDOUT, cwd=self.dir, start_new_session=True,
                env={"PATH": "/usr/bin:/bin", "LC_ALL": "C"}, user=self.run_as,
            )  # fmt: skip
            code = await process.wait()
        if code != 0:
            raise DatabaseError(
                f"{Path(argv[0]).name} failed (exit code {code}) setting up a temporary "
                f"{self.name} server: {self.log_tail(5)}",
                code="scratch_failed",
            )

    async def wait_ready(self) -> None:
        deadline = asyncio.get_running_loop().time() + READY_TIMEOUT_S
        while True:
            process = self.process
            if process is None or process.returncode is not None:
                raise DatabaseError(
                    f"the temporary {self.name} server stopped while starting: {self.log_tail(8)}",
                    code="scratch_failed",
                )
            if await self.ready():
                return
            if asyncio.get_running_loop().time() > deadline:
                raise DatabaseError(
                    f"the temporary {self.name} server was not ready within "
                    f"{READY_TIMEOUT_S:g}s: {self.log_tail(8)}",
                    code="scratch_failed",
                )
            await asyncio.sleep(0.1)

    async def stop(self) -> None:
        process, self.process = self.process, None
        if process is None:
            return
        await stop_process_group(process, STOP_TIMEOUT_S)


class TemporaryRedis(TemporaryServer):
    """``redis-server`` without persistence; with ``rdb`` it loads that file first."""

    name = "redis"

    def __init__(self, directory: Path, rdb: Path | None = None) -> None:
        super().__init__(directory)
        self.binary = find(["redis-server"], "apt-get install redis-server", ["/usr/sbin"])
        self.rdb = rdb

    def argv(self) -> list[str]:
        config = self.dir / "redis.conf"
        config.touch(0o600)
        dbfile = self.rdb.name if self.rdb is not None else "dump.rdb"
        config.write_text(
            f"port {self.port}\nbind {HOST}\nprotected-mode yes\ndir {self.dir}\n"
            f'dbfilename {dbfile}\nsave ""\nappendonly no\ndaemonize no\nlogfile ""\n'
            f"databases 256\nsanitize-dump-payload yes\nrequirepass {self.password}\n"
        )
        return [self.binary, str(config)]

    def target(self) -> Target:
        return Target(engine="redis", host=HOST, port=self.port, database="0", username="",
                      password=self.password, tls_mode="disable",
                      name="temporary redis-server")  # fmt: skip

    async def ready(self) -> bool:
        import redis.asyncio as aioredis  # drivers load with their engine (adapters/__init__)
        import redis.exceptions
        from redis.asyncio.retry import Retry
        from redis.backoff import NoBackoff

        client = aioredis.Redis(host=HOST, port=self.port, password=self.password,
                                socket_connect_timeout=2, socket_timeout=5,
                                retry=Retry(NoBackoff(), 0))  # fmt: skip
        try:
            return bool(await client.ping())  # LOADING while the file is read
        except (redis.exceptions.RedisError, OSError):
            return False
        finally:
            await client.aclose()


class TemporaryPostgres(TemporaryServer):
    name = "postgresql"

    def __init__(self, directory: Path, min_major: int) -> None:
        super().__init__(directory)
        self.bindir = postgres_bindir(min_major)
        if os.geteuid() == 0:
            self.run_as = UNPRIVILEGED

    async def prepare(self) -> None:
        pwfile = self.dir / "pwfile"
        pwfile.touch(0o600)
        pwfile.write_text(self.password + "\n")
        if self.run_as is not None:
            user = pwd.getpwnam(self.run_as)
            for path in (self.dir, pwfile):
                os.chown(path, user.pw_uid, user.pw_gid)
        try:
            await self.run([str(self.bindir / "initdb"), f"--pgdata={self.dir / 'data'}",
                            "--username=postgres", "--auth=scram-sha-256",
                            f"--pwfile={pwfile}", "--encoding=UTF8", "--locale=C",
                            "--no-sync"])  # fmt: skip
        finally:
            pwfile.unlink(missing_ok=True)

    def argv(self) -> list[str]:
        settings = {
            "listen_addresses": HOST, "port": str(self.port),
            "unix_socket_directories": str(self.dir), "fsync": "off",
            "synchronous_commit": "off", "full_page_writes": "off", "max_connections": "20",
            "shared_buffers": "32MB", "log_min_messages": "warning",
        }  # fmt: skip
        argv = [str(self.bindir / "postgres"), "-D", str(self.dir / "data")]
        for key, value in settings.items():
            argv += ["-c", f"{key}={value}"]
        return argv

    def target(self) -> Target:
        return Target(engine="postgresql", host=HOST, port=self.port, database="postgres",
                      username="postgres", password=self.password, tls_mode="disable",
                      name="temporary PostgreSQL server")  # fmt: skip

    async def ready(self) -> bool:
        import asyncpg  # drivers load with their engine (adapters/__init__)

        try:
            conn = await asyncpg.connect(host=HOST, port=self.port, user="postgres",
                                         password=self.password, database="postgres",
                                         timeout=5, ssl=False)  # fmt: skip
        except Exception:  # not yet
            return False
        await conn.close()
        return True

    async def stop(self) -> None:
        process = self.process
        if process is not None and process.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGINT)  # fast shutdown
        await super().stop()


class TemporaryMariaDB(TemporaryServer):
    name = "mariadb"

    def __init__(self, directory: Path) -> None:
        super().__init__(directory)
        hint = "apt-get install mariadb-server"
        self.install_db = find(["mariadb-install-db", "mysql_install_db"], hint)
        self.server = find(["mariadbd", "mysqld"], hint, ["/usr/sbin"])

    def _common(self) -> list[str]:
        options = ["--no-defaults", f"--datadir={self.dir / 'data'}", "--skip-name-resolve",
                   "--innodb-buffer-pool-size=64M", "--innodb-log-file-size=16M"]  # fmt: skip
        if os.geteuid() == 0:
            options.append("--user=root")
        return options

    async def prepare(self) -> None:
        await self.run([self.install_db, *self._common(),
                        "--auth-root-authentication-method=normal", "--skip-test-db"])  # fmt: skip
        init = self.dir / "init.sql"
        init.touch(0o600)
        init.write_text(
            f"ALTER USER 'root'@'localhost' IDENTIFIED BY '{self.password}';\n"
            "CREATE USER IF NOT EXISTS 'root'@'127.0.0.1';\n"
            f"ALTER USER 'root'@'127.0.0.1' IDENTIFIED BY '{self.password}';\n"
            "GRANT ALL PRIVILEGES ON *.* TO 'root'@'127.0.0.1' WITH GRANT OPTION;\n"
        )

    def argv(self) -> list[str]:
        return [self.server, *self._common(), f"--port={self.port}", f"--bind-address={HOST}",
                f"--socket={self.dir / 'mysqld.sock'}", f"--pid-file={self.dir / 'mysqld.pid'}",
                f"--tmpdir={self.dir}", f"--init-file={self.dir / 'init.sql'}", "--skip-log-bin",
                "--innodb-flush-log-at-trx-commit=0", "--innodb-doublewrite=0",
                "--performance-schema=OFF", "--character-set-server=utf8mb4",
                "--collation-server=utf8mb4_unicode_ci", "--event-scheduler=OFF"]  # fmt: skip

    def target(self) -> Target:
        return Target(engine="mariadb", host=HOST, port=self.port, database="mysql",
                      username="root", password=self.password, tls_mode="disable",
                      name="temporary MariaDB server")  # fmt: skip

    async def ready(self) -> bool:
        import aiomysql  # drivers load with their engine (adapters/__init__)

        try:
            conn = await aiomysql.connect(host=HOST, port=self.port, user="root",
                                          password=self.password, connect_timeout=5)  # fmt: skip
        except Exception:  # not yet
            return False
        conn.close()
        return True


@contextlib.asynccontextmanager
async def running(server: TemporaryServer) -> AsyncIterator[Target]:
    """Start ``server``; stop it and remove its directory when the block ends."""
    try:
        yield await server.start()
    finally:
        await server.stop()
        shutil.rmtree(server.dir, ignore_errors=True)


def private_dir(prefix: str, base: Path | None = None) -> Path:
    """A fresh 0700 directory (in ``base`` or the system's temporary directory)."""
    if base is not None:
        base.mkdir(parents=True, exist_ok=True)
    return Path(tempfile.mkdtemp(prefix=prefix, dir=base))


def scratch_server(engine: str, directory: Path, server_version: str) -> TemporaryServer:
    """The temporary server a verification of a backup of ``engine`` restores into."""
    if engine == "postgresql":
        found = re.match(r"(\d+)", server_version)
        return TemporaryPostgres(directory, int(found.group(1)) if found else 0)
    if engine in ("mysql", "mariadb"):
        return TemporaryMariaDB(directory)
    if engine == "redis":
        return TemporaryRedis(directory)
    raise DatabaseError(
        f"this executor cannot start a temporary {engine} server; verify {engine} backups "
        "on the source server (BM_VERIFY_SCRATCH=source)",
        code="not_supported",
    )
