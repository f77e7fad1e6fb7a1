"""Registration, login, access-token expiry, refresh rotation and reuse detection,
logout, the login rate limit, disabled accounts, password change and the audit."""

from __future__ import annotations

import asyncio
import json
import uuid
from datetime import datetime, timedelta
from typing import Any

import pytest
from sqlalchemy import select

from services.api.auth.ratelimit import share_of_attempts
from services.api.domain import users as users_domain
from services.api.domain.sessions import hash_new_password
from services.common.db.models import AuditEntry, RefreshToken, User
from tests.api.client import PASSWORD, Actor, Api, Response


def configure(api: Api, **changes: Any) -> None:
    api.ctx.settings = api.ctx.settings.model_copy(update=changes)


def freeze(api: Api) -> datetime:
    now = api.ctx.clock()
    api.ctx.clock = lambda: now
    return now


def at(api: Api, moment: datetime) -> None:
    api.ctx.clock = lambda: moment


async def login(api: Api, email: str, password: str = PASSWORD) -> Response:
    return await api.post("/auth/login", json={"email": email, "password": password})


async def audit_rows(api: Api) -> list[AuditEntry]:
    async with api.ctx.transaction() as session:
        return list(await session.scalars(select(AuditEntry).order_by(AuditEntry.at)))


# -- registration -------------------------------------------------------------------


async def test_first_user_becomes_admin_then_registration_is_closed(api: Api) -> None:
    first = await api.post(
        "/auth/register", json={"email": "  Alice@Example.COM ", "password": "long enough"}
    )
    assert first.status == 201, first.body
    assert first.body["email"] == "alice@example.com"
    assert (first.body["is_admin"], first.body["is_active"]) == (True, True)
    assert "password" not in json.dumps(first.body)

    second = await api.post(
        "/auth/register", json={"email": "bob@example.com", "password": "long enough"}
    )
    assert second.status == 403
    assert second.error_code == "registration_closed"
    assert "administrator can create an account" in second.body["error"]["message"]
    # closed means closed: it does not reveal whether an email is taken either
    taken = await api.post(
        "/auth/register", json={"email": "alice@example.com", "password": "long enough"}
    )
    assert taken.error_code == "registration_closed"

    assert (await login(api, "ALICE@example.com ", "long enough")).status == 200


async def test_open_registration_makes_plain_users_and_refuses_duplicates(api: Api) -> None:
    await api.user("existing", admin=True)
    configure(api, allow_registration=True)
    made = await api.post(
        "/auth/register", json={"email": "bob@example.com", "password": "long enough"}
    )
    assert made.status == 201
    assert made.body["is_admin"] is False
    again = await api.post(
        "/auth/register", json={"email": " BOB@example.com", "password": "other password"}
    )
    assert again.status == 409
    assert again.body["error"]["fields"] == {"email": "already registered"}


@pytest.mark.parametrize("open_registration", [False, True])
async def test_only_one_of_simultaneous_first_registrations_becomes_admin(
    api: Api, monkeypatch: pytest.MonkeyPatch, open_registration: bool
) -> None:
    """On an empty install every one of these requests finds no account yet; the
    password hashing is held until all of them have, so all race to be first."""
    configure(api, allow_registration=open_registration)
    racers = 4
    counted = asyncio.Barrier(racers)

    async def hash_after_everyone_counted(password: str, rounds: int) -> str:
        async with asyncio.timeout(10):
            await counted.wait()
        return await hash_new_password(password, rounds)

    monkeypatch.setattr(users_domain, "hash_new_password", hash_after_everyone_counted)
    answers = await asyncio.gather(*(
        api.post("/auth/register", json={"email": f"u{i}@example.com", "password": "long enough"})
        for i in range(racers)
    ))  # fmt: skip
    made = [a.body for a in answers if a.status == 201]
    assert [m["is_admin"] for m in made].count(True) == 1
    if open_registration:
        assert len(made) == racers
    else:
        assert len(made) == 1
        assert {a.error_code for a in answers if a.status != 201} == {"registration_closed"}
    async with api.ctx.transaction() as session:
        admins = list(await session.scalars(select(User).where(User.is_admin.is_(True))))
    assert [a.email for a in admins] == [m["email"] for m in made if m["is_admin"]]


