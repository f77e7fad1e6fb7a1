"""Property-based fuzzing of the whole API from its own OpenAPI document
(schemathesis): for every operation, valid and invalid requests, sent as an
administrator and as a plain user, must never get a 5xx, and every response must
match the document (status code, content type, headers, body schema).

The app runs in a thread with its own event loop (schemathesis calls it over a real
socket with ``requests``), against a migrated SQLite DB and a real NATS server.
A few rows are seeded so that path ids hit something half of the time. Runs are
bounded: ``FUZZ_EXAMPLES`` (default 8) examples per operation, mode and caller,
derandomized so that a failure reproduces; every failure is collected and reported
together. For a deeper run by hand: ``FUZZ_EXAMPLES=100 FUZZ_RANDOM=1``.

Invalid ("negative") requests are checked for no 5xx and a documented answer, but
not for being refused: schemathesis' ``negative_data_rejection`` misfires here (the
test adds its own Authorization header, and an invalid extra query parameter with
no value is dropped on the wire), so refusal of bad input is tested per endpoint.
"""

from __future__ import annotations

import asyncio
import logging
import os
import threading
import uuid
from collections.abc import Iterator
from concurrent.futures import Future
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import Any

import nats
import pytest
import schemathesis
from aiohttp import web
from aiohttp.test_utils import TestServer
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st
from schemathesis.core.failures import FailureGroup, ServerError
from schemathesis.core.result import Ok
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from services.api.app import setup_api
from services.api.auth.tokens import (
    API_TOKEN_PREFIX,
    hash_token,
    issue_access_token,
    new_opaque_token,
)
from services.api.context import API, ApiContext
from services.common.credentials import CredentialCipher
from services.common.db.engine import create_engine, session_factory
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
from services.common.migrate import upgrade
from services.common.passwords import hash_password
from services.common.secrets import resolve_secrets
from services.common.settings import Settings
from services.common.streams import ensure_streams
from tests.servers import NatsServer

EXAMPLES = int(os.environ.get("FUZZ_EXAMPLES", "8"))
RANDOM = os.environ.get("FUZZ_RANDOM") == "1"  # new inputs on every run


def no_server_error(ctx: Any, response: Any, case: Any) -> bool | None:
    """No 500 ever, and no other 5xx the operation does not document (a documented
    503 — no executor answers the connection test here — is a fine answer)."""
    status = response.status_code
    documented = case.operation.definition.raw.get("responses", {})
    if status >= 500 and (status == 500 or str(status) not in documented):
        raise ServerError(operation=case.operation.label, status_code=status)
    return None


CHECKS = [
    no_server_error,
    status_code_conformance,
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
]
# Mutations last, deletions at the very end: what they remove was read first.
METHOD_ORDER = {"GET": 0, "POST": 1, "PUT": 1, "PATCH": 1, "DELETE": 2}
DB_PASSWORD = "fuzz-Db-Secret-19"


@pytest.fixture
def api_settings(tmp_path: Path, sqlite_url: str) -> Settings:
    return Settings(
        data_dir=tmp_path / "data",
        database_url=sqlite_url,
        max_body_bytes=64 * 1024,
        bcrypt_rounds=4,
    )


@dataclass
class Live:
    base_url: str
    tokens: dict[str, str]
    ids: dict[str, str]  # seeded row per kind
    api_token_of: dict[str, str] = field(default_factory=dict)


