"""The pipeline compresses every byte, hashes and writes what it compressed, in
bounded writes; the read-back hash of a stored artifact (local: one worker-thread
call; any driver: streamed) gives the same size and digest."""

from __future__ import annotations

import asyncio
import hashlib
import os
import zlib
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import zstandard

from services.common.db.enums import Compression
from services.common.destinations.base import ArtifactMissing, DestinationError, Driver, Writer
from services.common.destinations.local import LocalDriver
from services.executor.compress import compressor
from services.executor.pipeline import WRITE_SIZE, StreamStats, pump

MIB = 1 << 20


class MemoryWriter(Writer):
    def __init__(self) -> None:
        self.writes: list[bytes] = []

    async def write(self, chunk: bytes) -> None:
        self.writes.append(chunk)

    async def commit(self) -> None:
        pass

    async def abort(self) -> None:
        pass


def dump_like(size: int) -> bytes:
    """Compressible but not trivially: repeated text with random bytes mixed in."""
    random = os.urandom(size // 8)
    text = b"INSERT INTO orders VALUES (42, 'shipped', 19.99);\n" * (size // 50)
    return (text[: size - len(random)] + random)[:size]


async def pieces(data: bytes) -> AsyncIterator[bytes]:
    """Pieces of uneven sizes, the way a pipe delivers them."""
    at, step = 0, 1000
    while at < len(data):
        yield data[at : at + step]
        at += step
        step = step * 7 % 300_000 + 1


def inflate(algorithm: Compression, data: bytes) -> bytes:
    if algorithm is Compression.ZSTD:
        return zstandard.ZstdDecompressor().decompressobj().decompress(data)
    if algorithm is Compression.GZIP:
        return zlib.decompress(data, 31)
    return data


@pytest.mark.parametrize("algorithm", list(Compression))
async def test_every_byte_compressed_hashed_and_written(algorithm: Compression) -> None:
    data = dump_like(5 * MIB + 12345)
    writer = MemoryWriter()
    stats = StreamStats()
    await pump(pieces(data), compressor(algorithm, None), [writer], stats)
    stored = b"".join(writer.writes)
    assert inflate(algorithm, stored) == data
    assert stats.bytes_out == len(stored)
    assert stats.sha256.hexdigest() == hashlib.sha256(stored).hexdigest()
    assert all(len(chunk) >= WRITE_SIZE for chunk in writer.writes[:-1])  # few, big writes


async def test_every_writer_gets_the_same_bytes() -> None:
    data = dump_like(3 * MIB)
    writers = [MemoryWriter(), MemoryWriter()]
    await pump(pieces(data), compressor(Compression.ZSTD, 3), writers, StreamStats())
    assert writers[0].writes == writers[1].writes


class SlowWriter(MemoryWriter):
    """Takes its time, and fails at the ``fail_at``-th write if asked to."""

    def __init__(self, fail_at: int = 0) -> None:
        super().__init__()
        self.fail_at = fail_at
        self.busy = False

    async def write(self, chunk: bytes) -> None:
        assert not self.busy  # one write at a time
        self.busy = True
        try:
            await asyncio.sleep(0.01)
            if len(self.writes) + 1 == self.fail_at:
                raise DestinationError("destination full")
            self.writes.append(chunk)
        finally:
            self.busy = False


async def test_writes_overlap_compression_but_stay_in_order() -> None:
    data = dump_like(6 * MIB)
    slow, fast = SlowWriter(), MemoryWriter()
    await pump(pieces(data), compressor(Compression.ZSTD, 3), [slow, fast], StreamStats())
    assert slow.writes == fast.writes
    assert inflate(Compression.ZSTD, b"".join(slow.writes)) == data


async def test_a_failed_write_stops_the_pump() -> None:
    data = os.urandom(8 * MIB)  # incompressible: many writes
    writer = SlowWriter(fail_at=3)
    with pytest.raises(DestinationError, match="destination full"):
        await pump(pieces(data), compressor(Compression.ZSTD, 3), [writer], StreamStats())
    assert len(writer.writes) == 2


def test_received_counts_at_once() -> None:
    stats = StreamStats()
    before = stats.last_input_at
    stats.received(10)
    stats.received(5)
    assert stats.bytes_in == 15
    assert stats.last_input_at >= before


@pytest.fixture
async def stored(tmp_path: Path) -> tuple[LocalDriver, str, bytes]:
    driver = LocalDriver(tmp_path)
    data = os.urandom(3 * MIB + 7)
    await driver.write_bytes("p/db/artifact.zst", data)
    return driver, "p/db/artifact.zst", data


async def test_local_hash_in_one_call(stored: tuple[LocalDriver, str, bytes]) -> None:
    driver, key, data = stored
    assert await driver.sha256(key) == (len(data), hashlib.sha256(data).hexdigest())


async def test_streamed_hash_matches(stored: tuple[LocalDriver, str, bytes]) -> None:
    driver, key, data = stored
    streamed = await Driver.sha256(driver, key)  # the generic path, over read()
    assert streamed == await driver.sha256(key) == (len(data), hashlib.sha256(data).hexdigest())


async def test_hash_sees_truncation_and_corruption(
    stored: tuple[LocalDriver, str, bytes],
) -> None:
    driver, key, data = stored
    path = driver.path_of(key)
    with path.open("r+b") as handle:
        handle.seek(MIB)
        handle.write(bytes([data[MIB] ^ 1]))
    size, digest = await driver.sha256(key)
    assert size == len(data)
    assert digest != hashlib.sha256(data).hexdigest()
    os.truncate(path, len(data) - 1)
    assert (await driver.sha256(key))[0] == len(data) - 1


async def test_hash_of_missing_artifact(tmp_path: Path) -> None:
    with pytest.raises(ArtifactMissing):
        await LocalDriver(tmp_path).sha256("p/db/gone.zst")
