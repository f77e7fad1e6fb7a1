"""Restores through the API with a real executor: into a new database by name,
with the checks that protect the source; list and detail with the log; uploaded
dumps (custom and plain, compressed or not) streamed into a restore, refused when too
large or not a dump with nothing left behind, and unable to run psql meta-commands;
a verification asked for on demand."""

from __future__ import annotations

import gzip
import os
import subprocess
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import asyncpg
import pytest
import zstandard
from sqlalchemy import func, select

from proto.subjects import JOBS_STREAM
from services.common.db.models import Restore
from services.common.settings import Settings
from services.executor.context import ExecutorContext
from tests.api.client import Actor, Api, wait_settled
from tests.api.test_backups import setup_database, wait_final
from tests.servers import Database, PostgresServer

pytestmark = pytest.mark.integration


async def wait_restore(api: Api, actor: Actor, restore_id: str) -> dict[str, Any]:
    return await wait_settled(api, actor, f"/restores/{restore_id}")


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


# -- uploads and verification --------------------------------------------------------

UPLOAD_LIMIT = 600 * 1024


@pytest.fixture
def api_settings(tmp_path: Path, sqlite_url: str) -> Settings:
    """As the shared one, with a small upload limit (``BM_MAX_UPLOAD_BYTES``)."""
    settings = Settings(data_dir=tmp_path / "data", database_url=sqlite_url,
                        max_body_bytes=64 * 1024, bcrypt_rounds=4)  # fmt: skip
    return settings.model_copy(update={"max_upload_bytes": UPLOAD_LIMIT})


def plain_dump(pg: PostgresServer, dbname: str) -> bytes:
    return subprocess.run(
        ["pg_dump", "--format=plain", f"--host={pg.host}", f"--port={pg.port}",
         f"--username={pg.user}", f"--dbname={dbname}"],
        env={"PATH": "/usr/bin:/bin", "PGPASSWORD": pg.password},
        capture_output=True, check=True, timeout=60,
    ).stdout  # fmt: skip


def staged_files(api: Api) -> list[Path]:
    directory = api.ctx.settings.data_dir / "uploads"
    return sorted(directory.iterdir()) if directory.exists() else []


async def upload(api: Api, actor: Actor, database_id: str, data: bytes,
                 **params: str) -> Any:  # fmt: skip
    return await api.post(f"/databases/{database_id}/restore-upload", as_=actor, data=data,
                          params=params,
                          headers={"Content-Type": "application/octet-stream"})  # fmt: skip


async def test_restore_uploaded_dumps_of_every_postgres_kind(
    api: Api, api_executor: ExecutorContext, pg_server: PostgresServer, pg_database: Database,
    tmp_path: Path,
) -> None:  # fmt: skip
    pg_server.execute("CREATE TABLE t AS SELECT i, md5(i::text) AS h FROM "
                      "generate_series(1, 2500) i", dbname=pg_database.name)  # fmt: skip
    owner = await api.user("owner")
    setup = await setup_database(api, owner, pg_server, pg_database, tmp_path)
    database_id = setup["database"]["id"]
    queued = await api.post(f"/databases/{database_id}/backups", as_=owner, json={})
    backup = await wait_final(api, owner, queued.body["id"])
    custom_zstd = (setup["storage"] / backup["artifact_key"]).read_bytes()
    plain = plain_dump(pg_server, pg_database.name)
    assert b"\\restrict " in plain  # pg_dump's own key, which the restore takes out
    uploads = {
        "custom_zstd": custom_zstd,
        "custom_none": zstandard.ZstdDecompressor().decompressobj().decompress(custom_zstd),
        "plain_gzip": gzip.compress(plain),
        "plain_none": plain,
    }
    names = []
    try:
        for kind, data in uploads.items():
            name = f"up_{kind}_{uuid.uuid4().hex[:6]}"
            names.append(name)
            started = await upload(api, owner, database_id, data, target_database_name=name)
            assert started.status == 202, started.body
            assert started.body["source"] == "upload"
            restore = await wait_restore(api, owner, started.body["id"])
            assert restore["status"] == "succeeded", (kind, restore["error_message"])
            assert await count(pg_server.dsn(name)) == 2500, kind
        assert staged_files(api) == []  # each staged upload went with its restore

        own = await upload(api, owner, database_id, plain)  # into the database itself
        assert own.status == 422
        assert "confirm_overwrite_source" in own.body["error"]["fields"]
    finally:
        for name in names:
            pg_server.drop_database(name)