async def _seed(ctx: ApiContext) -> Live:
    now = ctx.clock()
    tag = uuid.uuid4().hex[:6]
    admin, plain, member, victim = (uuid.uuid4() for _ in range(4))
    project, database, destination = uuid.uuid4(), uuid.uuid4(), uuid.uuid4()
    schedule, backup, restore = uuid.uuid4(), uuid.uuid4(), uuid.uuid4()
    tokens = {"admin": uuid.uuid4(), "user": uuid.uuid4()}
    root = ctx.settings.local_destination_roots[0] / f"fuzz-{tag}"
    key = f"fuzz/db/2025/01/01/{backup}.dump.zst"
    (root / key).parent.mkdir(parents=True)
    (root / key).write_bytes(b"artifact")
    hashed = hash_password("fuzz password 1", rounds=4)
    rows: list[Any] = [
        User(id=admin, email=f"admin-{tag}@example.com", password_hash=hashed, is_admin=True),
        User(id=plain, email=f"user-{tag}@example.com", password_hash=hashed),
        User(id=member, email=f"member-{tag}@example.com", password_hash=hashed),
        User(id=victim, email=f"victim-{tag}@example.com", password_hash=hashed),
        Project(id=project, name="Fuzz", slug=f"fuzz-{tag}"),
        ProjectMember(project_id=project, user_id=plain, role=ProjectRole.OWNER),
        ProjectMember(project_id=project, user_id=member, role=ProjectRole.VIEWER),
        Destination(id=destination, name="disk", kind=DestinationKind.LOCAL,
                    config={"path": str(root)}, project_id=project),
        Database(id=database, project_id=project, name="orders",
                 engine=DatabaseEngine("postgresql"), host="db.example", port=5432,
                 database_name="orders", username="app",
                 encrypted_password=ctx.cipher.encrypt(DB_PASSWORD).encode()),
        Schedule(id=schedule, database_id=database, name="nightly", cron="0 3 * * *"),
        Backup(id=backup, database_id=database, trigger=BackupTrigger("manual"),
               status=BackupStatus.SUCCEEDED, queued_at=now - timedelta(hours=1),
               started_at=now - timedelta(hours=1), finished_at=now, bytes_out=8,
               artifact_key=key),
        BackupCopy(backup_id=backup, destination_id=destination, artifact_key=key,
                   status=CopyStatus.STORED, size_bytes=8),
        Restore(id=restore, backup_id=backup, target_database_id=database, target_name="x",
                mode=RestoreMode.INTO_EMPTY),
        *(ApiToken(id=token_id, user_id=admin if who == "admin" else plain, name="ci",
                   token_hash=hash_token(new_opaque_token(API_TOKEN_PREFIX)))
          for who, token_id in tokens.items()),
    ]  # fmt: skip
    async with ctx.transaction() as session:
        for row in rows:
            session.add(row)
            await session.flush()
        await session.execute(
            schedule_destinations.insert().values(schedule_id=schedule, destination_id=destination)
        )

    def bearer(user_id: uuid.UUID) -> str:
        return issue_access_token(user_id, secret=ctx.secrets.jwt_secret, now=now, ttl_s=3600)

    ids = {
        "projects": project, "databases": database, "destinations": destination,
        "schedules": schedule, "backups": backup, "restores": restore, "users": victim,
        "user_id": member,
    }  # fmt: skip
    return Live(
        base_url="",
        tokens={"admin": bearer(admin), "user": bearer(plain)},
        ids={k: str(v) for k, v in ids.items()},
        api_token_of={who: str(token_id) for who, token_id in tokens.items()},
    )


@pytest.fixture
def live_api(api_settings: Settings, nats_server: NatsServer) -> Iterator[Live]:
    """The API served from a thread of its own (schemathesis' client is blocking)."""
    loop = asyncio.new_event_loop()
    stop = asyncio.Event()
    started: Future[Live] = Future()

    async def serve() -> None:
        try:
            await upgrade(api_settings.database_url)
            engine = create_engine(api_settings.database_url)
            nc = await nats.connect(nats_server.url)
            await ensure_streams(nc.jetstream())
            secrets = resolve_secrets(api_settings)
            ctx = ApiContext(settings=api_settings, secrets=secrets,
                             sessions=session_factory(engine), nc=nc,
                             cipher=CredentialCipher(secrets.credential_keys))  # fmt: skip
            app = web.Application(client_max_size=api_settings.max_body_bytes)
            setup_api(app)
            app[API] = ctx
            server = TestServer(app, host="127.0.0.1")
            await server.start_server()
            live = await _seed(ctx)
            live.base_url = str(server.make_url("")).rstrip("/")
        except BaseException as exc:
            started.set_exception(exc)
            raise
        started.set_result(live)
        try:
            await stop.wait()
        finally:
            await server.close()
            await nc.close()
            await engine.dispose()

    thread = threading.Thread(target=loop.run_until_complete, args=(serve(),), daemon=True)
    thread.start()
    try:
        yield started.result(timeout=60)
    finally:
        loop.call_soon_threadsafe(stop.set)
        thread.join(timeout=30)
        loop.close()


