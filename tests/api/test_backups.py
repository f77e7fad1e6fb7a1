"""Backups through the API with a real executor behind NATS: back up now, watch it
complete, list and filter, inspect the log, download (whole and ranged, checksum
header), delete with its artifacts; connection tests by request/reply. The list's
pages, whichever of its three ways of reading them the caller gets, against rows
written straight into the metadata DB."""

from __future__ import annotations

import base64
import contextlib
import hashlib
import random
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import event
from sqlalchemy.ext.asyncio import AsyncEngine

from proto.subjects import JOBS_STREAM
from services.common.db import models
from services.common.db.enums import BackupStatus, BackupTrigger, DatabaseEngine, ProjectRole
from services.executor.context import ExecutorContext
from tests.api.client import Actor, Api, wait_settled
from tests.servers import Database, PostgresServer

pytestmark = pytest.mark.integration


async def setup_database(
    api: Api, owner: Actor, pg: PostgresServer, db: Database,
    tmp_path: Path, password: str | None = None,
) -> dict[str, Any]:  # fmt: skip
    project = (await api.post("/projects", as_=owner, json={"name": "Shop"})).body
    storage = api.ctx.settings.backups_dir / "shop"
    destination = await api.post(
        "/destinations",
        as_=owner,
        json={"kind": "local", "name": "disk", "path": str(storage), "project_id": project["id"]},
    )
    assert destination.status == 201, destination.body
    created = await api.post("/databases", as_=owner, json={
        "project_id": project["id"], "name": "orders", "engine": "postgresql",
        "host": pg.host, "port": pg.port, "database_name": db.name, "username": pg.user,
        "password": pg.password if password is None else password})  # fmt: skip
    assert created.status == 201, created.body
    return {"project": project, "database": created.body, "storage": storage,
            "destination": destination.body}  # fmt: skip


async def wait_final(api: Api, actor: Actor, backup_id: str) -> dict[str, Any]:
    return await wait_settled(api, actor, f"/backups/{backup_id}")


async def test_back_up_now_download_and_delete(
    api: Api, api_executor: ExecutorContext, pg_server: PostgresServer, pg_database: Database,
    tmp_path: Path,
) -> None:  # fmt: skip
    pg_server.execute("CREATE TABLE t AS SELECT i FROM generate_series(1, 1000) i",
                      dbname=pg_database.name)  # fmt: skip
    owner, stranger = await api.user("owner"), await api.user("stranger")
    setup = await setup_database(api, owner, pg_server, pg_database, tmp_path)
    database_id = setup["database"]["id"]

    queued = await api.post(
        f"/databases/{database_id}/backups",
        as_=owner,
        json={"compression": {"algorithm": "gzip", "level": 6}},
    )
    assert queued.status == 202, queued.body
    assert queued.body["status"] == "queued"
    backup = await wait_final(api, owner, queued.body["id"])
    assert backup["status"] == "succeeded", backup["error_message"]
    assert backup["copies"][0]["destination_id"] == setup["destination"]["id"]
    assert backup["compression"] == "gzip"
    assert backup["log"] is not None
    assert pg_server.password not in str(backup)

    listed = await api.get(
        "/backups", as_=owner, params={"database_id": database_id, "status": "succeeded"}
    )
    assert [b["id"] for b in listed.body["items"]] == [backup["id"]]
    assert (await api.get("/backups", as_=stranger)).body["items"] == []
    assert (await api.get(f"/backups/{backup['id']}", as_=stranger)).status == 404
    assert (await api.get(f"/backups/{backup['id']}/download", as_=stranger)).status == 404

    whole = await api.client.get(
        f"/api/v1/backups/{backup['id']}/download",
        headers={"Authorization": f"Bearer {owner.token}"},
    )
    data = await whole.read()
    assert whole.status == 200
    assert hashlib.sha256(data).hexdigest() == backup["sha256"]
    assert (
        whole.headers["Digest"]
        == "sha-256=" + base64.b64encode(hashlib.sha256(data).digest()).decode()
    )
    assert whole.headers["Content-Length"] == str(len(data))
    assert whole.headers["Content-Disposition"].endswith('.pgdump.gz"')
    part = await api.client.get(
        f"/api/v1/backups/{backup['id']}/download",
        headers={"Authorization": f"Bearer {owner.token}", "Range": "bytes=10-19"},
    )
    assert part.status == 206
    assert await part.read() == data[10:20]
    assert part.headers["Content-Range"] == f"bytes 10-19/{len(data)}"
    bad = await api.get(
        f"/backups/{backup['id']}/download", as_=owner, headers={"Range": f"bytes={len(data) + 5}-"}
    )
    assert bad.status == 416

    artifact = Path(setup["destination"]["path"]) / backup["artifact_key"]
    assert artifact.exists()
    assert (await api.delete(f"/backups/{backup['id']}", as_=owner)).status == 204
    assert not artifact.exists()
    assert not Path(f"{artifact}.manifest.json").exists()
    assert (await api.get(f"/backups/{backup['id']}", as_=owner)).status == 404


