"""Schedule changes, published by the API on every change so schedulers apply them live.

The event says *which* schedule changed, not its new configuration: the scheduler
reloads the row from the metadata DB, so a late or replayed event can never install a
stale configuration.
"""

from __future__ import annotations

import uuid
from typing import ClassVar

from proto import subjects
from proto.base import Event
from proto.values import ScheduleChange


class ScheduleChanged(Event):
    SUBJECT: ClassVar[str] = subjects.SCHEDULE_CHANGED

    schedule_id: uuid.UUID
    project_id: uuid.UUID
    database_id: uuid.UUID
    change: ScheduleChange
    enabled: bool
    """Whether the schedule is enabled after the change (``False`` once deleted)."""
    changed_by: uuid.UUID | None = None
