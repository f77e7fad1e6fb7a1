"""The API's two short-lived memories, on the API's own (injectable) clock:

- who a bearer token stands for (``BM_API_AUTH_CACHE_S``, default 2 s): a user or
  API token changed behind the API's back works on until the check is that old; a
  change made through the API applies to the very next request; a JWT's or API
  token's own expiry is checked on every request;
- the dashboard and storage numbers (``BM_API_STATS_CACHE_S``, default 5 s): reused
  for the same caller and question, computed once for concurrent requests, never
  kept after a failure, forgotten after any change made through the API; a project
  the caller may not see is refused on every request.

Rows are written straight into the metadata DB where the test plays another process
(another API replica, the executor, an operator's command)."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Hashable
from datetime import datetime, timedelta
from typing import Any

import pytest
from sqlalchemy import delete, update
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from services.api.domain import stats as stats_domain
from services.common.db.enums import BackupStatus, CopyStatus, ProjectRole
from services.common.db.models import ApiToken, Database, Destination, ProjectMember, User
from services.common.settings import Settings
from tests.api.client import Actor, Api, Response
from tests.api.test_api_tokens import make_token
from tests.api.test_stats import HOUR, NOW, Seed, window

STATS = ["/stats/dashboard", "/stats/storage"]


class Clock:
    """The API's clock, moved by the test: ``NOW`` plus ``set()`` seconds."""

    def __init__(self) -> None:
        self.now = NOW

    def __call__(self) -> datetime:
        return self.now

    def set(self, seconds: float) -> None:
        self.now = NOW + timedelta(seconds=seconds)


@pytest.fixture
def api_settings(api_settings: Settings, request: pytest.FixtureRequest) -> Settings:
    """The usual settings, with a test's changes (``indirect`` parametrization)."""
    changes: dict[str, Any] = getattr(request, "param", {})
    return api_settings.model_copy(update=changes)


@pytest.fixture
def seed(api: Api) -> Seed:
    return Seed(api)


@pytest.fixture
def clock(api: Api, seed: Seed) -> Clock:
    clock = Clock()
    api.ctx.clock = clock  # after Seed, which fixes it at NOW
    return clock


async def set_active(api: Api, actor: Actor, active: bool) -> None:
    """As another API replica or an operator's command would: not through this API."""
    async with api.ctx.transaction() as session:
        await session.execute(update(User).where(User.id == actor.id).values(is_active=active))


def message(response: Response) -> str:
    text: str = response.body["error"]["message"]
    return text


# -- who the caller is ----------------------------------------------------------------


async def test_the_defaults(api: Api) -> None:
    assert (api.ctx.principals.ttl, api.ctx.stats.ttl) == (
        timedelta(seconds=2),
        timedelta(seconds=5),
    )


async def test_a_user_disabled_elsewhere_works_on_until_the_check_is_too_old(
    api: Api, clock: Clock
) -> None:
    alice = await api.user("alice")
    assert (await api.get("/projects", as_=alice)).status == 200
    await set_active(api, alice, False)

    clock.set(1.999)
    assert (await api.get("/projects", as_=alice)).status == 200  # checked 1.999 s ago
    clock.set(2)
    refused = await api.get("/projects", as_=alice)
    assert refused.status == 401
    assert "disabled" in message(refused)
    # A refusal is not remembered: enabled again, the account works at once.
    await set_active(api, alice, True)
    assert (await api.get("/projects", as_=alice)).status == 200


async def test_disabling_through_the_api_applies_to_the_next_request(
    api: Api, clock: Clock
) -> None:
    admin, alice = await api.user("root", admin=True), await api.user("alice")
    assert (await api.get("/projects", as_=alice)).status == 200
    disabled = await api.patch(f"/users/{alice.id}", as_=admin, json={"is_active": False})
    assert disabled.status == 200
    refused = await api.get("/projects", as_=alice)  # the clock has not moved
    assert (refused.status, refused.error_code) == (401, "unauthorized")


