"""Verification: prove a backup restores, by restoring it into a scratch database and
comparing what arrived with the counts recorded in its manifest at backup time.

Where the scratch database lives (setting ``BM_VERIFY_SCRATCH``):

- ``local`` (default): a temporary PostgreSQL / MariaDB / Redis server the executor
  starts on 127.0.0.1 (see :mod:`services.executor.scratch`), stopped and removed
  afterwards. MongoDB has no local server here: use ``source``.
- ``source``: a new database ``bm_verify_<id>`` on the backed-up server itself, with
  its credentials (which then need the right to create and drop databases); dropped
  afterwards. Never for Redis, whose restore writes every logical database.

The result is recorded on the backup (``verified_at``, ``verify_status``,
``verify_message``), on the restore row of the run, and published as
``bm.v1.backup.verified``. Runs are asked for by the executor itself after a
successful scheduled backup (``after_backup``: schedule ``verify`` = every_run, or
daily / weekly when the database's last verification is older than that) and by
``POST /api/v1/backups/{id}/verify``."""

from __future__ import annotations

import contextlib
import logging
import shutil
import time
import uuid
from datetime import timedelta

from sqlalchemy import func, select, update

from proto.backup_events import BackupVerified
from proto.jobs import RestoreRequested
from proto.values import RestoreMode, RestorePurpose
from services.common.db.enums import RestoreStatus, VerifyMode, VerifyStatus
from services.common.db.models import Backup, Database, Restore, Schedule
from services.common.settings import Settings
from services.common.streams import publish
from services.executor.adapters import adapter_for
from services.executor.adapters.base import Adapter, Counts, Target
from services.executor.context import ExecutorContext
from services.executor.restore import RestoreRun, RunFailed
from services.executor.scratch import TemporaryServer, private_dir, scratch_server

log = logging.getLogger(__name__)

SCRATCH_PREFIX = "bm_verify_"
PERIODS = {VerifyMode.DAILY: timedelta(days=1), VerifyMode.WEEKLY: timedelta(days=7)}
MAX_PROBLEMS_SHOWN = 10


def verify_scratch(settings: Settings) -> str:
    """``local`` or ``source`` (``BM_VERIFY_SCRATCH``)."""
    return settings.verify_scratch


def scratch_name(restore_id: uuid.UUID) -> str:
    return f"{SCRATCH_PREFIX}{restore_id.hex[:16]}"


def compare(expected: Counts, actual: Counts) -> list[str]:
    """What differs between the counts recorded at backup time and the counts of the
    restored copy; empty when they agree. Keys with a TTL may have expired in between
    (``volatile``); with dump filters, objects the dump left out may be missing (and
    tables whose data was excluded may be empty)."""
    unit = {"rows": "rows", "documents": "documents", "keys": "keys"}.get(expected.kind, "")
    problems: list[str] = []
    for name, count in sorted(expected.objects.items()):
        got = actual.objects.get(name)
        slack = expected.volatile.get(name, 0)
        if got is None:
            if count - slack <= 0 or expected.filtered:
                continue
            problems.append(f"{name}: missing from the restore ({count} {unit} backed up)")
        elif not count - slack <= got <= count and not (expected.filtered and got == 0):
            allowance = f", of which {slack} may have expired" if slack else ""
            problems.append(f"{name}: {got} {unit} restored, {count} backed up{allowance}")
    for name in sorted(actual.objects.keys() - expected.objects.keys()):
        if actual.objects[name]:
            problems.append(f"{name}: {actual.objects[name]} {unit} restored, none recorded")
    return problems


