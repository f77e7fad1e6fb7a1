"""One backup run, from job to final row: claim the row, probe the server, stream
the dump through compression into every destination, check what was stored, write
the manifest, record the outcome and tell the world. Nothing partial is ever left
behind or recorded as good."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import re
import time
import uuid
from collections.abc import AsyncIterator
from datetime import datetime
from typing import Any

from nats.aio.msg import Msg
from sqlalchemy import select

from proto.backup_events import (
    BackupCompleted,
    BackupFailed,
    BackupProgressed,
    BackupSkipped,
    BackupStarted,
)
from proto.base import Event
from proto.codec import decode
from proto.jobs import BackupRequested
from proto.values import ArtifactCopy, CopyStatus, OverlapPolicy
from services.common.db.enums import BackupStatus
from services.common.db.enums import Compression as Algorithm
from services.common.db.models import Backup, Database, Destination, Project
from services.common.destinations import driver_for
from services.common.destinations.base import DestinationError, Driver, Writer
from services.common.errors import BackupManagerError
from services.common.redact import redact
from services.common.streams import publish_or_log
from services.executor import runs, verify
from services.executor.adapters import adapter_for
from services.executor.adapters.base import DumpSpec, Target, first_bytes
from services.executor.compress import EXTENSIONS, compressor
from services.executor.context import ExecutorContext
from services.executor.copies import Copy, failed_copies_warning, open_copies
from services.executor.manifest import manifest_document, manifest_key
from services.executor.pipeline import StreamStats, pump
from services.executor.tool import Tool

log = logging.getLogger(__name__)
OVERLAP_POLL_S = 5.0


class RunFailed(BackupManagerError):
    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code


def artifact_key(
    project_slug: str, database_name: str, backup_id: uuid.UUID, at: datetime, extension: str
) -> str:
    """``<project>/<database>/<UTC yyyy/mm/dd>/<timestamp>-<backup id>.<ext>``."""
    slug = re.sub(r"[^a-z0-9]+", "-", database_name.lower()).strip("-") or "database"
    return f"{project_slug}/{slug}/{at:%Y/%m/%d}/{at:%Y%m%dT%H%M%SZ}-{backup_id}.{extension}"


class BackupHandler:
    """The JobWorker handler of ``bm.v1.backup.requested``."""

    def __init__(self, ctx: ExecutorContext) -> None:
        self.ctx = ctx

    async def __call__(self, msg: Msg) -> None:
        job = decode(BackupRequested, msg.data)
        await BackupRun(self.ctx, job).execute(redelivered=msg.metadata.num_delivered > 1)


class BackupRun:
    def __init__(self, ctx: ExecutorContext, job: BackupRequested) -> None:
        self.ctx = ctx
        self.job = job
        self.stats = StreamStats()
        self.started = ctx.clock()
        self.target: Target | None = None
        self.tool: Tool | None = None
        self.key = ""
        self.stalled = False

    # -- outline ---------------------------------------------------------------------

    async def execute(self, *, redelivered: bool = False) -> None:
        if not await self._claim(redelivered):
            return
        try:
            async with asyncio.timeout(self.job.timeout_s):
                await self._run()
        except TimeoutError:
            await self._failed("timeout", f"the backup did not finish within {self.job.timeout_s}s "
                               "(the schedule's timeout); it was stopped")  # fmt: skip
        except BackupManagerError as exc:
            await self._failed(exc.code, str(exc))
        except Exception:
            # A bug, not the database: the same job would fail again, so record it.
            log.exception("backup %s crashed", self.job.backup_id)
            await self._failed("internal_error", "unexpected error in the executor; see its log")

    async def _run(self) -> None:
        database, project, destinations, queued_at = await self._load()
        target = self.target = await self._target(database)
        adapter = adapter_for(target.engine)
        await self._event(BackupStarted(**self._ids(), trigger=self.job.trigger,
                                        engine=target.engine, executor_id=self.ctx.executor_id,
                                        slot_at=self.job.slot_at))  # fmt: skip
        probe = await adapter.probe(target, self.ctx.settings.connection_test_timeout_s)
        algorithm = Algorithm(self.job.compression.algorithm.value)
        copies = [Copy(row, driver_for(row)) for row in destinations]
        writers: list[Writer] = []
        stored = False
        try:
            async with adapter.dump_command(target, probe.server_version) as spec:
                # The key depends only on the job, so a redelivered run finds (and
                # discards) what a crashed attempt left half-written.
                extension = spec.extension + EXTENSIONS[algorithm]
                self.key = artifact_key(
                    project.slug, database.name, self.job.backup_id, queued_at, extension
                )
                for copy in copies:
                    with contextlib.suppress(DestinationError):
                        if await copy.driver.discard_partials(self.key):
                            log.warning("discarded a partial artifact of an earlier attempt")
                writers = await open_copies(copies, self.key)
                self._require_a_copy(copies)
                counts = await self._stream_and_count(spec, adapter.magic, writers, algorithm)
            for writer in writers:
                await writer.commit()
            stored = True
            digest = self.stats.sha256.hexdigest()
            await self._check_stored(copies, digest)
            finished = self.ctx.clock()
            manifest = self._manifest(
                project, database, probe.server_version, spec, digest, finished, counts
            )
            for copy in copies:
                if copy.alive:
                    try:
                        await copy.driver.write_bytes(manifest_key(self.key), manifest.encode())
                    except DestinationError as exc:
                        copy.fail(exc)
                        await _delete_quietly([copy.driver], self.key)
            self._require_a_copy(copies)
            await self._succeeded(database.id, copies, algorithm, digest, manifest, finished)
        except BaseException:
            for writer in writers:
                await writer.abort()
            if stored:
                await _delete_quietly([copy.driver for copy in copies], self.key)
            raise

    # -- steps -------------------------------------------------------------------------

    async def _claim(self, redelivered: bool) -> bool:
        while True:
            result = await runs.claim(self.ctx.sessions, self.job.backup_id,
                                      executor_id=self.ctx.executor_id, now=self.ctx.clock(),
                                      redelivered=redelivered)  # fmt: skip
            if result.claimed:
                return True
            if result.busy_with is None:
                log.info("backup %s is already final or gone; nothing to do", self.job.backup_id)
                return False
            if self.job.overlap is OverlapPolicy.SKIP:
                reason = f"another backup of this database is still running ({result.busy_with})"
                settled = await runs.skip(
                    self.ctx.sessions, self.job.backup_id, now=self.ctx.clock(), reason=reason
                )
                if not settled:
                    return False  # a scheduler replica recorded and announced it already
                await self._event(
                    BackupSkipped(
                        **self._ids(),
                        slot_at=self.job.slot_at,
                        reason=reason,
                        running_backup_id=result.busy_with,
                    )
                )
                return False
            await asyncio.sleep(OVERLAP_POLL_S)  # overlap "queue": wait for the other run

    async def _load(self) -> tuple[Database, Project, list[Destination], datetime]:
        async with self.ctx.sessions() as session:
            queued_at = await session.scalar(
                select(Backup.queued_at).where(Backup.id == self.job.backup_id)
            )
            database = await session.get(Database, self.job.database_id)
            if database is None:
                raise RunFailed("database_missing", "the database was deleted before the run")
            project = await session.get(Project, database.project_id)
            rows = list(await session.scalars(
                select(Destination).where(Destination.id.in_(self.job.destination_ids))
            ))  # fmt: skip
        if project is None or len(rows) != len(set(self.job.destination_ids)):
            raise RunFailed("destination_missing", "a destination of this backup no longer exists")
        return database, project, rows, queued_at or self.started

    async def _target(self, database: Database) -> Target:
        token = database.encrypted_password
        password = self.ctx.cipher.decrypt(token.decode()) if token else None
        return Target(
            engine=database.engine.value, host=database.host, port=database.port,
            database=database.database_name, username=database.username, password=password,
            tls_mode=database.tls_mode.value, options=dict(database.options or {}),
            name=database.name,
        )  # fmt: skip

    async def _stream_and_count(self, spec: DumpSpec, magic: tuple[bytes, ...],
                                writers: list[Writer], algorithm: Algorithm,
                                ) -> dict[str, Any] | None:  # fmt: skip
        if not spec.count_while_dumping:
            await self._stream(spec, magic, writers, algorithm)
            return await self._count(spec)
        counting = asyncio.create_task(self._count(spec), name="backup-count")
        try:
            await self._stream(spec, magic, writers, algorithm)
            return await counting
        finally:
            counting.cancel()  # (done already unless the stream failed)
            with contextlib.suppress(asyncio.CancelledError):
                await counting

    async def _stream(self, spec: DumpSpec, magic: tuple[bytes, ...], writers: list[Writer],
                      algorithm: Algorithm) -> None:  # fmt: skip
        tool = self.tool = Tool(spec.argv, spec.env, on_output=self.stats.received)
        await tool.start(stdin=spec.stdin is not None)
        watchdog = asyncio.create_task(self._watch(tool), name="backup-watchdog")
        try:
            if spec.stdin is not None:
                await tool.feed(_once(spec.stdin))
            head, source = await first_bytes(tool.stdout(), max(map(len, magic)))
            if head.startswith(magic):
                await pump(source, compressor(algorithm, self.job.compression.level), writers,
                           self.stats)  # fmt: skip
            elif head:
                await tool.kill()  # not a dump: stop it before it fills the pipe
            # (with no output at all, the tool is ending by itself: keep its stderr)
            code = await tool.wait()
        finally:
            watchdog.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await watchdog
            await tool.kill()
        self._judge(code, head, magic)

    def _judge(self, code: int, head: bytes, magic: tuple[bytes, ...]) -> None:
        assert self.target is not None
        if self.stalled:
            raise RunFailed(
                "stalled",
                f"no bytes from the dump tool for "
                f"{self.ctx.settings.stall_timeout_s:g}s; the run was stopped",
            )
        stderr = self._log()
        last = stderr.strip().splitlines()[-1] if stderr.strip() else ""
        if code != 0 and not (head and not head.startswith(magic)):
            detail = f": {last}" if last else ""
            raise RunFailed("dump_failed", f"the dump tool exited with code {code}{detail}")
        if not head:
            raise RunFailed("empty_dump", "the dump tool produced no output")
        if not head.startswith(magic):
            raise RunFailed("invalid_dump", f"the output does not look like a {self.target.engine} "
                            "dump; it was not stored")  # fmt: skip
        error = adapter_for(self.target.engine).stderr_error(stderr)
        if error:
            raise RunFailed("dump_error", f"the dump tool reported an error: {error}")

    async def _watch(self, tool: Tool) -> None:
        """Progress events, heartbeats and stall detection while the dump runs."""
        settings = self.ctx.settings
        while True:
            await asyncio.sleep(settings.progress_interval_s)
            if time.monotonic() - self.stats.last_input_at > settings.stall_timeout_s:
                self.stalled = True
                await tool.kill()
                return
            with contextlib.suppress(Exception):
                await runs.heartbeat(
                    self.ctx.sessions, self.job.backup_id, self.ctx.clock(), self.stats.bytes_in
                )
            await self._event(BackupProgressed(
                **self._ids(), bytes_in=self.stats.bytes_in, bytes_out=self.stats.bytes_out,
                rate_bps=self.stats.rate_bps, elapsed_s=self.stats.elapsed_s,
            ))  # fmt: skip

    def _require_a_copy(self, copies: list[Copy]) -> None:
        if any(copy.alive for copy in copies):
            return
        errors = "; ".join(f"{c.destination.name}: {c.error}" for c in copies)
        code = (
            "verify_mismatch" if "differs from what was written" in errors else "destination_error"
        )
        raise RunFailed(code, errors if len(copies) > 1 else str(copies[0].error))

    async def _check_stored(self, copies: list[Copy], digest: str) -> None:
        """Read every stored copy back: it must be exactly the bytes that were sent.
        A writer that read its bytes back as it wrote them and compared them with
        the bytes sent (local files) has only the stored size left to report; any
        other copy is read back whole and hashed."""
        for copy in copies:
            if not copy.alive:
                continue
            try:
                read_back = await copy.writer.read_back() if copy.writer else None
                if read_back is None:
                    size, stored_digest = await copy.driver.sha256(self.key)
                    same = stored_digest == digest
                else:
                    size, same = read_back.size, read_back.same
            except DestinationError as exc:
                copy.fail(exc)
                continue
            if not same or size != self.stats.bytes_out:
                copy.fail(f"the copy on {copy.destination.name} differs from what was written "
                          f"({size} of {self.stats.bytes_out} bytes)")  # fmt: skip
                await _delete_quietly([copy.driver], self.key)
        self._require_a_copy(copies)

    async def _count(self, spec: DumpSpec) -> dict[str, Any] | None:
        """What the dump holds, counted by the adapter (rows, documents, keys) for
        verification; a failure to count is recorded, never fails the backup."""
        if spec.counter is None:
            return None
        try:
            return (await spec.counter()).to_json()
        except Exception as exc:
            secret = self.target.password if self.target else None
            reason = redact(str(exc), [secret])[:500] or type(exc).__name__
            log.warning("backup %s: could not count objects: %s", self.job.backup_id, reason)
            return {"error": reason}

    def _manifest(self, project: Project, database: Database, server_version: str,
                  spec: DumpSpec, digest: str, finished: datetime,
                  counts: dict[str, Any] | None) -> str:  # fmt: skip
        document = json.loads(manifest_document(
            backup_id=str(self.job.backup_id),
            project={"id": str(project.id), "slug": project.slug, "name": project.name},
            database={"id": str(database.id), "name": database.name,
                      "engine": database.engine.value, "database": database.database_name},
            trigger=self.job.trigger.value,
            schedule_id=str(self.job.schedule_id) if self.job.schedule_id else None,
            slot_at=self.job.slot_at, server_version=server_version,
            tool_version=spec.tool_version, dump_format=spec.format,
            compression=self.job.compression.model_dump(mode="json"), artifact_key=self.key,
            size=self.stats.bytes_out, raw_size=self.stats.bytes_in, sha256=digest,
            started_at=self.started, finished_at=finished,
        ))  # fmt: skip
        document["counts"] = counts
        return json.dumps(document, indent=2, sort_keys=True)

    async def _succeeded(self, database_id: uuid.UUID, copies: list[Copy], algorithm: Algorithm,
                         digest: str, manifest: str, finished: datetime) -> None:  # fmt: skip
        warnings = [w for w in (await self._shrink_warning(database_id),
                                failed_copies_warning(copies)) if w]  # fmt: skip
        warning = "\n".join(warnings) or None
        rows = [
            runs.stored_copy(self.job.backup_id, c.destination.id, self.key,
                             self.stats.bytes_out, digest, finished)
            if c.alive else
            runs.failed_copy(self.job.backup_id, c.destination.id, self.key, str(c.error))
            for c in copies
        ]  # fmt: skip
        await runs.finish(
            self.ctx.sessions, self.job.backup_id, BackupStatus.SUCCEEDED, now=finished,
            bytes_in=self.stats.bytes_in, bytes_out=self.stats.bytes_out, sha256=digest,
            artifact_key=self.key, compression=algorithm, log_tail=self._log(), warning=warning,
            manifest=json.loads(manifest), copies=rows,
        )  # fmt: skip
        events = tuple(
            ArtifactCopy(destination_id=c.destination.id, status=CopyStatus.STORED)
            if c.alive else
            ArtifactCopy(destination_id=c.destination.id, status=CopyStatus.FAILED,
                         error=str(c.error)[:2000])
            for c in copies
        )  # fmt: skip
        log.info("backup %s succeeded: %s (%d bytes)", self.job.backup_id, self.key,
                 self.stats.bytes_out)  # fmt: skip
        await self._event(BackupCompleted(
            **self._ids(), engine=self.target.engine if self.target else "postgresql",
            artifact_key=self.key, size_bytes=self.stats.bytes_out,
            raw_bytes=self.stats.bytes_in, sha256=digest, compression=self.job.compression,
            encrypted=False, copies=events, started_at=self.started, finished_at=finished,
            duration_s=(finished - self.started).total_seconds(), warnings=tuple(warnings),
        ))  # fmt: skip
        await verify.after_backup(self.ctx, self.job.backup_id, self.job.project_id)

    async def _shrink_warning(self, database_id: uuid.UUID) -> str | None:
        previous = await runs.previous_good_size(self.ctx.sessions, database_id, self.job.backup_id)
        fraction = self.ctx.settings.shrink_warning_fraction
        size = self.stats.bytes_in
        if previous and size < previous * fraction:
            return (
                f"this dump is {size} bytes, less than {fraction:.0%} of the previous "
                f"successful one ({previous} bytes): check that no data went missing"
            )
        return None

    async def _failed(self, code: str, message: str) -> None:
        secret = self.target.password if self.target else None
        message = redact(message, [secret])
        log.warning("backup %s failed (%s): %s", self.job.backup_id, code, message)
        await runs.finish(self.ctx.sessions, self.job.backup_id, BackupStatus.FAILED,
                          now=self.ctx.clock(), error_code=code, error_message=message,
                          log_tail=self._log() or None)  # fmt: skip
        await self._event(BackupFailed(**self._ids(), code=code, message=message[:2000],
                                       duration_s=self.stats.elapsed_s))  # fmt: skip

    # -- helpers -----------------------------------------------------------------------

    def _ids(self) -> dict[str, uuid.UUID | None]:
        return {
            "backup_id": self.job.backup_id, "project_id": self.job.project_id,
            "database_id": self.job.database_id, "schedule_id": self.job.schedule_id,
        }  # fmt: skip

    def _log(self) -> str:
        if self.tool is None:
            return ""
        return self.tool.log_tail(self.target.password if self.target else None)

    async def _event(self, event: Event) -> None:
        await publish_or_log(self.ctx.nc, event)


async def _once(data: bytes) -> AsyncIterator[bytes]:
    yield data


async def _delete_quietly(drivers: list[Driver], key: str) -> None:
    for driver in drivers:
        for name in (key, manifest_key(key)):
            with contextlib.suppress(Exception):
                await driver.delete(name)
