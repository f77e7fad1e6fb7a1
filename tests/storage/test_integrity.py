"""The integrity sweep on real files: a flipped byte makes a copy corrupt (and the
backup, once no intact copy is left) with an event; intact copies are checked again
only when due; unreadable and missing artifacts are not called corrupt; reading is
rate limited. Also usage and free space."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import pytest

from proto.backup_events import BackupCorrupted
from proto.storage_events import StorageLowSpaceDetected
from services.common.db.enums import BackupStatus, CopyStatus
from services.common.settings import Settings
from services.storage.context import StorageContext
from services.storage.integrity import Outcome, RateLimiter, integrity_pass
from services.storage.usage import LowSpaceWarnings, free_space, stored_usage
from tests.storage.conftest import Clock, Events, World, copy_of, load

FAST = RateLimiter(1 << 40)


def flip_a_byte(path: Path) -> None:
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0x01
    path.write_bytes(bytes(data))


async def test_a_flipped_byte_makes_the_copy_corrupt_then_the_backup(
    ctx: StorageContext, world: World, clock: Clock, events: Events
) -> None:
    backup = await world.add("b", clock.now - timedelta(days=8))
    dest0, dest1 = (d.id for d in world.destinations)
    flip_a_byte(world.path("b", 0))

    report = await integrity_pass(ctx, FAST)
    assert report.outcomes == {
        (backup.id, dest0): Outcome.CORRUPT,
        (backup.id, dest1): Outcome.INTACT,
    }
    assert report.bytes_read == 2 * (backup.bytes_out or 0)
    bad = await copy_of(world.sessions, backup.id, dest0)
    assert bad.status is CopyStatus.CORRUPT
    assert "no longer matches its checksum" in (bad.error_message or "")
    good = await copy_of(world.sessions, backup.id, dest1)
    assert (good.status, good.checked_at) == (CopyStatus.STORED, clock.now)
    row = await load(world.sessions, backup.id)
    assert row is not None
    assert row.status is BackupStatus.SUCCEEDED  # one intact copy is left

    await events.settle()
    [event] = events.of(BackupCorrupted)
    assert (event.backup_id, event.destination_id) == (backup.id, dest0)
    assert event.expected_sha256 == backup.sha256
    assert event.actual_sha256 != backup.sha256
    assert event.actual_size == event.expected_size == backup.bytes_out

    # Nothing is due again until the interval passed.
    assert (await integrity_pass(ctx, FAST)).outcomes == {}
    flip_a_byte(world.path("b", 1))
    clock.advance(days=8)
    report = await integrity_pass(ctx, FAST)
    assert report.outcomes == {(backup.id, dest1): Outcome.CORRUPT}
    row = await load(world.sessions, backup.id)
    assert row is not None
    assert (row.status, row.error_code) == (BackupStatus.CORRUPT, "corrupt")
    assert "no intact copy is left" in (row.error_message or "")


async def test_a_truncated_artifact_is_corrupt(
    ctx: StorageContext, world: World, clock: Clock
) -> None:
    backup = await world.add("b", clock.now - timedelta(days=8), destinations=[0])
    path = world.path("b")
    path.write_bytes(path.read_bytes()[:-1])
    report = await integrity_pass(ctx, FAST)
    assert report.outcomes == {(backup.id, world.destinations[0].id): Outcome.CORRUPT}


async def test_copies_are_due_after_the_interval_only(
    ctx: StorageContext, world: World, clock: Clock
) -> None:
    fresh = await world.add("fresh", clock.now - timedelta(days=1), destinations=[0])
    old = await world.add("old", clock.now - timedelta(days=7, seconds=1), destinations=[0])
    report = await integrity_pass(ctx, FAST)
    assert set(report.outcomes) == {(old.id, world.destinations[0].id)}
    clock.advance(days=6, hours=1)
    report = await integrity_pass(ctx, FAST)
    assert set(report.outcomes) == {(fresh.id, world.destinations[0].id)}


async def test_unreadable_and_missing_artifacts_are_not_corrupt(
    ctx: StorageContext, world: World, clock: Clock, events: Events
) -> None:
    blocked = await world.add("blocked", clock.now - timedelta(days=9), destinations=[0])
    missing = await world.add("missing", clock.now - timedelta(days=8), destinations=[0])
    dest = world.destinations[0].id
    # Tests run as root: a directory in the artifact's place stands in for a file we
    # may not read.
    path = world.path("blocked")
    path.unlink()
    path.mkdir()
    world.path("missing").unlink()

    report = await integrity_pass(ctx, FAST)
    assert report.outcomes == {
        (blocked.id, dest): Outcome.UNREADABLE,
        (missing.id, dest): Outcome.MISSING,
    }
    unreadable = await copy_of(world.sessions, blocked.id, dest)
    assert unreadable.status is CopyStatus.STORED
    assert unreadable.checked_at is None  # still due: tried again next pass
    assert "unreadable" in (unreadable.error_message or "")
    assert (await copy_of(world.sessions, missing.id, dest)).status is CopyStatus.STORED
    await events.settle()
    assert events.of(BackupCorrupted) == []

    path.rmdir()
    path.write_bytes(b"dump of blocked " * 100)
    report = await integrity_pass(ctx, FAST)
    assert report.outcomes[(blocked.id, dest)] is Outcome.INTACT
    healed = await copy_of(world.sessions, blocked.id, dest)
    assert healed.error_message is None


async def test_rate_limiter_keeps_the_average_rate() -> None:
    now = [0.0]
    slept: list[float] = []

    async def sleep(seconds: float) -> None:
        slept.append(seconds)
        now[0] += seconds

    limiter = RateLimiter(1000, clock=lambda: now[0], sleep=sleep)
    for _ in range(5):
        await limiter.spend(500)
    assert sum(slept) == pytest.approx(2.5)
    # A long idle spell earns at most one second of burst.
    now[0] += 100
    slept.clear()
    await limiter.spend(1000)
    await limiter.spend(1000)
    assert sum(slept) == pytest.approx(1.0)


async def test_usage_and_low_space_warning(
    ctx: StorageContext, world: World, clock: Clock, events: Events
) -> None:
    a = await world.add("a", clock.now - timedelta(days=1))
    b = await world.add("b", clock.now - timedelta(hours=1), destinations=[1])
    rows = {(u.database_id, u.destination_id): u for u in await stored_usage(ctx)}
    dest0, dest1 = (d.id for d in world.destinations)
    assert rows[(world.database.id, dest0)].copies == 1
    assert rows[(world.database.id, dest0)].size_bytes == a.bytes_out
    assert rows[(world.database.id, dest1)].copies == 2
    assert rows[(world.database.id, dest1)].size_bytes == (a.bytes_out or 0) + (b.bytes_out or 0)
    assert {u.project_id for u in rows.values()} == {world.project.id}

    space = await free_space(world.destinations[0], ctx.settings)
    assert space is not None
    assert space.total_bytes >= space.free_bytes > 0
    fraction = Settings(database_url=ctx.settings.database_url, low_space_fraction=1.0)
    assert (await free_space(world.destinations[0], fraction)).low  # type: ignore[union-attr]
    huge = Settings(database_url=ctx.settings.database_url, low_space_bytes=space.total_bytes + 1)
    low = await free_space(world.destinations[0], huge)
    assert low is not None
    assert low.low
    warnings = LowSpaceWarnings()
    assert await warnings.check(ctx, low)
    assert not await warnings.check(ctx, low)  # once a day while it stays low
    clock.advance(hours=25)
    assert await warnings.check(ctx, low)
    await events.settle()
    found = events.of(StorageLowSpaceDetected)
    assert len(found) == 2
    assert found[0].destination_id == world.destinations[0].id
    assert found[0].threshold_bytes == space.total_bytes + 1
    # Back above the threshold: the next time it gets low is news again.
    assert not await warnings.check(ctx, space)
    assert world.destinations[0].id not in warnings.warned_at