async def test_failed_backup_is_visible_with_its_error(
    api: Api, api_executor: ExecutorContext, pg_server: PostgresServer, pg_database: Database,
    tmp_path: Path,
) -> None:  # fmt: skip
    owner = await api.user("owner")
    setup = await setup_database(api, owner, pg_server, pg_database, tmp_path,
                                 password="definitely-wrong")  # fmt: skip
    queued = await api.post(f"/databases/{setup['database']['id']}/backups", as_=owner, json={})
    backup = await wait_final(api, owner, queued.body["id"])
    assert (backup["status"], backup["error_code"]) == ("failed", "authentication_failed")
    assert "definitely-wrong" not in str(backup)
    download = await api.get(f"/backups/{backup['id']}/download", as_=owner)
    assert download.status == 409


async def test_connection_test_through_an_executor(
    api: Api, api_executor: ExecutorContext, pg_server: PostgresServer, pg_database: Database,
    tmp_path: Path,
) -> None:  # fmt: skip
    owner = await api.user("owner")
    good = await setup_database(api, owner, pg_server, pg_database, tmp_path)
    result = await api.post(f"/databases/{good['database']['id']}/test", as_=owner)
    assert result.status == 200, result.body
    assert result.body["ok"] is True
    assert result.body["server_version"].startswith("15")
    assert result.body["latency_ms"] >= 0

    changed = await api.put(f"/databases/{good['database']['id']}", as_=owner, json={
        "name": "orders", "host": pg_server.host, "port": pg_server.port,
        "database_name": "missing_db", "username": pg_server.user})  # fmt: skip
    assert changed.status == 200, changed.body
    result = await api.post(f"/databases/{good['database']['id']}/test", as_=owner)
    assert (result.body["ok"], result.body["error_code"]) == (False, "database_missing")


async def test_connection_test_without_executor_is_503(
    api: Api,
    pg_server: PostgresServer,
    pg_database: Database,
    tmp_path: Path,
) -> None:
    owner = await api.user("owner")
    setup = await setup_database(api, owner, pg_server, pg_database, tmp_path)
    result = await api.post(f"/databases/{setup['database']['id']}/test", as_=owner)
    assert result.status == 503
    assert "executor" in result.body["error"]["message"]


async def test_viewer_cannot_back_up_and_jobs_are_queued(
    api: Api,
    pg_server: PostgresServer,
    pg_database: Database,
    tmp_path: Path,
) -> None:
    owner, viewer = await api.user("owner"), await api.user("viewer")
    setup = await setup_database(api, owner, pg_server, pg_database, tmp_path)
    await api.post(
        f"/projects/{setup['project']['id']}/members",
        as_=owner,
        json={"email": viewer.email, "role": "viewer"},
    )
    denied = await api.post(f"/databases/{setup['database']['id']}/backups", as_=viewer, json={})
    assert denied.status == 403
    queued = await api.post(f"/databases/{setup['database']['id']}/backups", as_=owner, json={})
    assert queued.status == 202
    assert api.ctx.nc is not None
    info = await api.ctx.nc.jetstream().stream_info(JOBS_STREAM)
    assert info.state.messages == 1  # waiting for an executor, nothing lost


# -- the list: the same pages whichever way they are read ------------------------------

BASE = datetime(2025, 5, 14, 12, 0, tzinfo=UTC)
MINUTE = timedelta(minutes=1)


@dataclass(frozen=True)
class Row:
    id: uuid.UUID
    database_id: uuid.UUID
    project_id: uuid.UUID
    schedule_id: uuid.UUID | None
    status: BackupStatus
    trigger: BackupTrigger
    queued_at: datetime