async def test_registration_validates_fields(api: Api) -> None:
    bad = await api.post(
        "/auth/register", json={"email": "not-an-email", "password": "short", "admin": True}
    )
    assert bad.status == 422
    fields = bad.body["error"]["fields"]
    assert set(fields) == {"email", "password", "admin"}
    assert fields["password"] == "password must have at least 8 characters"
    too_long = await api.post(
        "/auth/register", json={"email": "a@example.com", "password": "é" * 40}
    )
    assert too_long.body["error"]["fields"]["password"] == "password must be at most 72 bytes"
    async with api.ctx.transaction() as session:
        assert (await session.scalars(select(User))).all() == []


# -- login and access tokens --------------------------------------------------------


async def test_login_answers_tokens_and_the_user(api: Api) -> None:
    alice = await api.user("alice")
    now = freeze(api)
    response = await login(api, f"  {alice.email.upper()}  ")
    assert response.status == 200, response.body
    body = response.body
    assert set(body) == {"access_token", "token_type", "expires_in", "refresh_token", "user"}
    assert body["token_type"] == "bearer"
    assert body["expires_in"] == 900
    assert body["refresh_token"].startswith("bmr_")
    assert body["user"]["email"] == alice.email
    assert datetime.fromisoformat(body["user"]["last_login_at"]) == now

    me = await api.get("/auth/me", as_=body["access_token"])
    assert me.status == 200
    assert (me.body["id"], me.body["auth"], me.body["api_token_id"]) == (
        str(alice.id),
        "session",
        None,
    )
    for response_body in (body, me.body):
        assert "password" not in json.dumps(response_body)


async def test_unknown_email_and_wrong_password_get_the_same_answer(api: Api) -> None:
    alice = await api.user("alice")
    wrong = await login(api, alice.email, "not the password")
    unknown = await login(api, "nobody@example.com", PASSWORD)
    assert wrong.status == unknown.status == 401
    assert wrong.body == unknown.body
    assert wrong.body["error"] == {
        "code": "invalid_credentials",
        "message": "wrong email or password",
    }

    rows = await audit_rows(api)
    assert [(r.action, r.outcome.value, r.actor, r.details["email"]) for r in rows] == [
        ("auth.login", "denied", alice.email, alice.email),
        ("auth.login", "denied", "nobody@example.com", "nobody@example.com"),
    ]
    assert "not the password" not in json.dumps([r.details for r in rows])


async def test_access_token_expires_on_the_api_clock(api: Api) -> None:
    alice = await api.user("alice")
    start = freeze(api)
    tokens = (await login(api, alice.email)).body
    at(api, start + timedelta(seconds=899))
    assert (await api.get("/auth/me", as_=tokens["access_token"])).status == 200
    at(api, start + timedelta(seconds=900))
    expired = await api.get("/auth/me", as_=tokens["access_token"])
    assert expired.status == 401
    assert "expired" in expired.body["error"]["message"]
    assert expired.headers["WWW-Authenticate"].startswith("Bearer")

    # A client that still sends its expired access token along may refresh all the same.
    renewed = await api.post(
        "/auth/refresh", as_=tokens["access_token"], json={"refresh_token": tokens["refresh_token"]}
    )
    assert renewed.status == 200, renewed.body
    assert (await api.get("/auth/me", as_=renewed.body["access_token"])).status == 200


async def test_garbage_tokens_are_401(api: Api) -> None:
    for token in ("nonsense", "bmt_nonsense", "a.b.c"):
        response = await api.get("/auth/me", as_=token)
        assert response.status == 401, token
    basic = await api.get("/auth/me", headers={"Authorization": "Basic YTpi"})
    assert basic.status == 401
    assert (await api.get("/auth/me")).status == 401