async def test_an_uploaded_script_cannot_run_meta_commands(
    api: Api, api_executor: ExecutorContext, pg_server: PostgresServer, pg_database: Database,
    tmp_path: Path,
) -> None:  # fmt: skip
    owner = await api.user("owner")
    setup = await setup_database(api, owner, pg_server, pg_database, tmp_path)
    marker = tmp_path / "pwned"
    script = (f"CREATE TABLE t (i int);\nINSERT INTO t VALUES (1);\n\\! touch {marker}\n"
              "\\unrestrict guess\n").encode()  # fmt: skip
    name = f"evil_{uuid.uuid4().hex[:6]}"
    try:
        started = await upload(api, owner, setup["database"]["id"], script,
                               target_database_name=name)  # fmt: skip
        assert started.status == 202, started.body
        restore = await wait_restore(api, owner, started.body["id"])
        assert (restore["status"], restore["error_code"]) == ("failed", "restore_failed")
        assert "restricted" in (restore["error_message"] or "")
        assert not marker.exists()
        conn = await asyncpg.connect(pg_server.dsn(name))
        try:  # one transaction: nothing of the script stayed
            assert await conn.fetchval("SELECT to_regclass('public.t')") is None
        finally:
            await conn.close()
    finally:
        pg_server.drop_database(name)


async def test_uploads_too_large_or_not_a_dump_leave_nothing(
    api: Api, pg_server: PostgresServer, pg_database: Database, tmp_path: Path
) -> None:
    owner, viewer = await api.user("owner"), await api.user("viewer")
    setup = await setup_database(api, owner, pg_server, pg_database, tmp_path)
    database_id = setup["database"]["id"]
    big = b"PGDMP" + os.urandom(UPLOAD_LIMIT)

    declared = await upload(api, owner, database_id, big, target_database_name="x")
    assert declared.status == 413, declared.body
    assert "BM_MAX_UPLOAD_BYTES" in declared.body["error"]["message"]

    async def chunked() -> AsyncIterator[bytes]:  # no Content-Length: found while reading
        for start in range(0, len(big), 256 * 1024):
            yield big[start : start + 256 * 1024]

    streamed = await api.post(f"/databases/{database_id}/restore-upload", as_=owner,
                              data=chunked(), params={"target_database_name": "x"})  # fmt: skip
    assert streamed.status == 413, streamed.body

    for junk in (b"", b"hello, this is not a dump\n", os.urandom(5000),
                 gzip.compress(b"\x89PNG\r\n\x1a\n" + os.urandom(100))):  # fmt: skip
        refused = await upload(api, owner, database_id, junk, target_database_name="x")
        assert (refused.status, refused.error_code) == (422, "not_a_dump"), junk[:10]

    denied = await upload(api, viewer, database_id, b"PGDMP", target_database_name="x")
    assert denied.status == 404  # a viewer of nothing sees nothing
    assert staged_files(api) == []
    async with api.ctx.sessions() as session:
        assert (await session.scalar(select(func.count()).select_from(Restore))) == 0
    assert api.ctx.nc is not None
    info = await api.ctx.nc.jetstream().stream_info(JOBS_STREAM)
    assert info.state.messages == 0


async def test_verify_a_backup_on_demand(
    api: Api, api_executor: ExecutorContext, pg_server: PostgresServer, pg_database: Database,
    tmp_path: Path,
) -> None:  # fmt: skip
    pg_server.execute("CREATE TABLE t AS SELECT i FROM generate_series(1, 777) i",
                      dbname=pg_database.name)  # fmt: skip
    owner, viewer = await api.user("owner"), await api.user("viewer")
    setup = await setup_database(api, owner, pg_server, pg_database, tmp_path)
    await api.post(f"/projects/{setup['project']['id']}/members", as_=owner,
                   json={"email": viewer.email, "role": "viewer"})  # fmt: skip
    queued = await api.post(f"/databases/{setup['database']['id']}/backups", as_=owner, json={})
    backup = await wait_final(api, owner, queued.body["id"])
    assert backup["verify_status"] is None

    assert (await api.post(f"/backups/{backup['id']}/verify", as_=viewer)).status == 403
    started = await api.post(f"/backups/{backup['id']}/verify", as_=owner)
    assert started.status == 202, started.body
    assert started.body["purpose"] == "verify"
    assert started.body["target_database_id"] is None
    restore = await wait_restore(api, owner, started.body["id"])
    assert restore["status"] == "succeeded", restore["error_message"]
    verified = (await api.get(f"/backups/{backup['id']}", as_=viewer)).body
    assert verified["verify_status"] == "passed"
    assert verified["verified_at"] is not None
    listed = await api.get("/restores", as_=viewer, params={"backup_id": backup["id"]})
    assert [(r["id"], r["purpose"]) for r in listed.body["items"]] == [(restore["id"], "verify")]
