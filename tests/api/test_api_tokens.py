"""API tokens: shown once, stored hashed, listed without the secret, limited to a
project and a role, revocable, expiring, and managed only with a login session."""

from __future__ import annotations

import json
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import select

from services.api.auth.tokens import hash_token
from services.common.db.models import ApiToken, AuditEntry
from tests.api.client import Actor, Api


async def make_token(api: Api, actor: Actor, **fields: Any) -> dict[str, Any]:
    response = await api.post("/auth/tokens", as_=actor, json={"name": "ci", **fields})
    assert response.status == 201, response.body
    body: dict[str, Any] = response.body
    return body


async def make_project(api: Api, actor: Actor, name: str) -> str:
    response = await api.post("/projects", as_=actor, json={"name": name})
    assert response.status == 201, response.body
    project_id: str = response.body["id"]
    return project_id


async def test_create_use_list_and_revoke(api: Api) -> None:
    alice = await api.user("alice")
    now = api.ctx.clock()
    api.ctx.clock = lambda: now
    created = await make_token(api, alice, name="  nightly export ")
    secret = created["token"]
    assert secret.startswith("bmt_")
    assert created["prefix"] == secret[:12]
    assert created["name"] == "nightly export"
    assert (created["project_id"], created["role"], created["expires_at"]) == (None, None, None)
    assert created["last_used_at"] is None

    me = await api.get("/auth/me", as_=secret)
    assert me.status == 200
    assert (me.body["id"], me.body["auth"], me.body["api_token_id"]) == (
        str(alice.id),
        "api_token",
        created["id"],
    )

    listed = await api.get("/auth/tokens", as_=alice)
    assert listed.body["total"] == 1
    [item] = listed.body["items"]
    assert "token" not in item
    assert item["prefix"] == created["prefix"]
    assert datetime.fromisoformat(item["last_used_at"]) == now
    assert secret not in json.dumps(listed.body)

    async with api.ctx.transaction() as session:
        row = await session.scalar(select(ApiToken))
    assert row is not None
    assert row.token_hash == hash_token(secret)  # only the hash is stored
    assert hash_token(secret) not in json.dumps([created, listed.body])

    assert (await api.delete(f"/auth/tokens/{created['id']}", as_=alice)).status == 204
    revoked = await api.get("/auth/me", as_=secret)
    assert revoked.status == 401
    assert "revoked" in revoked.body["error"]["message"]
    assert (await api.delete(f"/auth/tokens/{created['id']}", as_=alice)).status == 204
    assert (await api.get("/auth/tokens", as_=alice)).body["items"] == []
    everything = await api.get("/auth/tokens", as_=alice, params={"include_revoked": "true"})
    assert everything.body["items"][0]["revoked_at"] is not None

    async with api.ctx.transaction() as session:
        audit = list(await session.scalars(select(AuditEntry).order_by(AuditEntry.at)))
    assert [(a.action, a.outcome.value) for a in audit] == [
        ("auth.token.create", "success"),
        ("auth.token.revoke", "success"),
        ("auth.token.revoke", "success"),
    ]
    assert audit[0].details["name"] == "nightly export"
    assert secret not in json.dumps([a.details for a in audit])


async def test_a_project_token_sees_only_its_project_and_acts_with_its_role(api: Api) -> None:
    alice = await api.user("alice")
    project_a = await make_project(api, alice, "A")
    project_b = await make_project(api, alice, "B")
    viewer = (await make_token(api, alice, project_id=project_a, role="viewer"))["token"]

    assert (await api.get(f"/projects/{project_a}", as_=viewer)).body["role"] == "viewer"
    hidden = await api.get(f"/projects/{project_b}", as_=viewer)
    assert hidden.status == 404
    listed = await api.get("/projects", as_=viewer)
    assert [p["id"] for p in listed.body["items"]] == [project_a]
    weak = await api.put(f"/projects/{project_a}", as_=viewer, json={"name": "renamed"})
    assert weak.status == 403
    assert (await api.put(f"/projects/{project_b}", as_=viewer, json={"name": "x"})).status == 404
    assert (await api.post("/projects", as_=viewer, json={"name": "C"})).status == 403

    owner = (await make_token(api, alice, project_id=project_a))["token"]  # no role limit
    assert (await api.put(f"/projects/{project_a}", as_=owner, json={"name": "A2"})).status == 200
    assert (await api.get(f"/projects/{project_b}", as_=owner)).status == 404

    operator = (await make_token(api, alice, role="operator"))["token"]  # every project
    listed = await api.get("/projects", as_=operator)
    assert {p["role"] for p in listed.body["items"]} == {"operator"}
    assert len(listed.body["items"]) == 2