# -- refresh tokens -----------------------------------------------------------------


async def refresh(api: Api, token: str) -> Response:
    return await api.post("/auth/refresh", json={"refresh_token": token})


async def test_refresh_rotates_and_reuse_revokes_the_whole_family(api: Api) -> None:
    alice = await api.user("alice")
    first = (await login(api, alice.email)).body
    elsewhere = (await login(api, alice.email)).body  # another device: another family

    second = await refresh(api, first["refresh_token"])
    assert second.status == 200
    assert second.body["refresh_token"] != first["refresh_token"]
    assert second.body["user"]["id"] == str(alice.id)
    third = await refresh(api, second.body["refresh_token"])
    assert third.status == 200

    reused = await refresh(api, first["refresh_token"])  # stolen and replayed?
    assert reused.status == 401
    assert reused.error_code == "invalid_refresh_token"
    assert "already used" in reused.body["error"]["message"]
    # the legitimate holder of the newest token is signed out too
    assert (await refresh(api, third.body["refresh_token"])).status == 401
    # but the other device's session is untouched
    assert (await refresh(api, elsewhere["refresh_token"])).status == 200

    async with api.ctx.transaction() as session:
        rows = (await session.scalars(select(RefreshToken))).all()
    families: dict[Any, list[RefreshToken]] = {}
    for row in rows:
        families.setdefault(row.family_id, []).append(row)
    assert sorted(len(f) for f in families.values()) == [2, 3]
    stolen = next(f for f in families.values() if len(f) == 3)
    assert all(row.revoked_at is not None for row in stolen)
    # only hashes are stored
    stored = {row.token_hash for row in rows}
    assert first["refresh_token"] not in stored
    assert all(len(h) == 64 for h in stored)

    outcomes = [(r.action, r.outcome.value) for r in await audit_rows(api)]
    assert outcomes.count(("auth.refresh", "denied")) == 2
    assert outcomes.count(("auth.refresh", "success")) == 3


async def test_refresh_tokens_expire_and_unknown_ones_are_refused(api: Api) -> None:
    alice = await api.user("alice")
    start = freeze(api)
    tokens = (await login(api, alice.email)).body
    at(api, start + timedelta(days=30))
    expired = await refresh(api, tokens["refresh_token"])
    assert expired.status == 401
    assert "expired" in expired.body["error"]["message"]
    unknown = await refresh(api, "bmr_never-issued")
    assert unknown.status == 401
    assert (await refresh(api, "")).status == 422


# -- logout -------------------------------------------------------------------------


async def test_logout_ends_one_session_or_all(api: Api) -> None:
    alice = await api.user("alice")
    laptop = (await login(api, alice.email)).body
    phone = (await login(api, alice.email)).body
    tablet = (await login(api, alice.email)).body

    # rotate the laptop's token once: logging out with either ends the session
    rotated = (await refresh(api, laptop["refresh_token"])).body
    out = await api.post("/auth/logout", json={"refresh_token": laptop["refresh_token"]})
    assert out.status == 204
    assert (await refresh(api, rotated["refresh_token"])).status == 401
    assert (await refresh(api, phone["refresh_token"])).status == 200

    again = await api.post("/auth/logout", json={"refresh_token": laptop["refresh_token"]})
    assert again.status == 204  # idempotent
    assert (await api.post("/auth/logout", json={"refresh_token": "bmr_unknown"})).status == 204

    everywhere = await api.post("/auth/logout", as_=alice, json={"all_sessions": True})
    assert everywhere.status == 204
    assert (await refresh(api, tablet["refresh_token"])).status == 401

    nothing = await api.post("/auth/logout", as_=alice)
    assert nothing.status == 422
    assert "refresh_token" in nothing.body["error"]["fields"]
    anonymous = await api.post("/auth/logout", json={"all_sessions": True})
    assert anonymous.status == 401

    rows = [r for r in await audit_rows(api) if r.action == "auth.logout"]
    assert rows[0].target_id == str(alice.id)
    assert rows[0].details["revoked"] == 2  # the laptop's family: original + rotated


