"""Retention applied to real files: what the policy drops goes from every destination
(artifact and manifest), then its row; each deletion is audited and announced; a
destination that refuses keeps the row until the next pass."""

from __future__ import annotations

import shutil
from datetime import timedelta
from pathlib import Path

from sqlalchemy import select

from proto.backup_events import BackupDeleted
from services.common.artifacts import manifest_key
from services.common.db.enums import AuditOutcome, BackupStatus
from services.common.db.models import AuditEntry, BackupCopy
from services.storage.context import StorageContext
from services.storage.prune import ACTION, apply_retention, plan
from tests.storage.conftest import Clock, Events, World, backup_ids, load, make_world


def gone(path: Path) -> bool:
    return not path.exists() and not Path(manifest_key(str(path))).exists()


async def test_policy_deletes_artifacts_manifests_rows_with_audit_and_events(
    ctx: StorageContext, world: World, clock: Clock, events: Events
) -> None:
    now = clock.now
    for day in range(4, 0, -1):  # good1 (4 days ago) .. good4 (1 day ago)
        await world.add(f"good{5 - day}", now - timedelta(days=day))
    await world.add("old-failed", now - timedelta(days=40), BackupStatus.FAILED)
    await world.add("recent-missed", now - timedelta(days=3, hours=1), BackupStatus.MISSED)
    await world.add("manual", now - timedelta(days=100), scheduled=False)

    report = await apply_retention(ctx, world.database.id)

    b = world.backups
    assert set(report.deleted) == {b["good1"].id, b["good2"].id, b["old-failed"].id}
    assert report.failed == []
    left = await backup_ids(world.sessions)
    assert left == {b[n].id for n in ("good3", "good4", "recent-missed", "manual")}
    for name in ("good1", "good2"):
        assert gone(world.path(name, 0))
        assert gone(world.path(name, 1))
    for name in ("good3", "good4", "manual"):
        assert world.path(name, 0).exists()
        assert world.path(name, 1).exists()
    async with world.sessions() as session:
        copies = set(await session.scalars(select(BackupCopy.backup_id)))
        audit = list(await session.scalars(select(AuditEntry).where(AuditEntry.action == ACTION)))
    assert copies == {b[n].id for n in ("good3", "good4", "manual")}
    assert {e.target_id for e in audit} == {str(i) for i in report.deleted}
    entry = next(e for e in audit if e.target_id == str(b["good1"].id))
    assert (entry.actor, entry.user_id, entry.outcome) == ("storage", None, AuditOutcome.SUCCESS)
    assert entry.project_id == world.project.id
    assert entry.details["reasons"] == ["not among the newest 2 (keep_last)"]

    await events.settle()
    deleted = events.of(BackupDeleted)
    # Rows without an artifact (the failed run) go silently: there was nothing stored.
    assert {e.backup_id for e in deleted} == {b["good1"].id, b["good2"].id}
    first = next(e for e in deleted if e.backup_id == b["good1"].id)
    assert first.destination_id is None
    assert first.size_bytes == 2 * (b["good1"].bytes_out or 0)
    assert first.reason == "retention: not among the newest 2 (keep_last)"
    assert first.deleted_by is None
    assert first.project_id == world.project.id

    # Idempotent: a second pass (another replica, the sweep) deletes nothing more.
    again = await apply_retention(ctx, world.database.id)
    assert again.deleted == []


async def test_newest_good_backup_survives_when_everything_expired(
    ctx: StorageContext, tmp_path: Path, clock: Clock
) -> None:
    world = await make_world(ctx.sessions, tmp_path, retention={"max_age_days": 7})
    await world.add("ancient", clock.now - timedelta(days=90))
    await world.add("old", clock.now - timedelta(days=60))
    await world.add("failing", clock.now - timedelta(days=1), BackupStatus.FAILED)
    report = await apply_retention(ctx, world.database.id)
    assert report.deleted == [world.backups["ancient"].id]
    assert world.path("old").exists()
    decisions = {d.backup_id: d for d in await plan(ctx, world.database.id, clock.now)}
    assert decisions[world.backups["old"].id].reasons == ("newest successful backup",)


async def test_a_refusing_destination_keeps_the_row_until_the_next_pass(
    ctx: StorageContext, world: World, clock: Clock, events: Events
) -> None:
    for day in (3, 2, 1):
        await world.add(f"b{day}", clock.now - timedelta(days=day))
    stuck = world.path("b3", 1)
    # Tests run as root, so permissions cannot make a delete fail: a non-empty
    # directory where the artifact should be does (unlink fails with EISDIR).
    stuck.unlink()
    stuck.mkdir()
    (stuck / "keep").write_text("x")

    report = await apply_retention(ctx, world.database.id)
    target = world.backups["b3"].id
    assert report.failed == [target]
    assert gone(world.path("b3", 0))
    row = await load(world.sessions, target)
    assert row is not None
    assert row.status is BackupStatus.SUCCEEDED
    async with world.sessions() as session:
        left = list(await session.scalars(select(BackupCopy).where(BackupCopy.backup_id == target)))
        audit = list(
            await session.scalars(select(AuditEntry).where(AuditEntry.target_id == str(target)))
        )
    assert [c.destination_id for c in left] == [world.destinations[1].id]
    assert audit[0].outcome is AuditOutcome.FAILURE
    assert "destination error" in audit[0].details["errors"][0]
    await events.settle()
    partial = [e for e in events.of(BackupDeleted) if e.backup_id == target]
    assert [e.destination_id for e in partial] == [world.destinations[0].id]

    shutil.rmtree(stuck)
    report = await apply_retention(ctx, world.database.id)
    assert report.deleted == [target]
    assert await load(world.sessions, target) is None
