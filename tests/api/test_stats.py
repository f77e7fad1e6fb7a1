"""/stats/dashboard and /stats/storage: windows, success rates, last successes,
overdue databases, next runs and storage use — always scoped to the caller.

Runs, copies and schedules are written straight into the metadata DB (as the
executor, storage service and scheduler would), with the API's clock fixed."""

from __future__ import annotations

import shutil
import uuid
from collections.abc import Iterator, Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import event
from sqlalchemy.ext.asyncio import AsyncEngine

from services.api.auth.cache import PrincipalCache
from services.api.domain.stats_cache import StatsCache
from services.common.db.enums import (
    BackupStatus,
    BackupTrigger,
    CopyStatus,
    DatabaseEngine,
    DestinationKind,
    ProjectRole,
    VerifyStatus,
)
from services.common.db.models import (
    Backup,
    BackupCopy,
    Database,
    Destination,
    Project,
    ProjectMember,
    Schedule,
    SchedulerCursor,
)
from tests.api.client import Actor, Api

NOW = datetime(2025, 5, 14, 12, 30, tzinfo=UTC)  # a Wednesday, in the past (JWT iat)
HOUR, DAY = timedelta(hours=1), timedelta(days=1)
ZERO = {status.value: 0 for status in BackupStatus}


class Seed:
    """Writes rows directly, as the other services would."""

    def __init__(self, api: Api) -> None:
        self.api = api
        api.ctx.clock = lambda: NOW

    async def add(self, *rows: Any) -> None:
        async with self.api.ctx.transaction() as session:
            session.add_all(rows)

    async def project(self, owner: Actor, name: str) -> Project:
        project = Project(id=uuid.uuid4(), name=name, slug=f"{name}-{uuid.uuid4().hex[:6]}")
        await self.add(project)
        await self.add(ProjectMember(project_id=project.id, user_id=owner.id, role="owner"))
        return project

    async def member(self, project: Project, actor: Actor, role: ProjectRole) -> None:
        await self.add(ProjectMember(project_id=project.id, user_id=actor.id, role=role))

    async def database(self, project: Project, name: str) -> Database:
        database = Database(
            id=uuid.uuid4(),
            project_id=project.id,
            name=name,
            engine=DatabaseEngine("postgresql"),
            host="db.internal",
            port=5432,
        )
        await self.add(database)
        return database

    async def destination(self, name: str, project: Project | None = None) -> Destination:
        destination = Destination(
            id=uuid.uuid4(),
            name=name,
            kind=DestinationKind.LOCAL,
            config={"path": f"/srv/{name}"},
            project_id=project.id if project else None,
        )
        await self.add(destination)
        return destination

    async def schedule(
        self,
        database: Database,
        cron: str,
        *,
        changed: datetime,
        enabled: bool = True,
        timezone: str = "UTC",
        next_slot_at: datetime | None = None,
    ) -> Schedule:
        schedule = Schedule(
            id=uuid.uuid4(),
            database_id=database.id,
            name=f"every {cron}",
            cron=cron,
            timezone=timezone,
            enabled=enabled,
            created_at=changed,
            updated_at=changed,
        )
        await self.add(schedule)
        if next_slot_at is not None:
            await self.add(SchedulerCursor(schedule_id=schedule.id, next_slot_at=next_slot_at))
        return schedule

    async def backup(
        self,
        database: Database,
        status: BackupStatus,
        ago: timedelta,
        *,
        size: int | None = None,
        copies: Sequence[tuple[Destination, CopyStatus, int | None]] = (),
    ) -> Backup:
        queued = NOW - ago
        done = status in {BackupStatus.SUCCEEDED, BackupStatus.FAILED}
        backup = Backup(
            id=uuid.uuid4(),
            database_id=database.id,
            trigger=BackupTrigger("manual"),
            status=status,
            queued_at=queued,
            started_at=queued + timedelta(seconds=5) if done else None,
            finished_at=queued + timedelta(minutes=3) if done else None,
            bytes_out=size,
        )
        await self.add(backup)
        for destination, copy_status, copy_size in copies:
            await self.add(
                BackupCopy(
                    backup_id=backup.id,
                    destination_id=destination.id,
                    artifact_key=f"k/{backup.id}",
                    status=copy_status,
                    size_bytes=copy_size,
                )
            )
        return backup


