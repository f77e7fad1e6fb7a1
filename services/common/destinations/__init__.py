"""Destination drivers: where artifacts live. One interface (``base.Driver``) used by
the executor (write), the API (stream a download) and the storage service (list,
stat, read for hashing, delete); ``local`` now, object stores later."""

from __future__ import annotations

from pathlib import Path

from services.common.db.enums import DestinationKind
from services.common.db.models import Destination
from services.common.destinations.base import DestinationError, Driver
from services.common.destinations.local import LocalDriver


def driver_for(destination: Destination) -> Driver:
    if destination.kind is DestinationKind.LOCAL:
        path = destination.config.get("path")
        if not isinstance(path, str) or not path:
            raise DestinationError(f"destination {destination.name!r} has no path")
        return LocalDriver(Path(path))
    raise DestinationError(f"destination kind {destination.kind.value} is not supported yet")
