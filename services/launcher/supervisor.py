"""Runs the four services as child processes, waits until each answers ``/readyz``,
restarts one that dies, and stops them all (SIGTERM, grace, then SIGKILL)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import sys
from dataclasses import dataclass, field

import aiohttp

log = logging.getLogger(__name__)

SERVICES = ("api", "scheduler", "executor", "storage")
RESTART_DELAY_S = 2.0


@dataclass
class Child:
    name: str
    port: int
    process: asyncio.subprocess.Process | None = None
    restarts: int = 0
    watcher: asyncio.Task[None] | None = field(default=None, repr=False)


class Supervisor:
    def __init__(self, ports: dict[str, int], grace_s: float) -> None:
        self.children = [Child(name, ports[name]) for name in SERVICES]
        self.grace_s = grace_s
        self._stopping = False

    async def start(self) -> None:
        for child in self.children:
            await self._spawn(child)

    async def _spawn(self, child: Child) -> None:
        # Own session: a Ctrl-C in the terminal reaches only us, and we stop the
        # services in order (services first, NATS last).
        child.process = await asyncio.create_subprocess_exec(
            sys.executable, "-m", f"services.{child.name}", start_new_session=True
        )
        child.watcher = asyncio.create_task(self._watch(child), name=f"watch-{child.name}")

    async def _watch(self, child: Child) -> None:
        assert child.process is not None
        code = await child.process.wait()
        if self._stopping:
            return
        child.restarts += 1
        log.error(
            "%s exited with code %s; restarting in %.0fs (restart #%d)",
            child.name,
            code,
            RESTART_DELAY_S,
            child.restarts,
        )
        await asyncio.sleep(RESTART_DELAY_S)
        if not self._stopping:
            await self._spawn(child)

    async def wait_ready(self, within_s: float) -> list[str]:
        """Wait until every service answers /readyz 200; return those that did not."""
        deadline = asyncio.get_running_loop().time() + within_s
        pending = {child.name: child.port for child in self.children}
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=2)) as http:
            while pending and asyncio.get_running_loop().time() < deadline:
                for name, port in list(pending.items()):
                    with contextlib.suppress(aiohttp.ClientError, TimeoutError):
                        async with http.get(f"http://127.0.0.1:{port}/readyz") as response:
                            if response.status == 200:
                                del pending[name]
                if pending:
                    await asyncio.sleep(0.3)
        return sorted(pending)

    async def stop(self) -> None:
        self._stopping = True
        running = [c for c in self.children if c.process and c.process.returncode is None]
        for child in running:
            assert child.process is not None
            child.process.send_signal(signal.SIGTERM)
        for child in running:
            assert child.process is not None
            try:
                await asyncio.wait_for(child.process.wait(), self.grace_s + 5)
            except TimeoutError:
                log.error("%s did not stop within the grace period; killing it", child.name)
                child.process.kill()
                await child.process.wait()
        for child in self.children:
            if child.watcher is not None:
                child.watcher.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await child.watcher