def _with_seeded_ids(case: Any, live: Live, who: str) -> None:
    """Point the case's path ids at seeded rows (of the right kind)."""
    path: str = case.path
    kind = path.strip("/").split("/")[2]
    for name in list(case.path_parameters or {}):
        if name == "user_id":
            case.path_parameters[name] = live.ids["user_id"]
        elif path.startswith("/api/v1/auth/tokens/"):
            case.path_parameters[name] = live.api_token_of[who]
        elif kind in live.ids:
            case.path_parameters[name] = live.ids[kind]


Failure = tuple[str, str, str, str]


def fuzz_operation(
    operation: Any, live: Live, who: str, mode: schemathesis.GenerationMode
) -> list[Failure]:
    headers = {"Authorization": f"Bearer {live.tokens[who]}"}
    label = f"{operation.method.upper()} {operation.path}"

    @settings(
        max_examples=EXAMPLES,
        derandomize=not RANDOM,
        database=None,
        deadline=None,
        phases=[Phase.explicit, Phase.generate],
        suppress_health_check=list(HealthCheck),
    )
    @given(case=operation.as_strategy(generation_mode=mode), seeded=st.booleans())
    def run(case: Any, seeded: bool) -> None:
        # Valid requests hit seeded rows half of the time; invalid ones keep their
        # (possibly invalid) ids, which the server must refuse.
        if seeded and mode is schemathesis.GenerationMode.POSITIVE:
            _with_seeded_ids(case, live, who)
        response = case.call(base_url=live.base_url, headers=headers, timeout=30)
        case.validate_response(response, checks=CHECKS, headers=headers)

    try:
        run()
    except (AssertionError, FailureGroup) as exc:  # with a curl to reproduce each
        return [(label, who, mode.value, str(exc))]
    return []


def test_no_server_errors_and_responses_match_the_schema(
    live_api: Live, caplog: pytest.LogCaptureFixture
) -> None:
    schema = schemathesis.openapi.from_url(f"{live_api.base_url}/api/v1/openapi.json")
    operations = []
    for result in schema.get_all_operations():
        assert isinstance(result, Ok), f"the OpenAPI document is invalid: {result.err()}"
        operations.append(result.ok())
    operations.sort(key=lambda op: (METHOD_ORDER[op.method.upper()], op.path))
    assert len(operations) >= 40, "the OpenAPI document lost its operations"
    failures: list[Failure] = []
    for who in ("user", "admin"):
        for operation in operations:
            for mode in (schemathesis.GenerationMode.POSITIVE,
                         schemathesis.GenerationMode.NEGATIVE):  # fmt: skip
                failures += fuzz_operation(operation, live_api, who, mode)
    report = "\n\n".join(
        f"### {label} as {who} ({mode} data)\n{message}" for label, who, mode, message in failures
    )
    # Errors the server logged without showing them (e.g. a lost audit entry).
    logged = sorted(
        {f"{r.name}: {r.getMessage()}" for r in caplog.records if r.levelno >= logging.ERROR}
    )
    logged_report = "\n".join(logged)
    if failures or logged:
        pytest.fail(
            f"{len(failures)} failing operations:\n\n{report}\n\n"
            f"the server logged {len(logged)} distinct errors:\n{logged_report}",
            pytrace=False,
        )
