"""What every engine adapter provides, and the errors they translate to.

An adapter knows three things about its engine: how to test a connection with its
async driver (``probe``), how to run its dump tool without putting a secret in argv
or the environment (``dump_command``), and how to recognise a healthy dump (magic
bytes of the output, error lines on stderr)."""

from __future__ import annotations

import abc
import contextlib
import os
import tempfile
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

from services.common.errors import BackupManagerError


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
        self, target: Target, server_version: str, mode: str, *, no_owner: bool
    ) -> contextlib.AbstractAsyncContextManager[DumpSpec]:
        """The tool that reads the (decompressed) dump on its stdin."""
        raise DatabaseError(f"restoring {self.engine} is not supported yet", code="not_supported")

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
        head += chunk

    async def replay() -> AsyncIterator[bytes]:
        for chunk in pending:
            yield chunk
        async for chunk in iterator:
            yield chunk

    return head[:count], replay()
