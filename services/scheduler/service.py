"""The scheduler service: fires enabled schedules on their cron (time-zone aware),
exactly once per slot across restarts and replicas, catches up after downtime and
applies schedule changes live. See docs/scheduler.md."""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Callable
from datetime import datetime
from typing import ClassVar

from nats.aio.msg import Msg
from nats.aio.subscription import Subscription

from proto.codec import ProtoError, decode
from proto.schedule_events import ScheduleChanged
from services.common.db.engine import session_factory
from services.common.db.types import utcnow
from services.common.lifecycle import Runtime, Service
from services.scheduler.context import SchedulerContext
from services.scheduler.scheduler import Scheduler

log = logging.getLogger(__name__)


class SchedulerService(Service):
    name: ClassVar[str] = "scheduler"

    def __init__(self, clock: Callable[[], datetime] = utcnow) -> None:
        self._clock = clock
        self.scheduler: Scheduler | None = None
        self._subscription: Subscription | None = None

    async def start(self, runtime: Runtime) -> None:
        ctx = SchedulerContext(
            settings=runtime.settings,
            sessions=session_factory(runtime.engine),
            nc=runtime.nc,
            clock=self._clock,
        )
        scheduler = self.scheduler = Scheduler(ctx)
        # Subscribe before the first load, so no change falls between the two.
        self._subscription = await runtime.nc.subscribe(ScheduleChanged.SUBJECT, cb=self._on_change)
        try:
            # Load and catch up before reporting ready.
            while await scheduler.tick() == 0 and not runtime.stopping.is_set():
                pass
        except Exception:
            log.exception("first scheduling round failed; the loop will try again")
        runtime.work.spawn(scheduler.run(), name="scheduler-loop")

    async def stop_taking_work(self) -> None:
        if self._subscription is not None:
            with contextlib.suppress(Exception):
                await self._subscription.unsubscribe()
            self._subscription = None
        if self.scheduler is not None:
            self.scheduler.stop()

    async def _on_change(self, msg: Msg) -> None:
        try:
            event = decode(ScheduleChanged, msg.data)
        except ProtoError as exc:
            log.warning("ignoring a malformed %s: %s", msg.subject, exc)
            return
        log.info("schedule %s %s", event.schedule_id, event.change.value)
        if self.scheduler is not None:
            self.scheduler.schedule_changed(event.schedule_id)
