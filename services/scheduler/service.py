"""The scheduler: fires enabled schedules on their cron (issue #5 fills this in)."""

from __future__ import annotations

from typing import ClassVar

from services.common.lifecycle import Service


class SchedulerService(Service):
    name: ClassVar[str] = "scheduler"
