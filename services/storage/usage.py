"""Usage: bytes and copies stored per project, database and destination (one grouped
query over ``backup_copies``, which the executor and this service keep current), and
the free space of local destinations, with ``bm.v1.storage.low_space_detected``
when it falls under the threshold (again at most once a day while it stays low)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import shutil
import uuid
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Final

from sqlalchemy import func, select

from proto.storage_events import StorageLowSpaceDetected
from services.common.db.enums import CopyStatus
from services.common.db.models import Backup, BackupCopy, Database, Destination
from services.common.destinations import driver_for
from services.common.destinations.base import DestinationError
from services.common.destinations.local import LocalDriver
from services.common.settings import Settings
from services.common.streams import publish
from services.storage import metrics
from services.storage.context import StorageContext

log = logging.getLogger(__name__)
REPEAT_WARNING: Final = timedelta(hours=24)


@dataclass(frozen=True)
class Usage:
    project_id: uuid.UUID
    database_id: uuid.UUID
    destination_id: uuid.UUID
    copies: int
    size_bytes: int


async def stored_usage(ctx: StorageContext) -> list[Usage]:
    async with ctx.sessions() as session:
        rows = await session.execute(
            select(
                Database.project_id,
                Backup.database_id,
                BackupCopy.destination_id,
                func.count(),
                func.coalesce(func.sum(BackupCopy.size_bytes), 0),
            )
            .join(Backup, Backup.id == BackupCopy.backup_id)
            .join(Database, Database.id == Backup.database_id)
            .where(BackupCopy.status == CopyStatus.STORED)
            .group_by(Database.project_id, Backup.database_id, BackupCopy.destination_id)
        )
        return [Usage(row[0], row[1], row[2], int(row[3]), int(row[4] or 0)) for row in rows]


def export_usage(rows: list[Usage]) -> None:
    metrics.STORED_BYTES.clear()
    metrics.STORED_COPIES.clear()
    for row in rows:
        labels = (str(row.project_id), str(row.database_id), str(row.destination_id))
        metrics.STORED_BYTES.labels(*labels).set(row.size_bytes)
        metrics.STORED_COPIES.labels(*labels).set(row.copies)


@dataclass(frozen=True)
class FreeSpace:
    destination_id: uuid.UUID
    free_bytes: int
    total_bytes: int
    threshold_bytes: int

    @property
    def low(self) -> bool:
        return self.free_bytes < self.threshold_bytes


def threshold(settings: Settings, total_bytes: int) -> int:
    return max(settings.low_space_bytes, int(total_bytes * settings.low_space_fraction))


async def free_space(destination: Destination, settings: Settings) -> FreeSpace | None:
    """The free space of a local destination's device; None for other kinds, or when
    its directory is not there."""
    try:
        driver = driver_for(destination)
    except DestinationError:
        return None
    if not isinstance(driver, LocalDriver):
        return None
    try:
        found = await asyncio.to_thread(shutil.disk_usage, driver.root)
    except OSError:
        return None
    metrics.FREE_BYTES.labels(str(destination.id)).set(found.free)
    metrics.TOTAL_BYTES.labels(str(destination.id)).set(found.total)
    return FreeSpace(destination.id, found.free, found.total, threshold(settings, found.total))


@dataclass
class LowSpaceWarnings:
    """Warns when a destination gets low, and again each day it stays low."""

    warned_at: dict[uuid.UUID, datetime] = field(default_factory=dict)

    async def check(self, ctx: StorageContext, space: FreeSpace) -> bool:
        """Publish a warning if due; True when one was published."""
        if not space.low:
            self.warned_at.pop(space.destination_id, None)
            return False
        now = ctx.clock()
        last = self.warned_at.get(space.destination_id)
        if last is not None and now - last < REPEAT_WARNING:
            return False
        log.warning("destination %s has %d bytes free (threshold %d)", space.destination_id,
                    space.free_bytes, space.threshold_bytes)  # fmt: skip
        self.warned_at[space.destination_id] = now
        if ctx.nc is not None:
            event = StorageLowSpaceDetected(
                destination_id=space.destination_id, free_bytes=space.free_bytes,
                total_bytes=space.total_bytes, threshold_bytes=space.threshold_bytes,
            )  # fmt: skip
            with contextlib.suppress(Exception):
                await publish(ctx.nc, event)
        return True
