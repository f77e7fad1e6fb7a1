"""A directory on a local (or mounted) filesystem. Writes go to a hidden temporary
file in the target directory, are fsynced, renamed into place and the directory is
fsynced, so a crash leaves either nothing or the whole artifact (plus a temporary
file the reconciliation sweep removes).

While a file is written, a thread of its writer reads it back through a descriptor
of its own and hashes it (:class:`_ReadBack`), so that the read-back check of a
backup has only the tail left to hash once the last byte is written."""

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
    Writer,
    check_key,
)

TEMP_PREFIX = ".partial-"
READ_BACK_BLOCK = 256 << 10  # what the read-back holds: one block, reused
WRITE_BACK_STEP = 8 << 20  # read back this much more: have the kernel write it out


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
    """Start writing out ``[0, upto)`` of the file and drop what is clean already
    (pages written out since the call before) from the page cache; only a hint."""
    with contextlib.suppress(OSError):
        os.posix_fadvise(fd, 0, upto, os.POSIX_FADV_DONTNEED)


class _ReadBack:
    """Reads a file back, while it is written, through a descriptor of its own, and
    hashes what it reads: in a thread of its own, never past the bytes written so
    far (:meth:`wrote`) until the writes are over (:meth:`finish`), then to the end
    of the file. It holds one block of memory whatever the size of the file. A file
    that ends before the bytes written (truncated behind the writer) stops it; what
    it read is what the check compares.

    Every ``WRITE_BACK_STEP`` read back, it asks the kernel to write out what it has
    read and to drop it from the page cache (``POSIX_FADV_DONTNEED``: a hint that
    starts the writeback without waiting for it): the commit's fsync then has only
    the last few MiB left to wait for (0.1 s less for a 300 MiB artifact, measured),
    and a backup does not push the database's own pages out of the cache."""

    def __init__(self, path: Path) -> None:
        self._fd = os.open(path, os.O_RDONLY)
        try:
            st = os.fstat(self._fd)
            self.inode = (st.st_dev, st.st_ino)
            self.size = 0  # bytes read back and hashed so far
            self.digest = hashlib.sha256()
            self.error: OSError | None = None
            self._written = 0
            self._last = False
            self._stop = False
            self._changed = threading.Condition()
            self._thread = threading.Thread(target=self._run, name="read-back", daemon=True)
            self._thread.start()
        except BaseException:
            os.close(self._fd)
            raise

    def wrote(self, size: int) -> None:
        with self._changed:
            self._written += size
            self._changed.notify()

    def finish(self) -> None:
        """No more writes: read on to the end of the file, then end."""
        with self._changed:
            self._last = True
            self._changed.notify()

    def stop(self) -> None:
        with self._changed:
            self._stop = True
            self._changed.notify()

    def join(self) -> None:
        self._thread.join()

    def _run(self) -> None:
        block = memoryview(bytearray(READ_BACK_BLOCK))
        advised = 0
        try:
            while True:
                with self._changed:
                    while not (self._stop or self._last or self._written > self.size):
                        self._changed.wait()
                    if self._stop:
                        return
                    end = None if self._last else self._written
                while end is None or self.size < end:
                    want = READ_BACK_BLOCK if end is None else min(READ_BACK_BLOCK, end - self.size)
                    got = _read_at(self._fd, block[:want], self.size)
                    if not got or self._stop:
                        return  # the end of the file (before ``end``: cut behind us)
                    self.digest.update(block[:got])
                    self.size += got
                    if self.size - advised >= WRITE_BACK_STEP:
                        _write_back(self._fd, self.size)
                        advised = self.size
        except OSError as exc:
            self.error = exc
        finally:
            os.close(self._fd)


class LocalWriter(Writer):
    """Writes with ``os.write`` (every byte in the file when :meth:`write` returns,
    so the read-back may follow it) under a lock that :meth:`abort` takes too: a
    write or commit left running in its thread by a cancelled run never meets a
    closed descriptor, and what it stored is removed."""

    def __init__(self, final: Path, temp: Path, fd: int, read_back: _ReadBack) -> None:
        self._final = final
        self._temp = temp
        self._fd = fd
        self._read_back = read_back
        self._lock = threading.Lock()
        self._renamed = False
        self._committed = False
        self._aborted = False

    @property
    def read_back_bytes(self) -> int:
        """How much of what was written has been read back and hashed so far."""
        return self._read_back.size

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
            while view:
                view = view[os.write(self._fd, view) :]
            self._read_back.wrote(len(chunk))

    async def commit(self) -> None:
        def finish() -> None:
            with self._lock:
                self._read_back.finish()  # the tail is read back while the data syncs
                os.fsync(self._fd)
                os.close(self._fd)
                self._fd = -1
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

    async def read_back(self) -> tuple[int, str] | None:
        """Once the read-back has hashed the tail: its digest, and the size of the
        file under its final name — which must be the file that was read back (else
        None: the caller reads the artifact back whole)."""
        if not self._committed:
            raise DestinationError(f"{self._final} is not stored yet: nothing to read back")

        def result() -> tuple[int, str] | None:
            self._read_back.join()
            if self._read_back.error is not None:
                raise self._read_back.error
            st = os.stat(self._final)
            if (st.st_dev, st.st_ino) != self._read_back.inode:
                return None
            return st.st_size, self._read_back.digest.hexdigest()

        try:
            return await asyncio.to_thread(result)
        except FileNotFoundError:
            raise ArtifactMissing(f"artifact {self._final} vanished after it was stored") from None
        except OSError as exc:
            raise _explain(exc, self._final) from None

    async def abort(self) -> None:
        if self._aborted:
            return
        self._aborted = True

        def discard() -> None:
            self._read_back.stop()
            self._read_back.join()
            with self._lock:  # (after a commit still running in its thread)
                if self._fd >= 0:
                    os.close(self._fd)
                    self._fd = -1
                if not self._committed:  # nor a commit that failed or was cancelled
                    self._temp.unlink(missing_ok=True)
                    if self._renamed:
                        self._final.unlink(missing_ok=True)

        await asyncio.to_thread(discard)


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
                read_back = _ReadBack(temp)
            except BaseException:
                os.close(fd)
                temp.unlink(missing_ok=True)
                raise
            return LocalWriter(final, temp, fd, read_back)

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