async def test_any_change_through_the_api_forgets_every_check(api: Api, clock: Clock) -> None:
    alice, bob = await api.user("alice"), await api.user("bob")
    assert (await api.get("/projects", as_=alice)).status == 200
    await set_active(api, alice, False)
    assert (await api.get("/projects", as_=alice)).status == 200  # remembered
    # Bob's unrelated change: this process cannot tell what it touched.
    assert (await api.post("/projects", as_=bob, json={"name": "Bob's"})).status == 201
    assert (await api.get("/projects", as_=alice)).status == 401


async def test_an_expired_access_token_is_refused_while_its_check_is_remembered(
    api: Api, clock: Clock
) -> None:
    alice = await api.user("alice")  # issued at NOW, valid 900 s
    assert api.ctx.settings.access_token_ttl_s == 900
    clock.set(899)
    assert (await api.get("/projects", as_=alice)).status == 200
    await set_active(api, alice, False)
    clock.set(899.5)
    assert (await api.get("/projects", as_=alice)).status == 200  # the check is remembered
    clock.set(900)  # the token's expiry, within the 2 s of the check
    expired = await api.get("/projects", as_=alice)
    assert expired.status == 401
    assert "expired" in message(expired)


async def test_a_revoked_api_token_stops_at_once(api: Api, clock: Clock) -> None:
    alice = await api.user("alice")
    created = await make_token(api, alice)
    secret = created["token"]
    assert (await api.get("/projects", as_=secret)).status == 200
    assert (await api.delete(f"/auth/tokens/{created['id']}", as_=alice)).status == 204
    revoked = await api.get("/projects", as_=secret)
    assert revoked.status == 401
    assert "revoked" in message(revoked)


async def test_an_api_token_revoked_elsewhere_works_on_until_the_check_is_too_old(
    api: Api, clock: Clock
) -> None:
    alice = await api.user("alice")
    created = await make_token(api, alice)
    secret = created["token"]
    assert (await api.get("/projects", as_=secret)).status == 200
    async with api.ctx.transaction() as session:
        await session.execute(update(ApiToken).values(revoked_at=NOW))
    clock.set(1.5)
    assert (await api.get("/projects", as_=secret)).status == 200
    clock.set(2)
    assert (await api.get("/projects", as_=secret)).status == 401


async def test_an_expired_api_token_is_refused_while_its_check_is_remembered(
    api: Api, clock: Clock
) -> None:
    alice = await api.user("alice")
    secret = (await make_token(api, alice, expires_in_days=1))["token"]
    day = 24 * 3600
    clock.set(day - 1)
    assert (await api.get("/projects", as_=secret)).status == 200
    clock.set(day)  # within 2 s of the check
    expired = await api.get("/projects", as_=secret)
    assert expired.status == 401
    assert "expired" in message(expired)


@pytest.mark.parametrize("api_settings", [{"api_auth_cache_s": 0}], indirect=True)
async def test_without_the_cache_a_change_elsewhere_applies_at_once(api: Api, clock: Clock) -> None:
    alice = await api.user("alice")
    secret = (await make_token(api, alice))["token"]
    assert (await api.get("/projects", as_=alice)).status == 200
    assert (await api.get("/projects", as_=secret)).status == 200
    await set_active(api, alice, False)
    assert (await api.get("/projects", as_=alice)).status == 401
    assert (await api.get("/projects", as_=secret)).status == 401


class HeldSessions:
    """``ctx.sessions`` that, when ``armed``, holds the next session after it closed
    (after a lookup answered) until ``release`` is set."""

    def __init__(self, real: async_sessionmaker[AsyncSession]) -> None:
        self.real = real
        self.armed = False
        self.held = asyncio.Event()
        self.release = asyncio.Event()

    def __call__(self) -> AsyncSession:
        hold, self.armed = self.armed, False
        session = self.real()
        if hold:
            close = session.close

            async def close_then_hold() -> None:
                await close()
                self.held.set()
                await self.release.wait()

            session.close = close_then_hold  # type: ignore[method-assign]
        return session


