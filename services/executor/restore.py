"""One restore run: check the artifact's sha256 against the backup's record before
the restore tool sees a byte, prepare the target (create it, or refuse a non-empty
one in into-empty mode), then stream artifact -> decompress -> the tool's stdin,
hashing again on the way so a file changed in between is caught before the tool
commits. Only a tool that exited 0 without an error on stderr means success.

Choice (issue 7): verify first by reading the artifact twice, rather than restoring
into a scratch database and swapping — it works the same for every engine and never
needs the space or rights for a second database."""

from __future__ import annotations

import asyncio
import hashlib
import logging
import time
from collections.abc import AsyncIterator

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
from services.common.db.enums import BackupStatus, CopyStatus, RestoreStatus
from services.common.db.models import Backup, BackupCopy, Database, Destination, Restore
from services.common.destinations import driver_for
from services.common.destinations.base import DestinationError, Driver
from services.common.errors import BackupManagerError
from services.common.redact import redact
from services.common.streams import publish
from services.executor.adapters import adapter_for
from services.executor.adapters.base import Target
from services.executor.backup import LOG_TAIL_CHARS, RunFailed
from services.executor.compress import decompressor, detect
from services.executor.context import ExecutorContext
from services.executor.pipeline import hash_stored
from services.executor.tool import Tool

log = logging.getLogger(__name__)


class RestoreHandler:
    """The JobWorker handler of ``bm.v1.restore.requested``."""

    def __init__(self, ctx: ExecutorContext) -> None:
        self.ctx = ctx

    async def __call__(self, msg: Msg) -> None:
        job = decode(RestoreRequested, msg.data)
        await RestoreRun(self.ctx, job).execute(redelivered=msg.metadata.num_delivered > 1)


class RestoreRun:
    def __init__(self, ctx: ExecutorContext, job: RestoreRequested) -> None:
        self.ctx = ctx
        self.job = job
        self.tool: Tool | None = None
        self.target: Target | None = None
        self.bytes_in = 0
        self.started = time.monotonic()

    async def execute(self, *, redelivered: bool = False) -> None:
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
            await self._failed(exc.code, str(exc))
        except Exception:
            log.exception("restore %s crashed", self.job.restore_id)
            await self._failed("internal_error", "unexpected error in the executor; see its log")

    async def _run(self) -> None:
        backup, driver, key = await self._source()
        target = self.target = await self._target()
        adapter = adapter_for(target.engine)
        await self._event(RestoreStarted(**self._ids(), mode=self.job.mode,
                                         executor_id=self.ctx.executor_id))  # fmt: skip
        size, digest = await hash_stored(driver.read(key))
        if (size, digest) != (backup.bytes_out, backup.sha256):
            raise RunFailed("checksum_mismatch", "the stored artifact does not match the checksum "
                            "recorded at backup time (corrupted or changed); nothing was written "
                            "to the target")  # fmt: skip
        probe = await adapter.probe(
            _server_only(target), self.ctx.settings.connection_test_timeout_s
        )
        await adapter.prepare_restore(target, self.job.mode.value)
        async with adapter.restore_command(target, probe.server_version, self.job.mode.value,
                                           no_owner=self.job.no_owner) as spec:  # fmt: skip
            tool = self.tool = Tool(spec.argv, spec.env)
            await tool.start(stdin=True)
            try:
                await tool.feed(self._decompressed(driver.read(key), digest))
                code = await tool.wait()
            finally:
                await tool.kill()
        stderr = self._log()
        if code != 0:
            last = stderr.strip().splitlines()[-1] if stderr.strip() else ""
            raise RunFailed("restore_failed", f"the restore tool exited with code {code}"
                            + (f": {last}" if last else ""))  # fmt: skip
        error = adapter.stderr_error(stderr)
        if error:
            raise RunFailed("restore_error", f"the restore tool reported an error: {error}")
        await self._succeeded()

    async def _decompressed(
        self, chunks: AsyncIterator[bytes], digest: str
    ) -> AsyncIterator[bytes]:
        """Decompress while hashing again; fail (killing the tool before it sees the
        end of input) if the bytes differ from the ones verified a moment ago."""
        hasher = hashlib.sha256()
        inflate = None
        last_report = time.monotonic()
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
                await self._progress()
        if hasher.hexdigest() != digest:
            raise RunFailed("checksum_mismatch", "the artifact changed while it was restored; "
                            "the restore was stopped before it finished")  # fmt: skip

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

    async def _source(self) -> tuple[Backup, Driver, str]:
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
        for copy, destination in ((row[0], row[1]) for row in rows):
            try:
                driver = driver_for(destination)
                await driver.stat(copy.artifact_key)
            except DestinationError:
                continue
            return backup, driver, copy.artifact_key
        raise RunFailed("artifact_missing", "no stored copy of this backup can be read")

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
        async with self.ctx.sessions() as session, session.begin():
            await session.execute(
                update(Restore).where(Restore.id == self.job.restore_id)
                .values(status=status, finished_at=self.ctx.clock(), bytes_in=self.bytes_in,
                        log_tail=self._log() or None, **values)
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

    async def _progress(self) -> None:
        elapsed = time.monotonic() - self.started
        await self._event(RestoreProgressed(
            **self._ids(), bytes_in=self.bytes_in, bytes_out=self.bytes_in,
            rate_bps=self.bytes_in / elapsed if elapsed else 0.0, elapsed_s=elapsed,
        ))  # fmt: skip

    def _ids(self) -> dict[str, object]:
        return {
            "restore_id": self.job.restore_id, "project_id": self.job.project_id,
            "purpose": self.job.purpose, "backup_id": self.job.backup_id,
            "target_database_id": self.job.target_database_id,
        }  # fmt: skip

    def _log(self) -> str:
        if self.tool is None:
            return ""
        secret = self.target.password if self.target else None
        return redact(self.tool.stderr_tail(), [secret])[-LOG_TAIL_CHARS:]

    async def _event(self, event: Event) -> None:
        try:
            await publish(self.ctx.nc, event)
        except Exception as exc:  # the row is the record; events follow it
            log.warning("could not publish %s: %s", event.SUBJECT, exc)


def _server_only(target: Target) -> Target:
    """The target as seen before the restore: its database may not exist yet, so
    the probe connects to the engine's maintenance database."""
    maintenance = {"postgresql": "postgres"}.get(target.engine, target.database)
    return Target(engine=target.engine, host=target.host, port=target.port,
                  database=maintenance, username=target.username, password=target.password,
                  tls_mode=target.tls_mode, options={}, name=target.name)  # fmt: skip
