"""MongoDB restores without a MongoDB server (mongod and the Database Tools are not
installable here), the way ``test_adapter_standin.py`` covers backups: stand-in
``mongodump`` and ``mongorestore`` scripts on PATH. A backup made through the
stand-in dump is restored through the stand-in restore, which reports what it was
given: the verified archive bytes on stdin, ``--archive`` with ``--nsFrom``/``--nsTo``
renaming to the target database, ``--drop`` only in replace mode, the password only
in a 0600 ``--config`` file (gone afterwards), nothing secret in argv or environment.
A tool failing midway, or logging ``Failed:`` with exit 0, fails the restore.

**Fake parts:** the adapter's ``probe``, ``prepare_restore`` (into-empty check) and
``count_objects`` are replaced, because they need a server. With a real server,
``test_backup_mongodb.py``-style tests would run them (they skip naming mongod)."""

from __future__ import annotations

import json
import os
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path

import bson
import pytest
import yaml

from proto.jobs import RestoreRequested
from services.common.db.enums import BackupStatus, RestoreMode, RestoreStatus
from services.common.db.models import Restore
from services.executor.adapters import mongodb
from services.executor.adapters.base import Counts, ProbeResult, Target
from services.executor.adapters.mongodb import (
    ARCHIVE_MAGIC,
    MongoAdapter,
    archive_databases,
    mongorestore_argv,
)
from services.executor.backup import BackupRun
from services.executor.context import ExecutorContext
from services.executor.restore import RestoreRun
from tests.executor.conftest import Seeded, load_backup, queue_backup
from tests.executor.test_adapter_standin import PASSWORD, running, seeded_mongo

STANDINS = Path(__file__).parent / "standin"