@pytest.fixture
def seed(api: Api) -> Seed:
    return Seed(api)


def window(body: dict[str, Any], name: str) -> dict[str, Any]:
    found: dict[str, Any] = next(w for w in body["windows"] if w["window"] == name)
    return found


async def test_windows_count_by_status_and_rate(api: Api, seed: Seed) -> None:
    alice = await api.user("alice")
    project = await seed.project(alice, "orders")
    db = await seed.database(project, "orders-db")
    ok, failed = BackupStatus.SUCCEEDED, BackupStatus.FAILED
    await seed.backup(db, ok, 1 * HOUR)
    await seed.backup(db, BackupStatus.RUNNING, 10 * timedelta(minutes=1))
    await seed.backup(db, failed, 2 * DAY)
    await seed.backup(db, BackupStatus.MISSED, 3 * DAY)
    await seed.backup(db, ok, 10 * DAY)
    await seed.backup(db, ok, 40 * DAY)  # outside every window

    body = (await api.get("/stats/dashboard", as_=alice)).body
    day, week, month = window(body, "24h"), window(body, "7d"), window(body, "30d")
    assert day["since"] == (NOW - DAY).isoformat().replace("+00:00", "Z")
    assert (day["total"], day["by_status"]["succeeded"], day["by_status"]["running"]) == (2, 1, 1)
    assert day["success_rate"] == 1.0
    assert (week["total"], week["by_status"]["failed"], week["by_status"]["missed"]) == (4, 1, 1)
    assert week["success_rate"] == 0.5
    assert (month["total"], month["by_status"]["succeeded"]) == (5, 2)
    assert month["success_rate"] == pytest.approx(2 / 3, abs=1e-4)
    assert month["by_status"]["corrupt"] == 0
    assert body["counts"] == {"projects": 1, "databases": 1, "schedules": 0, "schedules_enabled": 0}


async def test_success_rate_is_null_without_finished_runs(api: Api, seed: Seed) -> None:
    alice = await api.user("alice")
    db = await seed.database(await seed.project(alice, "p"), "db")
    await seed.backup(db, BackupStatus.QUEUED, HOUR)
    body = (await api.get("/stats/dashboard", as_=alice)).body
    assert window(body, "24h")["total"] == 1
    assert [w["success_rate"] for w in body["windows"]] == [None, None, None]


async def test_last_success_per_database(api: Api, seed: Seed) -> None:
    alice = await api.user("alice")
    project = await seed.project(alice, "p")
    busy, idle = await seed.database(project, "busy"), await seed.database(project, "idle")
    proven = await seed.backup(busy, BackupStatus.SUCCEEDED, 3 * DAY, size=100)
    async with api.ctx.transaction() as session:
        row = await session.get(Backup, proven.id)
        assert row is not None
        row.verify_status, row.verified_at = VerifyStatus.PASSED, NOW - 2 * DAY
    newest = await seed.backup(busy, BackupStatus.SUCCEEDED, DAY, size=250)
    await seed.backup(busy, BackupStatus.FAILED, HOUR)  # newer, but not a success
    await seed.backup(idle, BackupStatus.FAILED, HOUR)

    last = (await api.get("/stats/dashboard", as_=alice)).body["last_success"]
    assert [entry["database_name"] for entry in last] == ["busy", "idle"]
    assert last[0]["backup_id"] == str(newest.id)
    assert last[0]["size_bytes"] == 250
    assert last[0]["verified_backup_id"] == str(proven.id)  # the newest proven restorable
    assert last[1]["verified_backup_id"] is None
    assert last[0]["finished_at"] == (NOW - DAY + timedelta(minutes=3)).isoformat().replace(
        "+00:00", "Z"
    )
    assert (last[1]["backup_id"], last[1]["finished_at"], last[1]["size_bytes"]) == (
        None,
        None,
        None,
    )