async def test_a_lookup_that_raced_a_change_is_not_remembered(
    api: Api, clock: Clock, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A request whose user lookup answered just before a change through the API
    must not leave that answer behind for the requests after the change."""
    admin, alice = await api.user("root", admin=True), await api.user("alice")
    assert (await api.get("/projects", as_=admin)).status == 200
    held = HeldSessions(api.ctx.read_sessions)  # where a user's lookup reads
    monkeypatch.setattr(api.ctx, "read_sessions", held)
    held.armed = True  # alice's next lookup (her request's first session)
    in_flight = asyncio.create_task(api.get("/projects", as_=alice))
    try:
        async with asyncio.timeout(10):
            await held.held.wait()  # alice was found active; her request goes on later
        disabled = await api.patch(f"/users/{alice.id}", as_=admin, json={"is_active": False})
        assert disabled.status == 200
    finally:
        held.release.set()
        answered = await in_flight
    assert answered.status == 200  # it started before the change
    after = await api.get("/projects", as_=alice)
    assert after.status == 401, "a check made before the change was remembered after it"


# -- dashboard and storage numbers ---------------------------------------------------------


def counted(path: str, body: dict[str, Any]) -> int:
    """The number of backups (dashboard) or stored copies (storage) in ``body``."""
    if path == "/stats/dashboard":
        total: int = window(body, "24h")["total"]
        return total
    copies: int = body["total"]["copies"]
    return copies


async def one_project(api: Api, seed: Seed) -> tuple[Actor, Database, Destination]:
    alice = await api.user("alice")
    db = await seed.database(await seed.project(alice, "orders"), "orders-db")
    disk = await seed.destination("disk")
    await add_backup(seed, db, disk)
    return alice, db, disk


async def add_backup(seed: Seed, db: Database, disk: Destination) -> None:
    """A finished backup with one stored copy, as the executor would write it."""
    copies = [(disk, CopyStatus.STORED, 10)]
    await seed.backup(db, BackupStatus.SUCCEEDED, HOUR, size=10, copies=copies)


FUNCTIONS = [(path, path.rsplit("/", 1)[1]) for path in STATS]
"""Each endpoint and the function of ``domain.stats`` that computes its numbers."""


async def until_changed(api: Api, path: str, caller: Actor, old: dict[str, Any]) -> dict[str, Any]:
    """The first answer other than ``old`` (asking again while the clock stands)."""
    async with asyncio.timeout(10):
        while True:
            answer = await api.get(path, as_=caller)
            assert answer.status == 200, answer.body
            if answer.body != old:
                body: dict[str, Any] = answer.body
                return body
            await asyncio.sleep(0.01)


@pytest.mark.parametrize(("path", "function"), FUNCTIONS)
async def test_numbers_are_reused_within_the_ttl_then_refreshed(
    api: Api, seed: Seed, clock: Clock, monkeypatch: pytest.MonkeyPatch, path: str, function: str
) -> None:
    alice, db, disk = await one_project(api, seed)
    first = (await api.get(path, as_=alice)).body
    assert counted(path, first) == 1
    await add_backup(seed, db, disk)
    clock.set(4.999)
    assert (await api.get(path, as_=alice)).body == first  # generated_at says when

    real_compute = getattr(stats_domain, function)
    release, computations = asyncio.Event(), 0

    async def held_compute(*args: Any, **kwargs: Any) -> Any:
        nonlocal computations
        computations += 1
        async with asyncio.timeout(10):
            await release.wait()
        return await real_compute(*args, **kwargs)

    monkeypatch.setattr(stats_domain, function, held_compute)
    clock.set(5)
    # Past the TTL the numbers are computed again; meanwhile the previous ones are
    # answered at once (nobody waits), and the computation is not started twice.
    assert (await api.get(path, as_=alice)).body == first
    assert (await api.get(path, as_=alice)).body == first
    assert computations == 1
    release.set()
    fresh = await until_changed(api, path, alice, first)
    assert counted(path, fresh) == 2
    assert fresh["generated_at"] == "2025-05-14T12:30:05Z"
    assert computations == 1


@pytest.mark.parametrize("path", STATS)
async def test_numbers_older_than_twice_the_ttl_are_never_answered(
    api: Api, seed: Seed, clock: Clock, path: str
) -> None:
    alice, db, disk = await one_project(api, seed)
    assert counted(path, (await api.get(path, as_=alice)).body) == 1
    await add_backup(seed, db, disk)
    # A quiet spell: the kept numbers expired more than one TTL ago, so the next
    # request waits for fresh ones instead of being answered with old ones.
    clock.set(10)
    fresh = (await api.get(path, as_=alice)).body
    assert counted(path, fresh) == 2
    assert fresh["generated_at"] == "2025-05-14T12:30:10Z"


@pytest.mark.parametrize("path", STATS)
async def test_numbers_are_computed_afresh_after_a_change_through_the_api(
    api: Api, seed: Seed, clock: Clock, path: str
) -> None:
    alice, db, disk = await one_project(api, seed)
    bob = await api.user("bob")
    assert counted(path, (await api.get(path, as_=alice)).body) == 1
    await add_backup(seed, db, disk)
    assert counted(path, (await api.get(path, as_=alice)).body) == 1  # reused
    # Any change made through this process, even one that touches none of the numbers.
    assert (await api.post("/projects", as_=bob, json={"name": "Bob's"})).status == 201
    assert counted(path, (await api.get(path, as_=alice)).body) == 2


@pytest.mark.parametrize("api_settings", [{"api_stats_cache_s": 0}], indirect=True)
@pytest.mark.parametrize("path", STATS)
async def test_without_the_cache_numbers_are_computed_on_every_request(
    api: Api, seed: Seed, clock: Clock, path: str
) -> None:
    alice, db, disk = await one_project(api, seed)
    assert counted(path, (await api.get(path, as_=alice)).body) == 1
    await add_backup(seed, db, disk)
    assert counted(path, (await api.get(path, as_=alice)).body) == 2


@pytest.mark.parametrize(("path", "function"), FUNCTIONS)
async def test_concurrent_identical_requests_share_one_computation(
    api: Api, seed: Seed, clock: Clock, monkeypatch: pytest.MonkeyPatch, path: str, function: str
) -> None:
    alice, _, _ = await one_project(api, seed)
    callers = 6
    arrived, computations = 0, 0
    everyone_waits = asyncio.Event()
    real_compute = getattr(stats_domain, function)
    real_get = api.ctx.stats.get

    async def get(key: Hashable, now: datetime, compute: Callable[[], Awaitable[Any]]) -> Any:
        nonlocal arrived
        arrived += 1
        if arrived == callers:
            everyone_waits.set()
        return await real_get(key, now, compute)

    async def slow_compute(*args: Any, **kwargs: Any) -> Any:
        # Finishes only once every request is asking: none can reuse a finished result.
        nonlocal computations
        computations += 1
        async with asyncio.timeout(10):
            await everyone_waits.wait()
        return await real_compute(*args, **kwargs)

    monkeypatch.setattr(api.ctx.stats, "get", get)
    monkeypatch.setattr(stats_domain, function, slow_compute)
    answers = await asyncio.gather(*(api.get(path, as_=alice) for _ in range(callers)))
    assert [a.status for a in answers] == [200] * callers
    assert all(a.body == answers[0].body for a in answers)
    assert counted(path, answers[0].body) == 1
    assert computations == 1


def fail_computation(monkeypatch: pytest.MonkeyPatch, function: str, number: int) -> list[int]:
    """Make the ``number``-th computation by ``domain.stats.<function>`` fail; the
    returned one-item list counts the computations."""
    real_compute = getattr(stats_domain, function)
    computations = [0]

    async def compute(*args: Any, **kwargs: Any) -> Any:
        computations[0] += 1
        if computations[0] == number:
            raise RuntimeError("the metadata DB went away")
        return await real_compute(*args, **kwargs)

    monkeypatch.setattr(stats_domain, function, compute)
    return computations


@pytest.mark.parametrize(("path", "function"), FUNCTIONS)
async def test_a_failed_computation_is_not_remembered(
    api: Api, seed: Seed, clock: Clock, monkeypatch: pytest.MonkeyPatch, path: str, function: str
) -> None:
    alice, _, _ = await one_project(api, seed)
    computations = fail_computation(monkeypatch, function, number=1)
    assert (await api.get(path, as_=alice)).status == 500
    retried = await api.get(path, as_=alice)  # the clock has not moved
    assert retried.status == 200
    assert counted(path, retried.body) == 1
    assert (await api.get(path, as_=alice)).status == 200
    assert computations[0] == 2  # the success is remembered


@pytest.mark.parametrize("path", STATS)
async def test_a_hidden_project_is_refused_while_numbers_are_remembered(
    api: Api, seed: Seed, clock: Clock, path: str
) -> None:
    alice, bob, carol = await api.user("alice"), await api.user("bob"), await api.user("carol")
    admin = await api.user("root", admin=True)
    theirs = await seed.project(bob, "theirs")
    await seed.member(theirs, carol, ProjectRole.VIEWER)
    await add_backup(seed, await seed.database(theirs, "their-db"), await seed.destination("d"))
    narrowed = {"project_id": str(theirs.id)}
    for caller in (bob, admin, carol):
        answer = await api.get(path, as_=caller, params=narrowed)
        assert answer.status == 200
        assert counted(path, answer.body) == 1

    hidden = await api.get(path, as_=alice, params=narrowed)
    assert (hidden.status, hidden.error_code) == (404, "not_found")
    # Carol leaves behind the API's back: her own numbers are remembered, yet refused.
    async with api.ctx.transaction() as session:
        await session.execute(delete(ProjectMember).where(ProjectMember.user_id == carol.id))
    gone = await api.get(path, as_=carol, params=narrowed)
    assert (gone.status, gone.error_code) == (404, "not_found")
    assert (await api.get(path, as_=bob, params=narrowed)).status == 200


@pytest.mark.parametrize("path", STATS)
async def test_remembered_numbers_are_never_another_scopes(
    api: Api, seed: Seed, clock: Clock, path: str
) -> None:
    alice, bob = await api.user("alice"), await api.user("bob")
    admin = await api.user("root", admin=True)
    disk = await seed.destination("disk")
    first, second = await seed.project(alice, "first"), await seed.project(alice, "second")
    await seed.member(second, bob, ProjectRole.VIEWER)
    bobs = await seed.project(bob, "bobs")
    for project, backups in ((first, 1), (second, 2), (bobs, 4)):
        db = await seed.database(project, f"{project.name}-db")
        for _ in range(backups):
            await add_backup(seed, db, disk)
    limited = (await make_token(api, alice, project_id=str(first.id)))["token"]
    viewer = (await make_token(api, alice, role="viewer"))["token"]

    # Every caller asks the same question, one after the other, at the same instant.
    seen: dict[str, int] = {}
    for name, caller in (("admin", admin), ("alice", alice), ("limited", limited),
                         ("viewer", viewer), ("bob", bob)):  # fmt: skip
        answer = await api.get(path, as_=caller)
        assert answer.status == 200
        seen[name] = counted(path, answer.body)
    assert seen == {"admin": 7, "alice": 3, "limited": 1, "viewer": 3, "bob": 6}


@pytest.mark.parametrize(("path", "function"), FUNCTIONS)
async def test_a_failed_refresh_is_not_remembered(
    api: Api, seed: Seed, clock: Clock, monkeypatch: pytest.MonkeyPatch, path: str, function: str
) -> None:
    alice, db, disk = await one_project(api, seed)
    computations = fail_computation(monkeypatch, function, number=2)
    first = (await api.get(path, as_=alice)).body
    await add_backup(seed, db, disk)
    clock.set(5)
    assert (await api.get(path, as_=alice)).body == first  # the refresh fails meanwhile
    # Whoever learns of the failure, the numbers are computed again and then kept.
    failures = 0
    async with asyncio.timeout(10):
        while True:
            answer = await api.get(path, as_=alice)
            if answer.status == 500:
                failures += 1
            elif counted(path, answer.body) == 2:
                break
            await asyncio.sleep(0.01)
    assert failures <= 1
    assert computations[0] == 3
    assert counted(path, (await api.get(path, as_=alice)).body) == 2
    assert computations[0] == 3