class VerifyRun(RestoreRun):
    """A restore into a scratch database, then the count comparison."""

    def __init__(self, ctx: ExecutorContext, job: RestoreRequested) -> None:
        super().__init__(ctx, job)
        self.no_owner = True  # the scratch server has none of the source's roles
        self.expected: Counts | None = None
        self.server: TemporaryServer | None = None
        self.drop_after: tuple[Adapter, Target] | None = None
        self.backup: Backup | None = None

    async def _target(self) -> Target:
        async with self.ctx.sessions() as session:
            backup = await session.get(Backup, self.job.backup_id)
            database = await session.get(Database, backup.database_id) if backup else None
        if backup is None or database is None:
            raise RunFailed("backup_missing", "the backup to verify is gone")
        self.backup = backup
        manifest = backup.manifest or {}
        counts = manifest.get("counts")
        if not isinstance(counts, dict) or "objects" not in counts:
            reason = (counts or {}).get("error") if isinstance(counts, dict) else None
            raise RunFailed("no_counts", "the backup's manifest records no counts to compare "
                            "with" + (f" ({reason})" if reason else " (made before counting "
                            "existed?)") + "; it cannot be verified")  # fmt: skip
        self.expected = Counts.from_json(counts)
        engine = database.engine.value
        name = self.job.target_database_name or scratch_name(self.job.restore_id)
        if verify_scratch(self.ctx.settings) == "source" and engine != "redis":
            token = database.encrypted_password
            target = Target(
                engine=engine, host=database.host, port=database.port, database=name,
                username=database.username,
                password=self.ctx.cipher.decrypt(token.decode()) if token else None,
                tls_mode=database.tls_mode.value, options={}, name=f"{database.name} (scratch)",
            )  # fmt: skip
            self.drop_after = (adapter_for(engine), target)
            return target
        server = self.server = scratch_server(
            engine, private_dir("bm-verify-"), str(manifest.get("server_version", ""))
        )
        started = await server.start()
        self.notes += f"restoring into a {started.name} on port {started.port}\n"
        database_name = "0" if engine == "redis" else name
        return Target(engine=engine, host=started.host, port=started.port, database=database_name,
                      username=started.username, password=started.password,
                      tls_mode="disable", name=started.name)  # fmt: skip

    async def _after_restore(self, adapter: Adapter, target: Target) -> None:
        assert self.expected is not None
        actual = await adapter.count_objects(target)
        problems = compare(self.expected, actual)
        total = sum(actual.objects.values())
        if problems:
            shown = problems[:MAX_PROBLEMS_SHOWN]
            more = len(problems) - len(shown)
            raise RunFailed("counts_differ", "the restored copy does not match the counts "
                            "recorded at backup time: " + "; ".join(shown)
                            + (f"; and {more} more" if more else ""))  # fmt: skip
        self.notes += (
            f"verified: {len(actual.objects)} {_objects(actual.kind)}, {total} "
            f"{actual.kind} in all, as recorded at backup time\n"
        )

    async def _succeeded(self) -> None:
        await super()._succeeded()
        assert self.expected is not None
        count = len(self.expected.objects)
        await self._record(True, f"restored into a scratch database; {count} "
                           f"{_objects(self.expected.kind)} with the counts recorded at backup "
                           "time")  # fmt: skip

    async def _failed(self, code: str, message: str) -> None:
        await super()._failed(code, message)
        await self._record(False, f"{code}: {message}")

    async def _record(self, passed: bool, message: str) -> None:
        now = self.ctx.clock()
        async with self.ctx.sessions() as session, session.begin():
            await session.execute(
                update(Backup).where(Backup.id == self.job.backup_id).values(
                    verified_at=now, verify_status=VerifyStatus.PASSED if passed
                    else VerifyStatus.FAILED, verify_message=message[:4000],
                )
            )  # fmt: skip
            backup = await session.get(Backup, self.job.backup_id)
        if backup is None:
            return
        log.info("backup %s verification %s: %s", backup.id,
                 "passed" if passed else "failed", message)  # fmt: skip
        await self._event(BackupVerified(
            backup_id=backup.id, project_id=self.job.project_id,
            database_id=backup.database_id, schedule_id=backup.schedule_id, passed=passed,
            restore_id=self.job.restore_id, detail=None if passed else message[:2000],
            duration_s=time.monotonic() - self.started,
        ))  # fmt: skip

    async def _cleanup(self) -> None:
        try:
            if self.drop_after is not None:
                adapter, target = self.drop_after
                with contextlib.suppress(Exception):
                    await adapter.drop_database(target)
            if self.server is not None:
                await self.server.stop()
                shutil.rmtree(self.server.dir, ignore_errors=True)
        finally:
            await super()._cleanup()


def _objects(kind: str) -> str:
    return {"rows": "tables", "documents": "collections", "keys": "databases"}.get(kind, "objects")


# -- asking for verifications ------------------------------------------------------------


async def request_verification(
    ctx: ExecutorContext, backup: Backup, project_id: uuid.UUID, *, timeout_s: int
) -> uuid.UUID:
    """Queue a verification of ``backup``: its restore row, then the job."""
    restore_id = uuid.uuid4()
    async with ctx.sessions() as session, session.begin():
        session.add(Restore(id=restore_id, backup_id=backup.id, target_database_id=None,
                            target_name=scratch_name(restore_id),
                            mode=RestoreMode.INTO_EMPTY))  # fmt: skip
    job = RestoreRequested(restore_id=restore_id, project_id=project_id,
                           purpose=RestorePurpose.VERIFY, backup_id=backup.id,
                           target_database_name=scratch_name(restore_id),
                           timeout_s=timeout_s)  # fmt: skip
    try:
        await publish(ctx.nc, job)
    except Exception:
        async with ctx.sessions() as session, session.begin():
            await session.execute(
                update(Restore).where(Restore.id == restore_id).values(
                    status=RestoreStatus.FAILED, error_code="not_queued",
                    error_message="the verification could not be queued (NATS)",
                )
            )  # fmt: skip
        raise
    return restore_id


async def after_backup(ctx: ExecutorContext, backup_id: uuid.UUID, project_id: uuid.UUID) -> None:
    """After a successful backup: queue its verification if its schedule says so.
    Never raises (the backup is done; a verification is extra)."""
    try:
        async with ctx.sessions() as session:
            backup = await session.get(Backup, backup_id)
            schedule = (
                await session.get(Schedule, backup.schedule_id)
                if backup and backup.schedule_id else None
            )  # fmt: skip
            if backup is None or schedule is None or schedule.verify is VerifyMode.OFF:
                return
            if schedule.verify in PERIODS:
                last = await session.scalar(
                    select(func.max(Backup.verified_at)).where(
                        Backup.database_id == backup.database_id,
                        Backup.verify_status.is_not(None),
                    )
                )
                if last is not None and ctx.clock() - last < PERIODS[schedule.verify]:
                    return
            pending = await session.scalar(
                select(func.count()).select_from(Restore)
                .join(Backup, Backup.id == Restore.backup_id)
                .where(Backup.database_id == backup.database_id,
                       Restore.target_database_id.is_(None),
                       Restore.target_name.startswith(SCRATCH_PREFIX),
                       Restore.status.in_([RestoreStatus.QUEUED, RestoreStatus.RUNNING]))
            )  # fmt: skip
            if pending:
                return
            timeout_s = schedule.timeout_s
        restore_id = await request_verification(ctx, backup, project_id, timeout_s=timeout_s)
        log.info("backup %s: verification %s queued (schedule verify=%s)", backup_id,
                 restore_id, schedule.verify.value)  # fmt: skip
    except Exception:
        log.exception("could not queue the verification of backup %s", backup_id)
