"""Reconciliation of one destination with the metadata DB.

Only our own files are looked at (keys of our layout, see ``common.artifacts``);
anything else on a destination is never touched. The listing is taken first and the
rows read after it, so a backup finishing meanwhile is seen as in progress or done,
never as an orphan.

* **Orphans**: our files no copy row refers to. Removed once older than
  ``BM_ORPHAN_GRACE_S`` when they are certainly leftovers: unfinished writes
  (``.partial-``; a live write keeps its file's time fresh) and files of runs whose
  row says they failed (a crash between rename and record). Complete artifacts of
  a backup id the metadata DB does not know, or of a good backup with no copy row
  here, are reported but never removed: after a lost or replaced metadata DB they
  *are* the backups (re-index them), and another destination row or installation
  may share the directory.
* **Missing**: stored copies whose artifact is gone (confirmed by ``stat``) are
  marked ``missing``; a missing copy whose file is back is ``stored`` again. A
  destination whose root is gone, or that holds none of our files while copies are
  recorded there, looks unmounted: nothing is marked then.
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path

from sqlalchemy import select, update

from services.common.artifacts import KeyKind, OurKey, manifest_key, parse_key
from services.common.db.enums import BackupStatus, CopyStatus
from services.common.db.models import Backup, BackupCopy, Destination
from services.common.destinations import driver_for
from services.common.destinations.base import ArtifactMissing, DestinationError, Driver, ObjectInfo
from services.common.destinations.local import LocalDriver
from services.common.retention import HISTORY_ONLY
from services.storage.context import StorageContext

log = logging.getLogger(__name__)
IN_PROGRESS = frozenset({BackupStatus.QUEUED, BackupStatus.RUNNING})
_CHUNK = 500


@dataclass
class ReconcileReport:
    destination_id: uuid.UUID
    available: bool = True
    problem: str | None = None
    orphans: list[ObjectInfo] = field(default_factory=list)
    removed: list[ObjectInfo] = field(default_factory=list)
    newly_missing: list[uuid.UUID] = field(default_factory=list)
    missing: list[uuid.UUID] = field(default_factory=list)
    """Every backup whose copy here is missing (after this sweep)."""
    found_again: list[uuid.UUID] = field(default_factory=list)
    unreadable: dict[str, str] = field(default_factory=dict)
    foreign: int = 0
    """Files that are not ours (left alone, only counted)."""


@dataclass(frozen=True)
class _Copy:
    backup_id: uuid.UUID
    key: str
    status: CopyStatus
    size: int | None
    stored_at: datetime | None


async def reconcile(ctx: StorageContext, destination: Destination) -> ReconcileReport:
    report = ReconcileReport(destination.id)
    try:
        driver = driver_for(destination)
    except DestinationError as exc:
        report.available, report.problem = False, str(exc)
        return report
    if isinstance(driver, LocalDriver) and not await _is_dir(driver.root):
        report.available = False
        report.problem = f"{driver.root} is not a directory (not mounted?)"
        return report
    started = ctx.clock()
    listing: dict[str, tuple[OurKey, ObjectInfo]] = {}
    async for info in driver.list():
        parsed = parse_key(info.key)
        if parsed is None:
            report.foreign += 1
        else:
            listing[info.key] = (parsed, info)
    statuses = await _statuses(ctx, {parsed.backup_id for parsed, _ in listing.values()})
    copies = await _copies_here(ctx, destination.id)
    referenced = {key for c in copies for key in (c.key, manifest_key(c.key))}
    grace = timedelta(seconds=ctx.settings.orphan_grace_s)
    for key, (parsed, info) in listing.items():
        status = statuses.get(parsed.backup_id)
        if status in IN_PROGRESS or (parsed.kind is not KeyKind.PARTIAL and key in referenced):
            continue
        report.orphans.append(info)
        removable = parsed.kind is KeyKind.PARTIAL or status in HISTORY_ONLY
        if removable and started - info.modified_at > grace and not ctx.stopping.is_set():
            await _remove(driver, info, report)
    await _check_copies(ctx, driver, destination, copies, listing, started, report)
    return report


async def _is_dir(path: Path) -> bool:
    return await asyncio.to_thread(path.is_dir)


async def _statuses(ctx: StorageContext, ids: set[uuid.UUID]) -> dict[uuid.UUID, BackupStatus]:
    found: dict[uuid.UUID, BackupStatus] = {}
    ordered = sorted(ids)
    async with ctx.sessions() as session:
        for start in range(0, len(ordered), _CHUNK):
            chunk = ordered[start : start + _CHUNK]
            rows = await session.execute(
                select(Backup.id, Backup.status).where(Backup.id.in_(chunk))
            )
            found.update({row.id: row.status for row in rows})
    return found


async def _copies_here(ctx: StorageContext, destination_id: uuid.UUID) -> list[_Copy]:
    async with ctx.sessions() as session:
        rows = await session.execute(
            select(BackupCopy.backup_id, BackupCopy.artifact_key, BackupCopy.status,
                   BackupCopy.size_bytes, BackupCopy.stored_at)
            .where(BackupCopy.destination_id == destination_id)
        )  # fmt: skip
        return [_Copy(*row) for row in rows]


async def _remove(driver: Driver, info: ObjectInfo, report: ReconcileReport) -> None:
    try:
        await driver.delete(info.key)
    except DestinationError as exc:
        report.unreadable[info.key] = str(exc)
        return
    report.removed.append(info)


async def _check_copies(
    ctx: StorageContext,
    driver: Driver,
    destination: Destination,
    copies: list[_Copy],
    listing: dict[str, tuple[OurKey, ObjectInfo]],
    started: datetime,
    report: ReconcileReport,
) -> None:
    gone: list[_Copy] = []
    back: list[_Copy] = []
    for copy in copies:
        listed = listing.get(copy.key)
        if copy.status is CopyStatus.MISSING:
            if listed is not None and listed[1].size == copy.size:
                back.append(copy)
            else:
                report.missing.append(copy.backup_id)
        elif copy.status is CopyStatus.STORED and listed is None:
            # Stored after the listing began: not a finding (the next sweep looks again).
            if copy.stored_at is not None and copy.stored_at >= started:
                continue
            problem = await _confirm_missing(driver, copy.key)
            if problem is None:
                gone.append(copy)
            elif problem:
                report.unreadable[copy.key] = problem
    if gone and not listing:
        report.available = False
        report.problem = (
            f"none of our files is on {destination.name} although {len(gone)} stored "
            "copies are recorded there: not mounted? Nothing was marked missing"
        )
        return
    now = ctx.clock()
    async with ctx.sessions() as session, session.begin():
        for copy in gone:
            await session.execute(
                update(BackupCopy)
                .where(BackupCopy.backup_id == copy.backup_id,
                       BackupCopy.destination_id == destination.id,
                       BackupCopy.status == CopyStatus.STORED)
                .values(status=CopyStatus.MISSING, checked_at=now,
                        error_message=f"the artifact was not found on {destination.name}")
            )  # fmt: skip
        for copy in back:
            await session.execute(
                update(BackupCopy)
                .where(BackupCopy.backup_id == copy.backup_id,
                       BackupCopy.destination_id == destination.id,
                       BackupCopy.status == CopyStatus.MISSING)
                .values(status=CopyStatus.STORED, checked_at=None, error_message=None)
            )  # fmt: skip
    report.newly_missing = [copy.backup_id for copy in gone]
    report.missing += report.newly_missing
    report.found_again = [copy.backup_id for copy in back]
    for copy in gone:
        log.warning("backup %s: artifact %s is missing from %s", copy.backup_id, copy.key,
                    destination.name)  # fmt: skip


async def _confirm_missing(driver: Driver, key: str) -> str | None:
    """None when the artifact is really gone; a problem when it is there but cannot
    be read (not a regular file, no permission); "" when it is fine after all."""
    try:
        await driver.stat(key)
        async for _ in driver.read(key, end=1):  # one byte: is it a readable file?
            pass
    except ArtifactMissing:
        return None
    except (DestinationError, OSError) as exc:
        return f"cannot read {key}: {exc}"
    return ""
