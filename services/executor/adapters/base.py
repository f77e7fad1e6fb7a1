"""What every engine adapter provides, and the errors they translate to.

An adapter knows its engine: how to test a connection with its async driver
(``probe``), how to run its dump tool without putting a secret in argv or the
environment (``dump_command``), how to recognise a healthy dump (magic bytes of the
output, error lines on stderr), how to restore one (``prepare_restore`` and either
``restore_command`` — a tool reading the dump on stdin — or ``restore`` for engines
that load it another way), and how to count what a database holds
(``count_objects``: rows per table, documents per collection, keys per db), which
backups record in their manifest and verification compares after a test restore."""

from __future__ import annotations

import abc
import contextlib
import os
import shutil
import subprocess
import tempfile
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

from services.common.errors import BackupManagerError
from services.executor.tool import ToolMissing


@dataclass(frozen=True)
class Target:
    """A database to reach, with its decrypted password (never logged: repr hides it)."""

    engine: str
    host: str
    port: int
    database: str
    username: str
    password: str | None = field(repr=False)
    tls_mode: str = "prefer"
    options: dict[str, Any] = field(default_factory=dict)
    name: str = ""

    @property
    def where(self) -> str:
        label = f"{self.name} " if self.name else ""
        return f"{label}at {self.host}:{self.port}"


@dataclass(frozen=True)
class ProbeResult:
    server_version: str
    latency_ms: float
    database_size_bytes: int | None = None


@dataclass(frozen=True)
class DumpSpec:
    argv: list[str]
    env: dict[str, str]
    format: str
    extension: str
    tool_version: str = ""
    stdin: bytes | None = None
    """Bytes written to the tool's stdin before closing it (e.g. a password prompt)."""
    transform: Callable[[AsyncIterator[bytes]], AsyncIterator[bytes]] | None = field(
        default=None, compare=False
    )
    """Restore tools: how the dump stream is to be changed on its way to stdin."""
    counter: Callable[[], Awaitable[Counts]] | None = field(default=None, compare=False)
    """Counts what the dump holds (rows, documents, keys); called once the dump tool
    has finished, still inside the ``dump_command`` block (PostgreSQL counts in the
    snapshot the dump was taken from, which the block keeps open)."""
    count_while_dumping: bool = False
    """The counter sees what the dump sees whenever it runs (PostgreSQL's exported
    snapshot), so it runs beside the dump tool instead of after it."""


@dataclass(frozen=True)
class Counts:
    """What a database holds, per object: rows per table (``schema.table`` or
    ``table``), documents per collection, keys per logical database (``db0``).

    ``volatile`` (Redis) is how many of an object's keys carry a TTL: they may be gone
    by the time a backup is restored, so a restored count may be lower by that much.
    ``filtered`` says the backup was limited by dump options, so objects the dump
    left out are expected to be missing from a restore."""

    kind: str
    objects: dict[str, int]
    volatile: dict[str, int] = field(default_factory=dict)
    filtered: bool = False
    how: str = ""

    def to_json(self) -> dict[str, Any]:
        document: dict[str, Any] = {
            "kind": self.kind, "objects": dict(sorted(self.objects.items())),
            "filtered": self.filtered, "how": self.how,
        }  # fmt: skip
        if self.volatile:
            document["volatile"] = dict(sorted(self.volatile.items()))
        return document

    @classmethod
    def from_json(cls, document: dict[str, Any]) -> Counts:
        objects = document.get("objects")
        if not isinstance(objects, dict):
            raise ValueError("counts without objects")
        return cls(
            kind=str(document.get("kind", "")),
            objects={str(k): int(v) for k, v in objects.items()},
            volatile={str(k): int(v) for k, v in (document.get("volatile") or {}).items()},
            filtered=bool(document.get("filtered", False)),
            how=str(document.get("how", "")),
        )


class DatabaseError(BackupManagerError):
    """A database problem a person can act on; ``code`` is stable for clients."""

    code = "database_error"

    def __init__(self, message: str, *, code: str | None = None) -> None:
        super().__init__(message)
        if code is not None:
            self.code = code


def target_not_empty(target: Target) -> DatabaseError:
    return DatabaseError(
        f"Database {target.database!r} on {target.where} is not empty: restore in "
        "'replace' mode, or choose a new database name",
        code="target_not_empty",
    )


def unreachable(target: Target, why: str) -> DatabaseError:
    return DatabaseError(
        f"Cannot reach {target.where}: {why} — check host, port and firewall",
        code="unreachable",
    )


def refused(target: Target) -> DatabaseError:
    return DatabaseError(
        f"Cannot reach {target.where}: connection refused — is the server running on that port?",
        code="connection_refused",
    )


def timed_out(target: Target, seconds: float) -> DatabaseError:
    return DatabaseError(
        f"No answer from {target.where} within {seconds:g}s — check host, port and firewall",
        code="timeout",
    )


def auth_failed(target: Target) -> DatabaseError:
    return DatabaseError(
        f"Authentication failed for user {target.username!r} on {target.where} — "
        "check the username and password",
        code="authentication_failed",
    )


