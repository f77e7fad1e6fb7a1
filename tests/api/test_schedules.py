"""Schedules and the cron preview against the real app: CRUD, defaults, field-level
validation, scope and roles, partial updates, one ``ScheduleChanged`` per change
(read back from the events stream), and changes that stand without NATS."""

from __future__ import annotations

import logging
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from typing import Any

import nats.errors
import pytest
from nats.js import JetStreamContext
from nats.js.api import AckPolicy, ConsumerConfig, DeliverPolicy
from sqlalchemy import select

from proto import subjects
from proto.codec import decode
from proto.schedule_events import ScheduleChanged
from services.api.domain.destinations import DEFAULT_ID
from services.common.db.enums import DatabaseEngine, DestinationKind
from services.common.db.models import AuditEntry, Database, Destination, Schedule
from tests.api.client import Actor, Api

# A Saturday; Europe/Berlin springs forward the next night (02:00 -> 03:00 CEST).
NOW = datetime(2024, 3, 30, 12, 0, tzinfo=UTC)


@pytest.fixture(autouse=True)
def fixed_clock(api: Api) -> None:
    api.ctx.clock = lambda: NOW


@pytest.fixture
async def events(api: Api) -> AsyncIterator[JetStreamContext.PullSubscription]:
    """An ephemeral consumer of every ScheduleChanged stored in the events stream."""
    assert api.ctx.nc is not None
    js = api.ctx.nc.jetstream()
    sub = await js.pull_subscribe(
        subjects.SCHEDULE_CHANGED,
        stream=subjects.EVENTS_STREAM,
        config=ConsumerConfig(deliver_policy=DeliverPolicy.ALL, ack_policy=AckPolicy.EXPLICIT),
    )
    yield sub
    await sub.unsubscribe()


async def received(sub: JetStreamContext.PullSubscription) -> list[ScheduleChanged]:
    """Every event not read yet (the API publishes before it answers)."""
    found: list[ScheduleChanged] = []
    while True:
        try:
            messages = await sub.fetch(1, timeout=0.5)
        except nats.errors.TimeoutError:
            return found
        for msg in messages:
            found.append(decode(ScheduleChanged, msg.data))
            await msg.ack()


# -- fixtures made directly in the metadata DB ---------------------------------------


async def project_of(api: Api, owner: Actor, **members: tuple[Actor, str]) -> str:
    created = await api.post("/projects", as_=owner, json={"name": f"P {uuid.uuid4().hex[:6]}"})
    assert created.status == 201, created.body
    for actor, role in members.values():
        added = await api.post(
            f"/projects/{created.body['id']}/members",
            as_=owner,
            json={"user_id": str(actor.id), "role": role},
        )
        assert added.status == 201, added.body
    return str(created.body["id"])


async def database_in(api: Api, project_id: str, name: str = "orders") -> str:
    async with api.ctx.transaction() as session:
        database = Database(
            project_id=uuid.UUID(project_id),
            name=name,
            engine=DatabaseEngine.POSTGRESQL,
            host="db.example.com",
            port=5432,
        )
        session.add(database)
        await session.flush()
        return str(database.id)


async def destination(
    api: Api,
    project_id: str | None = None,
    *,
    name: str = "nas",
    enabled: bool = True,
    ident: uuid.UUID | None = None,
) -> str:
    async with api.ctx.transaction() as session:
        row = Destination(
            id=ident or uuid.uuid4(),
            name=name,
            kind=DestinationKind.LOCAL,
            config={"path": f"/srv/backups/{uuid.uuid4().hex}"},
            project_id=uuid.UUID(project_id) if project_id else None,
            enabled=enabled,
        )
        session.add(row)
        await session.flush()
        return str(row.id)


