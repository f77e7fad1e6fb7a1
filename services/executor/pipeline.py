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

COMPRESS_BATCH = 256 << 10  # dump bytes compressed per worker-thread round trip
WRITE_SIZE = 256 << 10  # compressed bytes gathered per write to the destinations


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

    Compression runs in a worker thread, a batch of at least ``COMPRESS_BATCH``
    bytes at a time, while the event loop gathers the next batch: the loop stays
    free to drain the tool's pipe, so the tool (and the database server feeding
    it) keeps going while a batch compresses. Compressing on the loop instead (zstd
    takes its input at once, and blocks only while its workers are all busy) left
    pg_dump blocked on a full pipe about half the time of a 1 GiB dump, against
    about a third under ``pg_dump | zstd -T0``, whose reader is a thread of its own
    (docs/benchmarks.md). Without compression, bytes go straight to the writers.

    One write is in flight while the next block is compressed: a write is a
    worker-thread round trip too. The next write starts only once the one before
    has finished, so each destination gets the blocks in order and a slow one
    slows the dump down; likewise one batch compresses at a time, in order.

    What is hashed is exactly what the writers are given (the same block), so a
    writer that compares what it stored with what it was given (``ReadBack``)
    shows that the stored bytes have this digest."""
    loop = asyncio.get_running_loop()
    pending: list[bytes] = []  # compressed, not yet written
    pending_size = 0
    writing: asyncio.Future[list[None]] | None = None
    compressing: asyncio.Future[bytes] | None = None

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

    def compress_batch(pieces: list[bytes]) -> bytes:
        compress = compressor.compress
        return b"".join([compress(piece) for piece in pieces])

    async def compress_next(pieces: list[bytes]) -> None:
        nonlocal compressing
        if compressing is not None:
            await emit(await compressing)  # (the batch before: its output comes first)
        compressing = loop.run_in_executor(None, compress_batch, pieces)

    try:
        if compressor.inline:  # nothing to compress
            async for chunk in source:
                await emit(compressor.compress(chunk))
        else:
            batch: list[bytes] = []
            batch_size = 0
            async for chunk in source:
                batch.append(chunk)
                batch_size += len(chunk)
                if batch_size >= COMPRESS_BATCH:
                    await compress_next(batch)
                    batch, batch_size = [], 0
            if batch:
                await compress_next(batch)
            if compressing is not None:
                await emit(await compressing)
                compressing = None
        await emit(await loop.run_in_executor(None, compressor.flush), last=True)
        if writing is not None:
            await writing
    finally:
        # stopped early: no write or batch left running unheard (a batch already in
        # its thread finishes there; its output is dropped with the compressor)
        for future in (writing, compressing):
            if future is not None:
                future.cancel()
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await future
