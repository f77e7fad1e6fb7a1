"""The free space of a local destination's device, and when it counts as low
(``BM_LOW_SPACE_BYTES`` / ``BM_LOW_SPACE_FRACTION``): read by the storage service
(metrics, low-space events) and by the API's storage numbers."""

from __future__ import annotations

import asyncio
import shutil
import uuid
from dataclasses import dataclass

from services.common.db.models import Destination
from services.common.destinations import driver_for
from services.common.destinations.base import DestinationError
from services.common.destinations.local import LocalDriver
from services.common.settings import Settings


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
    return FreeSpace(destination.id, found.free, found.total, threshold(settings, found.total))