class World:
    """An owner's project with a database and a destination, and an operator and a
    viewer in it."""

    def __init__(self, api: Api) -> None:
        self.api = api

    async def build(self) -> World:
        api = self.api
        self.owner = await api.user("owner")
        self.operator = await api.user("operator")
        self.viewer = await api.user("viewer")
        self.project = await project_of(
            api,
            self.owner,
            op=(self.operator, "operator"),
            view=(self.viewer, "viewer"),
        )
        self.database = await database_in(api, self.project)
        self.destination = await destination(api, self.project)
        return self

    def body(self, **fields: Any) -> dict[str, Any]:
        return {
            "database_id": self.database,
            "name": "nightly",
            "cron": "30 2 * * *",
            "destination_ids": [self.destination],
            **fields,
        }

    async def create(self, **fields: Any) -> dict[str, Any]:
        created = await self.api.post("/schedules", as_=self.operator, json=self.body(**fields))
        assert created.status == 201, created.body
        body: dict[str, Any] = created.body
        return body


@pytest.fixture
async def world(api: Api) -> World:
    return await World(api).build()


# -- CRUD ----------------------------------------------------------------------------


async def test_create_get_list_update_delete(api: Api, world: World) -> None:
    created = await api.post(
        "/schedules", as_=world.operator, json=world.body(timezone="Europe/Berlin")
    )
    assert created.status == 201, created.body
    schedule = created.body
    assert schedule["database_id"] == world.database
    assert schedule["project_id"] == world.project
    assert schedule["destination_ids"] == [world.destination]
    assert (schedule["cron"], schedule["timezone"], schedule["enabled"]) == (
        "30 2 * * *",
        "Europe/Berlin",
        True,
    )
    # Defaults.
    assert schedule["compression"] == "zstd"
    assert schedule["compression_level"] is None
    assert schedule["timeout_s"] == 6 * 3600
    assert schedule["overlap_policy"] == "skip"
    assert schedule["verify"] == "off"
    assert schedule["encryption"] == "none"
    assert schedule["retention"] == {"keep_last": None, "max_age_days": None, "gfs": None}
    assert schedule["description"] == "At 02:30"
    # The next run is in the spring-forward gap: it moves to 03:00 CEST.
    assert schedule["next_run_at"] == "2024-03-31T01:00:00Z"
    assert schedule["upcoming"][0] == {
        "utc": "2024-03-31T01:00:00Z",
        "local": "2024-03-31T03:00:00+02:00",
        "shifted": True,
    }
    assert [r["local"] for r in schedule["upcoming"][1:3]] == [
        "2024-04-01T02:30:00+02:00",
        "2024-04-02T02:30:00+02:00",
    ]
    assert len(schedule["upcoming"]) == 5

    got = await api.get(f"/schedules/{schedule['id']}", as_=world.viewer)
    assert got.status == 200
    assert got.body == schedule

    listed = await api.get("/schedules", as_=world.viewer, params={"database_id": world.database})
    assert listed.status == 200
    assert listed.body["total"] == 1
    [item] = listed.body["items"]
    assert item["id"] == schedule["id"]
    assert item["next_run_at"] == "2024-03-31T01:00:00Z"
    assert "upcoming" not in item

    changed = await api.put(
        f"/schedules/{schedule['id']}",
        as_=world.operator,
        json={"cron": "@daily", "retention": {"keep_last": 7, "gfs": {"monthly": 12}}},
    )
    assert changed.status == 200, changed.body
    assert changed.body["cron"] == "@daily"
    assert changed.body["description"] == "At 00:00"
    assert changed.body["timezone"] == "Europe/Berlin"  # not sent: kept
    assert changed.body["retention"] == {
        "keep_last": 7,
        "max_age_days": None,
        "gfs": {"hourly": None, "daily": None, "weekly": None, "monthly": 12, "yearly": None},
    }
    assert changed.body["next_run_at"] == "2024-03-30T23:00:00Z"  # midnight CET
    async with api.ctx.transaction() as session:
        row = await session.get(Schedule, uuid.UUID(schedule["id"]))
        assert row is not None
        assert row.retention == {"keep_last": 7, "gfs": {"monthly": 12}}

    assert (await api.delete(f"/schedules/{schedule['id']}", as_=world.operator)).status == 204
    assert (await api.get(f"/schedules/{schedule['id']}", as_=world.owner)).status == 404
    listed = await api.get("/schedules", as_=world.owner)
    assert listed.body["items"] == []


