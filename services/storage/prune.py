"""Applying retention to one database: decide with the pure selection function, then
delete what goes — a copy's artifact and manifest on its destination first, then its
``BackupCopy`` row, and the backup's row once no stored copy is left — with an audit
entry and ``bm.v1.backup.deleted`` events.

Each schedule's policy applies to the backups that schedule made, **per destination**:
on each destination it runs over the good backups stored there, so a destination
that missed a copy (failed that night) keeps an older one instead and still holds
what the policy says. A backup's row stays while any of its stored copies stays (its
failed, missing or corrupt copy records stay as they are) and goes, with all its
copies, when every stored copy goes. A destination that refuses a delete
(unreachable, read-only) keeps its copy, and the row with it; the next pass tries
again. Manual backups (and runs of deleted schedules) follow no policy and stay until
a person deletes them; their failed rows still expire after
``BM_FAILED_RUN_RETENTION_DAYS``.
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
    Removal,
    copies_with_destinations,
    deleted_events,
    remove_copies,
    retention_candidates,
)
from services.common.db.enums import FINAL_BACKUP_STATUSES, AuditOutcome, CopyStatus
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
    """Backup rows that stay (some may have lost copies: ``trimmed``)."""
    deleted: list[uuid.UUID] = field(default_factory=list)
    """Backup rows deleted, with all their copies."""
    trimmed: list[tuple[uuid.UUID, uuid.UUID]] = field(default_factory=list)
    """(backup, destination) of each copy deleted from a backup whose row stays."""
    failed: list[uuid.UUID] = field(default_factory=list)
    """Backups retention wanted (partly) gone but a destination refused (tried again later)."""


async def plan(
    ctx: StorageContext, database_id: uuid.UUID, now: datetime
) -> list[retention.BackupPlan]:
    """What retention would do to the database's backups now (nothing is deleted)."""
    async with ctx.sessions() as session:
        schedules = {
            s.id: s
            for s in await session.scalars(
                select(Schedule).where(Schedule.database_id == database_id)
            )
        }
        groups = await retention_candidates(session, database_id)
    decisions: list[retention.BackupPlan] = []
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
    """Delete the rows and copies the database's policies no longer keep."""
    report = PruneReport(database_id)
    async with ctx.database_lock(database_id):
        for decision in await plan(ctx, database_id, ctx.clock()):
            if decision.keep:
                report.kept += 1
                if not decision.dropped:
                    continue
            if ctx.stopping.is_set():
                break
            if decision.keep:
                removed, complete = await trim_backup(ctx, decision)
                report.trimmed += [(decision.backup_id, d) for d in removed]
            else:
                reason = _reason(decision.reasons)
                complete = await delete_backup(ctx, decision.backup_id, reason, decision.reasons)
                if complete:
                    report.deleted.append(decision.backup_id)
            if not complete:
                report.failed.append(decision.backup_id)
    if report.deleted or report.trimmed:
        log.info("retention deleted %d backup(s) and %d more copies of database %s",
                 len(report.deleted), len(report.trimmed), database_id)  # fmt: skip
    return report


async def delete_backup(
    ctx: StorageContext, backup_id: uuid.UUID, reason: str, reasons: tuple[str, ...] = ()
) -> bool:
    """Delete one final backup: artifacts on every destination, then the row. True when
    the row is gone (also when someone else deleted it meanwhile)."""
    row_deleted, _ = await _delete(ctx, backup_id, reasons or (reason,), reason, None)
    return row_deleted


async def trim_backup(
    ctx: StorageContext, decision: retention.BackupPlan
) -> tuple[list[uuid.UUID], bool]:
    """Delete the stored copies ``decision`` drops from a backup whose row stays; the
    destinations whose copy went, and whether every one did."""
    drop = {c.destination_id: c.reasons for c in decision.dropped if c.destination_id}
    reasons = tuple(dict.fromkeys(r for why in drop.values() for r in why))
    _, removal = await _delete(ctx, decision.backup_id, reasons, _reason(reasons), drop)
    return [copy.destination_id for copy in removal.removed], removal.complete


