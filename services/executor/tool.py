"""Running a dump or restore tool: argv as a list, secrets only through env or 0600
files, stdout read in batches as an async iterator, stderr read concurrently into a
bounded tail, and the whole process group killed if we stop early."""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import os
import signal
from collections import deque
from collections.abc import AsyncIterator, Callable, Mapping, Sequence

from services.common.errors import BackupManagerError
from services.common.redact import redact

CHUNK_SIZE = 512 << 10  # stdout wakes its reader once per this many bytes
MAX_UNREAD = 512 << 10  # stdout not yet taken by its reader: past this, reading pauses
PIPE_SIZE = 1 << 20  # what Linux lets any process ask for (fs.pipe-max-size); the
# kernel holds it, not our heap: the tool keeps writing while we compress a batch
SHORT_READ = 64 << 10  # a read shorter than this: the tool writes slower than we read
REST_S = 0.001  # then let the pipe fill this long before the next read (at 1 GB/s it
# would take 1 ms to fill PIPE_SIZE: a fast tool is never kept waiting, its reads are full)
STDERR_TAIL_BYTES = 64 * 1024
KILL_GRACE_S = 5.0
LOG_TAIL_CHARS = 8000


class ToolMissing(BackupManagerError):
    code = "tool_missing"


class _Output(asyncio.Protocol):
    """A tool's stdout, taken in batches.

    A dump tool writes in small pieces (pg_dump: a 4 KiB stdio buffer at a time), and
    a reader that reads as soon as anything is there wakes for most of them: tens of
    thousands of reads per GiB, each an event-loop callback, the executor's largest
    cost besides compressing. So after a short read (``SHORT_READ``: the tool is the
    slower side) reading rests for ``rest_s`` while the pipe fills, and the next read
    takes what gathered; a tool faster than us fills every read and never waits.

    Every read is counted as it arrives (``on_data``: progress and stall detection
    stay exact) and kept as it is, and the reader wakes once as many bytes as it
    asked for are waiting (or at the end) and takes them all. Past ``max_unread``
    bytes not taken, reading pauses, so a slow reader slows the tool down instead of
    filling memory (the pipe itself holds ``PIPE_SIZE`` more)."""

    def __init__(
        self, max_unread: int, on_data: Callable[[int], None] | None, rest_s: float = 0.0
    ) -> None:
        self._max_unread = max_unread
        self._on_data = on_data
        self._rest_s = rest_s
        self._chunks: deque[bytes] = deque()
        self._size = 0
        self._wanted = 0  # bytes the waiting reader asked for
        self._transport: asyncio.ReadTransport | None = None
        self._waiter: asyncio.Future[None] | None = None
        self._full = False  # max_unread reached: reading paused until the reader takes
        self._resting = False  # after a short read: reading paused for rest_s
        self._reading = True
        self._eof = False
        self._error: BaseException | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.ReadTransport)
        self._transport = transport

    def data_received(self, data: bytes) -> None:
        self._chunks.append(data)
        self._size += len(data)
        if self._on_data is not None:
            self._on_data(len(data))
        if self._size >= self._wanted:
            self._wake()
        if self._size >= self._max_unread:
            self._full = True
        elif self._rest_s and len(data) < SHORT_READ and not self._resting:
            self._resting = True
            asyncio.get_running_loop().call_later(self._rest_s, self._rested)
        self._read_or_not()

    def _rested(self) -> None:
        self._resting = False
        self._read_or_not()

    def _read_or_not(self) -> None:
        reading = not (self._full or self._resting)
        if reading != self._reading and self._transport is not None:
            self._reading = reading
            if reading:
                self._transport.resume_reading()
            else:
                self._transport.pause_reading()

    def eof_received(self) -> None:
        self._eof = True
        self._wake()

    def connection_lost(self, exc: Exception | None) -> None:
        self._eof = True
        self._error = exc
        self._wake()

    def _wake(self) -> None:
        if self._waiter is not None and not self._waiter.done():
            self._waiter.set_result(None)

    async def take(self, min_size: int) -> deque[bytes]:
        """Every piece waiting, once they add up to ``min_size`` bytes (or the
        output has ended); empty at the end."""
        self._wanted = min_size
        while self._size < min_size and not self._eof:
            self._waiter = asyncio.get_running_loop().create_future()
            try:
                await self._waiter
            finally:
                self._waiter = None
        if self._error is not None and not self._chunks:
            raise self._error
        chunks, self._chunks, self._size = self._chunks, deque(), 0
        self._full = False
        self._read_or_not()
        return chunks