async def test_every_setting_round_trips(api: Api, world: World) -> None:
    other = await destination(api, None, name="global-nas")
    schedule = await world.create(
        cron="0 */6 * * MON-FRI",
        timezone="America/New_York",
        enabled=False,
        destination_ids=[other, world.destination],
        compression="gzip",
        compression_level=9,
        timeout_s=600,
        overlap_policy="queue",
        retention={"keep_last": 3, "max_age_days": 30, "gfs": {"daily": 7, "weekly": 0}},
        verify="weekly",
    )
    assert schedule["cron"] == "0 */6 * * mon-fri"
    assert sorted(schedule["destination_ids"]) == sorted([other, world.destination])
    assert (schedule["compression"], schedule["compression_level"]) == ("gzip", 9)
    assert (schedule["timeout_s"], schedule["overlap_policy"]) == (600, "queue")
    assert schedule["verify"] == "weekly"
    assert schedule["retention"]["gfs"]["daily"] == 7
    # Disabled: no next run.
    assert schedule["next_run_at"] is None
    assert schedule["upcoming"] == []
    got = await api.get(f"/schedules/{schedule['id']}", as_=world.viewer)
    assert got.body == schedule


async def test_the_default_destination_is_used_when_none_is_chosen(api: Api, world: World) -> None:
    body = world.body()
    del body["destination_ids"]
    refused = await api.post("/schedules", as_=world.operator, json=body)
    assert refused.status == 422
    assert refused.body["error"]["fields"] == {
        "destination_ids": "choose a destination: there is no default one to use"
    }

    only = await destination(api, None, name="only-global")
    created = await api.post("/schedules", as_=world.operator, json=body)
    assert created.status == 201, created.body
    assert created.body["destination_ids"] == [only]

    await destination(api, None, name="local", ident=DEFAULT_ID)
    created = await api.post("/schedules", as_=world.operator, json={**body, "name": "second"})
    assert created.body["destination_ids"] == [str(DEFAULT_ID)]


# -- validation ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("fields", "errors"),
    [
        ({"cron": "61 * * * *"}, {"cron": "minute: 61 is out of range 0-59"}),
        ({"cron": "0 0 * * * *"}, {"cron": "seconds and years are not supported"}),
        ({"cron": "@reboot"}, {"cron": "@reboot is not a schedule"}),
        ({"cron": "*/90 * * * *"}, {"cron": "cannot run every 90 minutes"}),
        ({"timezone": "Europe/Berlni"}, {"timezone": "did you mean Europe/Berlin?"}),
        ({"timezone": "Mars/Olympus"}, {"timezone": "unknown time zone 'Mars/Olympus'"}),
        ({"compression_level": 23}, {"compression_level": "zstd level must be between -7 and 22"}),
        (
            {"compression": "gzip", "compression_level": 0},
            {"compression_level": "gzip level must be between 1 and 9"},
        ),
        (
            {"compression": "none", "compression_level": 1},
            {"compression_level": "compression none takes no level"},
        ),
        ({"timeout_s": 5}, {"timeout_s": "greater than or equal to 60"}),
        ({"overlap_policy": "parallel"}, {"overlap_policy": "'skip' or 'queue'"}),
        ({"verify": "hourly"}, {"verify": "Input should be"}),
        ({"retention": {"keep_last": 0}}, {"retention.keep_last": "greater than or equal to 1"}),
        ({"retention": {"max_age_days": 0}}, {"retention.max_age_days": "greater than or equal"}),
        ({"retention": {"gfs": {"daily": -1}}}, {"retention.gfs.daily": "greater than or equal"}),
        ({"retention": {"forever": True}}, {"retention.forever": "unknown field"}),
        ({"encryption": "age"}, {"encryption": "not available yet"}),
        ({"encryption_recipient": "age1xyz"}, {"encryption_recipient": "needs encryption 'age'"}),
        ({"destination_ids": []}, {"destination_ids": "at least 1 item"}),
        ({"destination_ids": ["not-a-uuid"]}, {"destination_ids.0": "valid UUID"}),
        ({"name": ""}, {"name": "at least 1 character"}),
        ({"colour": "blue"}, {"colour": "unknown field"}),
    ],
)
async def test_invalid_fields_are_named(
    api: Api, world: World, fields: dict[str, Any], errors: dict[str, str]
) -> None:
    response = await api.post("/schedules", as_=world.operator, json=world.body(**fields))
    assert response.status == 422, response.body
    assert response.error_code == "validation_failed"
    got = response.body["error"]["fields"]
    assert set(got) == set(errors), got
    for field, fragment in errors.items():
        assert fragment in got[field], (field, got[field])