async def test_overdue_uses_twice_the_cron_interval(api: Api, seed: Seed) -> None:
    alice = await api.user("alice")
    project = await seed.project(alice, "p")
    long_ago = NOW - 30 * DAY
    late = await seed.database(project, "late")  # hourly, last success 3 h ago
    hourly = await seed.schedule(late, "0 * * * *", changed=long_ago)
    await seed.backup(late, BackupStatus.SUCCEEDED, 3 * HOUR)
    fine = await seed.database(project, "fine")  # hourly, last success 90 min ago
    await seed.schedule(fine, "@hourly", changed=long_ago)
    await seed.backup(fine, BackupStatus.SUCCEEDED, 90 * timedelta(minutes=1))
    never = await seed.database(project, "never")  # daily, never succeeded
    await seed.schedule(never, "@daily", changed=long_ago)
    await seed.backup(never, BackupStatus.FAILED, HOUR)
    new = await seed.database(project, "new")  # daily, created an hour ago
    await seed.schedule(new, "0 3 * * *", changed=NOW - HOUR)
    off = await seed.database(project, "off")  # disabled: not watched
    await seed.schedule(off, "@hourly", changed=long_ago, enabled=False)
    weekdays = await seed.database(project, "weekdays")  # Mon-Fri: a weekend is not late
    await seed.schedule(weekdays, "0 9 * * 1-5", changed=long_ago)
    await seed.backup(weekdays, BackupStatus.SUCCEEDED, 4 * DAY)  # within 2 x 72 h

    body = (await api.get("/stats/dashboard", as_=alice)).body
    overdue = {entry["database_name"]: entry for entry in body["overdue"]}
    assert set(overdue) == {"late", "never"}
    assert overdue["late"]["schedule_id"] == str(hourly.id)
    assert overdue["late"]["interval_s"] == 3600
    assert overdue["late"]["overdue_since"] == "2025-05-14T11:33:00Z"  # 09:33 + 2 h
    assert overdue["never"]["last_success_at"] is None
    assert overdue["never"]["interval_s"] == 86400
    # The longest overdue first.
    assert [entry["database_name"] for entry in body["overdue"]] == ["never", "late"]
    assert body["counts"]["schedules"] == 6
    assert body["counts"]["schedules_enabled"] == 5


async def test_weekday_schedule_is_overdue_after_two_of_its_gaps(api: Api, seed: Seed) -> None:
    alice = await api.user("alice")
    db = await seed.database(await seed.project(alice, "p"), "weekdays")
    await seed.schedule(db, "0 9 * * 1-5", changed=NOW - 30 * DAY)
    await seed.backup(db, BackupStatus.SUCCEEDED, 7 * DAY)  # more than 2 x 72 h ago
    overdue = (await api.get("/stats/dashboard", as_=alice)).body["overdue"]
    assert [(o["database_name"], o["interval_s"]) for o in overdue] == [("weekdays", 3 * 86400)]


async def test_next_runs_from_the_scheduler_or_the_cron(api: Api, seed: Seed) -> None:
    alice = await api.user("alice")
    project = await seed.project(alice, "p")
    a, b, c = [await seed.database(project, name) for name in "abc"]
    fired = await seed.schedule(a, "*/5 * * * *", changed=NOW, next_slot_at=NOW + 5 * HOUR)
    computed = await seed.schedule(b, "0 3 * * *", changed=NOW, timezone="Europe/Berlin")
    await seed.schedule(c, "* * * * *", changed=NOW, enabled=False)

    runs = (await api.get("/stats/dashboard", as_=alice)).body["next_runs"]
    # 03:00 in Berlin (UTC+2 in May) is 01:00 UTC on the next day.
    assert [(r["schedule_id"], r["at"], r["source"]) for r in runs] == [
        (str(fired.id), "2025-05-14T17:30:00Z", "scheduler"),
        (str(computed.id), "2025-05-15T01:00:00Z", "cron"),
    ]
    one = await api.get("/stats/dashboard", as_=alice, params={"next_runs": "1"})
    assert [r["schedule_id"] for r in one.body["next_runs"]] == [str(fired.id)]


