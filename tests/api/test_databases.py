"""Databases: create, list, get, update, delete; engine rules and dump options; scope
and roles; the password encrypted at rest and never shown anywhere."""

from __future__ import annotations

import json
import logging
import uuid
from pathlib import Path
from typing import Any

import nats
import pytest
from sqlalchemy import select

from services.common.db.enums import BackupTrigger, ProjectRole
from services.common.db.models import AuditEntry, Backup, Database, ProjectMember, Schedule
from tests.api.client import Actor, Api, Response
from tests.servers import NatsServer

PASSWORD = "Tr0ub4dor&3-unmistakable-plaintext"


async def project_of(api: Api, owner: Actor, name: str = "Shop") -> str:
    created = await api.post("/projects", as_=owner, json={"name": name})
    assert created.status == 201, created.body
    project_id: str = created.body["id"]
    return project_id


async def add_member(api: Api, project_id: str, user: Actor, role: ProjectRole) -> None:
    async with api.ctx.transaction() as session:
        session.add(ProjectMember(project_id=uuid.UUID(project_id), user_id=user.id, role=role))


def pg(project_id: str, /, **over: Any) -> dict[str, Any]:
    body = {
        "project_id": project_id,
        "name": "orders",
        "engine": "postgresql",
        "host": "db.internal",
        "database_name": "orders",
        "username": "backup",
        "password": PASSWORD,
    }
    body.update(over)
    return body


async def stored(api: Api, database_id: str) -> Database:
    async with api.ctx.transaction() as session:
        row = await session.get(Database, uuid.UUID(database_id))
    assert row is not None
    return row


async def stored_password(api: Api, database_id: str) -> str | None:
    row = await stored(api, database_id)
    if row.encrypted_password is None:
        return None
    return api.ctx.cipher.decrypt(row.encrypted_password.decode())


async def test_create_list_get_update_delete(api: Api) -> None:
    alice = await api.user("alice")
    project_id = await project_of(api, alice)
    created = await api.post("/databases", as_=alice, json=pg(project_id))
    assert created.status == 201, created.body
    db = created.body
    assert db["project_id"] == project_id
    assert (db["port"], db["tls_mode"], db["has_password"]) == (5432, "prefer", True)
    assert "password" not in db
    assert "encrypted_password" not in db

    listed = await api.get("/databases", as_=alice, params={"project_id": project_id})
    assert [d["id"] for d in listed.body["items"]] == [db["id"]]
    assert listed.body["total"] == 1
    assert (await api.get(f"/databases/{db['id']}", as_=alice)).body == db

    changed = await api.put(
        f"/databases/{db['id']}",
        as_=alice,
        json={
            "name": "orders-main",
            "host": "10.0.0.5",
            "port": 6432,
            "database_name": "orders",
            "tls_mode": "verify-full",
            "options": {"exclude_schemas": ["audit", "audit"], "no_owner": True},
        },
    )
    assert changed.status == 200, changed.body
    assert changed.body["name"] == "orders-main"
    assert (changed.body["host"], changed.body["port"]) == ("10.0.0.5", 6432)
    assert changed.body["username"] == ""  # PUT replaces; only the password is kept
    assert changed.body["options"] == {"exclude_schemas": ["audit"], "no_owner": True}
    assert changed.body["has_password"] is True

    assert (await api.delete(f"/databases/{db['id']}", as_=alice)).status == 204
    assert (await api.get(f"/databases/{db['id']}", as_=alice)).status == 404