async def test_destinations_must_be_usable_by_the_databases_project(api: Api, world: World) -> None:
    stranger = await api.user("stranger")
    elsewhere = await destination(api, await project_of(api, stranger), name="theirs")
    disabled = await destination(api, world.project, name="off", enabled=False)
    response = await api.post(
        "/schedules",
        as_=world.operator,
        json=world.body(
            destination_ids=[world.destination, elsewhere, str(uuid.uuid4()), disabled,
                             world.destination]
        ),
    )  # fmt: skip
    assert response.status == 422
    assert response.body["error"]["fields"] == {
        "destination_ids.1": "no such destination for this database's project",
        "destination_ids.2": "no such destination for this database's project",
        "destination_ids.3": "destination 'off' is disabled",
        "destination_ids.4": "listed twice",
    }


async def test_names_are_unique_per_database(api: Api, world: World) -> None:
    await world.create()
    again = await api.post("/schedules", as_=world.operator, json=world.body())
    assert again.status == 409
    assert again.body["error"]["fields"] == {"name": "already taken for this database"}
    other_db = await database_in(api, world.project, "billing")
    elsewhere = await api.post(
        "/schedules", as_=world.operator, json=world.body(database_id=other_db)
    )
    assert elsewhere.status == 201
    weekly = await world.create(name="weekly")
    renamed = await api.put(
        f"/schedules/{weekly['id']}", as_=world.operator, json={"name": "nightly"}
    )
    assert renamed.status == 409


async def test_bad_input_never_gives_a_server_error(api: Api, world: World) -> None:
    schedule = await world.create()
    for method, path, body in [
        ("post", "/schedules", "not json"),
        ("post", "/schedules", [1, 2]),
        ("post", "/schedules", world.body(cron=None)),
        ("post", "/schedules", world.body(cron="x" * 5000)),
        ("post", "/schedules", world.body(timezone="\x00")),
        ("post", "/schedules", world.body(compression_level=10**30)),
        ("put", f"/schedules/{schedule['id']}", {"cron": "0 0 30 2 *"}),
        ("put", f"/schedules/{schedule['id']}", {"compression_level": "high"}),
        ("put", "/schedules/not-a-uuid", {"name": "x"}),
    ]:
        kwargs: dict[str, Any] = {"data": body} if isinstance(body, str) else {"json": body}
        response = await getattr(api, method)(path, as_=world.operator, **kwargs)
        assert 400 <= response.status < 500, (path, body, response.body)


# -- partial updates -----------------------------------------------------------------


async def test_update_changes_only_what_is_sent(api: Api, world: World) -> None:
    schedule = await world.create(compression_level=19, retention={"keep_last": 5})
    path = f"/schedules/{schedule['id']}"

    unchanged = await api.put(path, as_=world.operator, json={})
    assert unchanged.status == 200
    assert {**unchanged.body, "updated_at": None} == {**schedule, "updated_at": None}

    # A new algorithm without a level starts at its default level.
    gzip = await api.put(path, as_=world.operator, json={"compression": "gzip"})
    assert (gzip.body["compression"], gzip.body["compression_level"]) == ("gzip", None)
    assert gzip.body["retention"]["keep_last"] == 5

    # A level is checked against the algorithm in force.
    too_high = await api.put(path, as_=world.operator, json={"compression_level": 19})
    assert too_high.status == 422
    assert too_high.body["error"]["fields"] == {
        "compression_level": "gzip level must be between 1 and 9"
    }
    level = await api.put(path, as_=world.operator, json={"compression_level": 6})
    assert level.body["compression_level"] == 6
    cleared = await api.put(path, as_=world.operator, json={"compression_level": None})
    assert cleared.body["compression_level"] is None

    second = await destination(api, world.project, name="second")
    moved = await api.put(path, as_=world.operator, json={"destination_ids": [second]})
    assert moved.body["destination_ids"] == [second]
    got = await api.get(path, as_=world.viewer)
    assert got.body["destination_ids"] == [second]

    bad = await api.put(path, as_=world.operator, json={"database_id": world.database})
    assert bad.status == 422
    assert bad.body["error"]["fields"] == {"database_id": "unknown field"}


