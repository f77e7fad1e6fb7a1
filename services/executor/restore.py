"""One restore run: check the artifact's sha256 against the backup's record (or an
upload's against the digest it was staged under) before the restore tool sees a
byte, recognise the format, prepare the target (create it, or refuse a non-empty one
in into-empty mode), then stream artifact -> decompress -> the tool's stdin, hashing
again on the way so a file changed in between is caught before the tool commits.
Only a tool that exited 0 without an error on stderr means success. Engines that do
not restore through a tool (Redis) get the same verified stream through the adapter's
``restore``.

Choice (issue 7): verify first by reading the artifact twice, rather than restoring
into a scratch database and swapping — it works the same for every engine and never
needs the space or rights for a second database.

A job with purpose ``verify`` runs as :class:`services.executor.verify.VerifyRun`,
which restores into a scratch database and compares counts."""

from __future__ import annotations

import asyncio
import contextlib
import functools
import hashlib
import logging
import shutil
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path

from nats.aio.msg import Msg
from sqlalchemy import select, update

from proto.base import Event
from proto.codec import decode
from proto.jobs import RestoreRequested
from proto.restore_events import (
    RestoreCompleted,
    RestoreFailed,
    RestoreProgressed,
    RestoreStarted,
)
from proto.values import RestorePurpose
from services.common.db.enums import BackupStatus, CopyStatus, RestoreStatus
from services.common.db.models import Backup, BackupCopy, Database, Destination, Restore
from services.common.destinations import driver_for
from services.common.destinations.base import DestinationError
from services.common.dump_formats import HEAD_BYTES, RAW_HEAD_BYTES, inflate_head, recognise
from services.common.errors import BackupManagerError
from services.common.redact import redact
from services.common.streams import publish_or_log
from services.common.uploads import BadUploadKey, parse_key, upload_path
from services.executor.adapters import adapter_for
from services.executor.adapters.base import Adapter, Target
from services.executor.compress import decompressor, detect
from services.executor.context import ExecutorContext
from services.executor.scratch import private_dir
from services.executor.tool import CHUNK_SIZE, LOG_TAIL_CHARS, Tool, close_early

log = logging.getLogger(__name__)
MAINTENANCE_DATABASE = {"postgresql": "postgres", "mysql": "", "mariadb": "", "mongodb": "admin"}
"""What the probe connects to before the restore: the target database may not exist."""


class RunFailed(BackupManagerError):
    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code


@dataclass(frozen=True)
class Source:
    """Bytes to restore: a stored artifact or a staged upload."""

    read: Callable[[], AsyncIterator[bytes]]
    size: int
    sha256: str
    what: str
    """``the stored artifact`` / ``the uploaded file``, for messages."""
    database: str = ""
    """The database the dump was taken from, when known."""


class RestoreHandler:
    """The JobWorker handler of ``bm.v1.restore.requested``."""

    def __init__(self, ctx: ExecutorContext) -> None:
        self.ctx = ctx

    async def __call__(self, msg: Msg) -> None:
        job = decode(RestoreRequested, msg.data)
        redelivered = msg.metadata.num_delivered > 1
        if job.purpose is RestorePurpose.VERIFY:
            from services.executor.verify import VerifyRun  # verify.py builds on this module

            await VerifyRun(self.ctx, job).execute(redelivered=redelivered)
        else:
            await RestoreRun(self.ctx, job).execute(redelivered=redelivered)