@pytest.mark.parametrize(
    ("engine", "extra", "port", "database_name", "tls"),
    [
        ("mysql", {"database_name": "shop"}, 3306, "shop", "prefer"),
        ("mariadb", {"database_name": "shop"}, 3306, "shop", "prefer"),
        ("mongodb", {"database_name": "shop"}, 27017, "shop", "disable"),
        ("redis", {}, 6379, "0", "disable"),
        ("redis", {"database_name": "15"}, 6379, "15", "disable"),
        ("redis", {"database_name": "07"}, 6379, "7", "disable"),
    ],
)
async def test_engine_defaults(
    api: Api, engine: str, extra: dict[str, str], port: int, database_name: str, tls: str
) -> None:
    alice = await api.user()
    project_id = await project_of(api, alice)
    body = {"project_id": project_id, "name": "x", "engine": engine, "host": "h", **extra}
    created = await api.post("/databases", as_=alice, json=body)
    assert created.status == 201, created.body
    got = created.body
    assert (got["port"], got["database_name"], got["tls_mode"]) == (port, database_name, tls)
    assert got["has_password"] is False


@pytest.mark.parametrize(
    ("over", "field", "says"),
    [
        ({"host": "postgres://db.internal:5432/x"}, "host", "not a URL"),
        ({"host": "-oProxyCommand=x"}, "host", "must not start with '-'"),
        ({"host": "db internal"}, "host", "not a valid host name"),
        ({"host": "db.internal:5432"}, "host", "not a valid host name"),
        ({"host": ""}, "host", "host name or IP"),
        ({"port": 0}, "port", "greater than or equal to 1"),
        ({"port": 70000}, "port", "less than or equal to 65535"),
        ({"database_name": None}, "database_name", "required for postgresql"),
        ({"database_name": "--help"}, "database_name", "must not start with '-'"),
        ({"username": "bob\nx"}, "username", "control characters"),
        ({"password": "line1\nplugin-dir=/tmp"}, "password", "control characters"),
        ({"password": ""}, "password", "must not be empty"),
        ({"engine": "oracle"}, "engine", "Input should be"),
        ({"tls_mode": "maybe"}, "tls_mode", "Input should be"),
        ({"options": {"jobs": 4}}, "options.jobs", "unknown option for postgresql"),
        ({"options": {"no_owner": "yes"}}, "options.no_owner", "true or false"),
        ({"options": {"tables": ["-v"]}}, "options.tables", "must not start with '-'"),
        ({"options": {"tables": "orders"}}, "options.tables", "list of strings"),
        ({"options": {"tables": ["a b"]}}, "options.tables", "not allowed"),
        ({"options": {"schemas": ["s"], "tables": ["t"]}}, "options.schemas", "combined"),
        ({"engine": "redis", "database_name": "16"}, "database_name", "0 to 15"),
        ({"engine": "redis", "database_name": "x"}, "database_name", "0 to 15"),
        ({"engine": "redis", "options": {"tables": []}}, "options.tables", "allowed: none"),
        ({"engine": "mysql", "options": {"schemas": ["x"]}}, "options.schemas", "tables"),
        ({"surprise": 1}, "surprise", "unknown field"),
        ({"project_id": "nope"}, "project_id", "UUID"),
    ],
)
async def test_validation_errors_name_the_field(
    api: Api, over: dict[str, Any], field: str, says: str
) -> None:
    alice = await api.user()
    project_id = await project_of(api, alice)
    bad = await api.post("/databases", as_=alice, json=pg(project_id, **over))
    assert bad.status == 422, bad.body
    assert bad.error_code == "validation_failed"
    assert field in bad.body["error"]["fields"], bad.body
    assert says in bad.body["error"]["fields"][field]
    assert PASSWORD not in json.dumps(bad.body)


@pytest.mark.parametrize(
    ("host", "stored_as"),
    [
        ("DB.Example.com", "db.example.com"),
        ("orders_db", "orders_db"),
        ("192.168.0.10", "192.168.0.10"),
        ("[2001:db8::1]", "2001:db8::1"),
        ("2001:DB8:0::1", "2001:db8::1"),
    ],
)
async def test_hosts_accepted(api: Api, host: str, stored_as: str) -> None:
    alice = await api.user()
    project_id = await project_of(api, alice)
    created = await api.post("/databases", as_=alice, json=pg(project_id, host=host))
    assert created.status == 201, created.body
    assert created.body["host"] == stored_as