async def test_a_token_is_limited_to_what_its_user_may_see(api: Api) -> None:
    alice, bob = await api.user("alice"), await api.user("bob")
    bobs = await make_project(api, bob, "Bob's")
    invisible = await api.post(
        "/auth/tokens", as_=alice, json={"name": "x", "project_id": bobs, "role": "viewer"}
    )
    assert invisible.status == 404
    await api.post(
        f"/projects/{bobs}/members", as_=bob, json={"email": alice.email, "role": "viewer"}
    )
    above = await api.post(
        "/auth/tokens", as_=alice, json={"name": "x", "project_id": bobs, "role": "owner"}
    )
    assert above.status == 422
    assert above.body["error"]["fields"] == {"role": "at most viewer"}
    same = await api.post(
        "/auth/tokens", as_=alice, json={"name": "x", "project_id": bobs, "role": "viewer"}
    )
    assert same.status == 201
    bad = await api.post("/auth/tokens", as_=alice, json={"name": "", "role": "god"})
    assert bad.status == 422
    assert set(bad.body["error"]["fields"]) == {"name", "role"}


async def test_admin_tokens_act_as_admin_only_when_unlimited(api: Api) -> None:
    root = await api.user("root", admin=True)
    project = await make_project(api, root, "P")
    full = (await make_token(api, root))["token"]
    limited = (await make_token(api, root, project_id=project))["token"]
    assert (await api.get("/users", as_=full)).status == 200
    denied = await api.get("/users", as_=limited)
    assert denied.status == 403


async def test_tokens_are_managed_only_with_a_login_session(api: Api) -> None:
    alice, bob = await api.user("alice"), await api.user("bob")
    token = await make_token(api, alice)
    secret = token["token"]
    for response in (
        await api.get("/auth/tokens", as_=secret),
        await api.post("/auth/tokens", as_=secret, json={"name": "escalate"}),
        await api.delete(f"/auth/tokens/{token['id']}", as_=secret),
    ):
        assert response.status == 403
        assert "log in with your password" in response.body["error"]["message"]
    # someone else's token is not there at all
    assert (await api.delete(f"/auth/tokens/{token['id']}", as_=bob)).status == 404
    assert (await api.delete("/auth/tokens/not-a-uuid", as_=bob)).status == 404
    assert (await api.get("/auth/tokens", as_=bob)).body["items"] == []
    assert (await api.get("/auth/me", as_=secret)).status == 200


async def test_tokens_expire_and_die_with_their_disabled_user(api: Api) -> None:
    admin = await api.user("admin", admin=True)
    alice = await api.user("alice")
    start = api.ctx.clock()
    api.ctx.clock = lambda: start
    expiring = await make_token(api, alice, expires_in_days=1)
    assert datetime.fromisoformat(expiring["expires_at"]) == start + timedelta(days=1)
    forever = (await make_token(api, alice))["token"]

    api.ctx.clock = lambda: start + timedelta(days=1)
    expired = await api.get("/auth/me", as_=expiring["token"])
    assert expired.status == 401
    assert "expired" in expired.body["error"]["message"]
    assert (await api.get("/auth/me", as_=forever)).status == 200

    api.ctx.clock = lambda: start  # the admin's access token is short-lived
    disabled = await api.patch(f"/users/{alice.id}", as_=admin, json={"is_active": False})
    assert disabled.status == 200
    assert (await api.get("/auth/me", as_=forever)).status == 401
    await api.patch(f"/users/{alice.id}", as_=admin, json={"is_active": True})
    assert (await api.get("/auth/me", as_=forever)).status == 200


async def test_deleting_the_project_deletes_its_tokens(api: Api) -> None:
    alice = await api.user("alice")
    project = await make_project(api, alice, "Short-lived")
    token = (await make_token(api, alice, project_id=project))["token"]
    assert (await api.delete(f"/projects/{project}", as_=alice)).status == 204
    assert (await api.get("/auth/me", as_=token)).status == 401
