"""Running a dump or restore tool: argv as a list, secrets only through env or 0600
files, stdout read in chunks as an async iterator, stderr read concurrently into a
bounded tail, and the whole process group killed if we stop early."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
from collections import deque
from collections.abc import AsyncIterator, Mapping, Sequence

from services.common.errors import BackupManagerError

CHUNK_SIZE = 1 << 20
STDERR_TAIL_BYTES = 64 * 1024
KILL_GRACE_S = 5.0


class ToolMissing(BackupManagerError):
    code = "tool_missing"


class Tool:
    """One running tool process."""

    def __init__(self, argv: Sequence[str], env: Mapping[str, str]) -> None:
        self.argv = list(argv)
        self.env = dict(env)
        self.process: asyncio.subprocess.Process | None = None
        self._stderr: deque[bytes] = deque()
        self._stderr_size = 0
        self._stderr_task: asyncio.Task[None] | None = None

    async def start(self, *, stdin: bool = False) -> None:
        try:
            self.process = await asyncio.create_subprocess_exec(
                *self.argv,
                stdin=asyncio.subprocess.PIPE if stdin else asyncio.subprocess.DEVNULL,
                stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.PIPE,
                env=self.env,
                start_new_session=True,  # its own group: we can kill it with its children
                limit=CHUNK_SIZE,
            )
        except FileNotFoundError:
            raise ToolMissing(f"{self.argv[0]} is not installed on this executor") from None
        assert self.process.stderr is not None
        self._stderr_task = asyncio.create_task(self._read_stderr(self.process.stderr))

    @property
    def pid(self) -> int:
        assert self.process is not None
        return self.process.pid

    async def _read_stderr(self, stream: asyncio.StreamReader) -> None:
        while chunk := await stream.read(8192):
            self._stderr.append(chunk)
            self._stderr_size += len(chunk)
            while self._stderr_size > STDERR_TAIL_BYTES and len(self._stderr) > 1:
                self._stderr_size -= len(self._stderr.popleft())

    def stderr_tail(self) -> str:
        return b"".join(self._stderr).decode("utf-8", errors="replace")

    async def stdout(self, chunk_size: int = CHUNK_SIZE) -> AsyncIterator[bytes]:
        assert self.process is not None
        assert self.process.stdout is not None
        while chunk := await self.process.stdout.read(chunk_size):
            yield chunk

    async def feed(self, chunks: AsyncIterator[bytes]) -> None:
        """Write ``chunks`` to the tool's stdin with back-pressure, then close it.

        If producing the chunks fails, the tool is killed instead: a restore tool
        must never see a clean end of input (and commit) after a bad stream."""
        assert self.process is not None
        assert self.process.stdin is not None
        stdin = self.process.stdin
        try:
            async for chunk in chunks:
                stdin.write(chunk)
                await stdin.drain()
        except (BrokenPipeError, ConnectionResetError):
            return  # the tool stopped reading: its exit code and stderr say why
        except BaseException:
            await self.kill()
            raise
        stdin.close()
        with contextlib.suppress(ConnectionError):
            await stdin.wait_closed()

    async def wait(self) -> int:
        assert self.process is not None
        code = await self.process.wait()
        if self._stderr_task is not None and not self._stderr_task.cancelled():
            await self._stderr_task
        return code

    async def kill(self) -> None:
        """Stop the tool and everything it started; idempotent."""
        process = self.process
        if process is None:
            return
        if process.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGTERM)
            try:
                await asyncio.wait_for(process.wait(), KILL_GRACE_S)
            except TimeoutError:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(process.pid, signal.SIGKILL)
                await process.wait()
        else:
            # The leader is gone; children it left in its group must go too.
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(process.pid, signal.SIGKILL)
        if self._stderr_task is not None:
            self._stderr_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._stderr_task
