"""Users admin: create, list, get, change, delete; only for admins; the last active
admin stays; memberships go with the user; every change audited without secrets."""

from __future__ import annotations

import json
import uuid

from sqlalchemy import select

from services.common.db.models import AuditEntry, RefreshToken, User
from tests.api.client import PASSWORD, Api


async def test_create_get_list_update_delete(api: Api) -> None:
    root = await api.user("root", admin=True)
    created = await api.post(
        "/users", as_=root, json={"email": " Carol@Example.com", "password": "carol's password"}
    )
    assert created.status == 201, created.body
    carol = created.body
    assert (carol["email"], carol["is_admin"], carol["is_active"]) == (
        "carol@example.com",
        False,
        True,
    )
    assert carol["last_login_at"] is None
    assert set(carol) == {
        "id", "email", "is_admin", "is_active", "last_login_at", "created_at", "updated_at"
    }  # fmt: skip
    duplicate = await api.post(
        "/users", as_=root, json={"email": "CAROL@example.com", "password": "whatever123"}
    )
    assert duplicate.status == 409

    assert (await api.get(f"/users/{carol['id']}", as_=root)).body == carol
    login = await api.post(
        "/auth/login", json={"email": "carol@example.com", "password": "carol's password"}
    )
    assert login.status == 200

    promoted = await api.patch(f"/users/{carol['id']}", as_=root, json={"is_admin": True})
    assert promoted.status == 200
    assert promoted.body["is_admin"] is True

    reset = await api.patch(f"/users/{carol['id']}", as_=root, json={"password": "set by root"})
    assert reset.status == 200
    # a password set by an admin ends the user's sessions
    old_session = await api.post(
        "/auth/refresh", json={"refresh_token": login.body["refresh_token"]}
    )
    assert old_session.status == 401
    again = await api.post(
        "/auth/login", json={"email": "carol@example.com", "password": "set by root"}
    )
    assert again.status == 200

    assert (await api.delete(f"/users/{carol['id']}", as_=root)).status == 204
    assert (await api.get(f"/users/{carol['id']}", as_=root)).status == 404
    assert (await api.delete(f"/users/{carol['id']}", as_=root)).status == 404
    async with api.ctx.transaction() as session:
        assert (await session.scalars(select(RefreshToken))).all() == []


async def test_list_filters_and_pages(api: Api) -> None:
    root = await api.user("root", admin=True)
    for i in range(5):
        await api.user(f"team{i}")
    await api.user("Other")
    everyone = await api.get("/users", as_=root)
    assert everyone.body["total"] == 7
    team = await api.get("/users", as_=root, params={"email": "TEAM", "limit": "2"})
    assert team.body["total"] == 5
    seen = [u["email"] for u in team.body["items"]]
    cursor = team.body["next_cursor"]
    while cursor:
        page = await api.get(
            "/users", as_=root, params={"email": "team", "limit": "2", "cursor": cursor}
        )
        seen += [u["email"] for u in page.body["items"]]
        cursor = page.body["next_cursor"]
    assert len(seen) == len(set(seen)) == 5
    assert all(e.startswith("team") for e in seen)

    admins = await api.get("/users", as_=root, params={"is_admin": "true"})
    assert [u["id"] for u in admins.body["items"]] == [str(root.id)]
    # LIKE wildcards are matched literally
    assert (await api.get("/users", as_=root, params={"email": "%"})).body["items"] == []
    bad = await api.get("/users", as_=root, params={"limit": "1000", "is_admin": "perhaps"})
    assert bad.status == 422
    assert set(bad.body["error"]["fields"]) == {"limit", "is_admin"}


async def test_only_admins_manage_users(api: Api) -> None:
    alice = await api.user("alice")
    some = str(uuid.uuid4())
    calls = [
        ("get", "/users", None),
        ("post", "/users", {"email": "x@example.com", "password": "long enough"}),
        ("get", f"/users/{some}", None),
        ("patch", f"/users/{some}", {"is_admin": True}),
        ("delete", f"/users/{some}", None),
    ]
    for method, path, body in calls:
        kwargs = {"json": body} if body is not None else {}
        forbidden = await getattr(api, method)(path, as_=alice, **kwargs)
        assert forbidden.status == 403, (method, path)
        anonymous = await getattr(api, method)(path, **kwargs)
        assert anonymous.status == 401, (method, path)
    # not even to make themselves admin
    promote = await api.patch(f"/users/{alice.id}", as_=alice, json={"is_admin": True})
    assert promote.status == 403


