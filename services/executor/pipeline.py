"""The streaming pipeline: dump bytes -> compress -> sha256 -> every destination
writer, one chunk at a time (constant memory; a slow destination slows the dump
down through back-pressure instead of buffering)."""

from __future__ import annotations

import asyncio
import hashlib
import time
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field

from services.common.destinations.base import Writer
from services.executor.compress import Compressor

BLOCK_SIZE = 1 << 20


@dataclass
class StreamStats:
    bytes_in: int = 0
    bytes_out: int = 0
    started: float = field(default_factory=time.monotonic)
    last_input_at: float = field(default_factory=time.monotonic)
    sha256: hashlib._Hash = field(default_factory=hashlib.sha256)

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
    """Move every chunk of ``source`` through ``compressor`` into ``writers``."""

    async def emit(data: bytes) -> None:
        if not data:
            return
        stats.bytes_out += len(data)
        stats.sha256.update(data)
        await asyncio.gather(*(writer.write(data) for writer in writers))

    # Pipe reads come in small pieces (tens of KiB): gather them into blocks so each
    # hop to the compressor thread carries enough work to be worth it. Every piece
    # still counts at once, so progress and stall detection stay exact.
    block = bytearray()
    async for chunk in source:
        stats.bytes_in += len(chunk)
        stats.last_input_at = time.monotonic()
        block += chunk
        if len(block) >= BLOCK_SIZE:
            data, block = bytes(block), bytearray()
            await emit(await asyncio.to_thread(compressor.compress, data))
    if block:
        await emit(await asyncio.to_thread(compressor.compress, bytes(block)))
    await emit(await asyncio.to_thread(compressor.flush))


async def hash_stored(chunks: AsyncIterator[bytes]) -> tuple[int, str]:
    """Size and sha256 of bytes read back from a destination."""
    digest = hashlib.sha256()
    size = 0
    async for chunk in chunks:
        size += len(chunk)
        digest.update(chunk)
    return size, digest.hexdigest()