# -- scope and roles -----------------------------------------------------------------


async def test_another_users_schedules_do_not_exist_for_them(api: Api, world: World) -> None:
    schedule = await world.create()
    stranger = await api.user("stranger")
    path = f"/schedules/{schedule['id']}"
    assert (await api.get(path, as_=stranger)).status == 404
    assert (await api.put(path, as_=stranger, json={"name": "mine"})).status == 404
    assert (await api.delete(path, as_=stranger)).status == 404
    assert (await api.post(f"{path}/enable", as_=stranger)).status == 404
    assert (await api.post(f"{path}/disable", as_=stranger)).status == 404
    assert (await api.get("/schedules", as_=stranger)).body["items"] == []
    for params in ({"database_id": world.database}, {"project_id": world.project}):
        response = await api.get("/schedules", as_=stranger, params=params)
        assert response.status == 404, params
    create = await api.post("/schedules", as_=stranger, json=world.body(name="sneaky"))
    assert create.status == 404
    assert create.body["error"]["message"] == "database not found"
    admin = await api.user("root", admin=True)
    assert (await api.get(path, as_=admin)).status == 200


async def test_viewers_read_operators_change(api: Api, world: World) -> None:
    denied = await api.post("/schedules", as_=world.viewer, json=world.body())
    assert denied.status == 403
    assert "operator role" in denied.body["error"]["message"]
    schedule = await world.create()
    path = f"/schedules/{schedule['id']}"
    assert (await api.get(path, as_=world.viewer)).status == 200
    assert (await api.put(path, as_=world.viewer, json={"cron": "@hourly"})).status == 403
    assert (await api.post(f"{path}/disable", as_=world.viewer)).status == 403
    assert (await api.delete(path, as_=world.viewer)).status == 403
    assert (await api.get(path, as_=world.viewer)).body["cron"] == "30 2 * * *"
    assert (await api.put(path, as_=world.owner, json={"cron": "@hourly"})).status == 200
    assert (await api.get(path)).status == 401


async def test_list_filters_and_pages(api: Api, world: World) -> None:
    billing = await database_in(api, world.project, "billing")
    a = await world.create(name="a")
    b = await world.create(name="b", enabled=False)
    c = await world.create(name="c", database_id=billing)

    async def ids(**params: str) -> list[str]:
        response = await api.get("/schedules", as_=world.viewer, params=params)
        assert response.status == 200, response.body
        return [item["id"] for item in response.body["items"]]

    assert await ids() == [c["id"], b["id"], a["id"]]  # newest first
    assert await ids(database_id=world.database) == [b["id"], a["id"]]
    assert await ids(project_id=world.project, enabled="false") == [b["id"]]
    assert await ids(enabled="true", database_id=billing) == [c["id"]]

    first = await api.get("/schedules", as_=world.viewer, params={"limit": "2"})
    assert first.body["total"] == 3
    rest = await api.get(
        "/schedules",
        as_=world.viewer,
        params={"limit": "2", "cursor": first.body["next_cursor"]},
    )
    pages = first.body["items"] + rest.body["items"]
    assert [i["id"] for i in pages] == [c["id"], b["id"], a["id"]]
    assert rest.body["next_cursor"] is None
    bad = await api.get("/schedules", as_=world.viewer, params={"enabled": "maybe"})
    assert bad.status == 422
    assert set(bad.body["error"]["fields"]) == {"enabled"}