@pytest.fixture
def standins(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    directory = tmp_path / "bin"
    directory.mkdir()
    for name in ("mongodump", "mongorestore"):
        body = (STANDINS / name).read_text().split("\n", 1)[1]
        script = directory / name
        script.write_text(f"#!{sys.executable}\n{body}")
        script.chmod(0o755)
    monkeypatch.setenv("PATH", f"{directory}{os.pathsep}{os.environ.get('PATH', '')}")
    mongodb.mongodump.cache_clear()
    mongodb.mongorestore.cache_clear()
    yield directory
    mongodb.mongodump.cache_clear()
    mongodb.mongorestore.cache_clear()


@pytest.fixture
def no_server(monkeypatch: pytest.MonkeyPatch) -> list[tuple[str, str]]:
    """Replace what needs a MongoDB server; records prepare_restore calls."""
    prepared: list[tuple[str, str]] = []

    async def probe(self: MongoAdapter, target: Target, timeout_s: float) -> ProbeResult:
        return ProbeResult("7.0.0-standin", 1.0, 4096)

    async def prepare(self: MongoAdapter, target: Target, mode: str) -> None:
        prepared.append((target.database, mode))

    async def count(self: MongoAdapter, target: Target) -> Counts:
        return Counts("documents", {"orders": 4})

    monkeypatch.setattr(MongoAdapter, "probe", probe)
    monkeypatch.setattr(MongoAdapter, "prepare_restore", prepare)
    monkeypatch.setattr(MongoAdapter, "count_objects", count)
    return prepared


async def backed_up(
    executor: ExecutorContext, tmp_path: Path, bin_dir: Path
) -> tuple[Seeded, uuid.UUID]:
    seeded = await seeded_mongo(executor, tmp_path)
    job = await queue_backup(executor, seeded)
    async with running(BackupRun(executor, job), bin_dir):
        pass
    backup = await load_backup(executor, job.backup_id)
    assert backup.status is BackupStatus.SUCCEEDED, backup.error_message
    assert (backup.manifest or {})["counts"]["objects"] == {"orders": 4}
    return seeded, job.backup_id


async def restore(executor: ExecutorContext, seeded: Seeded, backup_id: uuid.UUID, name: str,
                  mode: RestoreMode = RestoreMode.INTO_EMPTY) -> Restore:  # fmt: skip
    async with executor.sessions() as session, session.begin():
        row = Restore(backup_id=backup_id, target_database_id=seeded.database.id,
                      target_name=name, mode=mode)  # fmt: skip
        session.add(row)
    job = RestoreRequested(restore_id=row.id, project_id=seeded.project.id, backup_id=backup_id,
                           target_database_id=seeded.database.id, target_database_name=name,
                           mode=mode)  # fmt: skip
    await RestoreRun(executor, job).execute()
    async with executor.sessions() as session:
        final = await session.get(Restore, row.id)
        assert final is not None
        return final


async def test_restore_through_the_standin(
    executor: ExecutorContext, tmp_path: Path, standins: Path, no_server: list[tuple[str, str]]
) -> None:
    seeded, backup_id = await backed_up(executor, tmp_path, standins)
    dump_sha = (standins / "mongodump-output.sha256").read_text()

    result = await restore(executor, seeded, backup_id, "shop_copy")
    assert result.status is RestoreStatus.SUCCEEDED, result.error_message
    assert no_server == [("shop_copy", "into-empty")]
    report = json.loads((standins / "mongorestore-report.json").read_text())
    assert report["sha256"] == dump_sha  # exactly the verified, decompressed archive
    argv: list[str] = report["argv"]
    assert argv[0] == f"--config={report['config_path']}"
    assert {"--host=127.0.0.1", "--port=27017", "--username=backup",
            "--authenticationDatabase=admin", "--nsFrom=shop.*", "--nsTo=shop_copy.*",
            "--archive", "--stopOnError"} <= set(argv)  # fmt: skip
    assert "--drop" not in argv
    assert PASSWORD not in " ".join(argv) + json.dumps(report["environ"])
    assert report["config_mode"] == 0o600
    assert yaml.safe_load(report["config"]) == {"password": PASSWORD}
    assert not Path(report["config_path"]).exists()
    assert "finished restoring" in (result.log_tail or "")

    replaced = await restore(executor, seeded, backup_id, "shop", RestoreMode.REPLACE)
    assert replaced.status is RestoreStatus.SUCCEEDED, replaced.error_message
    argv = json.loads((standins / "mongorestore-report.json").read_text())["argv"]
    assert "--drop" in argv
    assert "--nsInclude=shop.*" in argv  # same name: no renaming


@pytest.mark.parametrize(
    ("name", "code", "fragment"),
    [("standin_fails_midway", "restore_failed", "connection reset"),
     ("standin_error_exit0", "restore_error", "duplicate key")],
)  # fmt: skip
async def test_tool_failures_fail_the_restore(
    executor: ExecutorContext, tmp_path: Path, standins: Path, no_server: list[tuple[str, str]],
    name: str, code: str, fragment: str,
) -> None:  # fmt: skip
    seeded, backup_id = await backed_up(executor, tmp_path, standins)
    result = await restore(executor, seeded, backup_id, name)
    assert (result.status, result.error_code) == (RestoreStatus.FAILED, code), (
        result.error_message,
        result.log_tail,
    )
    assert fragment in (result.error_message or ""), result.log_tail
    assert PASSWORD not in (result.error_message or "") + (result.log_tail or "")


def test_archive_prelude_names_its_database() -> None:
    header = bson.encode({"concurrent_collections": 4, "version": "0.1"})
    collections = [bson.encode({"db": "shop", "collection": c, "metadata": "", "size": 0})
                   for c in ("orders", "users")]  # fmt: skip
    archive = ARCHIVE_MAGIC + header + b"".join(collections) + b"\xff\xff\xff\xff" + b"body"
    assert archive_databases(archive) == ["shop"]
    assert MongoAdapter().dumped_database(archive) == "shop"
    assert archive_databases(archive[:20]) == []  # cut short: nothing certain
    assert archive_databases(b"not an archive") == []


def test_restore_argv_without_a_known_source() -> None:
    target = Target(engine="mongodb", host="h", port=1, database="copy", username="",
                    password=None)  # fmt: skip
    argv = mongorestore_argv("mongorestore", target, "/c.yaml", mode="into-empty",
                             source_database="")  # fmt: skip
    assert argv == ["mongorestore", "--config=/c.yaml", "--host=h", "--port=1",
                    "--nsInclude=copy.*", "--archive", "--stopOnError"]  # fmt: skip


def test_standin_is_executable() -> None:
    assert os.access(STANDINS / "mongorestore", os.X_OK), "chmod +x"
