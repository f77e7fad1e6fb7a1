"""Usage: bytes and copies stored per project, database and destination (one grouped
query over ``backup_copies``, which the executor and this service keep current), and
the free space of local destinations, with ``bm.v1.storage.low_space_detected``
when it falls under the threshold (again at most once a day while it stays low)."""

from __future__ import annotations

import contextlib
import logging
import uuid
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Final

from sqlalchemy import func, select

from proto.storage_events import StorageLowSpaceDetected
from services.common.db.enums import CopyStatus
from services.common.db.models import Backup, BackupCopy, Database, Destination
from services.common.destinations.space import FreeSpace
from services.common.destinations.space import free_space as common_free_space
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


async def free_space(destination: Destination, settings: Settings) -> FreeSpace | None:
    """The free space of a local destination (see ``common.destinations.space``),
    also exported as metrics."""
    found = await common_free_space(destination, settings)
    if found is not None:
        metrics.FREE_BYTES.labels(str(destination.id)).set(found.free_bytes)
        metrics.TOTAL_BYTES.labels(str(destination.id)).set(found.total_bytes)
    return found


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
