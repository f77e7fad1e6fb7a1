"""The local writer reads every write back through a descriptor of its own and
compares it with the bytes written (``LocalWriter.read_back``): after the commit
only the file's size and identity under its final name are left to check, and
what it reports is what the file holds — a byte changed or a file cut behind the
writer before its read-back (in an early block or in the tail), a file cut, grown,
replaced or removed under its final name — with one block of memory whatever the
size. Real files throughout; where a test must act between a write and its
read-back, it does so through the ``local._read_at`` seam."""

from __future__ import annotations

import asyncio
import os
import time
import tracemalloc
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from services.common.destinations import local
from services.common.destinations.base import ArtifactMissing, DestinationError, ReadBack
from services.common.destinations.local import (
    READ_BACK_BLOCK,
    WRITE_BACK_STEP,
    LocalDriver,
    LocalWriter,
)

MIB = 1 << 20
KEY = "p/db/2026/01/01/artifact.zst"


def flip_byte(path: Path, offset: int) -> None:
    with path.open("r+b") as handle:
        handle.seek(offset)
        byte = handle.read(1)
        handle.seek(offset)
        handle.write(bytes([byte[0] ^ 0xFF]))


def partial_file(driver: LocalDriver) -> Path:
    [path] = driver.path_of(KEY).parent.glob(f"{local.TEMP_PREFIX}*")
    return path


def open_fds() -> set[str]:
    return set(os.listdir("/proc/self/fd"))


async def open_local(driver: LocalDriver) -> LocalWriter:
    writer = await driver.open_writer(KEY)
    assert isinstance(writer, LocalWriter)
    return writer


def before_read(monkeypatch: pytest.MonkeyPatch, act: Callable[[int], None]) -> list[int]:
    """Call ``act(offset)`` before every read-back read; returns the offsets read."""
    offsets: list[int] = []
    read_at = local._read_at

    def acting(fd: int, buffer: memoryview, offset: int) -> int:
        offsets.append(offset)
        act(offset)
        return read_at(fd, buffer, offset)

    monkeypatch.setattr(local, "_read_at", acting)
    return offsets


@pytest.fixture
def driver(tmp_path: Path) -> LocalDriver:
    return LocalDriver(tmp_path)


@pytest.fixture(autouse=True)
def no_descriptor_left_open() -> Iterator[None]:
    fds = open_fds()
    yield
    assert open_fds() <= fds


async def test_every_write_is_read_back_and_the_file_matches(
    driver: LocalDriver, monkeypatch: pytest.MonkeyPatch
) -> None:
    offsets = before_read(monkeypatch, lambda offset: None)
    data = os.urandom(3 * MIB + 12345)
    writer = await open_local(driver)
    at, step = 0, 1000
    while at < len(data):  # uneven writes, the way the pipeline's blocks vary
        await writer.write(data[at : at + step])
        at = min(at + step, len(data))
        step = step * 7 % 700_000 + 1
        assert offsets[-1] < at <= offsets[-1] + READ_BACK_BLOCK  # read back at once
    await writer.commit()
    assert driver.path_of(KEY).read_bytes() == data
    assert await writer.read_back() == ReadBack(size=len(data), same=True)
    # every byte read back once, in blocks of at most READ_BACK_BLOCK
    assert offsets == sorted(set(offsets))
    assert all(
        b - a <= READ_BACK_BLOCK for a, b in zip(offsets, [*offsets[1:], len(data)], strict=True)
    )


async def test_a_small_or_empty_file(driver: LocalDriver) -> None:
    writer = await open_local(driver)
    await writer.write(b"PGDMP tiny")
    await writer.commit()
    assert await writer.read_back() == ReadBack(size=10, same=True)
    empty = await driver.open_writer("p/db/empty.zst")
    await empty.commit()
    assert await empty.read_back() == ReadBack(size=0, same=True)


@pytest.mark.parametrize("where", ["a block after others were read back", "the tail"])
async def test_a_byte_changed_behind_the_writer(
    driver: LocalDriver, monkeypatch: pytest.MonkeyPatch, where: str
) -> None:
    """Changed after it was written, before it was read back; the writes go on."""
    blocks = [os.urandom(MIB) for _ in range(3)] + [os.urandom(5000)]
    data = b"".join(blocks)
    target = MIB + 5 if where.startswith("a block") else len(data) - 10
    piece_start = target - target % READ_BACK_BLOCK if target < 3 * MIB else 3 * MIB

    def change(offset: int) -> None:
        if offset == piece_start:
            flip_byte(partial_file(driver), target)

    offsets = before_read(monkeypatch, change)
    writer = await open_local(driver)
    for block in blocks:
        await writer.write(block)
    await writer.commit()
    assert piece_start in offsets
    assert driver.path_of(KEY).read_bytes() != data
    assert await writer.read_back() == ReadBack(size=len(data), same=False)


