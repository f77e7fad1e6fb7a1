"""The streaming pipeline: dump bytes -> compress -> sha256 -> every destination
writer, a bounded amount at a time (constant memory; a slow destination slows the
dump down through back-pressure instead of buffering)."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import time
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field

from services.common.destinations.base import Writer
from services.executor.compress import Compressor

BLOCK_SIZE = 1 << 20  # what gzip compresses per worker-thread round trip
WRITE_SIZE = 512 << 10  # compressed bytes gathered per write to the destinations


@dataclass
class StreamStats:
    bytes_in: int = 0
    bytes_out: int = 0
    started: float = field(default_factory=time.monotonic)
    last_input_at: float = field(default_factory=time.monotonic)
    sha256: hashlib._Hash = field(default_factory=hashlib.sha256)

    def received(self, size: int) -> None:
        """Count dump bytes as they arrive (``Tool(on_output=...)``), before they are
        gathered into blocks: progress and stall detection see every byte at once."""
        self.bytes_in += size
        self.last_input_at = time.monotonic()

    @property
    def elapsed_s(self) -> float:
        return time.monotonic() - self.started

    @property
    def rate_bps(self) -> float:
        elapsed = self.elapsed_s
        return self.bytes_in / elapsed if elapsed > 0 else 0.0


async def pump(
    source: AsyncIterator[bytes],
    compressor: Compressor,
    writers: Sequence[Writer],
    stats: StreamStats,
) -> None:
    """Move every chunk of ``source`` through ``compressor`` into ``writers``. The
    source's bytes are counted where they arrive (:meth:`StreamStats.received`).

    One write is in flight while the next block is compressed: a write is a worker
    thread round trip, and on a busy machine the wait for a free CPU would
    otherwise leave the compressor without input. The next write starts only once
    the one before has finished, so each destination gets the blocks in order and
    a slow one slows the dump down.

    What is hashed is exactly what the writers are given (the same block), so a
    writer that compares what it stored with what it was given (``ReadBack``)
    shows that the stored bytes have this digest."""
    pending: list[bytes] = []  # compressed, not yet written
    pending_size = 0
    writing: asyncio.Future[list[None]] | None = None

    async def emit(data: bytes, *, last: bool = False) -> None:
        nonlocal pending_size, writing
        if data:
            pending.append(data)
            pending_size += len(data)
        if pending_size < WRITE_SIZE and not (last and pending):
            return
        block = pending[0] if len(pending) == 1 else b"".join(pending)
        pending.clear()
        pending_size = 0
        stats.bytes_out += len(block)
        stats.sha256.update(block)
        if writing is not None:
            await writing  # (raises what the write raised)
        writing = asyncio.gather(*(writer.write(block) for writer in writers))

    try:
        if compressor.inline:
            # zstd: each piece is copied into its job buffer, its workers compress
            async for chunk in source:
                await emit(compressor.compress(chunk))
        else:
            # gzip works in the calling thread: blocks of >= 1 MiB, one worker-thread
            # round trip each, so the event loop keeps serving
            block = bytearray()
            async for chunk in source:
                block += chunk
                if len(block) >= BLOCK_SIZE:
                    data, block = bytes(block), bytearray()
                    await emit(await asyncio.to_thread(compressor.compress, data))
            if block:
                await emit(await asyncio.to_thread(compressor.compress, bytes(block)))
        await emit(await asyncio.to_thread(compressor.flush), last=True)
        if writing is not None:
            await writing
    finally:
        if writing is not None:  # stopped early: no write left running or unheard
            writing.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await writing