async def test_dashboard_is_scoped_to_the_caller(api: Api, seed: Seed) -> None:
    alice, bob, carol = await api.user("alice"), await api.user("bob"), await api.user("carol")
    admin = await api.user("root", admin=True)
    mine, theirs = await seed.project(alice, "mine"), await seed.project(bob, "theirs")
    await seed.member(mine, carol, ProjectRole.VIEWER)
    my_db, their_db = await seed.database(mine, "my-db"), await seed.database(theirs, "their-db")
    await seed.schedule(their_db, "@hourly", changed=NOW - 30 * DAY)
    await seed.backup(my_db, BackupStatus.SUCCEEDED, HOUR)
    for _ in range(3):
        await seed.backup(their_db, BackupStatus.FAILED, HOUR)

    for caller in (alice, carol):
        body = (await api.get("/stats/dashboard", as_=caller)).body
        assert body["counts"] == {
            "projects": 1,
            "databases": 1,
            "schedules": 0,
            "schedules_enabled": 0,
        }
        assert window(body, "24h")["by_status"] == {**ZERO, "succeeded": 1}
        assert [e["database_name"] for e in body["last_success"]] == ["my-db"]
        assert body["overdue"] == body["next_runs"] == []

    everything = (await api.get("/stats/dashboard", as_=admin)).body
    assert everything["counts"]["projects"] == 2
    assert window(everything, "24h")["by_status"] == {**ZERO, "succeeded": 1, "failed": 3}
    assert [o["database_name"] for o in everything["overdue"]] == ["their-db"]

    only = await api.get("/stats/dashboard", as_=admin, params={"project_id": str(theirs.id)})
    assert only.body["project_id"] == str(theirs.id)
    assert window(only.body, "24h")["by_status"] == {**ZERO, "failed": 3}
    hidden = await api.get("/stats/dashboard", as_=alice, params={"project_id": str(theirs.id)})
    assert (hidden.status, hidden.error_code) == (404, "not_found")
    missing = await api.get("/stats/storage", as_=alice, params={"project_id": str(uuid.uuid4())})
    assert missing.status == 404


async def test_storage_per_project_and_destination(api: Api, seed: Seed) -> None:
    alice, bob = await api.user("alice"), await api.user("bob")
    admin = await api.user("root", admin=True)
    mine, theirs = await seed.project(alice, "mine"), await seed.project(bob, "theirs")
    own = await seed.destination("own-disk", mine)
    shared = await seed.destination("shared-disk")
    my_db, their_db = await seed.database(mine, "a"), await seed.database(theirs, "b")
    stored, failed = CopyStatus.STORED, CopyStatus.FAILED
    await seed.backup(
        my_db,
        BackupStatus.SUCCEEDED,
        DAY,
        size=1000,
        copies=[(own, stored, 1000), (shared, stored, None)],
    )
    await seed.backup(my_db, BackupStatus.SUCCEEDED, HOUR, size=500, copies=[(own, stored, 500)])
    await seed.backup(my_db, BackupStatus.FAILED, HOUR, copies=[(shared, failed, 7)])
    await seed.backup(their_db, BackupStatus.SUCCEEDED, HOUR, size=9, copies=[(shared, stored, 9)])

    body = (await api.get("/stats/storage", as_=alice)).body
    # The copy without a size counts the backup's bytes_out; the failed copy nothing.
    assert body["total"] == {"size_bytes": 2500, "copies": 3, "missing": 0, "corrupt": 0}
    assert [(p["project_name"], p["size_bytes"], p["copies"]) for p in body["projects"]] == [
        ("mine", 2500, 3)
    ]
    assert [
        (d["destination_name"], d["size_bytes"], d["copies"], d["shared"], d["kind"])
        for d in body["destinations"]
    ] == [("own-disk", 1500, 2, False, "local"), ("shared-disk", 1000, 1, True, "local")]
    assert body["databases"] == [
        {"project_id": str(mine.id), "database_id": str(my_db.id), "database_name": "a",
         "size_bytes": 2500, "copies": 3, "missing": 0, "corrupt": 0}
    ]  # fmt: skip

    everything = (await api.get("/stats/storage", as_=admin)).body
    assert everything["total"] == {"size_bytes": 2509, "copies": 4, "missing": 0, "corrupt": 0}
    assert [p["project_name"] for p in everything["projects"]] == ["mine", "theirs"]
    assert [d["database_name"] for d in everything["databases"]] == ["a", "b"]
    shared_row = next(
        d for d in everything["destinations"] if d["destination_name"] == "shared-disk"
    )
    assert (shared_row["size_bytes"], shared_row["copies"]) == (1009, 2)

    narrowed = await api.get("/stats/storage", as_=admin, params={"project_id": str(theirs.id)})
    assert narrowed.body["total"] == {"size_bytes": 9, "copies": 1, "missing": 0, "corrupt": 0}
    assert [d["database_id"] for d in narrowed.body["databases"]] == [str(their_db.id)]
    assert (await api.get("/stats/storage", as_=bob)).body["total"]["size_bytes"] == 9


