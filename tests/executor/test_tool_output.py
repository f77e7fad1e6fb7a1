"""A tool's stdout: every byte counted as it arrives, handed on in order, the first
piece at once and the rest in batches; a reader that stops reading stops the tool
(bounded memory); kill ends a waiting reader; nothing leaks."""

from __future__ import annotations

import asyncio
import os
import sys
from pathlib import Path

import pytest

from services.executor.tool import MAX_UNREAD, PIPE_SIZE, Tool, ToolMissing

MIB = 1 << 20
PIPE_READ = 256 * 1024  # the most asyncio's pipe transport reads at once


def writer(script: str) -> list[str]:
    """A tool that runs ``script`` with ``out`` = its binary stdout."""
    return [sys.executable, "-c", f"import sys, time\nout = sys.stdout.buffer\n{script}"]


async def test_every_byte_counted_and_in_order() -> None:
    # pieces of odd sizes, each flushed: the pipe delivers them as they come
    script = "for i in range(400):\n    out.write(bytes([i % 251]) * (1000 + i * 37)); out.flush()"
    expected = b"".join(bytes([i % 251]) * (1000 + i * 37) for i in range(400))
    counted: list[int] = []
    tool = Tool(writer(script), {}, on_output=counted.append)
    await tool.start()
    try:
        pieces = [piece async for piece in tool.stdout()]
        assert await tool.wait() == 0
    finally:
        await tool.kill()
    assert b"".join(pieces) == expected
    assert sum(counted) == len(expected)
    assert len(pieces) == len(counted)  # handed on as the pipe delivered them


async def test_a_tool_writing_small_pieces_is_read_in_few_larger_reads() -> None:
    # slower than its reader, 4 KiB at a time (pg_dump's stdio buffer): read as each
    # piece lands, it would take one read (one event-loop callback) per piece
    writes = 1000
    script = f"piece = b'y' * 4096\nfor _ in range({writes}):\n"
    script += "    out.write(piece); out.flush(); time.sleep(0.0001)"
    counted: list[int] = []
    tool = Tool(writer(script), {}, on_output=counted.append)
    await tool.start()
    try:
        received = sum([len(piece) async for piece in tool.stdout()])
        assert await tool.wait() == 0
    finally:
        await tool.kill()
    assert received == sum(counted) == writes * 4096
    assert len(counted) <= writes // 2


async def test_first_piece_comes_at_once() -> None:
    tool = Tool(writer("out.write(b'PGDMP'); out.flush(); time.sleep(30)"), {})
    await tool.start()
    try:
        async with asyncio.timeout(5):  # not after the 30 s nor after a whole batch
            first = await anext(aiter(tool.stdout()))
        assert first == b"PGDMP"
    finally:
        await tool.kill()


async def test_a_reader_that_stops_reading_stops_the_tool() -> None:
    total = 16 * MIB
    script = f"chunk = b'x' * 65536\nfor _ in range({total // 65536}):\n    out.write(chunk)"
    counted: list[int] = []
    tool = Tool(writer(script), {}, on_output=counted.append)
    await tool.start()
    try:
        output = tool.stdout()
        received = len(await anext(output))
        await asyncio.sleep(1.0)  # a slow destination: nothing taken meanwhile
        assert tool.process is not None
        assert tool.process.returncode is None  # blocked on the full pipe
        # taken: the first batch; waiting: up to MAX_UNREAD, overshot by one read
        assert sum(counted) <= 2 * (MAX_UNREAD + PIPE_READ)
        async for piece in output:
            received += len(piece)
        assert await tool.wait() == 0
    finally:
        await tool.kill()
    assert received == sum(counted) == total


async def test_kill_ends_a_waiting_reader() -> None:
    tool = Tool(writer("out.write(b'x'); out.flush(); time.sleep(60)"), {})
    await tool.start()
    received: list[bytes] = []

    async def read() -> None:
        async for piece in tool.stdout():
            received.append(piece)

    reader = asyncio.create_task(read())
    try:
        await asyncio.sleep(0.5)
        await tool.kill()
        async with asyncio.timeout(5):
            await reader
    finally:
        reader.cancel()
    assert received == [b"x"]


def open_fds() -> set[str]:
    return set(os.listdir("/proc/self/fd"))


async def test_missing_tool_leaks_no_pipe() -> None:
    before = open_fds()
    with pytest.raises(ToolMissing, match="no-such-dump-tool is not installed"):
        await Tool(["no-such-dump-tool"], {}).start()
    assert open_fds() <= before


async def test_pipe_is_enlarged_where_allowed() -> None:
    script = "import fcntl\nout.write(str(fcntl.fcntl(1, fcntl.F_GETPIPE_SZ)).encode())"
    tool = Tool(writer(script), {})
    await tool.start()
    try:
        size = int(b"".join([piece async for piece in tool.stdout()]))
        assert await tool.wait() == 0
    finally:
        await tool.kill()
    allowed = int(Path("/proc/sys/fs/pipe-max-size").read_text())
    assert size == PIPE_SIZE if allowed >= PIPE_SIZE or os.geteuid() == 0 else size < PIPE_SIZE
