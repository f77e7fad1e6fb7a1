"""Every endpoint of the OpenAPI document x every kind of caller: anonymous, another
user, a viewer, an operator and an owner of the project, and an administrator.

Each (endpoint, caller) pair runs against a fresh "world": a project with its three
members and a database, schedule and destination inside (plus a backup, a restore,
an API token, a refresh token when the endpoint needs them), so what one call
changes never decides the next. The expected status is exact: 401 without a
token on a non-public endpoint, 404 for another user's resource, 403 for a role
too weak, the endpoint's success status when allowed. Whatever the other user
gets back never contains an id of the world's project or its contents.

The list of endpoints comes from ``/api/v1/openapi.json``: a new endpoint without a
row in ``MATRIX`` fails ``test_every_endpoint_is_in_the_matrix``.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest

from services.api.auth.tokens import API_TOKEN_PREFIX, hash_token, issue_access_token
from services.api.auth.tokens import new_opaque_token as opaque
from services.common.db.enums import (
    BackupStatus,
    BackupTrigger,
    CopyStatus,
    DatabaseEngine,
    DestinationKind,
    ProjectRole,
    RestoreMode,
)
from services.common.db.models import (
    ApiToken,
    Backup,
    BackupCopy,
    Database,
    Destination,
    Project,
    ProjectMember,
    Restore,
    Schedule,
    User,
    schedule_destinations,
)
from services.common.passwords import hash_password
from services.common.settings import Settings
from tests.api.client import PASSWORD, Api, Response

CALLERS = ("anonymous", "other", "viewer", "operator", "owner", "admin")
ROLES = ("viewer", "operator", "owner")
NEW_PASSWORD = "another long passphrase"
DB_PASSWORD = "db-Secret-7f3a"
PASSWORD_HASH = hash_password(PASSWORD, rounds=4)


@pytest.fixture
def api_settings(tmp_path: Path, sqlite_url: str) -> Settings:
    # Fast bcrypt: the matrix sets passwords and creates accounts hundreds of times.
    return Settings(
        data_dir=tmp_path / "data",
        database_url=sqlite_url,
        max_body_bytes=64 * 1024,
        bcrypt_rounds=4,
    )


# -- the world each call runs in --------------------------------------------------------


@dataclass
class World:
    tokens: dict[str, str | None]
    users: dict[str, uuid.UUID]
    emails: dict[str, str]
    project: uuid.UUID
    database: uuid.UUID
    destination: uuid.UUID
    member: uuid.UUID  # a viewer the owner may change or remove
    victim: uuid.UUID  # an account an admin may change or delete
    schedule: uuid.UUID | None = None
    backup: uuid.UUID | None = None
    restore: uuid.UUID | None = None
    api_token: uuid.UUID | None = None  # the owner's
    refresh_token: str | None = None  # the owner's
    unique: str = field(default_factory=lambda: uuid.uuid4().hex[:10])

    def private_ids(self) -> list[str]:
        ids = [self.project, self.database, self.destination, self.schedule, self.backup]
        return [str(i) for i in [*ids, self.restore] if i is not None]


async def build_world(api: Api, *, schedule: bool, runs: bool, refresh: bool) -> World:
    now = api.ctx.clock()
    tag = uuid.uuid4().hex[:8]
    names = [*CALLERS[1:], "member", "victim"]
    users = {name: uuid.uuid4() for name in names}
    project = uuid.uuid4()
    root = api.ctx.settings.local_destination_roots[0] / f"t-{tag}"
    root.mkdir(parents=True)
    destination, database = uuid.uuid4(), uuid.uuid4()
    world = World(
        tokens={"anonymous": None},
        users=users,
        emails={name: f"{name}-{tag}@example.com" for name in names},
        project=project,
        database=database,
        destination=destination,
        member=users["member"],
        victim=users["victim"],
    )
    rows: list[Any] = [
        User(id=uid, email=world.emails[name], password_hash=PASSWORD_HASH,
             is_admin=name == "admin")
        for name, uid in users.items()
    ]  # fmt: skip
    rows.append(Project(id=project, name=f"P {tag}", slug=f"p-{tag}"))
    rows += [
        ProjectMember(project_id=project, user_id=users[name], role=ProjectRole(name))
        for name in ROLES
    ]
    rows.append(ProjectMember(project_id=project, user_id=users["member"], role="viewer"))
    rows.append(
        Destination(id=destination, name=f"disk {tag}", kind=DestinationKind.LOCAL,
                    config={"path": str(root)}, project_id=project)
    )  # fmt: skip
    rows.append(
        Database(id=database, project_id=project, name=f"db {tag}",
                 engine=DatabaseEngine("postgresql"), host="db.example", port=5432,
                 database_name="app", username="app",
                 encrypted_password=api.ctx.cipher.encrypt(DB_PASSWORD).encode())
    )  # fmt: skip
    if schedule:
        world.schedule = uuid.uuid4()
        rows.append(Schedule(id=world.schedule, database_id=database, name="nightly",
                             cron="0 3 * * *"))  # fmt: skip
    if runs:
        world.backup, world.restore = uuid.uuid4(), uuid.uuid4()
        key = f"p-{tag}/db/2025/01/01/{world.backup}.dump.zst"
        (root / key).parent.mkdir(parents=True)
        (root / key).write_bytes(b"artifact bytes")
        rows.append(
            Backup(id=world.backup, database_id=database, trigger=BackupTrigger("manual"),
                   status=BackupStatus.SUCCEEDED, queued_at=now - timedelta(hours=1),
                   started_at=now - timedelta(hours=1), finished_at=now, bytes_out=14,
                   artifact_key=key)
        )  # fmt: skip
        rows.append(
            BackupCopy(backup_id=world.backup, destination_id=destination, artifact_key=key,
                       status=CopyStatus.STORED, size_bytes=14)
        )  # fmt: skip
        rows.append(Restore(id=world.restore, backup_id=world.backup, target_database_id=database,
                            target_name="app", mode=RestoreMode.INTO_EMPTY))  # fmt: skip
    world.api_token = uuid.uuid4()
    rows.append(ApiToken(id=world.api_token, user_id=users["owner"], name="ci",
                         token_hash=hash_token(opaque(API_TOKEN_PREFIX))))  # fmt: skip
    async with api.ctx.transaction() as session:
        for row in rows:
            session.add(row)
            await session.flush()
        if schedule:
            await session.execute(
                schedule_destinations.insert().values(
                    schedule_id=world.schedule, destination_id=destination
                )
            )
    for name in CALLERS[1:]:
        world.tokens[name] = issue_access_token(
            users[name], secret=api.ctx.secrets.jwt_secret, now=now, ttl_s=900
        )
    if refresh:
        login = await api.post(
            "/auth/login", json={"email": world.emails["owner"], "password": PASSWORD}
        )
        assert login.status == 200, login.body
        world.refresh_token = login.body["refresh_token"]
    return world


# -- what each caller should get --------------------------------------------------------

Expect = dict[str, int]


def public(code: int) -> Expect:
    """No token needed; the answer does not depend on who asks."""
    return dict.fromkeys(CALLERS, code)


def user(code: int) -> Expect:
    """Any logged-in user, for themselves."""
    return {"anonymous": 401, **dict.fromkeys(CALLERS[1:], code)}


def admin(code: int) -> Expect:
    return {"anonymous": 401, **dict.fromkeys(CALLERS[1:-1], 403), "admin": code}


def own(code: int) -> Expect:
    """Something of the owner's own (not even an admin reaches another's)."""
    return {**dict.fromkeys(CALLERS, 404), "anonymous": 401, "owner": code}


def role(least: str, code: int) -> Expect:
    """Inside the project: invisible to others, too weak below ``least``."""
    rank = ROLES.index(least)
    expect = {"anonymous": 401, "other": 404, "admin": code}
    for index, name in enumerate(ROLES):
        expect[name] = code if index >= rank else 403
    return expect


def viewer(code: int) -> Expect:
    return role("viewer", code)


def operator(code: int) -> Expect:
    return role("operator", code)


def owner(code: int) -> Expect:
    return role("owner", code)


Build = Callable[[World], Any]


@dataclass(frozen=True)
class Case:
    expect: Expect
    path: Callable[[World], dict[str, str]] = lambda w: {}
    body: Build | None = None
    raw: bytes | None = None  # a body sent as it is (an upload), not as JSON
    query: Callable[[World], dict[str, str]] | None = None
    schedule: bool = True  # the world has a schedule (which pins its destination)
    runs: bool = False  # the world has a backup (which pins its database) and a restore
    refresh: bool = False  # the world has a refresh token of the owner's


def p(w: World) -> dict[str, str]:
    return {"id": str(w.project)}


def d(w: World) -> dict[str, str]:
    return {"id": str(w.database)}


def s(w: World) -> dict[str, str]:
    return {"id": str(w.schedule)}


def t(w: World) -> dict[str, str]:
    return {"id": str(w.destination)}


def b(w: World) -> dict[str, str]:
    return {"id": str(w.backup)}


def local_destination(w: World, api_root: Path) -> dict[str, Any]:
    return {"kind": "local", "name": f"disk {w.unique}", "path": str(api_root / w.unique)}


def database_fields(w: World) -> dict[str, Any]:
    return {"name": f"db {w.unique}", "host": "db2.example", "database_name": "app",
            "username": "app", "password": DB_PASSWORD}  # fmt: skip


MATRIX: dict[str, Case] = {
    # auth: public endpoints answer alike whoever asks
    "POST /auth/register": Case(  # registration is closed once an account exists
        public(403),
        body=lambda w: {"email": f"new-{w.unique}@example.com", "password": NEW_PASSWORD},
    ),
    "POST /auth/login": Case(
        public(200),
        body=lambda w: {"email": w.emails["owner"], "password": PASSWORD},
    ),
    "POST /auth/refresh": Case(
        public(200), body=lambda w: {"refresh_token": w.refresh_token}, refresh=True
    ),
    "POST /auth/logout": Case(
        public(204), body=lambda w: {"refresh_token": w.refresh_token}, refresh=True
    ),
    "GET /auth/me": Case(user(200)),
    "POST /auth/password": Case(
        user(200), body=lambda w: {"current_password": PASSWORD, "new_password": NEW_PASSWORD}
    ),
    "GET /auth/tokens": Case(user(200)),
    "POST /auth/tokens": Case(user(201), body=lambda w: {"name": "deploy"}),
    "DELETE /auth/tokens/{id}": Case(own(204), path=lambda w: {"id": str(w.api_token)}),
    # users: administrators only
    "GET /users": Case(admin(200)),
    "POST /users": Case(
        admin(201),
        body=lambda w: {"email": f"made-{w.unique}@example.com", "password": NEW_PASSWORD},
    ),
    "GET /users/{id}": Case(admin(200), path=lambda w: {"id": str(w.victim)}),
    "PATCH /users/{id}": Case(
        admin(200), path=lambda w: {"id": str(w.victim)}, body=lambda w: {"is_active": False}
    ),
    "DELETE /users/{id}": Case(admin(204), path=lambda w: {"id": str(w.victim)}),
    # projects and members
    "GET /projects": Case(user(200)),
    "POST /projects": Case(user(201), body=lambda w: {"name": f"mine {w.unique}"}),
    "GET /projects/{id}": Case(viewer(200), path=p),
    "PUT /projects/{id}": Case(owner(200), path=p, body=lambda w: {"name": "renamed"}),
    # schedule=False: with a schedule on its own destination the delete is a 409 (reported)
    "DELETE /projects/{id}": Case(owner(204), path=p, schedule=False),
    "GET /projects/{id}/members": Case(viewer(200), path=p),
    "POST /projects/{id}/members": Case(
        owner(201), path=p, body=lambda w: {"user_id": str(w.victim), "role": "viewer"}
    ),
    "PUT /projects/{id}/members/{user_id}": Case(
        owner(200),
        path=lambda w: {"id": str(w.project), "user_id": str(w.member)},
        body=lambda w: {"role": "operator"},
    ),
    "DELETE /projects/{id}/members/{user_id}": Case(
        owner(204), path=lambda w: {"id": str(w.project), "user_id": str(w.member)}
    ),
    # databases
    "GET /databases": Case(viewer(200), query=lambda w: {"project_id": str(w.project)}),
    "POST /databases": Case(
        owner(201),
        body=lambda w: {
            **database_fields(w),
            "project_id": str(w.project),
            "engine": "postgresql",
        },
    ),
    "GET /databases/{id}": Case(viewer(200), path=d),
    "PUT /databases/{id}": Case(owner(200), path=d, body=database_fields),
    "DELETE /databases/{id}": Case(owner(204), path=d),
    "POST /databases/{id}/test": Case(operator(503), path=d),  # no executor answers here
    "POST /databases/{id}/backups": Case(operator(202), path=d, body=lambda w: {}),
    # destinations (the world's belongs to the project)
    "GET /destinations": Case(viewer(200), query=lambda w: {"project_id": str(w.project)}),
    "POST /destinations": Case(owner(201)),  # body: see ROOTED
    "GET /destinations/{id}": Case(viewer(200), path=t),
    "PUT /destinations/{id}": Case(owner(200), path=t),  # body: see ROOTED
    "DELETE /destinations/{id}": Case(owner(204), path=t, schedule=False),
    # schedules
    "GET /schedules": Case(viewer(200), query=lambda w: {"database_id": str(w.database)}),
    "POST /schedules": Case(
        operator(201),
        body=lambda w: {
            "database_id": str(w.database),
            "name": f"s {w.unique}",
            "cron": "@daily",
            "destination_ids": [str(w.destination)],
        },
    ),
    "GET /schedules/{id}": Case(viewer(200), path=s),
    "PUT /schedules/{id}": Case(operator(200), path=s, body=lambda w: {"cron": "@hourly"}),
    "DELETE /schedules/{id}": Case(operator(204), path=s),
    "POST /schedules/{id}/enable": Case(operator(200), path=s),
    "POST /schedules/{id}/disable": Case(operator(200), path=s),
    "GET /cron/preview": Case(user(200), query=lambda w: {"expr": "@daily", "tz": "UTC"}),
    "GET /schedules/{id}/retention/preview": Case(viewer(200), path=s),
    # backups and restores
    "GET /backups": Case(user(200), query=lambda w: {"project_id": str(w.project)}, runs=True),
    "GET /backups/{id}": Case(viewer(200), path=b, runs=True),
    "DELETE /backups/{id}": Case(owner(204), path=b, runs=True),
    "GET /backups/{id}/download": Case(viewer(200), path=b, runs=True),
    "POST /backups/{id}/restore": Case(
        operator(202), path=b, body=lambda w: {"confirm_overwrite_source": True}, runs=True
    ),
    "POST /backups/{id}/verify": Case(operator(202), path=b, runs=True),
    "POST /databases/{id}/restore-upload": Case(
        operator(202),
        path=d,
        raw=b"CREATE TABLE t (id int);\n",
        query=lambda w: {"target_database_name": "restored"},
    ),
    "GET /restores": Case(user(200), runs=True),
    "GET /restores/{id}": Case(viewer(200), path=lambda w: {"id": str(w.restore)}, runs=True),
    # stats and audit
    "GET /stats/dashboard": Case(viewer(200), query=lambda w: {"project_id": str(w.project)}),
    "GET /stats/storage": Case(viewer(200), query=lambda w: {"project_id": str(w.project)}),
    "GET /audit": Case(admin(200)),
}
# Bodies that need the allowed destination root of the running app.
ROOTED: dict[str, Callable[[World, Path], Any]] = {
    "POST /destinations": lambda w, root: {
        **local_destination(w, root),
        "project_id": str(w.project),
    },
    "PUT /destinations/{id}": local_destination,
}


def operations(document: dict[str, Any]) -> set[str]:
    return {
        f"{method.upper()} {path.removeprefix('/api/v1')}"
        for path, methods in document["paths"].items()
        for method in methods
    }


async def test_every_endpoint_is_in_the_matrix(api: Api) -> None:
    document = (await api.get("/openapi.json")).body
    documented = operations(document)
    assert documented - set(MATRIX) == set(), "add these endpoints to MATRIX"
    assert set(MATRIX) - documented == set(), "these MATRIX rows name no endpoint"
    for key in documented:
        method, path = key.split(" ", 1)
        operation = document["paths"]["/api/v1" + path][method.lower()]
        is_public = "security" not in operation
        assert is_public == (len(set(MATRIX[key].expect.values())) == 1), key


async def call(api: Api, key: str, case: Case, world: World, caller: str) -> Response:
    method, template = key.split(" ", 1)
    path = template.format(**case.path(world))
    root = api.ctx.settings.local_destination_roots[0]
    body = ROOTED[key](world, root) if key in ROOTED else case.body(world) if case.body else None
    return await api.call(
        method,
        path,
        as_=world.tokens[caller],
        json=body,
        data=case.raw,
        headers={"Content-Type": "application/octet-stream"} if case.raw else None,
        params=case.query(world) if case.query else None,
    )


async def test_authorization_matrix(api: Api) -> None:
    problems: list[str] = []
    for key, case in MATRIX.items():
        for caller in CALLERS:
            world = await build_world(
                api, schedule=case.schedule, runs=case.runs, refresh=case.refresh
            )
            response = await call(api, key, case, world, caller)
            want = case.expect[caller]
            if response.status != want:
                problems.append(
                    f"{key} as {caller}: {response.status}, expected {want} — {response.body}"
                )
            if caller == "other":
                text = str(response.body)
                leaked = [i for i in world.private_ids() if i in text]
                if leaked:
                    problems.append(f"{key} as other: the response shows {leaked}")
    assert not problems, "\n".join(problems)
