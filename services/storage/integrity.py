"""The integrity sweep: re-read every stored copy at least every
``BM_INTEGRITY_INTERVAL_S``, oldest check first, at most ``BM_INTEGRITY_RATE_BPS``
bytes per second, and compare its size and sha256 with what was recorded.

A mismatch marks the copy ``corrupt`` (and the backup ``corrupt`` when no stored copy
is left) and publishes ``bm.v1.backup.corrupted``. A copy that cannot be read at all
is not called corrupt: a missing file is the reconciliation sweep's finding, and an
unreadable one (permissions, a directory in its place) is noted on the copy and
tried again on the next pass. Replicas do not check the same copy twice: a copy is
taken up by moving its ``checked_at`` forward only if nobody else did.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from enum import StrEnum

from sqlalchemy import ColumnElement, and_, exists, func, select, update

from proto.backup_events import BackupCorrupted
from services.common.db.enums import BackupStatus, CopyStatus
from services.common.db.models import Backup, BackupCopy, Database, Destination
from services.common.destinations import driver_for
from services.common.destinations.base import ArtifactMissing, DestinationError
from services.common.streams import publish
from services.storage import metrics
from services.storage.context import StorageContext

log = logging.getLogger(__name__)
CHUNK = 1 << 20
MAX_CREDIT_S = 1.0


class RateLimiter:
    """Keeps the average read rate at or under ``rate_bps``; an idle spell earns at
    most ``MAX_CREDIT_S`` of burst."""

    def __init__(
        self,
        rate_bps: float,
        *,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    ) -> None:
        self.rate = rate_bps
        self._clock = clock
        self._sleep = sleep
        self._start = clock()
        self._spent = 0

    async def spend(self, size: int) -> None:
        self._spent += size
        now = self._clock()
        if self._spent / self.rate - (now - self._start) < -MAX_CREDIT_S:
            self._start, self._spent = now - MAX_CREDIT_S, size
        ahead = self._spent / self.rate - (now - self._start)
        if ahead > 0:
            await self._sleep(ahead)


class _Stopped(Exception):
    """The service is stopping: the copy is left for the next pass."""


class Outcome(StrEnum):
    INTACT = "intact"
    CORRUPT = "corrupt"
    MISSING = "missing"
    UNREADABLE = "unreadable"
    SKIPPED = "skipped"  # taken by another replica, changed meanwhile, or stopping


@dataclass
class IntegrityReport:
    checked: int = 0
    bytes_read: int = 0
    outcomes: dict[tuple[uuid.UUID, uuid.UUID], Outcome] = field(default_factory=dict)
    """(backup id, destination id) -> what was found."""

    def with_outcome(self, outcome: Outcome) -> list[tuple[uuid.UUID, uuid.UUID]]:
        return [key for key, found in self.outcomes.items() if found is outcome]


@dataclass(frozen=True)
class _Due:
    backup_id: uuid.UUID
    destination_id: uuid.UUID
    checked_at: datetime | None


async def integrity_pass(ctx: StorageContext, limiter: RateLimiter) -> IntegrityReport:
    """Check every copy that is due now (oldest first), until done or stopping."""
    report = IntegrityReport()
    for due in await _due(ctx, ctx.clock()):
        if ctx.stopping.is_set():
            break
        outcome = await check_copy(ctx, due, limiter, report)
        report.outcomes[(due.backup_id, due.destination_id)] = outcome
        if outcome is not Outcome.SKIPPED:
            report.checked += 1
    return report


async def _due(ctx: StorageContext, now: datetime) -> list[_Due]:
    last = func.coalesce(BackupCopy.checked_at, BackupCopy.stored_at, BackupCopy.created_at)
    limit = now - timedelta(seconds=ctx.settings.integrity_interval_s)
    async with ctx.sessions() as session:
        rows = await session.execute(
            select(BackupCopy.backup_id, BackupCopy.destination_id, BackupCopy.checked_at)
            .where(BackupCopy.status == CopyStatus.STORED, last <= limit)
            .order_by(last, BackupCopy.backup_id)
        )
        return [_Due(*row) for row in rows]


def _same_copy(due: _Due) -> ColumnElement[bool]:
    return and_(
        BackupCopy.backup_id == due.backup_id,
        BackupCopy.destination_id == due.destination_id,
        BackupCopy.status == CopyStatus.STORED,
    )


def _checked_was(value: datetime | None) -> ColumnElement[bool]:
    return BackupCopy.checked_at.is_(None) if value is None else BackupCopy.checked_at == value


async def check_copy(
    ctx: StorageContext, due: _Due, limiter: RateLimiter, report: IntegrityReport
) -> Outcome:
    now = ctx.clock()
    async with ctx.sessions() as session, session.begin():
        taken = await session.execute(
            update(BackupCopy)
            .where(_same_copy(due), _checked_was(due.checked_at))
            .values(checked_at=now)
        )
        if getattr(taken, "rowcount", 0) != 1:
            return Outcome.SKIPPED
        found = (
            await session.execute(
                select(BackupCopy, Destination, Backup, Database.project_id)
                .join(Destination, Destination.id == BackupCopy.destination_id)
                .join(Backup, Backup.id == BackupCopy.backup_id)
                .join(Database, Database.id == Backup.database_id)
                .where(_same_copy(due))
            )
        ).one()
    copy, destination, backup, project_id = found
    expected_sha = copy.sha256 or backup.sha256
    expected_size = copy.size_bytes if copy.size_bytes is not None else backup.bytes_out
    if expected_sha is None or expected_size is None:
        return Outcome.SKIPPED
    try:
        size, digest = await _hash(ctx, destination, copy.artifact_key, limiter, report)
    except ArtifactMissing:
        await _put_back(ctx, due, now, None)
        return Outcome.MISSING
    except (DestinationError, OSError) as exc:
        log.warning("integrity: cannot read %s on %s: %s", copy.artifact_key, destination.name, exc)
        await _put_back(ctx, due, now, f"unreadable at the integrity check: {exc}")
        return Outcome.UNREADABLE
    except _Stopped:
        await _put_back(ctx, due, now, copy.error_message)
        return Outcome.SKIPPED
    if (size, digest) == (expected_size, expected_sha):
        if copy.error_message:
            await _set(ctx, due, error_message=None)
        return Outcome.INTACT
    await _corrupt(ctx, copy, destination, backup, project_id, size, digest, expected_size,
                   expected_sha)  # fmt: skip
    return Outcome.CORRUPT


async def _hash(
    ctx: StorageContext,
    destination: Destination,
    key: str,
    limiter: RateLimiter,
    report: IntegrityReport,
) -> tuple[int, str]:
    driver = driver_for(destination)
    digest = hashlib.sha256()
    size = 0
    async for chunk in driver.read(key, chunk_size=CHUNK):
        if ctx.stopping.is_set():
            raise _Stopped
        digest.update(chunk)
        size += len(chunk)
        report.bytes_read += len(chunk)
        metrics.INTEGRITY_BYTES.inc(len(chunk))
        await limiter.spend(len(chunk))
    return size, digest.hexdigest()


async def _put_back(ctx: StorageContext, due: _Due, taken_at: datetime, error: str | None) -> None:
    """Not checked after all: the copy stays due (and says why, if it could not be read)."""
    async with ctx.sessions() as session, session.begin():
        await session.execute(
            update(BackupCopy)
            .where(_same_copy(due), BackupCopy.checked_at == taken_at)
            .values(checked_at=due.checked_at, error_message=error)
        )


async def _set(ctx: StorageContext, due: _Due, **values: object) -> None:
    async with ctx.sessions() as session, session.begin():
        await session.execute(update(BackupCopy).where(_same_copy(due)).values(**values))


async def _corrupt(
    ctx: StorageContext, copy: BackupCopy, destination: Destination, backup: Backup,
    project_id: uuid.UUID, size: int, digest: str, expected_size: int, expected_sha: str,
) -> None:  # fmt: skip
    detail = (
        f"the copy on {destination.name} no longer matches its checksum: {size} bytes with "
        f"sha256 {digest[:12]}…, expected {expected_size} bytes with sha256 {expected_sha[:12]}…"
    )
    log.error("backup %s: %s", backup.id, detail)
    metrics.INTEGRITY_CORRUPT.inc()
    async with ctx.sessions() as session, session.begin():
        await session.execute(
            update(BackupCopy)
            .where(BackupCopy.backup_id == copy.backup_id,
                   BackupCopy.destination_id == copy.destination_id)
            .values(status=CopyStatus.CORRUPT, error_message=detail)
        )  # fmt: skip
        stored = exists().where(
            BackupCopy.backup_id == backup.id, BackupCopy.status == CopyStatus.STORED
        )
        await session.execute(
            update(Backup)
            .where(Backup.id == backup.id, Backup.status == BackupStatus.SUCCEEDED, ~stored)
            .values(status=BackupStatus.CORRUPT, error_code="corrupt",
                    error_message="no intact copy is left: " + detail)
        )  # fmt: skip
    if ctx.nc is None:
        return
    event = BackupCorrupted(
        backup_id=backup.id, project_id=project_id, database_id=backup.database_id,
        schedule_id=backup.schedule_id, destination_id=destination.id,
        artifact_key=copy.artifact_key, expected_sha256=expected_sha, actual_sha256=digest,
        expected_size=expected_size, actual_size=size, detail=detail,
    )  # fmt: skip
    with contextlib.suppress(Exception):
        await publish(ctx.nc, event)
