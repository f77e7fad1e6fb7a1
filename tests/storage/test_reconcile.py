"""The reconciliation sweep on real directories: crash leftovers are removed after the
grace period, unknown artifacts are only reported, files that are not ours are never
touched, missing artifacts are marked (and unmarked when they come back), and a
destination that looks unmounted is left alone."""

from __future__ import annotations

import os
import shutil
import uuid
from datetime import datetime, timedelta
from pathlib import Path

from sqlalchemy import select

from proto.storage_events import StorageOrphansFound
from services.common.artifacts import KeyKind, manifest_key, parse_key
from services.common.db.enums import BackupStatus, CopyStatus
from services.common.db.models import AuditEntry
from services.common.destinations.local import TEMP_PREFIX
from services.common.work import WorkTracker
from services.executor.backup import artifact_key
from services.storage.context import StorageContext
from services.storage.reconcile import reconcile
from services.storage.sweeps import ORPHANS_REMOVED_ACTION, Sweeper
from tests.storage.conftest import Clock, Events, World, copy_of


def age(path: Path, hours: float) -> None:
    """Make a file look ``hours`` old."""
    stamp = path.stat().st_mtime - hours * 3600
    os.utime(path, (stamp, stamp))


def write(path: Path, data: bytes = b"x" * 10) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return path


def test_parse_key_knows_our_layout_only() -> None:
    backup_id = uuid.uuid4()
    key = artifact_key("shop", "Orders DB", backup_id, datetime(2026, 1, 2), "pgdump.zst")
    directory, name = key.rsplit("/", 1)
    parsed = parse_key(key)
    assert parsed is not None
    assert (parsed.kind, parsed.backup_id, parsed.project_slug) == (
        KeyKind.ARTIFACT,
        backup_id,
        "shop",
    )
    manifest = parse_key(manifest_key(key))
    assert manifest is not None
    assert (manifest.kind, manifest.artifact_key) == (KeyKind.MANIFEST, key)
    partial = parse_key(f"{directory}/{TEMP_PREFIX}{name}.0a1b2c3d")
    assert partial is not None
    assert (partial.kind, partial.artifact_key) == (KeyKind.PARTIAL, key)
    partial_manifest = parse_key(f"{directory}/{TEMP_PREFIX}{name}.manifest.json.deadbeef")
    assert partial_manifest is not None
    assert partial_manifest.kind is KeyKind.PARTIAL
    for foreign in (
        "notes.txt", "lost+found/x", f"{directory}/readme.txt", f"{directory}/{TEMP_PREFIX}x.1234",
        f"{directory}/{TEMP_PREFIX}{name}.nothex!!", f"{directory}/{name}/inside",
        key.replace("shop/", "Shop/"), f"{key}.bak~", f"other/{key}", f"/{key}",
    ):  # fmt: skip
        assert parse_key(foreign) is None, foreign