async def _delete(
    ctx: StorageContext,
    backup_id: uuid.UUID,
    reasons: tuple[str, ...],
    reason: str,
    drop: dict[uuid.UUID, tuple[str, ...]] | None,
) -> tuple[bool, Removal]:
    """Delete the row with every copy (``drop`` None), or only the stored copies on
    ``drop``'s destinations; whether the row is gone, and what went."""
    async with ctx.sessions() as session:
        backup = await session.get(Backup, backup_id)
        if backup is None:
            return drop is None, Removal()
        if backup.status not in FINAL_BACKUP_STATUSES:
            return False, Removal()
        project_id = await session.scalar(
            select(Database.project_id).where(Database.id == backup.database_id)
        )
        copies = await copies_with_destinations(session, backup_id)
    if drop is not None:
        copies = _trimmable(backup, copies, drop)
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
        if drop is None and removal.complete:
            # Only if nothing changed it meanwhile (a run taken up again, verified...).
            result = await session.execute(
                delete(Backup).where(Backup.id == backup_id, Backup.status == backup.status)
            )
            row_deleted = getattr(result, "rowcount", 0) == 1
        if row_deleted or removal.removed:
            done = row_deleted if drop is None else removal.complete
            session.add(_audit(ctx, backup, project_id, reasons, removal, row_deleted, done, drop))
    if row_deleted:
        metrics.RETENTION_DELETED.inc()
    if ctx.nc is not None and project_id is not None:
        why = {d: _reason(r) for d, r in (drop or {}).items()}
        for event in deleted_events(backup, project_id, removal, row_deleted=row_deleted,
                                    reason=reason, copy_reasons=why):  # fmt: skip
            with contextlib.suppress(Exception):
                await publish(ctx.nc, event)
    return row_deleted, removal


def _trimmable(
    backup: Backup,
    copies: list[tuple[BackupCopy, Destination]],
    drop: dict[uuid.UUID, tuple[str, ...]],
) -> list[tuple[BackupCopy, Destination]]:
    """The stored copies on ``drop``'s destinations — none if no stored copy would be
    left (something changed since the plan: the next pass decides again)."""
    stored = [(c, d) for c, d in copies if c.status is CopyStatus.STORED]
    going = [(c, d) for c, d in stored if c.destination_id in drop]
    if len(going) == len(stored):
        log.info("backup %s: keeping its copies, no other stored copy is left", backup.id)
        return []
    return going


def _reason(reasons: tuple[str, ...]) -> str:
    return "retention: " + "; ".join(reasons)


def _audit(
    ctx: StorageContext,
    backup: Backup,
    project_id: uuid.UUID | None,
    reasons: tuple[str, ...],
    removal: Removal,
    row_deleted: bool,
    done: bool,
    drop: dict[uuid.UUID, tuple[str, ...]] | None,
) -> AuditEntry:
    details: dict[str, object] = {
        "reasons": list(reasons), "status": backup.status.value,
        "artifact_key": backup.artifact_key, "size_bytes": backup.bytes_out,
        "database_id": str(backup.database_id),
        "schedule_id": str(backup.schedule_id) if backup.schedule_id else None,
        "row_deleted": row_deleted, "freed_bytes": removal.removed_bytes,
        "destinations_cleared": [str(copy.destination_id) for copy in removal.removed],
        "errors": [error for _, error in removal.failed],
    }  # fmt: skip
    if drop is not None:
        details["copy_reasons"] = {str(d): list(why) for d, why in drop.items()}
    return AuditEntry(
        at=ctx.clock(), user_id=None, actor=ACTOR, action=ACTION, target_type="backup",
        target_id=str(backup.id), project_id=project_id,
        outcome=AuditOutcome.SUCCESS if done else AuditOutcome.FAILURE, details=details,
    )  # fmt: skip


async def databases_with_backups(ctx: StorageContext) -> list[uuid.UUID]:
    async with ctx.sessions() as session:
        return list(await session.scalars(select(Backup.database_id).distinct()))