async def test_logout_of_all_sessions_by_refresh_token(api: Api) -> None:
    alice = await api.user("alice")
    one = (await login(api, alice.email)).body
    two = (await login(api, alice.email)).body
    out = await api.post(
        "/auth/logout", json={"refresh_token": one["refresh_token"], "all_sessions": True}
    )
    assert out.status == 204
    assert (await refresh(api, two["refresh_token"])).status == 401


# -- rate limit ---------------------------------------------------------------------


async def test_the_workers_of_one_service_share_the_login_budget(api: Api) -> None:
    # Two workers: each allows half of the attempts, so together at most the setting.
    configure(api, login_max_attempts=4, login_window_s=60, api_workers=2)
    alice = await api.user("alice")
    freeze(api)
    for _ in range(2):
        assert (await login(api, alice.email, "wrong password")).status == 401
    assert (await login(api, alice.email)).status == 429
    assert [share_of_attempts(10, n) for n in (1, 2, 3, 4, 20)] == [10, 5, 3, 2, 1]


async def test_failed_logins_are_rate_limited_then_recover(api: Api) -> None:
    configure(api, login_max_attempts=3, login_window_s=60)
    alice, bob = await api.user("alice"), await api.user("bob")
    start = freeze(api)
    for _ in range(3):
        assert (await login(api, alice.email, "wrong password")).status == 401
    limited = await login(api, alice.email)  # even the right password now waits
    assert limited.status == 429
    assert limited.error_code == "too_many_requests"
    assert limited.headers["Retry-After"] == "60"
    assert "try again in 60 seconds" in limited.body["error"]["message"]

    at(api, start + timedelta(seconds=45))
    assert (await login(api, alice.email)).headers["Retry-After"] == "15"
    at(api, start + timedelta(seconds=60))
    assert (await login(api, alice.email)).status == 200

    # per client address: failures for different accounts add up, and a correct
    # login clears only its own account's count
    later = start + timedelta(seconds=200)
    at(api, later)
    assert (await login(api, alice.email, "wrong password")).status == 401
    assert (await login(api, alice.email, "wrong password")).status == 401
    assert (await login(api, alice.email)).status == 200
    assert (await login(api, "nobody@example.com", "guess")).status == 401
    assert (await login(api, bob.email)).status == 429

    denied = [r for r in await audit_rows(api) if r.outcome.value == "denied"]
    assert any(r.details["status"] == 429 and r.actor == bob.email for r in denied)


# -- disabled accounts --------------------------------------------------------------


async def test_a_disabled_user_is_locked_out_everywhere(api: Api) -> None:
    admin = await api.user("admin", admin=True)
    alice = await api.user("alice")
    tokens = (await login(api, alice.email)).body
    disabled = await api.patch(f"/users/{alice.id}", as_=admin, json={"is_active": False})
    assert disabled.status == 200

    assert (await api.get("/auth/me", as_=tokens["access_token"])).status == 401
    assert (await api.get("/projects", as_=alice)).status == 401
    assert (await refresh(api, tokens["refresh_token"])).status == 401
    right = await login(api, alice.email)
    assert (right.status, right.error_code) == (401, "account_disabled")
    wrong = await login(api, alice.email, "wrong password")
    assert wrong.error_code == "invalid_credentials"  # says nothing without the password

    await api.patch(f"/users/{alice.id}", as_=admin, json={"is_active": True})
    # enabling again does not bring old sessions back
    assert (await refresh(api, tokens["refresh_token"])).status == 401
    assert (await login(api, alice.email)).status == 200


# -- password change ----------------------------------------------------------------


