"""Projects and members: create, scope, roles, the last owner, audit."""

from __future__ import annotations

import json

import nats
from sqlalchemy import select

from services.common.db.models import AuditEntry
from tests.api.client import Api
from tests.servers import NatsServer


async def test_create_list_get_update_delete(api: Api) -> None:
    alice = await api.user("alice")
    created = await api.post("/projects", as_=alice, json={"name": "Orders Team"})
    assert created.status == 201, created.body
    project = created.body
    assert project["slug"] == "orders-team"
    assert project["role"] == "owner"

    listed = await api.get("/projects", as_=alice)
    assert [p["id"] for p in listed.body["items"]] == [project["id"]]
    assert listed.body["total"] == 1

    renamed = await api.put(
        f"/projects/{project['id']}", as_=alice, json={"name": "Orders", "description": "prod"}
    )
    assert renamed.status == 200
    assert (renamed.body["name"], renamed.body["slug"]) == ("Orders", "orders-team")

    assert (await api.delete(f"/projects/{project['id']}", as_=alice)).status == 204
    assert (await api.get(f"/projects/{project['id']}", as_=alice)).status == 404


async def test_other_users_projects_are_invisible(api: Api) -> None:
    alice, bob = await api.user("alice"), await api.user("bob")
    project = (await api.post("/projects", as_=alice, json={"name": "Secret"})).body
    assert (await api.get("/projects", as_=bob)).body["items"] == []
    for method in ("get", "put", "delete"):
        response = await getattr(api, method)(
            f"/projects/{project['id']}",
            as_=bob,
            **({"json": {"name": "x"}} if method == "put" else {}),
        )
        assert response.status == 404, (method, response.body)
        assert response.error_code == "not_found"
    admin = await api.user("root", admin=True)
    assert [p["id"] for p in (await api.get("/projects", as_=admin)).body["items"]] == [
        project["id"]
    ]


async def test_roles_decide_what_members_may_do(api: Api) -> None:
    owner, viewer = await api.user("owner"), await api.user("viewer")
    project = (await api.post("/projects", as_=owner, json={"name": "P"})).body
    base = f"/projects/{project['id']}"
    added = await api.post(
        f"{base}/members", as_=owner, json={"email": viewer.email, "role": "viewer"}
    )
    assert added.status == 201, added.body
    assert (await api.get(base, as_=viewer)).body["role"] == "viewer"
    denied = await api.put(base, as_=viewer, json={"name": "mine now"})
    assert denied.status == 403
    assert "owner role" in denied.body["error"]["message"]
    members = await api.get(f"{base}/members", as_=viewer)
    assert sorted(m["role"] for m in members.body["items"]) == ["owner", "viewer"]

    again = await api.post(
        f"{base}/members", as_=owner, json={"user_id": str(viewer.id), "role": "viewer"}
    )
    assert again.status == 409
    promoted = await api.put(f"{base}/members/{viewer.id}", as_=owner, json={"role": "owner"})
    assert promoted.body["role"] == "owner"
    assert (await api.delete(f"{base}/members/{owner.id}", as_=viewer)).status == 204
    last = await api.put(f"{base}/members/{viewer.id}", as_=viewer, json={"role": "viewer"})
    assert last.status == 409
    assert "at least one owner" in last.body["error"]["message"]


async def test_validation_errors_name_fields(api: Api) -> None:
    alice = await api.user()
    bad = await api.post("/projects", as_=alice, json={"name": "", "slug": "Bad Slug", "extra": 1})
    assert bad.status == 422
    assert set(bad.body["error"]["fields"]) == {"name", "slug", "extra"}
    assert bad.body["error"]["fields"]["extra"] == "unknown field"
    not_json = await api.post(
        "/projects", as_=alice, data="{nope", headers={"Content-Type": "application/json"}
    )
    assert not_json.status == 400
    assert (await api.post("/projects", json={"name": "x"})).status == 401
    too_big = await api.post("/projects", as_=alice, json={"name": "x" * 100_000})
    assert too_big.status == 413
    assert too_big.error_code == "payload_too_large"
    taken = await api.post("/projects", as_=alice, json={"name": "a", "slug": "same"})
    assert taken.status == 201
    clash = await api.post("/projects", as_=alice, json={"name": "b", "slug": "same"})
    assert clash.status == 409
    bad_cursor = await api.get("/projects", as_=alice, params={"cursor": "zzz"})
    assert bad_cursor.status == 422
    assert "cursor" in bad_cursor.body["error"]["fields"]


