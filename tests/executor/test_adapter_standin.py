"""The MongoDB adapter without a MongoDB server (mongod and mongodump are not
installable here): a stand-in ``mongodump`` on PATH checks what the adapter gives it —
argv and environment without the password, a 0600 ``--config`` file holding it — and
streams a fake archive through a full BackupRun. Only the probe is replaced, because
it needs a server; its error translation is tested against a closed port and a
silent one."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import os
import stat
import sys
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
import zstandard

from services.common.db.enums import BackupStatus, DatabaseEngine
from services.executor.adapters import adapter_for, mongodb
from services.executor.adapters.base import DatabaseError, ProbeResult, Target
from services.executor.adapters.mongodb import ARCHIVE_MAGIC, MongoAdapter, config_yaml
from services.executor.backup import BackupRun
from services.executor.context import ExecutorContext
from services.executor.manifest import MANIFEST_SUFFIX
from tests.executor.conftest import Seeded, load_backup, queue_backup, seed, stored_files
from tests.executor.standin.procfs import exposed
from tests.servers import free_port

STANDIN = Path(__file__).parent / "standin" / "mongodump"
PASSWORD = "mongo: p@ss #1 \"quoted\" 'single' \\ ü"
FAKE_SERVER_VERSION = "7.0.0-standin"


@pytest.fixture
def standin_bin(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """A directory on PATH holding the stand-in mongodump (run by this interpreter)."""
    directory = tmp_path / "bin"
    directory.mkdir()
    script = directory / "mongodump"
    body = STANDIN.read_text().split("\n", 1)[1]
    script.write_text(f"#!{sys.executable}\n{body}")
    script.chmod(0o755)
    monkeypatch.setenv("PATH", f"{directory}{os.pathsep}{os.environ.get('PATH', '')}")
    mongodump_cache_clear()
    yield directory
    mongodump_cache_clear()


def mongodump_cache_clear() -> None:
    mongodb.mongodump.cache_clear()


@pytest.fixture
def no_probe(monkeypatch: pytest.MonkeyPatch) -> None:
    """The probe needs a real server; the dump path does not."""

    async def probe(self: MongoAdapter, target: Target, timeout_s: float) -> ProbeResult:
        return ProbeResult(FAKE_SERVER_VERSION, 1.0, 4096)

    monkeypatch.setattr(MongoAdapter, "probe", probe)


async def seeded_mongo(executor: ExecutorContext, tmp_path: Path, database: str = "shop",
                       options: dict[str, object] | None = None) -> Seeded:  # fmt: skip
    return await seed(
        executor, tmp_path, engine=DatabaseEngine.MONGODB, host="127.0.0.1", port=27017,
        database_name=database, username="backup", password=PASSWORD,
        options=options if options is not None else {"exclude_collections": ["logs"]},
    )  # fmt: skip


async def wait_for_report(directory: Path) -> dict[str, Any]:
    report = directory / "mongodump-report.json"
    async with asyncio.timeout(30):
        while True:
            with contextlib.suppress(OSError, ValueError):
                loaded: dict[str, Any] = json.loads(report.read_text())
                return loaded
            await asyncio.sleep(0.01)


@contextlib.asynccontextmanager
async def running(run: BackupRun, directory: Path) -> AsyncIterator[dict[str, Any]]:
    """Start ``run``; inside the block the stand-in is running and waiting for release."""
    task = asyncio.create_task(run.execute())
    try:
        yield await wait_for_report(directory)
    finally:
        (directory / "release").touch()
        await task


async def test_full_run_through_the_standin(
    executor: ExecutorContext, tmp_path: Path, standin_bin: Path, no_probe: None
) -> None:
    seeded = await seeded_mongo(executor, tmp_path)
    job = await queue_backup(executor, seeded)
    run = BackupRun(executor, job)
    async with running(run, standin_bin) as report:
        # what the running process exposes to anyone on the machine
        assert run.tool is not None
        tree = exposed(run.tool.pid)
        assert [process.pid for process in tree][:1] == [report["pid"]]
        for process in tree:
            assert not process.mentions(PASSWORD)
            assert b"p@ss" not in process.cmdline + process.environ
        # what the stand-in saw from the inside
        argv: list[str] = report["argv"]
        assert PASSWORD not in " ".join(argv)
        assert argv[0] == f"--config={report['config_path']}"
        assert {"--host=127.0.0.1", "--port=27017", "--username=backup",
                "--authenticationDatabase=admin", "--db=shop",
                "--excludeCollection=logs", "--archive"} <= set(argv)  # fmt: skip
        assert not any(arg.startswith(("--password", "--uri")) for arg in argv)
        assert set(report["environ"]) <= {"PATH", "LC_CTYPE"}  # nothing else, no secret
        assert PASSWORD not in json.dumps(report["environ"])
        assert report["config_mode"] == 0o600
        assert yaml.safe_load(report["config"]) == {"password": PASSWORD}
        config = Path(report["config_path"])
        assert config.exists()
        assert stat.S_IMODE(config.stat().st_mode) == 0o600

    assert not config.exists()  # deleted when the dump ended
    backup = await load_backup(executor, job.backup_id)
    assert backup.status is BackupStatus.SUCCEEDED, backup.error_message
    assert backup.artifact_key is not None
    assert backup.artifact_key.endswith(f"-{job.backup_id}.archive.zst")
    artifact = seeded.storage / backup.artifact_key
    assert stored_files(seeded.storage) == sorted([artifact, Path(f"{artifact}{MANIFEST_SUFFIX}")])
    dump = zstandard.ZstdDecompressor().decompressobj().decompress(artifact.read_bytes())
    assert dump.startswith(ARCHIVE_MAGIC)
    assert len(dump) == backup.bytes_in == 4 + 4 * 1024 * 1024
    assert hashlib.sha256(dump).hexdigest() == (
        (standin_bin / "mongodump-output.sha256").read_text()
    )
    manifest = json.loads(Path(f"{artifact}{MANIFEST_SUFFIX}").read_text())
    assert manifest["database"]["engine"] == "mongodb"
    assert manifest["server_version"] == FAKE_SERVER_VERSION
    assert manifest["tool_version"] == "mongodump version: 100.0.0-standin"
    assert PASSWORD not in json.dumps(manifest) + (backup.log_tail or "")
    assert "done dumping shop.orders" in (backup.log_tail or "")


@pytest.mark.parametrize(
    ("database", "code", "fragment"),
    [
        ("standin_fails_midway", "dump_failed", "connection reset"),
        ("standin_error_exit0", "dump_error", "cursor killed"),
    ],
)
async def test_tool_failures_leave_no_artifact(
    executor: ExecutorContext,
    tmp_path: Path,
    standin_bin: Path,
    no_probe: None,
    database: str,
    code: str,
    fragment: str,
) -> None:
    seeded = await seeded_mongo(executor, tmp_path, database=database)
    job = await queue_backup(executor, seeded)
    async with running(BackupRun(executor, job), standin_bin) as report:
        config = Path(report["config_path"])
    assert not config.exists()
    backup = await load_backup(executor, job.backup_id)
    assert (backup.status, backup.error_code) == (BackupStatus.FAILED, code)
    assert fragment in (backup.error_message or "")
    assert PASSWORD not in (backup.error_message or "") + (backup.log_tail or "")
    assert stored_files(seeded.storage) == []


async def test_missing_mongodump_is_named(
    executor: ExecutorContext,
    tmp_path: Path,
    no_probe: None,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    empty = tmp_path / "empty-bin"
    empty.mkdir()
    monkeypatch.setenv("PATH", str(empty))
    mongodump_cache_clear()
    try:
        seeded = await seeded_mongo(executor, tmp_path)
        job = await queue_backup(executor, seeded)
        await BackupRun(executor, job).execute()
    finally:
        mongodump_cache_clear()
    backup = await load_backup(executor, job.backup_id)
    assert (backup.status, backup.error_code) == (BackupStatus.FAILED, "tool_missing")
    assert "mongodump is not installed" in (backup.error_message or "")


def test_config_file_survives_any_password() -> None:
    for password in (PASSWORD, "", "a\nb\tc", "{[&*!|>%@`", "- item", "null", "yes", "0x10"):
        target = Target(engine="mongodb", host="h", port=1, database="d", username="u",
                        password=password)  # fmt: skip
        assert yaml.safe_load(config_yaml(target)) == {"password": password}


def test_stderr_failed_lines() -> None:
    adapter = MongoAdapter()
    ok = "2024-05-01T10:00:00.000+0000\twriting shop.errors to archive on stdout\n"
    assert adapter.stderr_error(ok) is None
    line = "2024-05-01T10:00:01.000+0000\tFailed: can't create session: auth error"
    assert adapter.stderr_error(ok + line) == line


async def test_probe_of_a_closed_port_is_refused() -> None:
    port = free_port()
    target = Target(engine="mongodb", host="127.0.0.1", port=port, database="shop",
                    username="backup", password=PASSWORD)  # fmt: skip
    with pytest.raises(DatabaseError) as info:
        await adapter_for("mongodb").probe(target, 1.5)
    assert info.value.code == "connection_refused"
    assert f"127.0.0.1:{port}" in str(info.value)
    assert PASSWORD not in str(info.value)


async def test_probe_of_a_silent_server_times_out() -> None:
    accepted: list[asyncio.StreamWriter] = []

    async def hold(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        accepted.append(writer)  # accept, never answer

    server = await asyncio.start_server(hold, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    target = Target(engine="mongodb", host="127.0.0.1", port=port, database="shop",
                    username="", password=None)  # fmt: skip
    try:
        with pytest.raises(DatabaseError) as info:
            await adapter_for("mongodb").probe(target, 1.0)
        assert info.value.code == "timeout"
    finally:
        for writer in accepted:
            writer.close()
        server.close()
        await server.wait_closed()


def test_standin_is_executable() -> None:
    assert os.access(STANDIN, os.X_OK), f"chmod +x {STANDIN}"