def use(row: dict[str, Any]) -> tuple[int, int, int, int]:
    return row["size_bytes"], row["copies"], row["missing"], row["corrupt"]


async def test_storage_shows_the_free_space_of_local_destinations(
    api: Api, seed: Seed, tmp_path: Path
) -> None:
    alice = await api.user("alice")
    project = await seed.project(alice, "mine")
    here = await seed.destination("here", project)
    here.config = {"path": str(tmp_path)}  # a directory that exists, unlike /srv/...
    async with api.ctx.transaction() as session:
        await session.merge(here)
    gone = await seed.destination("gone", project)
    db = await seed.database(project, "a")
    stored = CopyStatus.STORED
    await seed.backup(db, BackupStatus.SUCCEEDED, HOUR, size=5, copies=[(here, stored, 5)])
    await seed.backup(db, BackupStatus.SUCCEEDED, DAY, size=5, copies=[(gone, stored, 5)])

    rows = {d["destination_name"]: d for d in (await api.get("/stats/storage", as_=alice)).body[
        "destinations"]}  # fmt: skip
    device = shutil.disk_usage(tmp_path)
    assert 0 < rows["here"]["free_bytes"] <= rows["here"]["total_bytes"] == device.total
    expected_low = rows["here"]["free_bytes"] < max(
        api.ctx.settings.low_space_bytes, device.total * api.ctx.settings.low_space_fraction
    )
    assert rows["here"]["low_space"] is expected_low
    # A directory that is not there has no device to measure.
    assert (rows["gone"]["free_bytes"], rows["gone"]["low_space"]) == (None, False)

    api.ctx.settings = api.ctx.settings.model_copy(update={"low_space_bytes": 2**62})
    api.ctx.forget_cached()
    rows = {d["destination_name"]: d for d in (await api.get("/stats/storage", as_=alice)).body[
        "destinations"]}  # fmt: skip
    assert rows["here"]["low_space"] is True


async def test_storage_counts_missing_and_corrupt_copies_apart(api: Api, seed: Seed) -> None:
    """Copies found missing (reconciliation) or corrupt (integrity sweep) hold no
    usable bytes: they count in ``missing`` / ``corrupt``, never in bytes or copies."""
    alice, bob = await api.user("alice"), await api.user("bob")
    mine, theirs = await seed.project(alice, "mine"), await seed.project(bob, "theirs")
    own, shared = await seed.destination("own-disk", mine), await seed.destination("shared")
    a, c = await seed.database(mine, "a"), await seed.database(mine, "c")
    lost, their_db = await seed.database(mine, "lost"), await seed.database(theirs, "t")
    stored, missing, corrupt = CopyStatus.STORED, CopyStatus.MISSING, CopyStatus.CORRUPT
    ok = BackupStatus.SUCCEEDED
    await seed.backup(
        a, ok, 2 * DAY, size=1000, copies=[(own, stored, 1000), (shared, stored, 900)]
    )
    await seed.backup(a, ok, DAY, size=400, copies=[(own, corrupt, 400), (shared, stored, 400)])
    await seed.backup(c, ok, HOUR, size=300, copies=[(own, missing, 300), (shared, stored, 70)])
    await seed.backup(c, BackupStatus.CORRUPT, 3 * HOUR, size=60, copies=[(shared, corrupt, None)])
    await seed.backup(lost, ok, HOUR, size=50, copies=[(own, missing, 50)])  # nothing left
    await seed.backup(their_db, ok, HOUR, size=5, copies=[(shared, missing, 5)])

    body = (await api.get("/stats/storage", as_=alice)).body
    assert use(body["total"]) == (2370, 4, 2, 2)
    assert [(p["project_name"], *use(p)) for p in body["projects"]] == [("mine", 2370, 4, 2, 2)]
    # Largest first; a database with only a missing copy still shows, to say so.
    assert [(d["database_name"], *use(d)) for d in body["databases"]] == [
        ("a", 2300, 3, 0, 1),
        ("c", 70, 1, 1, 1),
        ("lost", 0, 0, 1, 0),
    ]
    assert {d["database_id"] for d in body["databases"]} == {str(a.id), str(c.id), str(lost.id)}
    assert {d["project_id"] for d in body["databases"]} == {str(mine.id)}
    assert [(d["destination_name"], *use(d)) for d in body["destinations"]] == [
        ("shared", 1370, 3, 0, 1),
        ("own-disk", 1000, 1, 2, 1),
    ]
    # Bob sees only his project's missing copy, on the shared destination too.
    theirs_only = (await api.get("/stats/storage", as_=bob)).body
    assert use(theirs_only["total"]) == (0, 0, 1, 0)
    assert [(d["database_name"], *use(d)) for d in theirs_only["databases"]] == [("t", 0, 0, 1, 0)]
    assert [(d["destination_name"], *use(d)) for d in theirs_only["destinations"]] == [
        ("shared", 0, 0, 1, 0)
    ]


