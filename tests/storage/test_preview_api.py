"""``GET /schedules/{id}/retention/preview``: what the policy would keep and delete
now, and why, per backup and per destination — the same decisions the storage
service then carries out — for viewers of the schedule's project; nothing is
deleted."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer
from nats.aio.client import Client as NATS

from services.api.app import AREAS, setup_api
from services.api.context import API, ApiContext
from services.api.domain.audit import write_audit
from services.api.views import retention
from services.api.web.endpoint import add_routes
from services.common.credentials import CredentialCipher
from services.common.db.enums import BackupStatus, CopyStatus, ProjectRole
from services.common.db.models import BackupCopy, ProjectMember
from services.common.secrets import resolve_secrets
from services.common.settings import Settings
from services.storage.context import StorageContext
from services.storage.prune import apply_retention
from tests.api.client import Api
from tests.storage.conftest import Clock, Sessions, World, backup_ids, make_world


@pytest.fixture
async def api(
    storage_settings: Settings, sessions: Sessions, nc: NATS, clock: Clock
) -> AsyncIterator[Api]:
    secrets = resolve_secrets(storage_settings)
    ctx = ApiContext(settings=storage_settings, secrets=secrets, sessions=sessions, nc=nc,
                     cipher=CredentialCipher(secrets.credential_keys), clock=clock)  # fmt: skip
    app = web.Application()
    setup_api(app)
    if retention.routes not in AREAS:  # until app.py registers the area
        add_routes(app, [retention.routes], write_audit)
    app[API] = ctx
    async with TestClient(TestServer(app)) as client:
        yield Api(client, ctx)


async def test_preview_says_what_would_go_and_why_then_retention_does_it(
    api: Api, ctx: StorageContext, sessions: Sessions, tmp_path: Path, clock: Clock
) -> None:
    world: World = await make_world(
        sessions, tmp_path, retention={"keep_last": 1, "gfs": {"weekly": 2}},
        timezone="Europe/Berlin", destinations=2,
    )  # fmt: skip
    now = clock.now = datetime(2026, 11, 27, 12, 0, tzinfo=UTC)  # a Friday, in 2026-W48
    for days in (20, 10, 9, 1):
        await world.add(f"d{days}", now - timedelta(days=days))
    await world.add("failed", now - timedelta(days=60), BackupStatus.FAILED)
    await world.add("manual", now - timedelta(days=90), scheduled=False)
    viewer, stranger = await api.user("viewer"), await api.user("stranger")
    async with sessions() as session, session.begin():
        session.add(ProjectMember(project_id=world.project.id, user_id=viewer.id,
                                  role=ProjectRole.VIEWER))  # fmt: skip

    path = f"/schedules/{world.schedule.id}/retention/preview"
    response = await api.get(path, as_=viewer)
    assert response.status == 200, response.body
    body = response.body
    assert body["timezone"] == "Europe/Berlin"
    assert body["policy"] == {"keep_last": 1, "max_age_days": None,
                              "gfs": {"hourly": None, "daily": None, "weekly": 2,
                                      "monthly": None, "yearly": None}}  # fmt: skip
    listed = {item["backup_id"]: item for item in body["backups"]}
    ids = {name: str(b.id) for name, b in world.backups.items()}
    assert ids["manual"] not in listed  # not this schedule's
    assert [item["backup_id"] for item in body["backups"]] == [
        ids["d1"],
        ids["d9"],
        ids["d10"],
        ids["d20"],
        ids["failed"],
    ]
    assert listed[ids["d1"]]["reasons"] == [
        "keep_last 1",
        "gfs weekly 2026-W48",
        "newest successful backup",
    ]
    assert listed[ids["d9"]]["reasons"] == ["gfs weekly 2026-W47"]
    assert listed[ids["d10"]]["reasons"] == [
        "not among the newest 1 (keep_last)",
        "not the newest of a kept GFS period",
    ]
    dropped = {item["backup_id"] for item in body["backups"] if not item["keep"]}
    assert dropped == {ids["d10"], ids["d20"], ids["failed"]}
    assert (body["keep_count"], body["delete_count"]) == (2, 3)
    # Both disks hold every backup: they decide alike, and no copy goes on its own.
    assert body["copy_delete_count"] == 0
    assert [(c["destination_name"], c["keep"]) for c in listed[ids["d10"]]["copies"]] == [
        ("disk0", False),
        ("disk1", False),
    ]
    assert listed[ids["failed"]]["reasons"] == ["failed run for more than 30 days"]
    sizes = sum(listed[i]["size_bytes"] for i in dropped)
    assert body["delete_bytes"] == sizes
    assert all(listed[i]["size_bytes"] == 2 * (world.backups[n].bytes_out or 0)
               for n, i in ids.items() if i in listed and n != "failed")  # fmt: skip
    assert body["truncated"] is False

    # Nothing was deleted by looking.
    assert len(await backup_ids(sessions)) == 6
    # The service deletes exactly what the preview listed.
    report = await apply_retention(ctx, world.database.id)
    assert {str(i) for i in report.deleted} == dropped

    limited = await api.get(path, as_=viewer, params={"limit": "1"})
    assert len(limited.body["backups"]) == 1
    assert limited.body["truncated"] is True
    assert (await api.get(path, as_=stranger)).status == 404
    assert (await api.get(path, as_=viewer, params={"limit": "0"})).status == 422
    assert (await api.get(path)).status == 401
    assert (await api.get("/schedules/not-a-uuid/retention/preview", as_=viewer)).status == 404


async def test_preview_of_a_policy_that_keeps_everything(
    api: Api, sessions: Sessions, tmp_path: Path, clock: Clock
) -> None:
    world = await make_world(sessions, tmp_path, retention={})
    await world.add("a", clock.now - timedelta(days=400))
    admin = await api.user("admin", admin=True)
    body = (await api.get(f"/schedules/{world.schedule.id}/retention/preview", as_=admin)).body
    assert body["keeps_everything"] is True
    assert body["delete_count"] == 0
    assert body["backups"][0]["reasons"] == ["no retention rule: everything is kept",
                                             "newest successful backup"]  # fmt: skip


async def test_preview_shows_each_destinations_decision(
    api: Api, ctx: StorageContext, sessions: Sessions, tmp_path: Path, clock: Clock
) -> None:
    world = await make_world(sessions, tmp_path, retention={"keep_last": 2}, destinations=2)
    for day in range(4, 0, -1):  # g1 .. g4; disk1 missed g3
        await world.add(f"g{5 - day}", clock.now - timedelta(days=day),
                        destinations=[0] if day == 2 else None)  # fmt: skip
    g3 = world.backups["g3"]
    async with sessions() as session, session.begin():
        session.add(BackupCopy(
            backup_id=g3.id, destination_id=world.destinations[1].id,
            artifact_key=g3.artifact_key or "", status=CopyStatus.FAILED, created_at=clock.now,
        ))  # fmt: skip
    admin = await api.user("admin", admin=True)
    body = (await api.get(f"/schedules/{world.schedule.id}/retention/preview", as_=admin)).body

    ids = {name: str(b.id) for name, b in world.backups.items()}
    size = {name: b.bytes_out or 0 for name, b in world.backups.items()}
    disk0, disk1 = (str(d.id) for d in world.destinations)
    listed = {item["backup_id"]: item for item in body["backups"]}
    assert [listed[ids[n]]["keep"] for n in ("g4", "g3", "g2", "g1")] == [True, True, True, False]
    g2 = listed[ids["g2"]]
    # Kept for disk1 (which holds no g3), deleted on disk0.
    assert g2["reasons"] == ["keep_last 2"]
    assert g2["copies"] == [
        {"destination_id": disk0, "destination_name": "disk0", "size_bytes": size["g2"],
         "keep": False, "reasons": ["not among the newest 2 (keep_last)"]},
        {"destination_id": disk1, "destination_name": "disk1", "size_bytes": size["g2"],
         "keep": True, "reasons": ["keep_last 2"]},
    ]  # fmt: skip
    # Only the stored copy is decided; the failed record is not a copy to keep.
    assert [c["destination_name"] for c in listed[ids["g3"]]["copies"]] == ["disk0"]
    assert [c["keep"] for c in listed[ids["g1"]]["copies"]] == [False, False]
    assert listed[ids["g4"]]["reasons"] == ["keep_last 2", "newest successful backup"]
    assert (body["keep_count"], body["delete_count"], body["copy_delete_count"]) == (3, 1, 1)
    # g1 on both disks, and g2's copy on disk0.
    assert body["delete_bytes"] == 2 * size["g1"] + size["g2"]

    # The service does what the preview says.
    report = await apply_retention(ctx, world.database.id)
    assert report.deleted == [world.backups["g1"].id]
    assert report.trimmed == [(world.backups["g2"].id, world.destinations[0].id)]
