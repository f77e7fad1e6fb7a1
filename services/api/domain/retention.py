"""The retention preview: what a schedule's policy keeps and deletes right now, and
why, decided by the same function and from the same candidates as the storage
service uses when it deletes (``common.retention``, ``common.artifacts``)."""

from __future__ import annotations

import uuid
from datetime import datetime

from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession

from services.api.auth.principal import Principal
from services.api.domain.schedules import get_schedule
from services.api.schemas.retention import BackupVerdict, RetentionPreview
from services.common.artifacts import retention_candidates
from services.common.db.models import Backup, BackupCopy
from services.common.retention import decide, effective


async def preview(
    session: AsyncSession,
    principal: Principal,
    schedule_id: uuid.UUID,
    *,
    now: datetime,
    failed_run_retention_days: int,
    limit: int,
) -> RetentionPreview:
    view = await get_schedule(session, principal, schedule_id)
    schedule = view.schedule
    groups = await retention_candidates(session, schedule.database_id, schedule_id=schedule.id)
    candidates = {c.id: c for c in groups.get(schedule.id, [])}
    rules = effective(schedule.retention, schedule.timezone)
    decisions = decide(
        rules.policy, rules.zone, now, candidates.values(),
        failed_run_retention_days=failed_run_retention_days,
    )  # fmt: skip
    sizes = await _sizes(session, schedule.id)
    verdicts = [
        BackupVerdict(
            backup_id=d.backup_id,
            status=candidates[d.backup_id].status,
            finished_at=candidates[d.backup_id].finished_at,
            verified=candidates[d.backup_id].verified,
            size_bytes=sizes.get(d.backup_id, 0),
            keep=d.keep,
            reasons=list(d.reasons),
        )
        for d in decisions
    ]
    dropped = [v for v in verdicts if not v.keep]
    return RetentionPreview(
        schedule_id=schedule.id, database_id=schedule.database_id, project_id=view.project_id,
        generated_at=now, timezone=schedule.timezone, policy=rules.policy,
        keeps_everything=rules.policy.keeps_everything,
        failed_run_retention_days=failed_run_retention_days, problem=rules.problem,
        keep_count=len(verdicts) - len(dropped), delete_count=len(dropped),
        delete_bytes=sum(v.size_bytes for v in dropped), backups=verdicts[:limit],
        truncated=len(verdicts) > limit,
    )  # fmt: skip


async def _sizes(session: AsyncSession, schedule_id: uuid.UUID) -> dict[uuid.UUID, int]:
    rows = await session.execute(
        select(BackupCopy.backup_id, func.coalesce(func.sum(BackupCopy.size_bytes), 0))
        .join(Backup, Backup.id == BackupCopy.backup_id)
        .where(Backup.schedule_id == schedule_id)
        .group_by(BackupCopy.backup_id)
    )
    return {row[0]: int(row[1] or 0) for row in rows}