async def test_engine_options_are_stored_and_checked_per_engine(api: Api) -> None:
    alice = await api.user()
    project_id = await project_of(api, alice)
    mongo = await api.post(
        "/databases",
        as_=alice,
        json=pg(
            project_id,
            engine="mongodb",
            options={"exclude_collections": ["logs"], "authentication_database": "admin"},
        ),
    )
    assert mongo.status == 201, mongo.body
    assert mongo.body["options"] == {
        "exclude_collections": ["logs"],
        "authentication_database": "admin",
    }
    # Options are checked against the stored engine on update too.
    wrong = await api.put(
        f"/databases/{mongo.body['id']}",
        as_=alice,
        json={"name": "x", "host": "h", "database_name": "d", "options": {"no_owner": True}},
    )
    assert wrong.status == 422
    assert "options.no_owner" in wrong.body["error"]["fields"]


async def test_engine_cannot_change_on_update(api: Api) -> None:
    alice = await api.user()
    project_id = await project_of(api, alice)
    db = (await api.post("/databases", as_=alice, json=pg(project_id))).body
    moved = await api.put(
        f"/databases/{db['id']}", as_=alice, json={"name": "x", "host": "h", "engine": "mysql"}
    )
    assert moved.status == 422
    assert moved.body["error"]["fields"]["engine"] == "unknown field"


async def test_names_are_unique_per_project(api: Api) -> None:
    alice = await api.user()
    first, second = await project_of(api, alice, "A"), await project_of(api, alice, "B")
    assert (await api.post("/databases", as_=alice, json=pg(first))).status == 201
    clash = await api.post("/databases", as_=alice, json=pg(first))
    assert clash.status == 409
    assert clash.body["error"]["fields"] == {"name": "already taken in this project"}
    assert (await api.post("/databases", as_=alice, json=pg(second))).status == 201
    other = (await api.post("/databases", as_=alice, json=pg(first, name="other"))).body
    rename = await api.put(
        f"/databases/{other['id']}",
        as_=alice,
        json={"name": "orders", "host": "h", "database_name": "d"},
    )
    assert rename.status == 409


async def test_update_keeps_replaces_or_clears_the_password(api: Api) -> None:
    alice = await api.user()
    project_id = await project_of(api, alice)
    db = (await api.post("/databases", as_=alice, json=pg(project_id))).body
    assert await stored_password(api, db["id"]) == PASSWORD
    token_before = (await stored(api, db["id"])).encrypted_password

    same = {"name": "orders", "host": "db.internal", "database_name": "orders"}
    kept = await api.put(f"/databases/{db['id']}", as_=alice, json=same)
    assert kept.body["has_password"] is True
    assert await stored_password(api, db["id"]) == PASSWORD
    assert (await stored(api, db["id"])).encrypted_password == token_before
    kept_null = await api.put(f"/databases/{db['id']}", as_=alice, json={**same, "password": None})
    assert kept_null.body["has_password"] is True
    assert await stored_password(api, db["id"]) == PASSWORD

    spaced = "  new secret with spaces  "
    replaced = await api.put(f"/databases/{db['id']}", as_=alice, json={**same, "password": spaced})
    assert replaced.status == 200
    assert await stored_password(api, db["id"]) == spaced  # not trimmed

    both = await api.put(
        f"/databases/{db['id']}",
        as_=alice,
        json={**same, "password": "x", "clear_password": True},
    )
    assert both.status == 422
    assert "clear_password" in both.body["error"]["fields"]
    cleared = await api.put(
        f"/databases/{db['id']}", as_=alice, json={**same, "clear_password": True}
    )
    assert cleared.body["has_password"] is False
    assert await stored_password(api, db["id"]) is None


