"""The retention preview: what a schedule's policy keeps and deletes right now, and
why — per backup and per destination — decided by the same function and from the
same candidates as the storage service uses when it deletes (``common.retention``,
``common.artifacts``)."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from services.api.auth.principal import Principal
from services.api.domain.schedules import get_schedule
from services.api.schemas.retention import BackupVerdict, CopyVerdict, RetentionPreview
from services.common.artifacts import retention_candidates
from services.common.db.models import Backup, BackupCopy, Destination
from services.common.retention import BackupPlan, Candidate, decide, effective


@dataclass(frozen=True)
class _Copy:
    destination_name: str
    size_bytes: int


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
    copies = await _copies(session, schedule.id)
    verdicts = [_verdict(d, candidates[d.backup_id], copies) for d in decisions]
    dropped = [v for v in verdicts if not v.keep]
    trimmed = [c for v in verdicts if v.keep for c in v.copies if not c.keep]
    return RetentionPreview(
        schedule_id=schedule.id, database_id=schedule.database_id, project_id=view.project_id,
        generated_at=now, timezone=schedule.timezone, policy=rules.policy,
        keeps_everything=rules.policy.keeps_everything,
        failed_run_retention_days=failed_run_retention_days, problem=rules.problem,
        keep_count=len(verdicts) - len(dropped), delete_count=len(dropped),
        copy_delete_count=len(trimmed),
        delete_bytes=sum(v.size_bytes for v in dropped) + sum(c.size_bytes for c in trimmed),
        backups=verdicts[:limit], truncated=len(verdicts) > limit,
    )  # fmt: skip


def _verdict(
    decision: BackupPlan,
    candidate: Candidate,
    copies: dict[uuid.UUID, dict[uuid.UUID, _Copy]],
) -> BackupVerdict:
    own = copies.get(decision.backup_id, {})
    per_destination: list[CopyVerdict] = []
    for copy in decision.copies:
        if copy.destination_id is None or copy.destination_id not in own:
            continue  # its record went meanwhile
        found = own[copy.destination_id]
        per_destination.append(CopyVerdict(
            destination_id=copy.destination_id, destination_name=found.destination_name,
            size_bytes=found.size_bytes, keep=copy.keep, reasons=list(copy.reasons),
        ))  # fmt: skip
    per_destination.sort(key=lambda c: (c.destination_name, str(c.destination_id)))
    return BackupVerdict(
        backup_id=decision.backup_id, status=candidate.status,
        finished_at=candidate.finished_at, verified=candidate.verified,
        size_bytes=sum(c.size_bytes for c in own.values()), keep=decision.keep,
        reasons=list(decision.reasons), copies=per_destination,
    )  # fmt: skip


async def _copies(
    session: AsyncSession, schedule_id: uuid.UUID
) -> dict[uuid.UUID, dict[uuid.UUID, _Copy]]:
    """Every copy record of the schedule's backups (stored or not): backup ->
    destination -> its name and size."""
    rows = await session.execute(
        select(BackupCopy.backup_id, BackupCopy.destination_id, Destination.name,
               BackupCopy.size_bytes)
        .join(Backup, Backup.id == BackupCopy.backup_id)
        .join(Destination, Destination.id == BackupCopy.destination_id)
        .where(Backup.schedule_id == schedule_id)
    )  # fmt: skip
    found: dict[uuid.UUID, dict[uuid.UUID, _Copy]] = {}
    for backup_id, destination_id, name, size in rows:
        found.setdefault(backup_id, {})[destination_id] = _Copy(name, int(size or 0))
    return found
