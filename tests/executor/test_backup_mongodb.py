"""MongoDB backups end to end against a real mongod and the real mongodump, where
they are installed (they are not in Debian: these tests skip with the missing binary's
name; ``test_adapter_standin.py`` covers the adapter without them).

The archive must restore through ``mongorestore --archive`` into another database with
the same documents; a wrong password fails the run without leaking it."""

from __future__ import annotations

import asyncio
import json
import os
import secrets
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import zstandard
from motor.motor_asyncio import AsyncIOMotorClient

from services.common.db.enums import BackupStatus, DatabaseEngine
from services.executor.adapters import mongodb
from services.executor.adapters.mongodb import ARCHIVE_MAGIC
from services.executor.backup import BackupRun
from services.executor.context import ExecutorContext
from tests.executor.conftest import Seeded, load_backup, queue_backup, seed, stored_files
from tests.servers import ServerBinaryMissing, find_binary, free_port, unique_name

pytestmark = pytest.mark.integration
HINT = "install MongoDB and MongoDB Database Tools (not packaged in Debian)"


@dataclass
class MongoServer:
    host: str
    port: int
    user: str
    password: str

    def client(self, password: str | None = None) -> AsyncIOMotorClient[dict[str, Any]]:
        return AsyncIOMotorClient(host=self.host, port=self.port, username=self.user,
                                  password=password or self.password, authSource="admin",
                                  serverSelectionTimeoutMS=10_000)  # fmt: skip


def _binaries() -> dict[str, Path]:
    try:
        return {name: find_binary(name, HINT) for name in ("mongod", "mongodump", "mongorestore")}
    except ServerBinaryMissing as exc:
        pytest.skip(str(exc))


@pytest.fixture(scope="module")
def mongo_server() -> Iterator[MongoServer]:
    """mongod with authorization on 127.0.0.1; the first user is created through the
    localhost exception, then the server demands it."""
    binaries = _binaries()
    directory = Path(tempfile.mkdtemp(prefix="bm-mongod-"))
    port = free_port()
    server = MongoServer("127.0.0.1", port, "root", secrets.token_hex(16))
    process = subprocess.Popen(
        [binaries["mongod"], "--dbpath", str(directory), "--port", str(port),
         "--bind_ip", "127.0.0.1", "--auth", "--quiet",
         "--logpath", str(directory / "mongod.log")],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    try:
        asyncio.run(_create_root(server))
        mongodb.mongodump.cache_clear()
        yield server
    finally:
        process.terminate()
        process.wait(timeout=30)
        shutil.rmtree(directory, ignore_errors=True)


async def _create_root(server: MongoServer) -> None:
    anonymous: AsyncIOMotorClient[dict[str, Any]] = AsyncIOMotorClient(
        host=server.host, port=server.port, serverSelectionTimeoutMS=30_000
    )
    try:
        await anonymous.admin.command("ping")
        await anonymous.admin.command(
            "createUser", server.user, pwd=server.password, roles=["root"]
        )
    finally:
        anonymous.close()


async def documents(server: MongoServer, database: str) -> list[dict[str, Any]]:
    client = server.client()
    try:
        return await client[database]["orders"].find().sort("_id").to_list(None)
    finally:
        client.close()


@pytest.fixture
async def shop(mongo_server: MongoServer) -> str:
    name = unique_name("shop")
    client = mongo_server.client()
    try:
        await client[name]["orders"].insert_many([
            {"_id": i, "customer": f"customer {i} ünïcødé 🎉", "total": i * 1.5,
             "blob": bytes((i + k) % 256 for k in range(64)), "note": None if i % 3 else "x"}
            for i in range(2000)
        ])  # fmt: skip
        await client[name]["logs"].insert_one({"skip": True})
    finally:
        client.close()
    return name


async def seeded_mongo(executor: ExecutorContext, tmp_path: Path, server: MongoServer,
                       database: str, password: str | None = None) -> Seeded:  # fmt: skip
    return await seed(executor, tmp_path, engine=DatabaseEngine.MONGODB, host=server.host,
                      port=server.port, database_name=database, username=server.user,
                      password=password or server.password,
                      options={"exclude_collections": ["logs"]})  # fmt: skip


async def test_backup_restores_with_mongorestore(
    executor: ExecutorContext, tmp_path: Path, mongo_server: MongoServer, shop: str
) -> None:
    seeded = await seeded_mongo(executor, tmp_path, mongo_server, shop)
    job = await queue_backup(executor, seeded)
    await BackupRun(executor, job).execute()
    backup = await load_backup(executor, job.backup_id)
    assert backup.status is BackupStatus.SUCCEEDED, backup.error_message
    assert backup.artifact_key is not None
    archive = (
        zstandard.ZstdDecompressor()
        .decompressobj()
        .decompress((seeded.storage / backup.artifact_key).read_bytes())
    )
    assert archive.startswith(ARCHIVE_MAGIC)
    assert mongo_server.password not in (backup.log_tail or "")

    restored = unique_name("restored")
    config = tmp_path / "restore.yaml"
    config.touch(0o600)
    config.write_text(f"password: {json.dumps(mongo_server.password)}\n")
    subprocess.run(
        [_binaries()["mongorestore"], f"--config={config}", f"--host={mongo_server.host}",
         f"--port={mongo_server.port}", f"--username={mongo_server.user}",
         "--authenticationDatabase=admin", "--archive", f"--nsFrom={shop}.*",
         f"--nsTo={restored}.*"],
        input=archive, check=True, capture_output=True, timeout=120,
        env={"PATH": os.environ.get("PATH", "/usr/bin:/bin")},
    )  # fmt: skip
    assert await documents(mongo_server, restored) == await documents(mongo_server, shop)
    client = mongo_server.client()
    try:
        assert "logs" not in await client[restored].list_collection_names()
    finally:
        client.close()


async def test_wrong_password_and_missing_database(
    executor: ExecutorContext, tmp_path: Path, mongo_server: MongoServer, shop: str
) -> None:
    seeded = await seeded_mongo(executor, tmp_path, mongo_server, shop, password="wrong-pw-123")
    job = await queue_backup(executor, seeded)
    await BackupRun(executor, job).execute()
    backup = await load_backup(executor, job.backup_id)
    assert (backup.status, backup.error_code) == (BackupStatus.FAILED, "authentication_failed")
    assert "wrong-pw-123" not in (backup.error_message or "") + (backup.log_tail or "")
    assert stored_files(seeded.storage) == []

    missing = await seeded_mongo(executor, tmp_path, mongo_server, "no_such_db")
    job = await queue_backup(executor, missing)
    await BackupRun(executor, job).execute()
    backup = await load_backup(executor, job.backup_id)
    assert (backup.status, backup.error_code) == (BackupStatus.FAILED, "database_missing")
