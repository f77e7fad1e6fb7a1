"""GET /audit: admins only; entries of real requests; filters; newest-first keyset
pages; bad filters are 422, never 500."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from sqlalchemy import select

from services.api.auth.tokens import API_TOKEN_PREFIX, hash_token, new_opaque_token
from services.api.web.pagination import encode_cursor
from services.common.db.enums import AuditOutcome, ProjectRole
from services.common.db.models import ApiToken, AuditEntry
from tests.api.client import Actor, Api

T0 = datetime(2025, 1, 1, tzinfo=UTC)


def stamp(moment: datetime) -> str:
    return moment.isoformat().replace("+00:00", "Z")


async def add_entries(api: Api, *entries: AuditEntry) -> None:
    async with api.ctx.transaction() as session:
        session.add_all(entries)


def entry(minutes: int, action: str = "project.create", **kw: Any) -> AuditEntry:
    kw.setdefault("outcome", AuditOutcome.SUCCESS)
    return AuditEntry(
        id=uuid.uuid4(), at=T0 + timedelta(minutes=minutes), action=action, details={}, **kw
    )


async def api_token(api: Api, owner: Actor, project_id: uuid.UUID | None) -> str:
    token = new_opaque_token(API_TOKEN_PREFIX)
    async with api.ctx.transaction() as session:
        session.add(
            ApiToken(
                user_id=owner.id,
                name="ci",
                token_hash=hash_token(token),
                project_id=project_id,
                role=ProjectRole.VIEWER if project_id else None,
            )
        )
    return token


async def test_only_admins_read_the_log(api: Api) -> None:
    admin, alice = await api.user("root", admin=True), await api.user("alice")
    assert (await api.get("/audit")).status == 401
    denied = await api.get("/audit", as_=alice)
    assert (denied.status, denied.error_code) == (403, "forbidden")
    assert (await api.get("/audit", as_=admin)).status == 200
    # An admin's API token limited to a project does not carry admin rights.
    project = (await api.post("/projects", as_=admin, json={"name": "P"})).body
    limited = await api_token(api, admin, uuid.UUID(project["id"]))
    assert (await api.get("/audit", as_=limited)).status == 403
    unlimited = await api_token(api, admin, None)
    assert (await api.get("/audit", as_=unlimited)).status == 200


async def test_entries_of_real_requests(api: Api) -> None:
    admin, alice, bob = (
        await api.user("root", admin=True),
        await api.user("alice"),
        await api.user("bob"),
    )
    project = (await api.post("/projects", as_=alice, json={"name": "Orders"})).body
    base = f"/projects/{project['id']}"
    assert (await api.put(base, as_=bob, json={"name": "mine"})).status == 404
    added = await api.post(
        f"{base}/members", as_=alice, json={"email": bob.email, "role": "viewer"}
    )
    assert added.status == 201
    assert (await api.post("/projects", as_=alice, json={"name": ""})).status == 422

    page = await api.get("/audit", as_=admin)
    assert page.status == 200
    items = page.body["items"]
    assert page.body["total"] is None  # not counted: the log only grows
    assert page.body["next_cursor"] is None
    assert [(e["action"], e["outcome"]) for e in items] == [
        ("project.create", "failure"),
        ("project.member.add", "success"),
        ("project.update", "denied"),
        ("project.create", "success"),
    ]
    created = items[-1]
    assert created["user_id"] == str(alice.id)
    assert created["actor"] == alice.email
    assert (created["target_type"], created["target_id"]) == ("project", project["id"])
    assert created["project_id"] == project["id"]
    assert created["client_address"] == "127.0.0.1"
    assert created["details"]["status"] == 201
    assert items[1]["details"]["role"] == "viewer"
    assert items[2]["user_id"] == str(bob.id)
    # Reading the log is not itself an entry.
    assert len((await api.get("/audit", as_=admin)).body["items"]) == 4


async def test_filters(api: Api) -> None:
    admin = await api.user("root", admin=True)
    alice, bob = await api.user("alice"), await api.user("bob")
    project = (await api.post("/projects", as_=alice, json={"name": "P"})).body
    project_id = uuid.UUID(project["id"])
    await add_entries(
        api,
        entry(1, "project.create", user_id=alice.id, project_id=project_id),
        entry(2, "project.member.add", user_id=alice.id, project_id=project_id),
        entry(3, "project.member.remove", user_id=bob.id, outcome=AuditOutcome.DENIED),
        entry(4, "database.create", user_id=bob.id, outcome=AuditOutcome.FAILURE),
        entry(5, "projects_x.create"),  # '_' must not act as a LIKE wildcard
        entry(6, "auth.login"),
    )

    async def actions(**params: str) -> list[str]:
        params.setdefault("to", stamp(T0 + timedelta(days=1)))
        response = await api.get("/audit", as_=admin, params=params)
        assert response.status == 200, response.body
        return [e["action"] for e in response.body["items"]]

    assert await actions(user_id=str(alice.id)) == ["project.member.add", "project.create"]
    assert await actions(project_id=str(project_id)) == ["project.member.add", "project.create"]
    assert await actions(action="project.create") == ["project.create"]
    assert await actions(action="project.") == [
        "project.member.remove",
        "project.member.add",
        "project.create",
    ]
    assert await actions(action="project.member*") == [
        "project.member.remove",
        "project.member.add",
    ]
    assert await actions(action="project_") == []
    assert await actions(action="project_*") == []  # escaped: '_' is only itself
    assert await actions(action="projects_*") == ["projects_x.create"]
    assert await actions(outcome="denied") == ["project.member.remove"]
    assert await actions(outcome="failure", user_id=str(bob.id)) == ["database.create"]
    assert await actions(**{"from": stamp(T0 + timedelta(minutes=4))}) == [
        "auth.login",
        "projects_x.create",
        "database.create",
    ]
    # 'to' is exclusive; a zone other than UTC is converted.
    assert await actions(
        **{"from": "2025-01-01T02:02:00+02:00", "to": stamp(T0 + timedelta(minutes=3))}
    ) == ["project.member.add"]
    # The real request of this test happened now, after every seeded entry.
    assert (await api.get("/audit", as_=admin)).body["items"][0]["user_id"] == str(alice.id)


async def test_pages_newest_first_and_stable(api: Api) -> None:
    admin = await api.user("root", admin=True)
    same_moment = [entry(10, f"same.{i}") for i in range(7)]
    await add_entries(api, *same_moment, *(entry(i, f"early.{i}") for i in range(5)))
    seen: list[str] = []
    cursor: str | None = None
    pages = 0
    while True:
        params = {"limit": "3", "action": "*"}
        if cursor:
            params["cursor"] = cursor
        page = (await api.get("/audit", as_=admin, params=params)).body
        assert len(page["items"]) <= 3
        seen += [e["id"] for e in page["items"]]
        pages += 1
        cursor = page["next_cursor"]
        if cursor is None:
            break
        # A new entry arriving between pages does not shift later pages.
        await add_entries(api, entry(20, "late.arrival"))
    assert pages == 4
    expected = [str(e.id) for e in sorted(same_moment, key=lambda e: e.id, reverse=True)]
    assert seen[:7] == expected
    assert len(seen) == len(set(seen)) == 12
    moments = [
        e["at"] for e in (await api.get("/audit", as_=admin, params={"limit": "200"})).body["items"]
    ]
    assert moments == sorted(moments, reverse=True)


@pytest.mark.parametrize(
    ("params", "field"),
    [
        ({"from": "2025-01-01T00:00:00"}, "from"),  # no zone: ambiguous
        ({"to": "yesterday"}, "to"),
        ({"from": "9999-12-31T23:59:59-05:00"}, "from"),  # beyond year 9999 in UTC
        ({"from": "2025-02-01T00:00:00Z", "to": "2025-01-01T00:00:00Z"}, "query"),
        ({"outcome": "maybe"}, "outcome"),
        ({"user_id": "42"}, "user_id"),
        ({"action": "x" * 65}, "action"),
        ({"limit": "201"}, "limit"),
        ({"limit": "0"}, "limit"),
        ({"cursor": "not-a-cursor"}, "cursor"),
        # well-formed, but its time overflows when converted to UTC
        ({"cursor": encode_cursor(("9999-12-31T23:59:59-05:00", uuid.UUID(int=0)))}, "cursor"),
        ({"actor": "alice"}, "actor"),
    ],
)
async def test_bad_filters_are_422(api: Api, params: dict[str, str], field: str) -> None:
    admin = await api.user("root", admin=True)
    response = await api.get("/audit", as_=admin, params=params)
    assert (response.status, response.error_code) == (422, "validation_failed"), response.body
    fields = response.body["error"]["fields"]
    assert field in fields or (field == "query" and fields), fields


async def test_the_log_never_shows_a_secret(api: Api) -> None:
    """Every request below carries a password or a token; none of them may appear in
    the log as the API shows it, nor in the stored rows."""
    secrets = {
        "db": "Db-pass-4f1c9e",
        "db2": "Db-pass-new-77aa01",
        "user": "user password 9b2e",
        "user2": "user password changed 31d7",
        "wrong": "wrong password 55e0",
        "register": "register password 8c3f",
    }
    admin, alice = await api.user("root", admin=True), await api.user("alice")
    project = (await api.post("/projects", as_=alice, json={"name": "P"})).body
    db = await api.post(
        "/databases",
        as_=alice,
        json={"project_id": project["id"], "engine": "postgresql", "name": "orders",
              "host": "db.example", "database_name": "orders", "password": secrets["db"]},
    )  # fmt: skip
    assert db.status == 201, db.body
    updated = await api.put(
        f"/databases/{db.body['id']}",
        as_=alice,
        json={"name": "orders", "host": "db.example", "database_name": "orders",
              "password": secrets["db2"]},
    )  # fmt: skip
    assert updated.status == 200, updated.body
    made = await api.post(
        "/users", as_=admin, json={"email": "bob@example.com", "password": secrets["user"]}
    )
    assert made.status == 201, made.body
    bob = made.body["id"]
    assert (
        await api.patch(f"/users/{bob}", as_=admin, json={"password": secrets["user2"]})
    ).status == 200
    login = await api.post(
        "/auth/login", json={"email": "bob@example.com", "password": secrets["user2"]}
    )
    assert login.status == 200, login.body
    tokens = [login.body["access_token"], login.body["refresh_token"]]
    wrong = await api.post(
        "/auth/login", json={"email": "bob@example.com", "password": secrets["wrong"]}
    )
    assert wrong.status == 401
    refreshed = await api.post("/auth/refresh", json={"refresh_token": tokens[1]})
    assert refreshed.status == 200, refreshed.body
    tokens += [refreshed.body["access_token"], refreshed.body["refresh_token"]]
    created = await api.post("/auth/tokens", as_=alice, json={"name": "ci"})
    assert created.status == 201, created.body
    tokens.append(created.body["token"])
    await api.post(
        "/auth/register", json={"email": "eve@example.com", "password": secrets["register"]}
    )

    entries: list[dict[str, Any]] = []
    cursor: str | None = None
    while True:
        params = {"limit": "200", **({"cursor": cursor} if cursor else {})}
        page = await api.get("/audit", as_=admin, params=params)
        entries += page.body["items"]
        cursor = page.body["next_cursor"]
        if cursor is None:
            break
    actions = {e["action"] for e in entries}
    assert {"database.create", "database.update", "user.create", "user.update", "auth.login",
            "auth.refresh", "auth.token.create", "auth.register"} <= actions  # fmt: skip
    shown = str(entries)
    async with api.ctx.transaction() as session:
        stored = str((await session.execute(select(AuditEntry.__table__))).all())
    for where, text in (("GET /audit", shown), ("audit_log", stored)):
        for name, secret in secrets.items():
            assert secret not in text, f"the {name} password is in {where}"
        for token in tokens:
            assert token not in text, f"a token is in {where}"
            assert token[-20:] not in text, f"part of a token is in {where}"