async def test_password_is_nowhere_but_encrypted(
    api: Api, sqlite_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    alice = await api.user()
    project_id = await project_of(api, alice)
    responses: list[Response] = [await api.post("/databases", as_=alice, json=pg(project_id))]
    db_id = responses[0].body["id"]
    responses += [
        await api.get("/databases", as_=alice),
        await api.get(f"/databases/{db_id}", as_=alice),
        await api.put(
            f"/databases/{db_id}",
            as_=alice,
            json={"name": "n", "host": "h", "database_name": "d", "password": PASSWORD},
        ),
        # A failing request must not echo it either.
        await api.post("/databases", as_=alice, json=pg(project_id, name="n", port=-1)),
    ]
    for response in responses:
        assert PASSWORD not in json.dumps(response.body)
        assert PASSWORD not in json.dumps(response.headers)
    assert await stored_password(api, db_id) == PASSWORD

    async with api.ctx.transaction() as session:
        entries = list(await session.scalars(select(AuditEntry)))
    assert {e.action for e in entries} >= {"database.create", "database.update"}
    for e in entries:
        assert PASSWORD not in json.dumps(e.details)
        assert PASSWORD not in f"{e.actor} {e.target_id} {e.target_type}"
    create = next(e for e in entries if e.action == "database.create")
    assert create.details["password"] == "set"
    assert create.target_id == db_id

    assert PASSWORD not in caplog.text
    db_file = Path(sqlite_url.split("///", 1)[1])
    files = [p for p in db_file.parent.glob(db_file.name + "*") if p.is_file()]
    assert db_file in files
    raw = b"".join(p.read_bytes() for p in files)
    assert b"unmistakable" not in raw  # neither the password nor a piece of it
    assert PASSWORD.encode("utf-16-le") not in raw


async def test_other_users_databases_are_invisible(api: Api) -> None:
    alice, bob = await api.user("alice"), await api.user("bob")
    project_id = await project_of(api, alice)
    db = (await api.post("/databases", as_=alice, json=pg(project_id))).body
    assert (await api.get("/databases", as_=bob)).body["items"] == []
    update = {"name": "x", "host": "h", "database_name": "d"}
    for method, kw in (("get", {}), ("put", {"json": update}), ("delete", {})):
        response = await getattr(api, method)(f"/databases/{db['id']}", as_=bob, **kw)
        assert response.status == 404, (method, response.body)
    assert (await api.get("/databases", as_=bob, params={"project_id": project_id})).status == 404
    assert (await api.post("/databases", as_=bob, json=pg(project_id))).status == 404
    assert (await api.get(f"/databases/{uuid.uuid4()}", as_=alice)).status == 404
    assert (await api.get("/databases/not-a-uuid", as_=alice)).status == 404
    assert (await api.get("/databases")).status == 401
    admin = await api.user("root", admin=True)
    assert [d["id"] for d in (await api.get("/databases", as_=admin)).body["items"]] == [db["id"]]


async def test_roles_decide_who_may_change_databases(api: Api) -> None:
    owner, viewer, operator = await api.user("o"), await api.user("v"), await api.user("op")
    project_id = await project_of(api, owner)
    await add_member(api, project_id, viewer, ProjectRole.VIEWER)
    await add_member(api, project_id, operator, ProjectRole.OPERATOR)
    db = (await api.post("/databases", as_=owner, json=pg(project_id))).body

    denied = await api.post("/databases", as_=viewer, json=pg(project_id, name="mine"))
    assert denied.status == 403
    assert "owner role" in denied.body["error"]["message"]
    assert (await api.get(f"/databases/{db['id']}", as_=viewer)).status == 200
    assert [d["id"] for d in (await api.get("/databases", as_=viewer)).body["items"]] == [db["id"]]
    update = {"name": "x", "host": "h", "database_name": "d"}
    assert (await api.put(f"/databases/{db['id']}", as_=operator, json=update)).status == 403
    assert (await api.delete(f"/databases/{db['id']}", as_=operator)).status == 403
    assert (await api.delete(f"/databases/{db['id']}", as_=viewer)).status == 403
    assert await stored_password(api, db["id"]) == PASSWORD


async def test_list_filters_and_pages(api: Api) -> None:
    alice = await api.user()
    first, second = await project_of(api, alice, "A"), await project_of(api, alice, "B")
    made = []
    for i, engine in enumerate(["postgresql", "mysql", "postgresql", "redis"]):
        body = pg(first if i < 3 else second, name=f"d{i}", engine=engine, database_name="1")
        made.append((await api.post("/databases", as_=alice, json=body)).body["id"])
    by_engine = await api.get("/databases", as_=alice, params={"engine": "postgresql"})
    assert {d["id"] for d in by_engine.body["items"]} == {made[0], made[2]}
    in_first = await api.get(
        "/databases", as_=alice, params={"project_id": first, "engine": "mysql"}
    )
    assert [d["id"] for d in in_first.body["items"]] == [made[1]]
    page = await api.get("/databases", as_=alice, params={"limit": "3"})
    assert [d["id"] for d in page.body["items"]] == made[::-1][:3]
    rest = await api.get(
        "/databases", as_=alice, params={"limit": "3", "cursor": page.body["next_cursor"]}
    )
    assert [d["id"] for d in rest.body["items"]] == [made[0]]
    assert rest.body["next_cursor"] is None
    bad = await api.get("/databases", as_=alice, params={"engine": "oracle", "limit": "0"})
    assert bad.status == 422
    assert set(bad.body["error"]["fields"]) == {"engine", "limit"}


async def test_delete_refused_while_backups_exist(api: Api) -> None:
    alice = await api.user()
    project_id = await project_of(api, alice)
    db = (await api.post("/databases", as_=alice, json=pg(project_id))).body
    async with api.ctx.transaction() as session:
        session.add(Backup(database_id=uuid.UUID(db["id"]), trigger=BackupTrigger.MANUAL))
    refused = await api.delete(f"/databases/{db['id']}", as_=alice)
    assert refused.status == 409
    assert "delete its backups first" in refused.body["error"]["message"]
    assert (await api.get(f"/databases/{db['id']}", as_=alice)).status == 200
    async with api.ctx.transaction() as session:
        [entry] = await session.scalars(
            select(AuditEntry).where(AuditEntry.action == "database.delete")
        )
    assert (entry.outcome.value, entry.target_id) == ("failure", db["id"])


async def test_delete_takes_schedules_along_and_tells_schedulers(
    api: Api, nats_server: NatsServer
) -> None:
    alice = await api.user()
    project_id = await project_of(api, alice)
    db = (await api.post("/databases", as_=alice, json=pg(project_id))).body
    schedule_id = uuid.uuid4()
    async with api.ctx.transaction() as session:
        session.add(
            Schedule(id=schedule_id, database_id=uuid.UUID(db["id"]), name="s", cron="@daily")
        )
    nc = await nats.connect(nats_server.url)
    try:
        sub = await nc.subscribe("bm.v1.schedule.changed")
        assert (await api.delete(f"/databases/{db['id']}", as_=alice)).status == 204
        msg = await sub.next_msg(timeout=5)
    finally:
        await nc.close()
    event = json.loads(msg.data)
    assert event["schedule_id"] == str(schedule_id)
    assert (event["change"], event["enabled"], event["database_id"]) == (
        "deleted",
        False,
        db["id"],
    )
    async with api.ctx.transaction() as session:
        assert await session.get(Schedule, schedule_id) is None


async def test_bodies_that_are_not_objects_are_422_not_500(api: Api) -> None:
    alice = await api.user()
    bodies: list[Any] = [[], "x", 5, {"options": []}, {"options": {"tables": [1]}}]
    for body in bodies:
        response = await api.post("/databases", as_=alice, json=body)
        assert response.status == 422, (body, response.body)
