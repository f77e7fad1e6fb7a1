"""Retention applied to real files, per destination: a copy the destination's policy
drops goes (artifact and manifest, then its copy row), the backup's row once no
stored copy is left; each deletion is audited and announced; a destination that
refuses keeps its copy (and the row) until the next pass."""

from __future__ import annotations

import shutil
from datetime import timedelta
from pathlib import Path

from sqlalchemy import select

from proto.backup_events import BackupDeleted
from services.common.artifacts import manifest_key
from services.common.db.enums import AuditOutcome, BackupStatus, CopyStatus
from services.common.db.models import AuditEntry, BackupCopy
from services.storage.context import StorageContext
from services.storage.prune import ACTION, apply_retention, plan, trim_backup
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


# -- per destination ---------------------------------------------------------------------


async def missed_copy(world: World, name: str, destination: int) -> None:
    """Record that ``name``'s copy on ``destination`` failed (nothing stored there)."""
    backup = world.backups[name]
    assert backup.artifact_key is not None
    async with world.sessions() as session, session.begin():
        session.add(BackupCopy(
            backup_id=backup.id, destination_id=world.destinations[destination].id,
            artifact_key=backup.artifact_key, status=CopyStatus.FAILED,
            error_message="destination error: disk full", created_at=backup.finished_at,
        ))  # fmt: skip


async def copies_by_backup(world: World) -> dict[str, dict[int, CopyStatus]]:
    """name -> destination index -> copy status, for the rows left."""
    index = {d.id: i for i, d in enumerate(world.destinations)}
    names = {b.id: n for n, b in world.backups.items()}
    found: dict[str, dict[int, CopyStatus]] = {}
    async with world.sessions() as session:
        for copy in await session.scalars(select(BackupCopy)):
            found.setdefault(names[copy.backup_id], {})[index[copy.destination_id]] = copy.status
    return found


async def test_each_destination_keeps_what_the_policy_says_when_one_missed_a_copy(
    ctx: StorageContext, world: World, clock: Clock, events: Events
) -> None:
    # keep_last 2 on two disks; disk1 missed g3's copy (it failed that night).
    now = clock.now
    for day in range(4, 0, -1):
        missed = day == 2
        await world.add(f"g{5 - day}", now - timedelta(days=day),
                        destinations=[0] if missed else None)  # fmt: skip
    await missed_copy(world, "g3", 1)
    b = world.backups
    disk0, disk1 = (d.id for d in world.destinations)

    report = await apply_retention(ctx, world.database.id)

    # disk0 holds g4, g3; disk1 (no g3) keeps g2 instead. g1 goes from both, row and all.
    assert report.deleted == [b["g1"].id]
    assert report.trimmed == [(b["g2"].id, disk0)]
    assert (report.kept, report.failed) == (3, [])
    assert await backup_ids(world.sessions) == {b[n].id for n in ("g2", "g3", "g4")}
    assert await copies_by_backup(world) == {
        "g2": {1: CopyStatus.STORED},
        "g3": {0: CopyStatus.STORED, 1: CopyStatus.FAILED},  # the failed record stays
        "g4": {0: CopyStatus.STORED, 1: CopyStatus.STORED},
    }
    assert gone(world.path("g1", 0))
    assert gone(world.path("g1", 1))
    assert gone(world.path("g2", 0))
    for name, destination in (("g2", 1), ("g3", 0), ("g4", 0), ("g4", 1)):
        assert world.path(name, destination).exists()
        assert Path(manifest_key(str(world.path(name, destination)))).exists()

    async with world.sessions() as session:
        audit = {
            e.target_id: e
            for e in await session.scalars(select(AuditEntry).where(AuditEntry.action == ACTION))
        }
    assert set(audit) == {str(b["g1"].id), str(b["g2"].id)}
    whole, trimmed = audit[str(b["g1"].id)], audit[str(b["g2"].id)]
    assert (whole.outcome, whole.details["row_deleted"]) == (AuditOutcome.SUCCESS, True)
    assert sorted(whole.details["destinations_cleared"]) == sorted([str(disk0), str(disk1)])
    assert (trimmed.outcome, trimmed.details["row_deleted"]) == (AuditOutcome.SUCCESS, False)
    assert trimmed.details["destinations_cleared"] == [str(disk0)]
    assert trimmed.details["reasons"] == ["not among the newest 2 (keep_last)"]
    assert trimmed.details["copy_reasons"] == {str(disk0): ["not among the newest 2 (keep_last)"]}
    assert trimmed.details["freed_bytes"] == b["g2"].bytes_out

    await events.settle()
    deleted = {(e.backup_id, e.destination_id): e for e in events.of(BackupDeleted)}
    assert set(deleted) == {(b["g1"].id, None), (b["g2"].id, disk0)}
    copy_event = deleted[b["g2"].id, disk0]
    assert copy_event.size_bytes == b["g2"].bytes_out
    assert copy_event.reason == "retention: not among the newest 2 (keep_last)"

    # Idempotent: nothing more goes on a second pass.
    again = await apply_retention(ctx, world.database.id)
    assert (again.deleted, again.trimmed, again.kept) == ([], [], 3)

    # A new backup on both: disk0 lets g3 go and disk1 lets g2 go; each was the row's
    # last stored copy, so both rows go (g3 with its failed record).
    await world.add("g5", now)
    report = await apply_retention(ctx, world.database.id)
    assert set(report.deleted) == {b["g2"].id, b["g3"].id}
    assert report.trimmed == []
    assert await copies_by_backup(world) == {
        name: {0: CopyStatus.STORED, 1: CopyStatus.STORED} for name in ("g4", "g5")
    }
    assert gone(world.path("g2", 1))
    assert gone(world.path("g3", 0))


