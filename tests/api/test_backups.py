"""Backups through the API with a real executor behind NATS: back up now, watch it
complete, list and filter, inspect the log, download (whole and ranged, checksum
header), delete with its artifacts; connection tests by request/reply."""

from __future__ import annotations

import base64
import hashlib
from pathlib import Path
from typing import Any

import pytest

from proto.subjects import JOBS_STREAM
from services.executor.context import ExecutorContext
from tests.api.client import Actor, Api, wait_settled
from tests.servers import Database, PostgresServer

pytestmark = pytest.mark.integration


async def setup_database(
    api: Api, owner: Actor, pg: PostgresServer, db: Database,
    tmp_path: Path, password: str | None = None,
) -> dict[str, Any]:  # fmt: skip
    project = (await api.post("/projects", as_=owner, json={"name": "Shop"})).body
    storage = api.ctx.settings.backups_dir / "shop"
    destination = await api.post(
        "/destinations",
        as_=owner,
        json={"kind": "local", "name": "disk", "path": str(storage), "project_id": project["id"]},
    )
    assert destination.status == 201, destination.body
    created = await api.post("/databases", as_=owner, json={
        "project_id": project["id"], "name": "orders", "engine": "postgresql",
        "host": pg.host, "port": pg.port, "database_name": db.name, "username": pg.user,
        "password": pg.password if password is None else password})  # fmt: skip
    assert created.status == 201, created.body
    return {"project": project, "database": created.body, "storage": storage,
            "destination": destination.body}  # fmt: skip


async def wait_final(api: Api, actor: Actor, backup_id: str) -> dict[str, Any]:
    return await wait_settled(api, actor, f"/backups/{backup_id}")


async def test_back_up_now_download_and_delete(
    api: Api, api_executor: ExecutorContext, pg_server: PostgresServer, pg_database: Database,
    tmp_path: Path,
) -> None:  # fmt: skip
    pg_server.execute("CREATE TABLE t AS SELECT i FROM generate_series(1, 1000) i",
                      dbname=pg_database.name)  # fmt: skip
    owner, stranger = await api.user("owner"), await api.user("stranger")
    setup = await setup_database(api, owner, pg_server, pg_database, tmp_path)
    database_id = setup["database"]["id"]

    queued = await api.post(
        f"/databases/{database_id}/backups",
        as_=owner,
        json={"compression": {"algorithm": "gzip", "level": 6}},
    )
    assert queued.status == 202, queued.body
    assert queued.body["status"] == "queued"
    backup = await wait_final(api, owner, queued.body["id"])
    assert backup["status"] == "succeeded", backup["error_message"]
    assert backup["copies"][0]["destination_id"] == setup["destination"]["id"]
    assert backup["compression"] == "gzip"
    assert backup["log"] is not None
    assert pg_server.password not in str(backup)

    listed = await api.get(
        "/backups", as_=owner, params={"database_id": database_id, "status": "succeeded"}
    )
    assert [b["id"] for b in listed.body["items"]] == [backup["id"]]
    assert (await api.get("/backups", as_=stranger)).body["items"] == []
    assert (await api.get(f"/backups/{backup['id']}", as_=stranger)).status == 404
    assert (await api.get(f"/backups/{backup['id']}/download", as_=stranger)).status == 404

    whole = await api.client.get(
        f"/api/v1/backups/{backup['id']}/download",
        headers={"Authorization": f"Bearer {owner.token}"},
    )
    data = await whole.read()
    assert whole.status == 200
    assert hashlib.sha256(data).hexdigest() == backup["sha256"]
    assert (
        whole.headers["Digest"]
        == "sha-256=" + base64.b64encode(hashlib.sha256(data).digest()).decode()
    )
    assert whole.headers["Content-Length"] == str(len(data))
    assert whole.headers["Content-Disposition"].endswith('.pgdump.gz"')
    part = await api.client.get(
        f"/api/v1/backups/{backup['id']}/download",
        headers={"Authorization": f"Bearer {owner.token}", "Range": "bytes=10-19"},
    )
    assert part.status == 206
    assert await part.read() == data[10:20]
    assert part.headers["Content-Range"] == f"bytes 10-19/{len(data)}"
    bad = await api.get(
        f"/backups/{backup['id']}/download", as_=owner, headers={"Range": f"bytes={len(data) + 5}-"}
    )
    assert bad.status == 416

    artifact = Path(setup["destination"]["path"]) / backup["artifact_key"]
    assert artifact.exists()
    assert (await api.delete(f"/backups/{backup['id']}", as_=owner)).status == 204
    assert not artifact.exists()
    assert not Path(f"{artifact}.manifest.json").exists()
    assert (await api.get(f"/backups/{backup['id']}", as_=owner)).status == 404