@pytest.mark.parametrize("more_writes", [False, True])
async def test_a_file_cut_behind_the_writer(
    driver: LocalDriver, monkeypatch: pytest.MonkeyPatch, more_writes: bool
) -> None:
    """Cut before the read-back of the second MiB: it ends early. A writer that goes
    on past the cut leaves a hole of zeros and a file of the full size, still found."""
    data = os.urandom(3 * MIB)

    def cut(offset: int) -> None:
        if offset == MIB:
            os.truncate(partial_file(driver), MIB + MIB // 2)

    before_read(monkeypatch, cut)
    writer = await open_local(driver)
    await writer.write(data[:MIB])
    await writer.write(data[MIB : 2 * MIB])
    if more_writes:
        await writer.write(data[2 * MIB :])
    await writer.commit()
    stored = driver.path_of(KEY).stat().st_size
    assert stored == (len(data) if more_writes else MIB + MIB // 2)
    assert await writer.read_back() == ReadBack(size=stored, same=False)


@pytest.mark.parametrize("change", ["truncated", "grown", "replaced", "deleted"])
async def test_the_file_under_its_final_name(driver: LocalDriver, change: str) -> None:
    """What happens to the file after the commit, before ``read_back`` looks."""
    data = os.urandom(2 * MIB + 3)
    writer = await open_local(driver)
    await writer.write(data)
    await writer.commit()
    path = driver.path_of(KEY)
    if change == "truncated":
        os.truncate(path, len(data) - 1)
    elif change == "grown":
        with path.open("ab") as handle:
            handle.write(b"\0")
    elif change == "replaced":  # another file, the same bytes: read it back whole
        other = path.with_name("other")
        other.write_bytes(data)
        other.replace(path)
    else:
        path.unlink()
    if change == "deleted":
        with pytest.raises(ArtifactMissing):
            await writer.read_back()
    elif change == "replaced":
        assert await writer.read_back() is None
    else:
        assert await writer.read_back() == ReadBack(size=path.stat().st_size, same=False)


async def test_memory_stays_one_block_whatever_the_size(driver: LocalDriver) -> None:
    """64 MiB written and read back: what Python allocates at the peak is about a
    chunk being made and the read-back's one block, not the file."""
    block = os.urandom(256 << 10)
    writer = await open_local(driver)
    tracemalloc.start()
    try:
        for i in range(256):
            chunk = bytes([i]) + block[1:]  # a new object per write, as the pipeline's
            await writer.write(chunk)
            del chunk
        await writer.commit()
        result = await writer.read_back()
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert result == ReadBack(size=64 * MIB, same=True)
    # a chunk being made, the read-back's block and small change: about 1 MiB (64
    # MiB if the file were held, 1 MiB more per block kept)
    assert peak < 2 * MIB, f"{peak / MIB:.2f} MiB at the peak"


async def test_what_was_read_back_is_handed_to_the_kernel_to_write_out(
    driver: LocalDriver, monkeypatch: pytest.MonkeyPatch
) -> None:
    """So that the commit's fsync is left with the last few MiB: ``_write_back``
    every ``WRITE_BACK_STEP``, over bytes written and read back."""
    read: list[int] = []
    calls: list[tuple[int, int]] = []
    write_back = local._write_back
    before_read(monkeypatch, read.append)

    def noted(fd: int, upto: int) -> None:
        calls.append((upto, read[-1]))
        write_back(fd, upto)

    monkeypatch.setattr(local, "_write_back", noted)
    data = os.urandom(3 * WRITE_BACK_STEP + 5)
    writer = await open_local(driver)
    for at in range(0, len(data), MIB):
        await writer.write(data[at : at + MIB])
    await writer.commit()
    assert await writer.read_back() == ReadBack(size=len(data), same=True)
    assert [upto for upto, _ in calls] == [WRITE_BACK_STEP * i for i in (1, 2, 3)]
    assert all(last_read < upto for upto, last_read in calls)


async def test_abort_removes_the_file_and_ends_the_writer(driver: LocalDriver) -> None:
    writer = await open_local(driver)
    await writer.write(os.urandom(MIB))
    await writer.abort()
    await writer.abort()  # again: nothing to do
    assert list(driver.root.rglob("*.zst*")) == []
    with pytest.raises(DestinationError, match="is over"):
        await writer.write(b"late")


async def test_abort_after_the_commit_keeps_the_artifact(driver: LocalDriver) -> None:
    writer = await open_local(driver)
    await writer.write(b"PGDMP")
    await writer.commit()
    await writer.abort()
    assert driver.path_of(KEY).read_bytes() == b"PGDMP"


async def test_a_cancelled_commit_leaves_nothing(
    driver: LocalDriver, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Cancelled while its thread fsyncs and renames: the abort that follows waits
    for that thread, then removes what it stored (the caller never saw it stored)."""
    in_thread = asyncio.Event()
    loop = asyncio.get_running_loop()
    close = LocalWriter._close

    def slow_close(writer: LocalWriter) -> None:  # in the commit's thread, under its lock
        loop.call_soon_threadsafe(in_thread.set)
        time.sleep(0.05)
        close(writer)

    monkeypatch.setattr(LocalWriter, "_close", slow_close)
    writer = await open_local(driver)
    await writer.write(os.urandom(MIB))
    committing = asyncio.create_task(writer.commit())
    async with asyncio.timeout(10):
        await in_thread.wait()
    committing.cancel()
    with pytest.raises(asyncio.CancelledError):
        await committing
    await writer.abort()
    assert list(driver.root.rglob("*.zst*")) == []


async def test_read_back_before_the_commit_is_refused(driver: LocalDriver) -> None:
    writer = await open_local(driver)
    await writer.write(b"x")
    with pytest.raises(DestinationError, match="not stored yet"):
        await writer.read_back()
    await writer.abort()