async def test_a_refusing_destination_keeps_its_copy_until_the_next_pass(
    ctx: StorageContext, world: World, clock: Clock
) -> None:
    for day in (3, 2, 1):
        await world.add(f"b{day}", clock.now - timedelta(days=day),
                        destinations=[0] if day == 1 else None)  # fmt: skip
    await missed_copy(world, "b1", 1)
    # disk0 keeps b1, b2 (b3's copy goes); disk1 keeps b2, b3. disk0 refuses the delete.
    stuck = world.path("b3", 0)
    stuck.unlink()
    stuck.mkdir()
    (stuck / "keep").write_text("x")
    target = world.backups["b3"].id

    report = await apply_retention(ctx, world.database.id)
    assert (report.failed, report.trimmed, report.deleted) == ([target], [], [])
    assert (await copies_by_backup(world))["b3"] == {0: CopyStatus.STORED, 1: CopyStatus.STORED}
    assert world.path("b3", 1).exists()

    shutil.rmtree(stuck)
    report = await apply_retention(ctx, world.database.id)
    assert report.trimmed == [(target, world.destinations[0].id)]
    assert report.failed == []
    assert (await copies_by_backup(world))["b3"] == {1: CopyStatus.STORED}
    assert world.path("b3", 1).exists()


async def test_a_copy_is_never_trimmed_when_no_other_stored_copy_is_left(
    ctx: StorageContext, world: World, clock: Clock
) -> None:
    for day in (3, 2, 1):
        await world.add(f"b{day}", clock.now - timedelta(days=day),
                        destinations=[0] if day == 1 else None)  # fmt: skip
    decisions = {d.backup_id: d for d in await plan(ctx, world.database.id, clock.now)}
    b3 = decisions[world.backups["b3"].id]
    assert b3.keep
    assert [c.destination_id for c in b3.dropped] == [world.destinations[0].id]
    # Meanwhile the copy that was to stay is found missing: the plan is stale.
    async with world.sessions() as session, session.begin():
        copy = await session.get(BackupCopy, (b3.backup_id, world.destinations[1].id))
        assert copy is not None
        copy.status = CopyStatus.MISSING
    removed, complete = await trim_backup(ctx, b3)
    assert (removed, complete) == ([], True)
    assert world.path("b3", 0).exists()