async def test_enable_and_disable(api: Api, world: World) -> None:
    schedule = await world.create()
    path = f"/schedules/{schedule['id']}"
    disabled = await api.post(f"{path}/disable", as_=world.operator)
    assert disabled.status == 200
    assert (disabled.body["enabled"], disabled.body["next_run_at"]) == (False, None)
    assert disabled.body["upcoming"] == []
    listed = await api.get("/schedules", as_=world.viewer, params={"enabled": "false"})
    assert [i["id"] for i in listed.body["items"]] == [schedule["id"]]
    enabled = await api.post(f"{path}/enable", as_=world.operator)
    assert (enabled.body["enabled"], enabled.body["next_run_at"]) == (True, "2024-03-31T02:30:00Z")


# -- events --------------------------------------------------------------------------


async def test_each_change_publishes_one_event(
    api: Api, world: World, events: JetStreamContext.PullSubscription
) -> None:
    schedule = await world.create()
    ident, path = uuid.UUID(schedule["id"]), f"/schedules/{schedule['id']}"

    def expected(change: str, enabled: bool) -> dict[str, Any]:
        return {
            "schedule_id": ident,
            "project_id": uuid.UUID(world.project),
            "database_id": uuid.UUID(world.database),
            "change": change,
            "enabled": enabled,
            "changed_by": world.operator.id,
        }

    def fields(event: ScheduleChanged) -> dict[str, Any]:
        return event.model_dump(exclude={"message_id", "occurred_at"})

    assert [fields(e) for e in await received(events)] == [expected("created", True)]

    await api.put(path, as_=world.operator, json={"cron": "@hourly"})
    assert [fields(e) for e in await received(events)] == [expected("updated", True)]

    await api.post(f"{path}/disable", as_=world.operator)
    assert [fields(e) for e in await received(events)] == [expected("disabled", False)]

    again = await api.post(f"{path}/disable", as_=world.operator)  # already disabled
    assert again.status == 200
    assert await received(events) == []

    await api.post(f"{path}/enable", as_=world.operator)
    assert [fields(e) for e in await received(events)] == [expected("enabled", True)]

    await api.delete(path, as_=world.operator)
    assert [fields(e) for e in await received(events)] == [expected("deleted", False)]

    # Refused changes publish nothing.
    await api.post("/schedules", as_=world.viewer, json=world.body())
    await api.post("/schedules", as_=world.operator, json=world.body(cron="bad"))
    assert await received(events) == []


async def test_a_change_stands_when_nats_is_unavailable(
    api: Api, world: World, caplog: pytest.LogCaptureFixture
) -> None:
    nc = api.ctx.nc
    assert nc is not None
    api.ctx.nc = None
    with caplog.at_level(logging.WARNING, logger="services.api.domain.schedules"):
        created = await api.post("/schedules", as_=world.operator, json=world.body())
    assert created.status == 201
    assert "NATS is not connected" in caplog.text
    assert "next reconciliation" in caplog.text

    await nc.close()  # a closed connection: the same
    api.ctx.nc = nc
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="services.api.domain.schedules"):
        deleted = await api.delete(f"/schedules/{created.body['id']}", as_=world.operator)
    assert deleted.status == 204
    assert "NATS is not connected" in caplog.text
    assert (await api.get(f"/schedules/{created.body['id']}", as_=world.operator)).status == 404


# -- odds and ends -------------------------------------------------------------------


async def test_changes_are_audited(api: Api, world: World) -> None:
    schedule = await world.create()
    await api.post(f"/schedules/{schedule['id']}/disable", as_=world.viewer)
    async with api.ctx.transaction() as session:
        entries = list(
            await session.scalars(
                select(AuditEntry)
                .where(AuditEntry.target_id == schedule["id"])
                .order_by(AuditEntry.at, AuditEntry.action)
            )
        )
    assert [(e.action, e.outcome.value) for e in entries] == [
        ("schedule.create", "success"),
        ("schedule.disable", "denied"),
    ]
    assert str(entries[0].project_id) == world.project
    assert entries[0].details["name"] == "nightly"


