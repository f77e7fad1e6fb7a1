"""A directory on a local (or mounted) filesystem. Writes go to a hidden temporary
file in the target directory, are fsynced, renamed into place and the directory is
fsynced, so a crash leaves either nothing or the whole artifact (plus a temporary
file the reconciliation sweep removes).

Each write is read back at once through a second descriptor of the file and
compared with the bytes written (:meth:`LocalWriter.read_back`): once the last
byte is written, the read-back check of a backup has only the file's size and
identity under its final name left to confirm."""

from __future__ import annotations

import asyncio
import contextlib
import errno
import hashlib
import os
import secrets
import threading
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path

from services.common.destinations.base import (
    ArtifactMissing,
    DestinationError,
    Driver,
    ObjectInfo,
    ReadBack,
    Writer,
    check_key,
)

TEMP_PREFIX = ".partial-"
READ_BACK_BLOCK = 64 << 10  # what a writer holds to read back: one block, reused
WRITE_BACK_STEP = 8 << 20  # each time this much more is read back: write it out


def _explain(exc: OSError, path: Path) -> DestinationError:
    if exc.errno == errno.ENOSPC:
        return DestinationError(f"destination full: no space left on the device of {path.parent}")
    if exc.errno in {errno.EACCES, errno.EPERM, errno.EROFS}:
        return DestinationError(f"destination not writable: {path.parent} ({exc.strerror})")
    return DestinationError(f"destination error at {path}: {exc.strerror or exc}")


def _read_at(fd: int, buffer: memoryview, offset: int) -> int:
    """One read of the read-back (a seam for tests that change the file under it)."""
    return os.preadv(fd, [buffer], offset)


def _write_back(fd: int, upto: int) -> None:
    """Start writing ``[0, upto)`` of the file out and drop what is clean already
    (written out since the call before) from the page cache; a hint that does not
    wait for the disk (``POSIX_FADV_DONTNEED``)."""
    with contextlib.suppress(OSError):
        os.posix_fadvise(fd, 0, upto, os.POSIX_FADV_DONTNEED)


class LocalWriter(Writer):
    """Writes with ``os.write`` in a worker thread, then reads the same bytes back
    through a descriptor of its own (its own open file description, as any reader
    of the file would) and compares them, one ``READ_BACK_BLOCK`` at a time: the
    only memory it adds, whatever the size of the file. Comparing costs a small
    fraction of hashing the bytes again (``memcmp`` against SHA-256), and the bytes
    compared are the ones the pipeline hashed, so equal bytes mean an equal digest.

    Every ``WRITE_BACK_STEP`` it asks the kernel to write out what it has read back
    (and to drop it from the page cache once written): the commit's fsync then has
    only the last few MiB to wait for, and the artifact does not pile up in the
    page cache at the expense of the database's own pages.

    One lock covers the descriptors: a write or commit left running in its thread
    by a cancelled run never meets a closed descriptor, and what it stored is
    removed by the :meth:`abort` that follows."""

    def __init__(
        self, final: Path, temp: Path, fd: int, read_fd: int, inode: tuple[int, int]
    ) -> None:
        self._final = final
        self._temp = temp
        self._fd = fd
        self._read_fd = read_fd
        self._inode = inode  # (device, inode) of the file written
        self._lock = threading.Lock()
        self._size = 0  # bytes written, each read back
        self._same = True  # and found equal to what was written
        self._advised = 0
        self._block = bytearray()  # grown to READ_BACK_BLOCK at most, then reused
        self._renamed = False
        self._committed = False
        self._aborted = False

    async def write(self, chunk: bytes) -> None:
        try:
            await asyncio.to_thread(self._write, chunk)
        except OSError as exc:
            raise _explain(exc, self._final) from None

    def _write(self, chunk: bytes) -> None:
        with self._lock:
            if self._fd < 0:
                raise DestinationError(f"the write of {self._final} is over")
            view = memoryview(chunk)
            rest = view
            while rest:
                rest = rest[os.write(self._fd, rest) :]
            if self._same:
                self._same = self._reads_back_as(view, self._size)
            self._size += len(view)
            if self._size - self._advised >= WRITE_BACK_STEP:
                _write_back(self._read_fd, self._size)
                self._advised = self._size

    def _reads_back_as(self, written: memoryview, offset: int) -> bool:
        if len(self._block) < min(READ_BACK_BLOCK, len(written)):
            self._block = bytearray(min(READ_BACK_BLOCK, len(written)))
        block = self._block
        into = memoryview(block)
        for start in range(0, len(written), READ_BACK_BLOCK):
            piece = written[start : start + READ_BACK_BLOCK]
            got = _read_at(self._read_fd, into[: len(piece)], offset + start)
            # (short: the file ends early, cut behind the writer)
            if got != len(piece) or not block.startswith(piece):
                return False
        return True

    async def commit(self) -> None:
        def finish() -> None:
            with self._lock:
                os.fsync(self._fd)
                self._close()
                os.rename(self._temp, self._final)
                self._renamed = True
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
        self._committed = True

    async def read_back(self) -> ReadBack | None:
        """Every byte was read back as it was written; what is left is the file
        under its final name: the one written (else None: the caller reads the
        artifact back whole), and its size now."""
        if not self._committed:
            raise DestinationError(f"{self._final} is not stored yet: nothing to read back")
        try:
            st = await asyncio.to_thread(os.stat, self._final)
        except FileNotFoundError:
            raise ArtifactMissing(f"artifact {self._final} vanished after it was stored") from None
        except OSError as exc:
            raise _explain(exc, self._final) from None
        if (st.st_dev, st.st_ino) != self._inode:
            return None
        return ReadBack(size=st.st_size, same=self._same and st.st_size == self._size)

    async def abort(self) -> None:
        if self._aborted:
            return
        self._aborted = True

        def discard() -> None:
            with self._lock:  # (after a write or commit still running in its thread)
                self._close()
                if not self._committed:  # nor a commit that failed or was cancelled
                    self._temp.unlink(missing_ok=True)
                    if self._renamed:
                        self._final.unlink(missing_ok=True)

        await asyncio.to_thread(discard)

    def _close(self) -> None:
        for fd in (self._fd, self._read_fd):
            if fd >= 0:
                os.close(fd)
        self._fd = self._read_fd = -1


class LocalDriver(Driver):
    def __init__(self, root: Path) -> None:
        self.root = root

    def path_of(self, key: str) -> Path:
        return self.root / check_key(key)

    async def open_writer(self, key: str) -> Writer:
        final = self.path_of(key)
        temp = final.with_name(f"{TEMP_PREFIX}{final.name}.{secrets.token_hex(4)}")

        def open_temp() -> LocalWriter:
            final.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
            fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            try:
                st = os.fstat(fd)
                read_fd = os.open(temp, os.O_RDONLY)
            except BaseException:
                os.close(fd)
                temp.unlink(missing_ok=True)
                raise
            return LocalWriter(final, temp, fd, read_fd, (st.st_dev, st.st_ino))

        try:
            return await asyncio.to_thread(open_temp)
        except OSError as exc:
            raise _explain(exc, final) from None

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