async def test_pagination_is_stable_and_complete(api: Api) -> None:
    alice = await api.user()
    made = {
        (await api.post("/projects", as_=alice, json={"name": f"p{i}"})).body["id"]
        for i in range(7)
    }
    seen: list[str] = []
    cursor = None
    while True:
        params = {"limit": "3", **({"cursor": cursor} if cursor else {})}
        page = (await api.get("/projects", as_=alice, params=params)).body
        seen += [p["id"] for p in page["items"]]
        cursor = page["next_cursor"]
        if cursor is None:
            break
    assert len(seen) == 7
    assert set(seen) == made


async def test_mutations_are_audited_without_secrets(api: Api) -> None:
    alice, bob = await api.user("alice"), await api.user("bob")
    project = (await api.post("/projects", as_=alice, json={"name": "Audited"})).body
    await api.put(f"/projects/{project['id']}", as_=bob, json={"name": "hijack"})
    async with api.ctx.transaction() as session:
        entries = list(await session.scalars(select(AuditEntry).order_by(AuditEntry.at)))
    assert [(e.action, e.outcome.value, e.actor) for e in entries] == [
        ("project.create", "success", alice.email),
        ("project.update", "denied", bob.email),
    ]
    assert entries[0].target_id == project["id"]
    assert entries[0].client_address == "127.0.0.1"


async def test_delete_a_project_with_its_own_destination_and_schedule(
    api: Api, nats_server: NatsServer
) -> None:
    owner = await api.user("owner")
    project = (await api.post("/projects", as_=owner, json={"name": "Gone soon"})).body
    path = str(api.ctx.settings.backups_dir / "gone-soon")
    destination = await api.post("/destinations", as_=owner, json={
        "kind": "local", "name": "own", "path": path, "project_id": project["id"]})  # fmt: skip
    database = await api.post("/databases", as_=owner, json={
        "project_id": project["id"], "name": "db", "engine": "postgresql",
        "host": "127.0.0.1", "database_name": "x", "username": "u"})  # fmt: skip
    schedule = await api.post("/schedules", as_=owner, json={
        "database_id": database.body["id"], "name": "nightly", "cron": "@daily",
        "destination_ids": [destination.body["id"]]})  # fmt: skip
    assert schedule.status == 201, schedule.body
    nc = await nats.connect(nats_server.url)
    try:
        sub = await nc.subscribe("bm.v1.schedule.changed")
        assert (await api.delete(f"/projects/{project['id']}", as_=owner)).status == 204
        msg = await sub.next_msg(timeout=5)  # schedulers drop the schedule at once
    finally:
        await nc.close()
    event = json.loads(msg.data)
    assert (event["schedule_id"], event["database_id"], event["project_id"]) == (
        schedule.body["id"],
        database.body["id"],
        project["id"],
    )
    assert (event["change"], event["enabled"]) == ("deleted", False)
    assert (await api.get(f"/schedules/{schedule.body['id']}", as_=owner)).status == 404


async def test_control_characters_are_refused_in_names(api: Api) -> None:
    alice = await api.user()
    bad = await api.post(
        "/projects", as_=alice, json={"name": "a\u0000b", "description": "x\u0007"}
    )
    assert bad.status == 422
    assert set(bad.body["error"]["fields"]) == {"name", "description"}
    multiline = await api.post("/projects", as_=alice, json={"name": "ok", "description": "a\nb"})
    assert multiline.status == 201