async def test_leftovers_orphans_foreign_files_and_missing_artifacts(
    ctx: StorageContext, world: World, clock: Clock, events: Events
) -> None:
    root = world.roots[0]
    now = clock.now
    kept = await world.add("kept", now - timedelta(days=2), destinations=[0])
    lost = await world.add("lost", now - timedelta(days=1), destinations=[0])
    running = await world.add("running", now, BackupStatus.RUNNING)
    failed = await world.add("failed", now - timedelta(hours=5), BackupStatus.FAILED)

    def key_of(backup_id: uuid.UUID, hours_ago: float = 0) -> str:
        at = now - timedelta(hours=hours_ago)
        return artifact_key(world.project.slug, "Orders DB", backup_id, at, "pgdump.zst")

    def partial(key: str) -> Path:
        directory, name = key.rsplit("/", 1)
        return root / directory / f"{TEMP_PREFIX}{name}.{uuid.uuid4().hex[:8]}"

    # Crash leftovers: an old unfinished write, a fresh one, one of a run in progress.
    stale_partial = write(partial(key_of(uuid.uuid4(), 3)))
    age(stale_partial, 3)
    fresh_partial = write(partial(key_of(uuid.uuid4())))
    running_partial = write(partial(key_of(running.id)))
    age(running_partial, 3)
    # The artifact and manifest of a run recorded as failed (a crash after the rename).
    failed_artifact = write(root / key_of(failed.id, 5))
    failed_manifest = write(Path(manifest_key(str(failed_artifact))))
    for path in (failed_artifact, failed_manifest):
        age(path, 5)
    # A complete artifact nobody knows (a lost metadata DB, another installation).
    unknown = write(root / key_of(uuid.uuid4(), 50))
    age(unknown, 50)
    # Not ours: never touched, whatever their age.
    foreign = [write(root / "notes.txt"), write(root / "lost+found" / "x"),
               write(root / key_of(uuid.uuid4()).replace(".pgdump.zst", ".txt~"))]  # fmt: skip
    for path in foreign:
        age(path, 1000)
    # A stored copy whose file went away.
    world.path("lost").unlink()

    sweeper = Sweeper(ctx, WorkTracker())
    first = await sweeper.maintenance()
    report = next(r for r in first.destinations if r.destination_id == world.destinations[0].id)

    assert report.available
    removed = {info.key for info in report.removed}
    assert removed == {
        str(p.relative_to(root)) for p in (stale_partial, failed_artifact, failed_manifest)
    }
    orphans = {info.key for info in report.orphans}
    assert orphans == removed | {str(p.relative_to(root)) for p in (fresh_partial, unknown)}
    assert report.foreign == len(foreign)
    for path in (fresh_partial, running_partial, unknown, *foreign, world.path("kept")):
        assert path.exists(), path
    for path in (stale_partial, failed_artifact, failed_manifest):
        assert not path.exists(), path
    assert report.newly_missing == [lost.id]
    assert report.missing == [lost.id]
    missing = await copy_of(world.sessions, lost.id, world.destinations[0].id)
    assert missing.status is CopyStatus.MISSING
    assert missing.checked_at == clock.now
    assert (
        await copy_of(world.sessions, kept.id, world.destinations[0].id)
    ).status is CopyStatus.STORED

    # One event and one audit entry; the next sweep finds the same and says nothing.
    await sweeper.maintenance()
    await events.settle()
    found = [e for e in events.of(StorageOrphansFound)
             if e.destination_id == world.destinations[0].id]  # fmt: skip
    assert len(found) == 1
    event = found[0]
    assert (event.orphan_count, event.missing_count, event.removed_count) == (5, 1, 3)
    assert event.missing_backup_ids == (lost.id,)
    assert set(event.orphan_keys) == orphans
    async with world.sessions() as session:
        audit = list(await session.scalars(
            select(AuditEntry).where(AuditEntry.action == ORPHANS_REMOVED_ACTION)
        ))  # fmt: skip
    assert audit[0].actor == "storage"
    assert audit[0].details["count"] == 3

    # The file comes back (restored by hand): the copy is stored again.
    write(world.path("lost"), b"dump of lost " * 100)
    again = await reconcile(ctx, world.destinations[0])
    assert again.found_again == [lost.id]
    assert again.missing == []
    restored = await copy_of(world.sessions, lost.id, world.destinations[0].id)
    assert (restored.status, restored.checked_at) == (CopyStatus.STORED, None)


async def test_orphans_within_the_grace_period_stay(
    ctx: StorageContext, world: World, clock: Clock
) -> None:
    failed = await world.add("failed", clock.now, BackupStatus.FAILED)
    key = artifact_key(world.project.slug, "Orders DB", failed.id, clock.now, "pgdump.zst")
    leftover = write(world.roots[0] / key)
    report = await reconcile(ctx, world.destinations[0])
    assert [o.key for o in report.orphans] == [key]
    assert report.removed == []
    assert leftover.exists()
    clock.advance(hours=2)
    report = await reconcile(ctx, world.destinations[0])
    assert [o.key for o in report.removed] == [key]


async def test_unreadable_artifact_is_reported_not_marked_missing(
    ctx: StorageContext, world: World, clock: Clock
) -> None:
    await world.add("good", clock.now - timedelta(days=1))
    await world.add("blocked", clock.now - timedelta(hours=1))
    # As root no permission bit stops us, so a directory stands where the artifact
    # should be: it is there but cannot be read as a file.
    path = world.path("blocked")
    path.unlink()
    write(path / "inside")
    report = await reconcile(ctx, world.destinations[0])
    assert report.newly_missing == []
    key = str(path.relative_to(world.roots[0]))
    assert "cannot read" in report.unreadable[key]
    copy = await copy_of(world.sessions, world.backups["blocked"].id, world.destinations[0].id)
    assert copy.status is CopyStatus.STORED
    assert (path / "inside").exists()  # inside our layout's directory, but not ours


async def test_an_unmounted_destination_is_left_alone(
    ctx: StorageContext, world: World, clock: Clock
) -> None:
    await world.add("a", clock.now - timedelta(days=1))
    await world.add("b", clock.now - timedelta(hours=1))
    root = world.roots[0]
    moved = root.with_name("elsewhere")
    root.rename(moved)
    report = await reconcile(ctx, world.destinations[0])
    assert not report.available
    assert "not a directory" in (report.problem or "")
    # The mount point is there but empty: nothing of ours while copies are recorded.
    root.mkdir()
    write(root / "lost+found" / "x")
    report = await reconcile(ctx, world.destinations[0])
    assert not report.available
    assert "not mounted?" in (report.problem or "")
    for backup in world.backups.values():
        copy = await copy_of(world.sessions, backup.id, world.destinations[0].id)
        assert copy.status is CopyStatus.STORED
    shutil.rmtree(root)
    moved.rename(root)
    assert (await reconcile(ctx, world.destinations[0])).missing == []