async def test_a_stored_cron_that_no_longer_validates_does_not_break_reads(
    api: Api, world: World
) -> None:
    schedule = await world.create()
    async with api.ctx.transaction() as session:
        row = await session.get(Schedule, uuid.UUID(schedule["id"]))
        assert row is not None
        row.cron = "0 0 * * 5L"
    got = await api.get(f"/schedules/{schedule['id']}", as_=world.viewer)
    assert got.status == 200
    assert got.body["next_run_at"] is None
    assert got.body["description"].startswith("invalid: ")
    assert (await api.get("/schedules", as_=world.viewer)).status == 200


# -- cron preview ----------------------------------------------------------------------


async def test_preview_crosses_dst_in_the_zone(api: Api) -> None:
    alice = await api.user("alice")
    response = await api.get(
        "/cron/preview",
        as_=alice,
        params={
            "expr": "30 2 * * *",
            "tz": "Europe/Berlin",
            "count": "3",
            "after": "2024-10-26T00:00:00Z",
        },
    )
    assert response.status == 200, response.body
    assert response.body == {
        "expr": "30 2 * * *",
        "timezone": "Europe/Berlin",
        "description": "At 02:30",
        "runs": [
            {"utc": "2024-10-26T00:30:00Z", "local": "2024-10-26T02:30:00+02:00", "shifted": False},
            # 02:30 happens twice on 27 October: it runs once, at the first (CEST).
            {"utc": "2024-10-27T00:30:00Z", "local": "2024-10-27T02:30:00+02:00", "shifted": False},
            {"utc": "2024-10-28T01:30:00Z", "local": "2024-10-28T02:30:00+01:00", "shifted": False},
        ],
    }  # fmt: skip


async def test_preview_defaults_to_five_runs_from_now_in_utc(api: Api) -> None:
    alice = await api.user("alice")
    response = await api.get("/cron/preview", as_=alice, params={"expr": "@DAILY"})
    assert response.status == 200
    assert response.body["expr"] == "@daily"
    assert response.body["timezone"] == "UTC"
    assert response.body["description"] == "At 00:00"
    assert [r["utc"] for r in response.body["runs"]] == [
        f"2024-{day}T00:00:00Z" for day in ("03-31", "04-01", "04-02", "04-03", "04-04")
    ]
    spring = await api.get(
        "/cron/preview", as_=alice, params={"expr": "30 2 * * *", "tz": "Europe/Berlin"}
    )
    assert spring.body["runs"][0] == {
        "utc": "2024-03-31T01:00:00Z",
        "local": "2024-03-31T03:00:00+02:00",
        "shifted": True,
    }
    many = await api.get("/cron/preview", as_=alice, params={"expr": "* * * * *", "count": "50"})
    assert len(many.body["runs"]) == 50


@pytest.mark.parametrize(
    ("params", "field", "fragment"),
    [
        ({"expr": "0 0 * * * *"}, "expr", "seconds and years are not supported"),
        ({"expr": "@reboot"}, "expr", "@reboot"),
        ({"expr": ""}, "expr", "cron is empty"),
        ({"expr": "0 0 * * *", "tz": "Nowhere/Town"}, "tz", "unknown time zone"),
        ({"expr": "0 0 * * *", "tz": "localtime"}, "tz", "depends on the machine"),
        ({"expr": "0 0 * * *", "count": "0"}, "count", "greater than or equal to 1"),
        ({"expr": "0 0 * * *", "count": "51"}, "count", "less than or equal to 50"),
        ({"expr": "0 0 * * *", "after": "2024-01-01T00:00:00"}, "after", "timezone"),
        ({"expr": "0 0 * * *", "after": "0001-01-01T00:00:00Z"}, "after", "between years"),
        ({"expr": "0 0 * * *", "zone": "UTC"}, "zone", "unknown field"),
        ({}, "expr", "Field required"),
    ],
)
async def test_preview_names_the_bad_parameter(
    api: Api, params: dict[str, str], field: str, fragment: str
) -> None:
    alice = await api.user("alice")
    response = await api.get("/cron/preview", as_=alice, params=params)
    assert response.status == 422, response.body
    assert list(response.body["error"]["fields"]) == [field]
    assert fragment in response.body["error"]["fields"][field]


async def test_preview_needs_a_login(api: Api) -> None:
    response = await api.get("/cron/preview", params={"expr": "@daily"})
    assert response.status == 401