class RestoreRun:
    def __init__(self, ctx: ExecutorContext, job: RestoreRequested) -> None:
        self.ctx = ctx
        self.job = job
        self.tool: Tool | None = None
        self.target: Target | None = None
        self.bytes_in = 0
        self.started = time.monotonic()
        self.no_owner = job.no_owner
        self.workdir: Path | None = None
        self.notes = ""
        """The log of a restore without a tool (Redis), or of the steps around it."""

    async def execute(self, *, redelivered: bool = False) -> None:
        try:
            if not await self._claim(redelivered):
                return
            try:
                async with asyncio.timeout(self.job.timeout_s):
                    await self._run()
            except TimeoutError:
                await self._failed(
                    "timeout", f"the restore did not finish within {self.job.timeout_s}s"
                )
            except BackupManagerError as exc:
                await self._failed(getattr(exc, "code", "restore_failed"), str(exc))
            except Exception:
                log.exception("restore %s crashed", self.job.restore_id)
                await self._failed(
                    "internal_error", "unexpected error in the executor; see its log"
                )
        finally:
            await self._cleanup()

    async def _run(self) -> None:
        source = await self._source()
        target = self.target = await self._target()
        adapter = adapter_for(target.engine)
        await self._event(RestoreStarted(**self._ids(), mode=self.job.mode,
                                         executor_id=self.ctx.executor_id))  # fmt: skip
        head = await self._check(source)
        dump_format = recognise(target.engine, head, complete=len(head) < HEAD_BYTES)
        probe = await adapter.probe(
            _server_only(target), self.ctx.settings.connection_test_timeout_s
        )
        await adapter.prepare_restore(target, self.job.mode.value)
        if adapter.restores_itself:
            workdir = self.workdir = private_dir("bm-restore-", self.ctx.settings.data_dir / "tmp")
            self.notes += await adapter.restore(
                target, self._decompressed(source), mode=self.job.mode.value, workdir=workdir
            )
        else:
            database = source.database or adapter.dumped_database(head)
            await self._restore_with_tool(adapter, target, probe.server_version, source,
                                          dump_format, database)  # fmt: skip
        await self._after_restore(adapter, target)
        await self._succeeded()

    async def _check(self, source: Source) -> bytes:
        """First pass: size and sha256 of every byte against the record. Returns the
        decompressed start of the dump, for recognising its format."""
        digest = hashlib.sha256()
        size = 0
        raw_head = b""
        async for chunk in source.read():
            digest.update(chunk)
            size += len(chunk)
            if len(raw_head) < RAW_HEAD_BYTES:
                raw_head += chunk[: RAW_HEAD_BYTES - len(raw_head)]
        if (size, digest.hexdigest()) != (source.size, source.sha256):
            raise RunFailed("checksum_mismatch", f"{source.what} does not match the checksum "
                            "recorded for it (corrupted or changed); nothing was written to "
                            "the target")  # fmt: skip
        return inflate_head(raw_head)

    async def _restore_with_tool(self, adapter: Adapter, target: Target, server_version: str,
                                 source: Source, dump_format: str,
                                 database: str) -> None:  # fmt: skip
        async with adapter.restore_command(target, server_version, self.job.mode.value,
                                           no_owner=self.no_owner, dump_format=dump_format,
                                           source_database=database) as spec:  # fmt: skip
            tool = self.tool = Tool(spec.argv, spec.env)
            await tool.start(stdin=True)
            drain = asyncio.create_task(_discard(tool.stdout()), name="restore-stdout")
            try:
                stream = self._decompressed(source)
                await tool.feed(spec.transform(stream) if spec.transform else stream)
                code = await tool.wait()
            finally:
                await tool.kill()
                drain.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await drain
        stderr = self._log()
        if code != 0:
            last = stderr.strip().splitlines()[-1] if stderr.strip() else ""
            raise RunFailed("restore_failed", f"the restore tool exited with code {code}"
                            + (f": {last}" if last else ""))  # fmt: skip
        error = adapter.stderr_error(stderr)
        if error:
            raise RunFailed("restore_error", f"the restore tool reported an error: {error}")

    async def _decompressed(self, source: Source) -> AsyncIterator[bytes]:
        """Decompress while hashing again; fail (killing the tool before it sees the
        end of input) if the bytes differ from the ones verified a moment ago."""
        hasher = hashlib.sha256()
        inflate = None
        last_report = time.monotonic()
        chunks = source.read()
        try:
            async for chunk in chunks:
                hasher.update(chunk)
                if inflate is None:
                    inflate = decompressor(detect(chunk))
                self.bytes_in += len(chunk)
                out = await asyncio.to_thread(inflate.decompress, chunk)
                if out:
                    yield out
                if time.monotonic() - last_report >= self.ctx.settings.progress_interval_s:
                    last_report = time.monotonic()
                    await self._progress(source.size)
        finally:
            await close_early(chunks)  # when the tool stopped reading halfway
        if hasher.hexdigest() != source.sha256:
            raise RunFailed("checksum_mismatch", f"{source.what} changed while it was restored; "
                            "the restore was stopped before it finished")  # fmt: skip

    async def _after_restore(self, adapter: Adapter, target: Target) -> None:
        """What a subclass checks once the restore succeeded (verification)."""

    async def _cleanup(self) -> None:
        if self.workdir is not None:
            await asyncio.to_thread(shutil.rmtree, self.workdir, True)
        if self.job.upload_key is not None:
            with contextlib.suppress(BadUploadKey, OSError):
                upload_path(self.ctx.settings.data_dir, self.job.upload_key).unlink(missing_ok=True)

    # -- rows ------------------------------------------------------------------------

    async def _claim(self, redelivered: bool) -> bool:
        statuses = [RestoreStatus.QUEUED, *([RestoreStatus.RUNNING] if redelivered else [])]
        now = self.ctx.clock()
        async with self.ctx.sessions() as session, session.begin():
            result = await session.execute(
                update(Restore)
                .where(Restore.id == self.job.restore_id, Restore.status.in_(statuses))
                .values(status=RestoreStatus.RUNNING, started_at=now, heartbeat_at=now)
            )
        return bool(getattr(result, "rowcount", 0))

    async def _source(self) -> Source:
        if self.job.upload_key is not None:
            return self._upload(self.job.upload_key)
        async with self.ctx.sessions() as session:
            backup = await session.get(Backup, self.job.backup_id) if self.job.backup_id else None
            if backup is None or backup.status is not BackupStatus.SUCCEEDED:
                raise RunFailed("backup_missing", "the backup to restore is gone or not successful")
            query = (
                select(BackupCopy, Destination)
                .join(Destination, Destination.id == BackupCopy.destination_id)
                .where(BackupCopy.backup_id == backup.id, BackupCopy.status == CopyStatus.STORED)
            )
            if self.job.source_destination_id is not None:
                query = query.where(Destination.id == self.job.source_destination_id)
            rows = (await session.execute(query.order_by(Destination.created_at))).all()
            source_row = await session.get(Database, backup.database_id)
        manifest_db = (backup.manifest or {}).get("database") or {}
        database = str(manifest_db.get("database") or (source_row.database_name
                                                       if source_row else ""))  # fmt: skip
        for copy, destination in ((row[0], row[1]) for row in rows):
            try:
                driver = driver_for(destination)
                await driver.stat(copy.artifact_key)
            except DestinationError:
                continue
            return Source(functools.partial(driver.read, copy.artifact_key),
                          backup.bytes_out or 0, backup.sha256 or "", "the stored artifact",
                          database)  # fmt: skip
        raise RunFailed("artifact_missing", "no stored copy of this backup can be read")

    def _upload(self, key: str) -> Source:
        try:
            _, digest = parse_key(key)
            path = upload_path(self.ctx.settings.data_dir, key)
            size = path.stat().st_size
        except BadUploadKey:
            raise RunFailed("upload_missing", "the job names no valid upload") from None
        except OSError:
            raise RunFailed("upload_missing", "the uploaded file is gone (was the restore "
                            "already run, or does this executor not share the API's data "
                            "directory?)") from None  # fmt: skip
        return Source(lambda: _read_file(path), size, digest, "the uploaded file")

    async def _target(self) -> Target:
        async with self.ctx.sessions() as session:
            database = (
                await session.get(Database, self.job.target_database_id)
                if self.job.target_database_id else None
            )  # fmt: skip
        if database is None:
            raise RunFailed("target_missing", "the target database no longer exists")
        token = database.encrypted_password
        return Target(
            engine=database.engine.value, host=database.host, port=database.port,
            database=self.job.target_database_name or database.database_name,
            username=database.username,
            password=self.ctx.cipher.decrypt(token.decode()) if token else None,
            tls_mode=database.tls_mode.value, options={}, name=database.name,
        )  # fmt: skip

    async def _finish(self, status: RestoreStatus, **values: object) -> None:
        text = "\n".join(part for part in (self.notes.strip(), self._log()) if part)
        async with self.ctx.sessions() as session, session.begin():
            await session.execute(
                update(Restore).where(Restore.id == self.job.restore_id)
                .values(status=status, finished_at=self.ctx.clock(), bytes_in=self.bytes_in,
                        log_tail=text[-LOG_TAIL_CHARS:] or None, **values)
            )  # fmt: skip

    async def _succeeded(self) -> None:
        await self._finish(RestoreStatus.SUCCEEDED)
        log.info("restore %s succeeded into %s", self.job.restore_id,
                 self.target.database if self.target else "?")  # fmt: skip
        await self._event(RestoreCompleted(
            **self._ids(), target_database_name=self.target.database if self.target else None,
            bytes_restored=self.bytes_in, duration_s=time.monotonic() - self.started,
        ))  # fmt: skip

    async def _failed(self, code: str, message: str) -> None:
        message = redact(message, [self.target.password if self.target else None])
        log.warning("restore %s failed (%s): %s", self.job.restore_id, code, message)
        await self._finish(RestoreStatus.FAILED, error_code=code, error_message=message)
        await self._event(RestoreFailed(**self._ids(), code=code, message=message[:2000],
                                        duration_s=time.monotonic() - self.started))  # fmt: skip

    async def _progress(self, total: int) -> None:
        elapsed = time.monotonic() - self.started
        await self._event(RestoreProgressed(
            **self._ids(), bytes_in=self.bytes_in, bytes_out=self.bytes_in,
            rate_bps=self.bytes_in / elapsed if elapsed else 0.0, elapsed_s=elapsed,
            total_bytes=total or None,
        ))  # fmt: skip
        with contextlib.suppress(Exception):
            async with self.ctx.sessions() as session, session.begin():
                await session.execute(
                    update(Restore).where(Restore.id == self.job.restore_id)
                    .values(heartbeat_at=self.ctx.clock(), bytes_in=self.bytes_in)
                )  # fmt: skip

    def _ids(self) -> dict[str, object]:
        return {
            "restore_id": self.job.restore_id, "project_id": self.job.project_id,
            "purpose": self.job.purpose, "backup_id": self.job.backup_id,
            "target_database_id": self.job.target_database_id,
        }  # fmt: skip

    def _log(self) -> str:
        if self.tool is None:
            return ""
        return self.tool.log_tail(self.target.password if self.target else None)

    async def _event(self, event: Event) -> None:
        await publish_or_log(self.ctx.nc, event)


async def _read_file(path: Path) -> AsyncIterator[bytes]:
    with path.open("rb") as handle:
        while chunk := await asyncio.to_thread(handle.read, CHUNK_SIZE):
            yield chunk


async def _discard(chunks: AsyncIterator[bytes]) -> None:
    """Read a tool's stdout to its end (a restore tool's output is not needed, but an
    unread pipe would stop the tool once it is full)."""
    async for _ in chunks:
        pass


def _server_only(target: Target) -> Target:
    """The target as seen before the restore: its database may not exist yet, so
    the probe connects to the engine's maintenance database."""
    maintenance = MAINTENANCE_DATABASE.get(target.engine, target.database)
    return Target(engine=target.engine, host=target.host, port=target.port,
                  database=maintenance, username=target.username, password=target.password,
                  tls_mode=target.tls_mode, options={}, name=target.name)  # fmt: skip
