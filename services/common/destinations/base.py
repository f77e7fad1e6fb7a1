"""The driver interface. Keys are relative, ``/``-separated, made by us (never from
user input); a driver refuses any key that would leave its root."""

from __future__ import annotations

import abc
import hashlib
import re
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import datetime

from services.common.errors import BackupManagerError

_KEY = re.compile(r"^(?!/)(?!.*//)[A-Za-z0-9._/-]+$")


class DestinationError(BackupManagerError):
    code = "destination_error"


class ArtifactMissing(DestinationError):
    code = "artifact_missing"


def check_key(key: str) -> str:
    if not _KEY.fullmatch(key) or any(part in {"", ".", ".."} for part in key.split("/")):
        raise DestinationError(f"invalid artifact key {key!r}")
    return key


@dataclass(frozen=True)
class ObjectInfo:
    key: str
    size: int
    modified_at: datetime


@dataclass(frozen=True)
class ReadBack:
    """A writer's own check of what it stored: every byte read back from the
    destination and compared with the byte given to ``write`` at that offset."""

    size: int  # bytes stored under the key now
    same: bool  # each equal to the byte written there, and as many as were written


class Writer(abc.ABC):
    """An artifact being written: invisible under its key until ``commit``."""

    @abc.abstractmethod
    async def write(self, chunk: bytes) -> None: ...

    @abc.abstractmethod
    async def commit(self) -> None:
        """Make the bytes durable and visible under the key (atomic)."""

    @abc.abstractmethod
    async def abort(self) -> None:
        """Throw away what was written; safe to call more than once. After
        ``commit`` it only lets go of what the writer holds (the stored artifact
        stays: ``Driver.delete`` removes it)."""

    async def read_back(self) -> ReadBack | None:
        """After ``commit``: the stored artifact as the writer read it back from the
        destination while it wrote (the local driver does: ``LocalWriter``). None
        when this writer cannot read its writes back: the caller then reads the
        artifact back whole with ``Driver.sha256`` and compares digests."""
        return None


class Driver(abc.ABC):
    @abc.abstractmethod
    async def open_writer(self, key: str) -> Writer: ...

    @abc.abstractmethod
    def read(
        self, key: str, *, start: int = 0, end: int | None = None, chunk_size: int = 1 << 20
    ) -> AsyncIterator[bytes]:
        """The bytes ``[start, end)`` of an artifact, in chunks."""

    @abc.abstractmethod
    async def stat(self, key: str) -> ObjectInfo: ...

    @abc.abstractmethod
    async def discard_partials(self, key: str) -> int:
        """Remove unfinished writes of ``key`` left by a crashed writer; returns how many."""

    @abc.abstractmethod
    async def delete(self, key: str) -> bool:
        """Remove the artifact; False if it was not there."""

    @abc.abstractmethod
    def list(self, prefix: str = "") -> AsyncIterator[ObjectInfo]:
        """Every stored object under ``prefix`` (temporary files included: the
        reconciliation sweep needs to see crash leftovers)."""

    async def write_bytes(self, key: str, data: bytes) -> None:
        writer = await self.open_writer(key)
        try:
            await writer.write(data)
            await writer.commit()
        except BaseException:
            await writer.abort()
            raise

    async def read_bytes(self, key: str) -> bytes:
        return b"".join([chunk async for chunk in self.read(key)])

    async def sha256(self, key: str) -> tuple[int, str]:
        """Size and sha256 (hex) of a stored artifact, read back from the destination
        (a driver that can hash where the bytes are overrides this)."""
        digest = hashlib.sha256()
        size = 0
        async for chunk in self.read(key):
            size += len(chunk)
            digest.update(chunk)
        return size, digest.hexdigest()