async def test_the_last_active_admin_stays(api: Api) -> None:
    root = await api.user("root", admin=True)
    base = f"/users/{root.id}"
    for change in ({"is_admin": False}, {"is_active": False}):
        refused = await api.patch(base, as_=root, json=change)
        assert refused.status == 409, change
    demote = await api.patch(base, as_=root, json={"is_admin": False})
    assert "last active administrator" in demote.body["error"]["message"]
    delete_self = await api.delete(base, as_=root)
    assert delete_self.status == 409
    assert "your own account" in delete_self.body["error"]["message"]

    second = await api.user("second", admin=True)
    # a disabled admin does not count
    await api.patch(f"/users/{second.id}", as_=root, json={"is_active": False})
    assert (await api.patch(base, as_=root, json={"is_admin": False})).status == 409
    await api.patch(f"/users/{second.id}", as_=root, json={"is_active": True})
    demoted = await api.patch(base, as_=root, json={"is_admin": False})
    assert demoted.status == 200
    assert demoted.body["is_admin"] is False
    # root is no admin now: the admin endpoints say so at once
    assert (await api.get("/users", as_=root)).status == 403
    assert (await api.delete(f"/users/{second.id}", as_=second)).status == 409
    assert (await api.delete(base, as_=second)).status == 204


async def test_disabling_yourself_is_refused(api: Api) -> None:
    root, other = await api.user("root", admin=True), await api.user("other", admin=True)
    refused = await api.patch(f"/users/{root.id}", as_=root, json={"is_active": False})
    assert refused.status == 409
    assert (
        await api.patch(f"/users/{root.id}", as_=other, json={"is_active": False})
    ).status == 200


async def test_deleting_a_user_removes_their_memberships(api: Api) -> None:
    root, alice, bob = (
        await api.user("root", admin=True),
        await api.user("alice"),
        await api.user("bob"),
    )
    project = (await api.post("/projects", as_=alice, json={"name": "P"})).body["id"]
    await api.post(
        f"/projects/{project}/members", as_=alice, json={"email": bob.email, "role": "viewer"}
    )
    await api.post("/auth/tokens", as_=bob, json={"name": "bob's"})
    assert (await api.delete(f"/users/{bob.id}", as_=root)).status == 204
    members = await api.get(f"/projects/{project}/members", as_=alice)
    assert [m["email"] for m in members.body["items"]] == [alice.email]
    assert (await api.get("/projects", as_=bob)).status == 401


async def test_bad_input_is_refused_clearly(api: Api) -> None:
    root = await api.user("root", admin=True)
    assert (await api.get("/users/not-a-uuid", as_=root)).status == 404
    empty = await api.patch(f"/users/{root.id}", as_=root, json={})
    assert empty.status == 422
    assert "at least one" in empty.body["error"]["message"] + json.dumps(empty.body)
    unknown = await api.patch(f"/users/{root.id}", as_=root, json={"email": "x@example.com"})
    assert unknown.body["error"]["fields"] == {"email": "unknown field"}
    weak = await api.post("/users", as_=root, json={"email": "x@example.com", "password": "1"})
    assert weak.body["error"]["fields"]["password"] == "password must have at least 8 characters"
    nulls = await api.patch(f"/users/{root.id}", as_=root, json={"is_admin": None})
    assert nulls.status == 422


async def test_user_changes_are_audited_without_passwords(api: Api) -> None:
    root = await api.user("root", admin=True)
    made = await api.post(
        "/users", as_=root, json={"email": "dave@example.com", "password": "dave's secret"}
    )
    await api.patch(f"/users/{made.body['id']}", as_=root, json={"password": "new secret!"})
    await api.patch(f"/users/{root.id}", as_=root, json={"is_admin": False})
    await api.delete(f"/users/{made.body['id']}", as_=root)
    async with api.ctx.transaction() as session:
        rows = list(await session.scalars(select(AuditEntry).order_by(AuditEntry.at)))
        hashes = [u.password_hash for u in (await session.scalars(select(User))).all()]
    assert [(r.action, r.outcome.value, r.actor) for r in rows] == [
        ("user.create", "success", root.email),
        ("user.update", "success", root.email),
        ("user.update", "failure", root.email),
        ("user.delete", "success", root.email),
    ]
    assert rows[0].details["email"] == "dave@example.com"
    assert rows[1].details["password_set"] is True
    assert rows[2].details["is_admin"] is False
    assert rows[3].details["email"] == "dave@example.com"
    assert rows[3].target_id == made.body["id"]
    dumped = json.dumps([r.details for r in rows])
    for secret in ("dave's secret", "new secret!", PASSWORD, *hashes):
        assert secret not in dumped