def database_missing(target: Target) -> DatabaseError:
    return DatabaseError(
        f"Database {target.database!r} does not exist on {target.where}",
        code="database_missing",
    )


def tls_problem(target: Target, why: str) -> DatabaseError:
    return DatabaseError(f"TLS problem with {target.where}: {why}", code="tls_error")


def version_of(path: str) -> str | None:
    """What ``path --version`` prints (stripped), or None when it cannot run."""
    try:
        return subprocess.run(
            [path, "--version"], capture_output=True, text=True, timeout=10, check=True
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return None


def require_tool(name: str, missing: str) -> str:
    """The path of ``name`` on PATH; ToolMissing with ``missing`` as its message."""
    path = shutil.which(name)
    if path is None:
        raise ToolMissing(missing)
    return path


@contextlib.contextmanager
def secret_file(content: str, suffix: str = "") -> Iterator[Path]:
    """A 0600 file holding ``content``, deleted when the block ends."""
    fd, name = tempfile.mkstemp(prefix="bm-", suffix=suffix)
    path = Path(name)
    try:
        os.fchmod(fd, 0o600)
        with os.fdopen(fd, "w") as handle:
            handle.write(content)
        yield path
    finally:
        path.unlink(missing_ok=True)


class Adapter(abc.ABC):
    engine: ClassVar[str]
    default_port: ClassVar[int]
    magic: ClassVar[tuple[bytes, ...]]
    """The dump starts with one of these (checked before we call it a backup)."""
    restores_itself: ClassVar[bool] = False
    """True: ``restore`` does the whole restore (no tool reads the dump on stdin)."""

    @abc.abstractmethod
    async def probe(self, target: Target, timeout_s: float) -> ProbeResult: ...

    @abc.abstractmethod
    def dump_command(
        self, target: Target, server_version: str
    ) -> contextlib.AbstractAsyncContextManager[DumpSpec]:
        """The tool to run, with any secret files it needs alive inside the block."""

    async def prepare_restore(self, target: Target, mode: str) -> None:
        """Make the target ready: create the database where the engine allows, and
        refuse a target that is not empty when ``mode`` is ``into-empty``."""
        raise DatabaseError(f"restoring {self.engine} is not supported yet", code="not_supported")

    def restore_command(
        self,
        target: Target,
        server_version: str,
        mode: str,
        *,
        no_owner: bool,
        dump_format: str = "",
        source_database: str = "",
    ) -> contextlib.AbstractAsyncContextManager[DumpSpec]:
        """The tool that reads the (decompressed) dump on its stdin; ``dump_format``
        is what :mod:`services.common.dump_formats` recognised (``""``: the engine's
        own backup format); ``source_database`` the database the dump was taken from,
        when known (MongoDB archives name it and are renamed on the way in)."""
        raise DatabaseError(f"restoring {self.engine} is not supported yet", code="not_supported")

    def dumped_database(self, head: bytes) -> str:
        """The database a dump says it was taken from (``""``: it does not say)."""
        return ""

    async def restore(
        self, target: Target, dump: AsyncIterator[bytes], *, mode: str, workdir: Path
    ) -> str:
        """For engines with ``restores_itself``: restore the (decompressed) ``dump``
        into ``target`` and return a short log. ``dump`` raises at its end if the bytes
        were not the verified ones: nothing may reach the target before it ended.
        ``workdir`` is a private temporary directory, removed afterwards."""
        raise DatabaseError(f"restoring {self.engine} is not supported yet", code="not_supported")

    async def drop_database(self, target: Target) -> None:
        """Drop ``target.database`` (a verification's scratch database on a server)."""
        raise DatabaseError(f"dropping a {self.engine} database is not supported",
                            code="not_supported")  # fmt: skip

    async def count_objects(self, target: Target) -> Counts:
        """Count what ``target`` holds now (after a restore, for verification)."""
        raise DatabaseError(
            f"counting the objects of a {self.engine} database is not supported",
            code="not_supported",
        )

    def stderr_error(self, stderr: str) -> str | None:
        """An error line in the tool's stderr even though it exited 0, if any."""
        for line in stderr.splitlines():
            lowered = line.lower()
            if "error" in lowered or "fatal" in lowered:
                return line.strip()
        return None


async def first_bytes(
    chunks: AsyncIterator[bytes], count: int
) -> tuple[bytes, AsyncIterator[bytes]]:
    """Peek at the first ``count`` bytes of a stream without losing them."""
    head = b""
    iterator = aiter(chunks)
    pending: list[bytes] = []
    while len(head) < count:
        try:
            chunk = await anext(iterator)
        except StopAsyncIteration:
            break
        pending.append(chunk)
        head += chunk[: count - len(head)]

    async def replay() -> AsyncIterator[bytes]:
        while pending:
            yield pending.pop(0)  # not held on to for the rest of the stream
        async for chunk in iterator:
            yield chunk

    return head, replay()
