"""Applying retention to one database: decide with the pure selection function, then
delete what goes — the artifact and manifest on every destination first, then the row
(its copies cascade) — with an audit entry and a ``bm.v1.backup.deleted`` event.

Each schedule's policy applies to the backups that schedule made, and a backup's
copies go together: retention decides per backup, so every destination of a schedule
keeps the same backups. A copy that cannot be deleted (destination unreachable) keeps
the row; the next pass tries again. Manual backups (and runs of deleted schedules)
follow no policy and stay until a person deletes them; their failed rows still
expire after ``BM_FAILED_RUN_RETENTION_DAYS``.
"""

from __future__ import annotations

import contextlib
import logging
import uuid
from dataclasses import dataclass, field
from datetime import datetime

from sqlalchemy import delete, select

from services.common import retention
from services.common.artifacts import (
    copies_with_destinations,
    deleted_events,
    remove_copies,
    retention_candidates,
)
from services.common.db.enums import FINAL_BACKUP_STATUSES, AuditOutcome
from services.common.db.models import (
    AuditEntry,
    Backup,
    BackupCopy,
    Database,
    Destination,
    Schedule,
)
from services.common.streams import publish
from services.storage import metrics
from services.storage.context import ACTOR, StorageContext

log = logging.getLogger(__name__)
ACTION = "backup.retention_delete"


@dataclass
class PruneReport:
    database_id: uuid.UUID
    kept: int = 0
    deleted: list[uuid.UUID] = field(default_factory=list)
    failed: list[uuid.UUID] = field(default_factory=list)
    """Backups retention wanted gone but a destination refused (tried again later)."""


async def plan(
    ctx: StorageContext, database_id: uuid.UUID, now: datetime
) -> list[retention.Decision]:
    """What retention would do to the database's backups now (nothing is deleted)."""
    async with ctx.sessions() as session:
        schedules = {
            s.id: s
            for s in await session.scalars(
                select(Schedule).where(Schedule.database_id == database_id)
            )
        }
        groups = await retention_candidates(session, database_id)
    decisions: list[retention.Decision] = []
    for schedule_id, candidates in groups.items():
        schedule = schedules.get(schedule_id) if schedule_id else None
        rules = retention.effective(
            schedule.retention if schedule else None, schedule.timezone if schedule else None
        )
        if rules.problem:
            log.warning("schedule %s: %s; keeping all its backups", schedule_id, rules.problem)
        decisions += retention.decide(
            rules.policy, rules.zone, now, candidates,
            failed_run_retention_days=ctx.settings.failed_run_retention_days,
        )  # fmt: skip
    return decisions


async def apply_retention(ctx: StorageContext, database_id: uuid.UUID) -> PruneReport:
    """Delete what the database's policies no longer keep."""
    report = PruneReport(database_id)
    async with ctx.database_lock(database_id):
        for decision in await plan(ctx, database_id, ctx.clock()):
            if decision.keep:
                report.kept += 1
                continue
            if ctx.stopping.is_set():
                break
            reason = "retention: " + "; ".join(decision.reasons)
            if await delete_backup(ctx, decision.backup_id, reason, decision.reasons):
                report.deleted.append(decision.backup_id)
            else:
                report.failed.append(decision.backup_id)
    if report.deleted:
        log.info("retention deleted %d backup(s) of database %s", len(report.deleted), database_id)
    return report


async def delete_backup(
    ctx: StorageContext, backup_id: uuid.UUID, reason: str, reasons: tuple[str, ...] = ()
) -> bool:
    """Delete one final backup: artifacts on every destination, then the row. True when
    the row is gone (also when someone else deleted it meanwhile)."""
    async with ctx.sessions() as session:
        backup = await session.get(Backup, backup_id)
        if backup is None:
            return True
        if backup.status not in FINAL_BACKUP_STATUSES:
            return False
        project_id = await session.scalar(
            select(Database.project_id).where(Database.id == backup.database_id)
        )
        copies = await copies_with_destinations(session, backup_id)
    removal = await remove_copies(copies)
    for destination, error in removal.failed:
        log.warning("retention could not delete %s on %s: %s", backup.artifact_key,
                    destination.name, error)  # fmt: skip
    row_deleted = False
    async with ctx.sessions() as session, session.begin():
        for copy in removal.removed:
            await session.execute(
                delete(BackupCopy).where(
                    BackupCopy.backup_id == backup_id,
                    BackupCopy.destination_id == copy.destination_id,
                )
            )
        if removal.complete:
            # Only if nothing changed it meanwhile (a run taken up again, verified...).
            result = await session.execute(
                delete(Backup).where(Backup.id == backup_id, Backup.status == backup.status)
            )
            row_deleted = getattr(result, "rowcount", 0) == 1
        if row_deleted or removal.removed:
            cleared = [copy.destination_id for copy in removal.removed]
            entry = _audit(ctx, backup, project_id, reasons or (reason,), removal.failed,
                           row_deleted, cleared)  # fmt: skip
            session.add(entry)
    if row_deleted:
        metrics.RETENTION_DELETED.inc()
    if ctx.nc is not None and project_id is not None:
        for event in deleted_events(backup, project_id, removal, row_deleted=row_deleted,
                                    reason=reason):  # fmt: skip
            with contextlib.suppress(Exception):
                await publish(ctx.nc, event)
    return row_deleted


def _audit(
    ctx: StorageContext,
    backup: Backup,
    project_id: uuid.UUID | None,
    reasons: tuple[str, ...],
    failed: list[tuple[Destination, str]],
    row_deleted: bool,
    destinations: list[uuid.UUID],
) -> AuditEntry:
    return AuditEntry(
        at=ctx.clock(), user_id=None, actor=ACTOR, action=ACTION, target_type="backup",
        target_id=str(backup.id), project_id=project_id,
        outcome=AuditOutcome.SUCCESS if row_deleted else AuditOutcome.FAILURE,
        details={
            "reasons": list(reasons), "status": backup.status.value,
            "artifact_key": backup.artifact_key, "size_bytes": backup.bytes_out,
            "database_id": str(backup.database_id),
            "schedule_id": str(backup.schedule_id) if backup.schedule_id else None,
            "destinations_cleared": [str(d) for d in destinations],
            "errors": [error for _, error in failed],
        },
    )  # fmt: skip


async def databases_with_backups(ctx: StorageContext) -> list[uuid.UUID]:
    async with ctx.sessions() as session:
        return list(await session.scalars(select(Backup.database_id).distinct()))
