"""``python -m tests.scheduler.clocked``: the real scheduler service, except that its
clock reads the instant written in the file ``$BM_TEST_CLOCK_FILE`` (frozen until
the test writes another) and SIGUSR1 makes it run a round at once — so process
tests move a scheduler across a slot when they choose, not when the wall clock does.
"""

from __future__ import annotations

import asyncio
import os
import signal
from collections.abc import Callable
from datetime import datetime
from pathlib import Path

from services.common.lifecycle import Runtime, main
from services.scheduler.service import SchedulerService


class ClockedScheduler(SchedulerService):
    async def start(self, runtime: Runtime) -> None:
        await super().start(runtime)  # the handler is in place before /readyz says 200
        asyncio.get_running_loop().add_signal_handler(signal.SIGUSR1, self._wake)

    def _wake(self) -> None:
        if self.scheduler is not None:
            self.scheduler.wake()


def file_clock(path: Path) -> Callable[[], datetime]:
    def now() -> datetime:
        return datetime.fromisoformat(path.read_text().strip())

    return now


def set_clock(path: Path, at: datetime) -> None:
    """Write the instant atomically (a reader never sees half of it)."""
    partial = path.with_suffix(".partial")
    partial.write_text(at.isoformat())
    partial.replace(path)


if __name__ == "__main__":
    main(ClockedScheduler(clock=file_clock(Path(os.environ["BM_TEST_CLOCK_FILE"]))))