async def test_failed_backup_is_visible_with_its_error(
    api: Api, api_executor: ExecutorContext, pg_server: PostgresServer, pg_database: Database,
    tmp_path: Path,
) -> None:  # fmt: skip
    owner = await api.user("owner")
    setup = await setup_database(api, owner, pg_server, pg_database, tmp_path,
                                 password="definitely-wrong")  # fmt: skip
    queued = await api.post(f"/databases/{setup['database']['id']}/backups", as_=owner, json={})
    backup = await wait_final(api, owner, queued.body["id"])
    assert (backup["status"], backup["error_code"]) == ("failed", "authentication_failed")
    assert "definitely-wrong" not in str(backup)
    download = await api.get(f"/backups/{backup['id']}/download", as_=owner)
    assert download.status == 409


async def test_connection_test_through_an_executor(
    api: Api, api_executor: ExecutorContext, pg_server: PostgresServer, pg_database: Database,
    tmp_path: Path,
) -> None:  # fmt: skip
    owner = await api.user("owner")
    good = await setup_database(api, owner, pg_server, pg_database, tmp_path)
    result = await api.post(f"/databases/{good['database']['id']}/test", as_=owner)
    assert result.status == 200, result.body
    assert result.body["ok"] is True
    assert result.body["server_version"].startswith("15")
    assert result.body["latency_ms"] >= 0

    changed = await api.put(f"/databases/{good['database']['id']}", as_=owner, json={
        "name": "orders", "host": pg_server.host, "port": pg_server.port,
        "database_name": "missing_db", "username": pg_server.user})  # fmt: skip
    assert changed.status == 200, changed.body
    result = await api.post(f"/databases/{good['database']['id']}/test", as_=owner)
    assert (result.body["ok"], result.body["error_code"]) == (False, "database_missing")


async def test_connection_test_without_executor_is_503(
    api: Api,
    pg_server: PostgresServer,
    pg_database: Database,
    tmp_path: Path,
) -> None:
    owner = await api.user("owner")
    setup = await setup_database(api, owner, pg_server, pg_database, tmp_path)
    result = await api.post(f"/databases/{setup['database']['id']}/test", as_=owner)
    assert result.status == 503
    assert "executor" in result.body["error"]["message"]


async def test_viewer_cannot_back_up_and_jobs_are_queued(
    api: Api,
    pg_server: PostgresServer,
    pg_database: Database,
    tmp_path: Path,
) -> None:
    owner, viewer = await api.user("owner"), await api.user("viewer")
    setup = await setup_database(api, owner, pg_server, pg_database, tmp_path)
    await api.post(
        f"/projects/{setup['project']['id']}/members",
        as_=owner,
        json={"email": viewer.email, "role": "viewer"},
    )
    denied = await api.post(f"/databases/{setup['database']['id']}/backups", as_=viewer, json={})
    assert denied.status == 403
    queued = await api.post(f"/databases/{setup['database']['id']}/backups", as_=owner, json={})
    assert queued.status == 202
    assert api.ctx.nc is not None
    info = await api.ctx.nc.jetstream().stream_info(JOBS_STREAM)
    assert info.state.messages == 1  # waiting for an executor, nothing lost