async def test_empty_scope_answers_zeroes(api: Api) -> None:
    nobody = await api.user("nobody")
    dashboard = (await api.get("/stats/dashboard", as_=nobody)).body
    assert dashboard["counts"] == {
        "projects": 0,
        "databases": 0,
        "schedules": 0,
        "schedules_enabled": 0,
    }
    assert [w["total"] for w in dashboard["windows"]] == [0, 0, 0]
    storage = (await api.get("/stats/storage", as_=nobody)).body
    assert storage["total"] == {"size_bytes": 0, "copies": 0, "missing": 0, "corrupt": 0}
    assert storage["projects"] == storage["databases"] == storage["destinations"] == []


@pytest.mark.parametrize(
    ("path", "params", "field"),
    [
        ("/stats/dashboard", {"project_id": "nope"}, "project_id"),
        ("/stats/dashboard", {"next_runs": "101"}, "next_runs"),
        ("/stats/dashboard", {"next_runs": "-1"}, "next_runs"),
        ("/stats/storage", {"next_runs": "1"}, "next_runs"),
        ("/stats/storage", {"colour": "red"}, "colour"),
    ],
)
async def test_bad_query_is_422(api: Api, path: str, params: dict[str, str], field: str) -> None:
    alice = await api.user("alice")
    response = await api.get(path, as_=alice, params=params)
    assert (response.status, response.error_code) == (422, "validation_failed")
    assert field in response.body["error"]["fields"]


@pytest.mark.parametrize("path", ["/stats/dashboard", "/stats/storage"])
async def test_stats_need_a_login(api: Api, path: str) -> None:
    response = await api.get(path)
    assert (response.status, response.error_code) == (401, "unauthorized")


@pytest.fixture
def statements(api: Api) -> Iterator[list[str]]:
    """Every SQL statement the app runs while the test does."""
    engine: AsyncEngine = api.ctx.sessions.kw["bind"]
    seen: list[str] = []

    def record(*args: Any) -> None:
        seen.append(args[2])

    event.listen(engine.sync_engine, "before_cursor_execute", record)
    yield seen
    event.remove(engine.sync_engine, "before_cursor_execute", record)


@pytest.mark.parametrize("path", ["/stats/dashboard", "/stats/storage"])
async def test_query_count_does_not_grow_with_the_data(
    api: Api, seed: Seed, statements: list[str], path: str
) -> None:
    # Count what every request costs: neither reused numbers nor a remembered caller
    # (the second request would skip the user lookup the first one made).
    api.ctx.stats = StatsCache(0)
    api.ctx.principals = PrincipalCache(0)
    alice = await api.user("alice")
    shared = await seed.destination("shared")

    async def grow(count: int) -> int:
        for index in range(count):
            project = await seed.project(alice, f"p{index}")
            db = await seed.database(project, f"db{index}")
            await seed.schedule(db, "@hourly", changed=NOW - 30 * DAY)
            await seed.backup(
                db, BackupStatus.SUCCEEDED, HOUR, size=1, copies=[(shared, CopyStatus.STORED, 1)]
            )
        statements.clear()
        assert (await api.get(path, as_=alice)).status == 200
        return len(statements)

    small = await grow(1)
    assert await grow(12) == small
