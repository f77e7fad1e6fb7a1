"""Restores through the API with a real executor: into a new database by name,
with the checks that protect the source; list and detail with the log."""

from __future__ import annotations

import asyncio
import uuid
from pathlib import Path
from typing import Any

import asyncpg
import pytest

from proto.subjects import JOBS_STREAM
from services.executor.context import ExecutorContext
from tests.api.client import Actor, Api
from tests.api.test_backups import setup_database, wait_final
from tests.servers import Database, PostgresServer

pytestmark = pytest.mark.integration


async def wait_restore(api: Api, actor: Actor, restore_id: str) -> dict[str, Any]:
    async with asyncio.timeout(60):
        while True:
            restore = (await api.get(f"/restores/{restore_id}", as_=actor)).body
            if restore["status"] not in {"queued", "running"}:
                return dict(restore)
            await asyncio.sleep(0.2)


async def count(dsn: str) -> int:
    conn = await asyncpg.connect(dsn)
    try:
        value: int = await conn.fetchval("SELECT count(*) FROM t")
        return value
    finally:
        await conn.close()


async def test_restore_into_a_new_database_through_the_api(
    api: Api, api_executor: ExecutorContext, pg_server: PostgresServer, pg_database: Database,
    tmp_path: Path,
) -> None:  # fmt: skip
    pg_server.execute("CREATE TABLE t AS SELECT i FROM generate_series(1, 1234) i",
                      dbname=pg_database.name)  # fmt: skip
    owner, viewer = await api.user("owner"), await api.user("viewer")
    setup = await setup_database(api, owner, pg_server, pg_database, tmp_path)
    await api.post(
        f"/projects/{setup['project']['id']}/members",
        as_=owner,
        json={"email": viewer.email, "role": "viewer"},
    )
    queued = await api.post(f"/databases/{setup['database']['id']}/backups", as_=owner, json={})
    backup = await wait_final(api, owner, queued.body["id"])
    assert backup["status"] == "succeeded", backup["error_message"]

    over_source = await api.post(
        f"/backups/{backup['id']}/restore", as_=owner, json={"mode": "replace"}
    )
    assert over_source.status == 422
    assert "confirm_overwrite_source" in over_source.body["error"]["fields"]
    denied = await api.post(
        f"/backups/{backup['id']}/restore", as_=viewer, json={"target_database_name": "copy"}
    )
    assert denied.status == 403

    name = f"copy_{uuid.uuid4().hex[:8]}"
    try:
        started = await api.post(
            f"/backups/{backup['id']}/restore", as_=owner, json={"target_database_name": name}
        )
        assert started.status == 202, started.body
        restore = await wait_restore(api, owner, started.body["id"])
        assert restore["status"] == "succeeded", restore["error_message"]
        assert restore["target_name"] == name
        assert await count(pg_server.dsn(name)) == 1234

        listed = await api.get("/restores", as_=viewer, params={"backup_id": backup["id"]})
        assert [r["id"] for r in listed.body["items"]] == [restore["id"]]
        stranger = await api.user("stranger")
        assert (await api.get(f"/restores/{restore['id']}", as_=stranger)).status == 404

        again = await api.post(
            f"/backups/{backup['id']}/restore", as_=owner, json={"target_database_name": name}
        )
        failed = await wait_restore(api, owner, again.body["id"])
        assert (failed["status"], failed["error_code"]) == ("failed", "target_not_empty")
        assert await count(pg_server.dsn(name)) == 1234
    finally:
        pg_server.drop_database(name)


async def test_restore_refuses_a_failed_backup_and_queues_nothing(
    api: Api,
    pg_server: PostgresServer,
    pg_database: Database,
    tmp_path: Path,
) -> None:
    owner = await api.user("owner")
    setup = await setup_database(api, owner, pg_server, pg_database, tmp_path)
    queued = await api.post(f"/databases/{setup['database']['id']}/backups", as_=owner, json={})
    refused = await api.post(
        f"/backups/{queued.body['id']}/restore", as_=owner, json={"target_database_name": "x"}
    )
    assert refused.status == 409
    assert api.ctx.nc is not None
    info = await api.ctx.nc.jetstream().stream_info(JOBS_STREAM)
    assert info.state.messages == 1  # only the backup job