@dataclass
class Catalog:
    """Projects (by name) with their databases, each project's schedule (of its
    first database) and every backup, as written."""

    projects: dict[str, uuid.UUID] = field(default_factory=dict)
    databases: dict[str, list[uuid.UUID]] = field(default_factory=dict)
    schedules: dict[str, uuid.UUID] = field(default_factory=dict)
    backups: list[Row] = field(default_factory=list)

    def newest_first(self, projects: set[str], keep: Callable[[Row], bool]) -> list[str]:
        seen = {self.projects[name] for name in projects}
        rows = [b for b in self.backups if b.project_id in seen and keep(b)]
        rows.sort(key=lambda b: (b.queued_at, b.id), reverse=True)
        return [str(b.id) for b in rows]


async def build_catalog(api: Api, members: dict[str, list[tuple[Actor, ProjectRole]]]) -> Catalog:
    """Projects ``x`` (more databases than a merged page reads), ``y`` (5), ``z`` (3)
    and ``hidden`` (2), with backups whose queued times interleave across databases
    and repeat, within one database too."""
    rng = random.Random(20250514)
    sizes = {"x": 55, "y": 5, "z": 3, "hidden": 2}  # x: many databases to merge
    found = Catalog()
    rows: list[Any] = []
    for name, count in sizes.items():
        project = models.Project(id=uuid.uuid4(), name=name, slug=f"{name}-{uuid.uuid4().hex[:6]}")
        found.projects[name] = project.id
        rows.append(project)
        rows += [models.ProjectMember(project_id=project.id, user_id=actor.id, role=role)
                 for actor, role in members.get(name, [])]  # fmt: skip
        found.databases[name] = [uuid.uuid4() for _ in range(count)]
        rows += [models.Database(id=db, project_id=project.id, name=f"{name}{i}",
                                 engine=DatabaseEngine.POSTGRESQL, host="db.internal", port=5432)
                 for i, db in enumerate(found.databases[name])]  # fmt: skip
        schedule = models.Schedule(id=uuid.uuid4(), database_id=found.databases[name][0],
                                   name="nightly", cron="@daily", timezone="UTC")  # fmt: skip
        found.schedules[name] = schedule.id
        rows.append(schedule)

    def backup(project: str, index: int, queued_at: datetime) -> None:
        database_id = found.databases[project][index]
        scheduled = index == 0 and rng.random() < 0.7
        found.backups.append(Row(
            id=uuid.uuid4(), database_id=database_id, project_id=found.projects[project],
            schedule_id=found.schedules[project] if scheduled else None,
            status=rng.choice([BackupStatus.SUCCEEDED, BackupStatus.SUCCEEDED,
                               BackupStatus.FAILED, BackupStatus.MISSED]),
            trigger=BackupTrigger.SCHEDULE if scheduled else BackupTrigger.MANUAL,
            queued_at=queued_at,
        ))  # fmt: skip

    for name, count in sizes.items():
        for index in range(count):
            for _ in range(rng.randint(0, 3)):  # a few, at one of 40 minutes: ties across
                backup(name, index, BASE - rng.randrange(40) * MINUTE)
    for index in range(15):  # one minute shared by many databases of x
        backup("x", index, BASE - 10 * MINUTE)
    for _ in range(12):  # a burst: one database, one instant
        backup("z", 2, BASE - 10 * MINUTE)
        backup("y", 1, BASE - 10 * MINUTE)
    for hours in range(20):  # long histories, older than the rest, two runs an hour
        backup("z", 0, BASE - timedelta(days=3, hours=hours // 2))
        backup("x", 0, BASE - timedelta(days=3, hours=hours // 2))
    for _ in range(10):  # ten runs of one database at one instant, some of its schedule
        backup("x", 0, BASE - 20 * MINUTE)
    rows += [models.Backup(id=b.id, database_id=b.database_id, schedule_id=b.schedule_id,
                           trigger=b.trigger, status=b.status, queued_at=b.queued_at)
             for b in found.backups]  # fmt: skip
    async with api.ctx.transaction() as session:
        for row in rows:  # parents before children
            session.add(row)
            await session.flush()
    return found


@contextlib.contextmanager
def recorded(api: Api) -> Iterator[list[str]]:
    """The SQL statements the app runs meanwhile, on its engines for writes and reads."""
    engines: list[AsyncEngine] = [api.ctx.sessions.kw["bind"]]
    if api.ctx.read_sessions.kw["bind"] is not engines[0]:
        engines.append(api.ctx.read_sessions.kw["bind"])
    seen: list[str] = []

    def record(*args: Any) -> None:
        seen.append(args[2])

    for engine in engines:
        event.listen(engine.sync_engine, "before_cursor_execute", record)
    try:
        yield seen
    finally:
        for engine in engines:
            event.remove(engine.sync_engine, "before_cursor_execute", record)


def way(statements: list[str]) -> str:
    """Which way the list was read: joined to the databases in one walk (an admin's
    whole list) or merged from each database's newest rows; "none" when the caller
    sees no database to list."""
    listing = [s for s in statements if "FROM backups" in s]
    if not listing:
        return "none"
    if any("backups AS run" in s for s in listing):
        return "merged"
    assert any("JOIN databases" in s for s in listing), listing
    return "admin"


async def walk(
    api: Api, caller: Actor, params: dict[str, str], limit: int
) -> tuple[list[str], set[int | None], str]:
    """Every page with the cursor: the ids in order, the totals seen, the way read."""
    ids: list[str] = []
    totals: set[int | None] = set()
    cursor: str | None = None
    with recorded(api) as statements:
        for _ in range(1000):
            query = {**params, "limit": str(limit)} | ({"cursor": cursor} if cursor else {})
            page = await api.get("/backups", as_=caller, params=query)
            assert page.status == 200, page.body
            items = page.body["items"]
            ids += [item["id"] for item in items]
            totals.add(page.body["total"])
            cursor = page.body["next_cursor"]
            if cursor is None:
                assert len(items) <= limit
                break
            assert len(items) == limit
    return ids, totals, way(statements)


def iso(moment: datetime) -> str:
    return moment.isoformat().replace("+00:00", "Z")


SINCE, UNTIL = BASE - 25 * MINUTE, BASE - 10 * MINUTE
FILTERS: dict[str, tuple[dict[str, str], Callable[[Row], bool]]] = {
    "all": ({}, lambda b: True),
    "succeeded": ({"status": "succeeded"}, lambda b: b.status is BackupStatus.SUCCEEDED),
    "failed, manual": (
        {"status": "failed", "trigger": "manual"},
        lambda b: b.status is BackupStatus.FAILED and b.trigger is BackupTrigger.MANUAL,
    ),
    "since, until": (
        {"since": iso(SINCE), "until": iso(UNTIL)},
        lambda b: SINCE <= b.queued_at < UNTIL,
    ),
    "since": ({"since": iso(UNTIL)}, lambda b: b.queued_at >= UNTIL),
}


@pytest.fixture
async def listing(api: Api) -> tuple[Catalog, dict[str, Actor]]:
    callers = {
        "admin": await api.user("root", admin=True),
        "wide": await api.user("wide"),  # x and y: more databases than a merged page reads
        "narrow": await api.user("narrow"),  # z: 3 databases
    }
    viewer, owner = ProjectRole.VIEWER, ProjectRole.OWNER
    catalog = await build_catalog(api, {
        "x": [(callers["wide"], viewer)], "y": [(callers["wide"], owner)],
        "z": [(callers["narrow"], viewer)], "hidden": [(await api.user("other"), owner)],
    })  # fmt: skip
    return catalog, callers


# caller, project filter, the projects it lists, the way it is read
SCOPES = [
    ("admin", None, {"x", "y", "z", "hidden"}, "admin"),
    ("admin", "x", {"x"}, "merged"),
    ("admin", "z", {"z"}, "merged"),
    ("wide", None, {"x", "y"}, "merged"),
    ("wide", "y", {"y"}, "merged"),
    ("narrow", None, {"z"}, "merged"),
]


@pytest.mark.parametrize(("caller", "project", "projects", "read"), SCOPES)
async def test_every_way_of_listing_gives_the_same_pages(
    api: Api,
    listing: tuple[Catalog, dict[str, Actor]],
    caller: str,
    project: str | None,
    projects: set[str],
    read: str,
) -> None:
    catalog, callers = listing
    scoped = {"project_id": str(catalog.projects[project])} if project else {}
    for name, (params, keep) in FILTERS.items():
        expected = catalog.newest_first(projects, keep)
        assert expected, name  # the data exercises every filter
        ids, totals, how = await walk(api, callers[caller], {**scoped, **params}, limit=7)
        assert ids == expected, name
        assert (totals, how) == ({None}, read), name  # total: only for one database
    schedule_of = "x" if "x" in projects else sorted(projects)[0]
    schedule_id = catalog.schedules[schedule_of]
    ids, _, _ = await walk(
        api, callers[caller], {**scoped, "schedule_id": str(schedule_id)}, limit=7
    )
    assert ids == catalog.newest_first(projects, lambda b: b.schedule_id == schedule_id)
    assert ids  # the schedule has runs


async def test_pages_of_one_and_of_everything(
    api: Api, listing: tuple[Catalog, dict[str, Actor]]
) -> None:
    catalog, callers = listing
    everything = catalog.newest_first({"x", "y", "z", "hidden"}, lambda b: True)
    assert len(everything) <= 200
    ids, _, _ = await walk(api, callers["admin"], {}, limit=200)
    assert ids == everything
    z = catalog.newest_first({"z"}, lambda b: True)
    assert (await walk(api, callers["narrow"], {}, limit=1))[0] == z
    assert (await walk(api, callers["admin"], {"project_id": str(catalog.projects["z"])},
                       limit=1))[0] == z  # fmt: skip
    recent = catalog.newest_first({"x", "y"}, lambda b: b.queued_at >= UNTIL)
    assert (await walk(api, callers["wide"], {"since": iso(UNTIL)}, limit=1))[0] == recent


def of_database(database_id: uuid.UUID, keep: Callable[[Row], bool]) -> Callable[[Row], bool]:
    return lambda b: b.database_id == database_id and keep(b)


@pytest.mark.parametrize("caller", ["admin", "wide", "narrow"])
async def test_one_databases_list_counts_its_total(
    api: Api, listing: tuple[Catalog, dict[str, Actor]], caller: str
) -> None:
    catalog, callers = listing
    project = {"admin": "x", "wide": "y", "narrow": "z"}[caller]
    for index in (0, 1, 2):
        database_id = catalog.databases[project][index]
        for name, (params, keep) in FILTERS.items():
            expected = catalog.newest_first({project}, of_database(database_id, keep))
            query = {"database_id": str(database_id), **params}
            ids, totals, how = await walk(api, callers[caller], query, limit=5)
            assert (ids, totals, how) == (expected, {len(expected)}, "merged"), (index, name)


async def test_a_viewer_never_lists_another_projects_backups(
    api: Api, listing: tuple[Catalog, dict[str, Actor]]
) -> None:
    catalog, callers = listing
    hidden = {str(b.id) for b in catalog.backups if b.project_id == catalog.projects["hidden"]}
    assert hidden
    for caller in ("wide", "narrow"):
        for params, _ in FILTERS.values():
            ids, _, _ = await walk(api, callers[caller], params, limit=50)
            assert not hidden & set(ids)
        hidden_project = {"project_id": str(catalog.projects["hidden"])}
        assert (await walk(api, callers[caller], hidden_project, limit=50))[0] == []
        hidden_database = {"database_id": str(catalog.databases["hidden"][0])}
        ids, totals, _ = await walk(api, callers[caller], hidden_database, limit=50)
        assert (ids, totals) == ([], {0})
        other = "z" if caller == "wide" else "x"
        foreign = {"project_id": str(catalog.projects[other])}
        assert (await walk(api, callers[caller], foreign, limit=50))[0] == []


async def test_total_is_null_without_a_database_filter_even_when_nothing_is_seen(
    api: Api, listing: tuple[Catalog, dict[str, Actor]]
) -> None:
    catalog, callers = listing
    nobody = await api.user("nobody")
    assert (await walk(api, nobody, {}, limit=10))[:2] == ([], {None})
    hidden_project = {"project_id": str(catalog.projects["hidden"])}
    assert (await walk(api, callers["wide"], hidden_project, limit=10))[:2] == ([], {None})


async def test_list_items_carry_list_fields_only(
    api: Api, listing: tuple[Catalog, dict[str, Actor]]
) -> None:
    catalog, callers = listing
    page = await api.get("/backups", as_=callers["narrow"], params={"limit": "3"})
    newest = {b.id: b for b in catalog.backups}
    for item in page.body["items"]:
        assert "log" not in item
        assert "manifest" not in item
        row = newest[uuid.UUID(item["id"])]
        assert (item["project_id"], item["database_id"], item["queued_at"]) == (
            str(row.project_id),
            str(row.database_id),
            iso(row.queued_at),
        )
        assert item["copies"] == []
