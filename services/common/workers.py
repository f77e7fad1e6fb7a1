"""More processes of one service on one port.

A service that answers many requests at once (the API) runs several copies of
itself: the first (worker 0, the process that was started) starts the others as
``python -m services.<name>`` with ``BM_WORKER_INDEX`` set, and every copy binds the
same port with ``SO_REUSEPORT``, so the kernel spreads connections over them. One
Python process uses one CPU; the copies use them all.

Worker 0 restarts a copy that dies and stops them all when it stops (SIGTERM, the
grace period, then SIGKILL). A copy whose worker 0 is gone (killed with SIGKILL)
notices within a second and stops too.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import os
import signal
import sys
from pathlib import Path

from services.common.work import WorkTracker

log = logging.getLogger(__name__)

WORKER_INDEX_ENV = "BM_WORKER_INDEX"
RESTART_DELAY_S = 1.0
PARENT_CHECK_S = 1.0


def available_cpus(cgroup: Path = Path("/sys/fs/cgroup/cpu.max")) -> int:
    """CPUs this process may use: those it may run on, fewer when a container's CPU
    limit (cgroup v2 ``cpu.max``: quota and period) allows less."""
    cpus = len(os.sched_getaffinity(0))
    try:
        quota, period = cgroup.read_text().split()
        if quota != "max":
            cpus = min(cpus, math.ceil(int(quota) / int(period)))
    except (OSError, ValueError):
        pass  # no cgroup v2 limit to honour
    return max(1, cpus)


def worker_index() -> int:
    """0 in the process that was started, 1.. in the copies it started."""
    return int(os.environ.get(WORKER_INDEX_ENV, "0"))


class WorkerPool:
    """The copies ``1..count`` of service ``name``, kept running by worker 0."""

    def __init__(self, name: str, count: int) -> None:
        self.name = name
        self.count = count
        self.processes: dict[int, asyncio.subprocess.Process] = {}
        self._stopping = False
        self._tasks = WorkTracker()

    def start(self) -> None:
        for index in range(1, self.count + 1):
            self._tasks.spawn(self._keep_running(index), name=f"{self.name}-worker-{index}")

    async def _keep_running(self, index: int) -> None:
        while not self._stopping:
            process = await asyncio.create_subprocess_exec(
                sys.executable, "-m", f"services.{self.name}",
                env=os.environ | {WORKER_INDEX_ENV: str(index)},
            )  # fmt: skip
            self.processes[index] = process
            if self._stopping:  # stop() ran while this copy was being started
                with contextlib.suppress(ProcessLookupError):
                    process.send_signal(signal.SIGTERM)
            code = await process.wait()
            if self._stopping:
                return
            log.error("%s worker %d exited with code %s; restarting it in %.0fs",
                      self.name, index, code, RESTART_DELAY_S)  # fmt: skip
            await asyncio.sleep(RESTART_DELAY_S)

    async def stop(self, grace_s: float) -> None:
        """SIGTERM every copy; SIGKILL those still running after ``grace_s``."""
        self._stopping = True
        running = [p for p in self.processes.values() if p.returncode is None]
        for process in running:
            with contextlib.suppress(ProcessLookupError):
                process.send_signal(signal.SIGTERM)
        try:
            await asyncio.wait_for(
                asyncio.gather(*(p.wait() for p in running)), timeout=grace_s + 1
            )
        except TimeoutError:
            for process in running:
                if process.returncode is None:
                    log.warning("%s worker pid %d did not stop; killing it",
                                self.name, process.pid)  # fmt: skip
                    with contextlib.suppress(ProcessLookupError):
                        process.kill()
            await asyncio.gather(*(p.wait() for p in running))
        await self._tasks.drain(1)


async def stop_with_parent(stopping: asyncio.Event) -> None:
    """In a copy: set ``stopping`` once the worker 0 that started it is gone."""
    parent = os.getppid()
    while not stopping.is_set():
        if os.getppid() != parent:
            log.warning("worker 0 (pid %d) is gone; stopping", parent)
            stopping.set()
            return
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stopping.wait(), PARENT_CHECK_S)