class Tool:
    """One running tool process. ``on_output`` is called with the size of every
    piece of stdout as it arrives (before ``stdout()`` hands it on)."""

    def __init__(
        self,
        argv: Sequence[str],
        env: Mapping[str, str],
        *,
        on_output: Callable[[int], None] | None = None,
    ) -> None:
        self.argv = list(argv)
        self.env = dict(env)
        self.process: asyncio.subprocess.Process | None = None
        self._on_output = on_output
        self._stdout: _Output | None = None
        self._stdout_transport: asyncio.ReadTransport | None = None
        self._stderr: deque[bytes] = deque()
        self._stderr_size = 0
        self._stderr_task: asyncio.Task[None] | None = None

    async def start(self, *, stdin: bool = False) -> None:
        # stdout is a pipe of our own, read by _Output rather than a StreamReader
        read_end, write_end = os.pipe()
        with contextlib.suppress(OSError):  # a bigger pipe buffer, where allowed
            fcntl.fcntl(read_end, fcntl.F_SETPIPE_SZ, PIPE_SIZE)
        # rest after short reads only where the pipe holds enough meanwhile
        rest_s = REST_S if fcntl.fcntl(read_end, fcntl.F_GETPIPE_SZ) >= PIPE_SIZE else 0.0
        try:
            self.process = await asyncio.create_subprocess_exec(
                *self.argv,
                stdin=asyncio.subprocess.PIPE if stdin else asyncio.subprocess.DEVNULL,
                stdout=write_end,
                stderr=asyncio.subprocess.PIPE,
                env=self.env,
                start_new_session=True,  # its own group: we can kill it with its children
            )
        except BaseException as exc:
            os.close(read_end)
            if isinstance(exc, FileNotFoundError):
                raise ToolMissing(f"{self.argv[0]} is not installed on this executor") from None
            raise
        finally:
            os.close(write_end)  # the tool holds it now: its exit is our end of file
        output = self._stdout = _Output(MAX_UNREAD, self._on_output, rest_s)
        pipe = os.fdopen(read_end, "rb", buffering=0)  # the transport closes it
        try:
            transport, _ = await asyncio.get_running_loop().connect_read_pipe(lambda: output, pipe)
        except BaseException:
            pipe.close()
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.process.pid, signal.SIGKILL)
            raise
        assert isinstance(transport, asyncio.ReadTransport)
        self._stdout_transport = transport
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

    def log_tail(self, secret: str | None) -> str:
        """The end of what the tool said, fit to keep as a run's log: ``secret``
        redacted, at most ``LOG_TAIL_CHARS`` characters."""
        return redact(self.stderr_tail(), [secret])[-LOG_TAIL_CHARS:]

    async def stdout(self) -> AsyncIterator[bytes]:
        """The tool's output to its end, in the pieces the pipe delivered: the first
        as soon as it arrives (so the caller can look at the head at once), the
        rest in batches of about ``CHUNK_SIZE`` bytes (one wake-up per batch)."""
        assert self._stdout is not None
        chunks = await self._stdout.take(1)
        while chunks:
            while chunks:
                yield chunks.popleft()  # not held on to once handed on
            chunks = await self._stdout.take(CHUNK_SIZE)

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
            await close_early(chunks)
            return  # the tool stopped reading: its exit code and stderr say why
        except BaseException:
            await self.kill()
            await close_early(chunks)
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
        await stop_process_group(process, KILL_GRACE_S)
        if self._stderr_task is not None:
            self._stderr_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._stderr_task
        if self._stdout_transport is not None:
            self._stdout_transport.close()  # a reader still waiting sees the end


async def close_early(chunks: AsyncIterator[bytes]) -> None:
    """Close a stream left before its end now (its files, its own sources), not
    whenever the garbage collector finds it."""
    aclose = getattr(chunks, "aclose", None)
    if aclose is not None:
        with contextlib.suppress(Exception):
            await aclose()


async def stop_process_group(process: asyncio.subprocess.Process, grace_s: float) -> None:
    """SIGTERM a process group, SIGKILL it after ``grace_s``; and SIGKILL whatever the
    leader left behind in its group once it is gone."""
    if process.returncode is None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGTERM)
        try:
            await asyncio.wait_for(process.wait(), grace_s)
        except TimeoutError:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGKILL)
            await process.wait()
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(process.pid, signal.SIGKILL)  # children it left in its group
