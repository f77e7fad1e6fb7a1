"""A directory on a local (or mounted) filesystem. Writes go to a hidden temporary
file in the target directory, are fsynced, renamed into place and the directory is
fsynced, so a crash leaves either nothing or the whole artifact (plus a temporary
file the reconciliation sweep removes)."""

from __future__ import annotations

import asyncio
import errno
import hashlib
import os
import secrets
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path
from typing import BinaryIO

from services.common.destinations.base import (
    ArtifactMissing,
    DestinationError,
    Driver,
    ObjectInfo,
    Writer,
    check_key,
)

TEMP_PREFIX = ".partial-"


def _explain(exc: OSError, path: Path) -> DestinationError:
    if exc.errno == errno.ENOSPC:
        return DestinationError(f"destination full: no space left on the device of {path.parent}")
    if exc.errno in {errno.EACCES, errno.EPERM, errno.EROFS}:
        return DestinationError(f"destination not writable: {path.parent} ({exc.strerror})")
    return DestinationError(f"destination error at {path}: {exc.strerror or exc}")


class LocalWriter(Writer):
    def __init__(self, final: Path, handle: BinaryIO, temp: Path) -> None:
        self._final = final
        self._handle = handle
        self._temp = temp
        self._done = False

    async def write(self, chunk: bytes) -> None:
        try:
            await asyncio.to_thread(self._handle.write, chunk)
        except OSError as exc:
            raise _explain(exc, self._final) from None

    async def commit(self) -> None:
        def finish() -> None:
            self._handle.flush()
            os.fsync(self._handle.fileno())
            self._handle.close()
            os.rename(self._temp, self._final)
            directory = os.open(self._final.parent, os.O_RDONLY)
            try:
                os.fsync(directory)
            finally:
                os.close(directory)

        try:
            await asyncio.to_thread(finish)
        except OSError as exc:
            await self.abort()
            raise _explain(exc, self._final) from None
        self._done = True

    async def abort(self) -> None:
        if self._done:
            return
        self._done = True

        def discard() -> None:
            if not self._handle.closed:
                self._handle.close()
            self._temp.unlink(missing_ok=True)

        await asyncio.to_thread(discard)


class LocalDriver(Driver):
    def __init__(self, root: Path) -> None:
        self.root = root

    def path_of(self, key: str) -> Path:
        return self.root / check_key(key)

    async def open_writer(self, key: str) -> Writer:
        final = self.path_of(key)
        temp = final.with_name(f"{TEMP_PREFIX}{final.name}.{secrets.token_hex(4)}")

        def open_temp() -> BinaryIO:
            final.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
            fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            return os.fdopen(fd, "wb")

        try:
            handle = await asyncio.to_thread(open_temp)
        except OSError as exc:
            raise _explain(exc, final) from None
        return LocalWriter(final, handle, temp)

    async def read(
        self, key: str, *, start: int = 0, end: int | None = None, chunk_size: int = 1 << 20
    ) -> AsyncIterator[bytes]:
        path = self.path_of(key)
        try:
            handle = await asyncio.to_thread(path.open, "rb")
        except FileNotFoundError:
            raise ArtifactMissing(f"artifact {key} is missing from {self.root}") from None
        except OSError as exc:
            raise _explain(exc, path) from None
        try:
            await asyncio.to_thread(handle.seek, start)
            remaining = None if end is None else max(0, end - start)
            while remaining is None or remaining > 0:
                size = chunk_size if remaining is None else min(chunk_size, remaining)
                chunk = await asyncio.to_thread(handle.read, size)
                if not chunk:
                    break
                if remaining is not None:
                    remaining -= len(chunk)
                yield chunk
        finally:
            handle.close()

    async def sha256(self, key: str) -> tuple[int, str]:
        """Hashed in one worker thread (not one round trip per chunk read)."""
        path = self.path_of(key)

        def digest() -> tuple[int, str]:
            with path.open("rb") as handle:
                hashed = hashlib.file_digest(handle, "sha256")
                return handle.tell(), hashed.hexdigest()

        try:
            return await asyncio.to_thread(digest)
        except FileNotFoundError:
            raise ArtifactMissing(f"artifact {key} is missing from {self.root}") from None
        except OSError as exc:
            raise _explain(exc, path) from None

    async def stat(self, key: str) -> ObjectInfo:
        path = self.path_of(key)
        try:
            st = await asyncio.to_thread(path.stat)
        except FileNotFoundError:
            raise ArtifactMissing(f"artifact {key} is missing from {self.root}") from None
        return ObjectInfo(key, st.st_size, datetime.fromtimestamp(st.st_mtime, UTC))

    async def discard_partials(self, key: str) -> int:
        final = self.path_of(key)

        def discard() -> int:
            found = list(final.parent.glob(f"{TEMP_PREFIX}{final.name}.*"))
            for path in found:
                path.unlink(missing_ok=True)
            return len(found)

        return await asyncio.to_thread(discard)

    async def delete(self, key: str) -> bool:
        path = self.path_of(key)
        try:
            await asyncio.to_thread(path.unlink)
        except FileNotFoundError:
            return False
        except OSError as exc:
            raise _explain(exc, path) from None
        return True

    async def list(self, prefix: str = "") -> AsyncIterator[ObjectInfo]:
        base = self.root / prefix if prefix else self.root

        def walk() -> list[ObjectInfo]:
            found: list[ObjectInfo] = []
            for directory, _, files in os.walk(base):
                for name in files:
                    path = Path(directory) / name
                    try:
                        st = path.stat()
                    except FileNotFoundError:
                        continue
                    key = path.relative_to(self.root).as_posix()
                    found.append(
                        ObjectInfo(key, st.st_size, datetime.fromtimestamp(st.st_mtime, UTC))
                    )
            return sorted(found, key=lambda info: info.key)

        for info in await asyncio.to_thread(walk):
            yield info