async def test_changing_the_password_ends_other_sessions(api: Api) -> None:
    alice = await api.user("alice")
    other = (await login(api, alice.email)).body
    wrong = await api.post(
        "/auth/password",
        as_=alice,
        json={"current_password": "nope nope", "new_password": "brand new secret"},
    )
    assert wrong.status == 422
    assert wrong.body["error"]["fields"] == {"current_password": "wrong password"}
    weak = await api.post(
        "/auth/password", as_=alice, json={"current_password": PASSWORD, "new_password": "x"}
    )
    assert weak.status == 422
    assert "new_password" in weak.body["error"]["fields"]

    changed = await api.post(
        "/auth/password",
        as_=alice,
        json={"current_password": PASSWORD, "new_password": "brand new secret"},
    )
    assert changed.status == 200, changed.body
    assert (await refresh(api, other["refresh_token"])).status == 401
    assert (await refresh(api, changed.body["refresh_token"])).status == 200
    assert (await login(api, alice.email)).status == 401
    assert (await login(api, alice.email, "brand new secret")).status == 200

    rows = [r for r in await audit_rows(api) if r.action == "auth.password"]
    assert [r.outcome.value for r in rows] == ["failure", "failure", "success"]
    assert "brand new secret" not in json.dumps([r.details for r in rows])


async def test_password_change_needs_a_login_session(api: Api) -> None:
    alice = await api.user("alice")
    token = (await api.post("/auth/tokens", as_=alice, json={"name": "ci"})).body["token"]
    response = await api.post(
        "/auth/password",
        as_=token,
        json={"current_password": PASSWORD, "new_password": "brand new secret"},
    )
    assert response.status == 403


# -- no secrets anywhere ------------------------------------------------------------


async def test_no_password_or_token_hash_in_responses_or_audit(api: Api) -> None:
    configure(api, allow_registration=True)
    admin_password, user_password = "first admin pw", "second user pw"
    registered = await api.post(
        "/auth/register", json={"email": "root@example.com", "password": admin_password}
    )
    await api.post("/auth/register", json={"email": "u@example.com", "password": user_password})
    session = (await login(api, "root@example.com", admin_password)).body
    root = Actor(uuid.UUID(registered.body["id"]), "root@example.com", session["access_token"])
    made = await api.post("/auth/tokens", as_=root, json={"name": "ci"})
    await refresh(api, session["refresh_token"])
    await refresh(api, session["refresh_token"])  # reuse
    await api.post("/users", as_=root, json={"email": "v@example.com", "password": "third user pw"})
    users = await api.get("/users", as_=root)
    await api.patch(
        f"/users/{users.body['items'][0]['id']}", as_=root, json={"password": "fourth pw!"}
    )
    responses = [registered, made, users, await api.get("/auth/tokens", as_=root)]

    async with api.ctx.transaction() as s:
        hashes = [u.password_hash for u in (await s.scalars(select(User))).all()]
        hashes += [t.token_hash for t in (await s.scalars(select(RefreshToken))).all()]
    audit = json.dumps(
        [
            [r.actor, r.action, r.target_id, r.details, r.client_address]
            for r in await audit_rows(api)
        ]
    )
    shown = json.dumps([r.body for r in responses[:1] + responses[2:]])
    for secret in [admin_password, user_password, "third user pw", "fourth pw!", *hashes]:
        assert secret not in audit
        assert secret not in shown
    assert made.body["token"] not in audit
    assert "$2b$" not in shown + audit
    assert "password_hash" not in shown
    assert "token_hash" not in shown


async def test_openapi_documents_the_auth_endpoints(api: Api) -> None:
    document = (await api.get("/openapi.json")).body
    for path in ("/auth/login", "/auth/refresh", "/auth/logout", "/auth/tokens/{id}", "/users"):
        assert "/api/v1" + path in document["paths"]
    login_op = document["paths"]["/api/v1/auth/login"]["post"]
    assert "429" in login_op["responses"]
    assert "security" not in login_op
