"""How a backup fails: a tool that dies halfway, stalls, runs past the timeout,
prints something that is not a dump, or reports an error; a cancelled run; a real
pg_dump killed mid-stream. Each ends with a failed row naming the cause, no
artifact and no temporary file, and no process left behind."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import os
import signal
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import ClassVar

import pytest

from services.common.db.enums import BackupStatus, DatabaseEngine
from services.common.destinations import local
from services.common.destinations.base import Writer
from services.common.destinations.local import LocalDriver, LocalWriter
from services.executor import adapters
from services.executor.adapters.base import Adapter, DumpSpec, ProbeResult, Target
from services.executor.backup import BackupRun
from services.executor.context import ExecutorContext
from tests.executor.conftest import Seeded, load_backup, queue_backup, seed, stored_files
from tests.executor.test_local_read_back import flip_byte
from tests.servers import Database, PostgresServer

pytestmark = pytest.mark.integration
STANDIN = Path(__file__).parent / "standin" / "dump_tool.py"


class ScriptAdapter(Adapter):
    """Runs the stand-in tool in a given mode instead of pg_dump."""

    engine: ClassVar[str] = "postgresql"
    default_port: ClassVar[int] = 5432
    magic: ClassVar[tuple[bytes, ...]] = (b"PGDMP",)
    mode = "ok"

    async def probe(self, target: Target, timeout_s: float) -> ProbeResult:
        return ProbeResult("15.0", 0.1)

    @contextlib.asynccontextmanager
    async def dump_command(self, target: Target, server_version: str) -> AsyncIterator[DumpSpec]:
        yield DumpSpec([sys.executable, str(STANDIN), self.mode], {}, "test", "pgdump")


@pytest.fixture
def script_adapter(monkeypatch: pytest.MonkeyPatch) -> ScriptAdapter:
    adapter = ScriptAdapter()
    monkeypatch.setitem(adapters.ADAPTERS, "postgresql", adapter)
    return adapter


async def seeded(executor: ExecutorContext, tmp_path: Path) -> Seeded:
    return await seed(
        executor, tmp_path, engine=DatabaseEngine.POSTGRESQL, host="127.0.0.1", port=5432,
        database_name="db", username="u", password="pw-secret",
    )  # fmt: skip


def no_leftovers(storage: Path) -> None:
    assert stored_files(storage) == [], "partial or temporary files were left behind"


def standin_processes() -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            with contextlib.suppress(OSError):
                if str(STANDIN).encode() in (entry / "cmdline").read_bytes():
                    found.append(int(entry.name))
    return found


@pytest.mark.parametrize(
    ("mode", "code", "words"),
    [
        ("die", "dump_failed", "exited with code -9"),
        ("exit-code", "dump_failed", "connection to server lost"),
        ("garbage", "invalid_dump", "does not look like a postgresql dump"),
        ("empty", "empty_dump", "produced no output"),
        ("stderr-error", "dump_error", "could not read block 7"),
    ],
)
async def test_broken_dumps_fail_and_store_nothing(
    executor: ExecutorContext, tmp_path: Path, script_adapter: ScriptAdapter,
    mode: str, code: str, words: str,
) -> None:  # fmt: skip
    script_adapter.mode = mode
    data = await seeded(executor, tmp_path)
    job = await queue_backup(executor, data)
    await BackupRun(executor, job).execute()
    backup = await load_backup(executor, job.backup_id)
    assert backup.status is BackupStatus.FAILED
    assert backup.error_code == code
    assert words in (backup.error_message or "")
    assert backup.finished_at is not None
    no_leftovers(data.storage)
    assert standin_processes() == []


async def test_stall_is_detected(
    executor: ExecutorContext, tmp_path: Path, script_adapter: ScriptAdapter,
    monkeypatch: pytest.MonkeyPatch,
) -> None:  # fmt: skip
    monkeypatch.setattr(executor, "settings", executor.settings.model_copy(
        update={"stall_timeout_s": 1.0, "progress_interval_s": 0.2}))  # fmt: skip
    script_adapter.mode = "stall"
    data = await seeded(executor, tmp_path)
    job = await queue_backup(executor, data)
    await BackupRun(executor, job).execute()
    backup = await load_backup(executor, job.backup_id)
    assert (backup.status, backup.error_code) == (BackupStatus.FAILED, "stalled")
    assert "no bytes from the dump tool for 1s" in (backup.error_message or "")
    no_leftovers(data.storage)
    assert standin_processes() == []


async def test_timeout_stops_the_run(
    executor: ExecutorContext,
    tmp_path: Path,
    script_adapter: ScriptAdapter,
) -> None:
    script_adapter.mode = "slow"
    data = await seeded(executor, tmp_path)
    job = await queue_backup(executor, data, timeout_s=2)
    await BackupRun(executor, job).execute()
    backup = await load_backup(executor, job.backup_id)
    assert (backup.status, backup.error_code) == (BackupStatus.FAILED, "timeout")
    assert "within 2s" in (backup.error_message or "")
    no_leftovers(data.storage)
    assert standin_processes() == []


async def test_cancelled_run_cleans_up_and_stays_for_redelivery(
    executor: ExecutorContext,
    tmp_path: Path,
    script_adapter: ScriptAdapter,
) -> None:
    script_adapter.mode = "slow"
    data = await seeded(executor, tmp_path)
    job = await queue_backup(executor, data)
    run = BackupRun(executor, job)
    task = asyncio.create_task(run.execute())
    async with asyncio.timeout(10):
        while run.stats.bytes_in < 1 << 20:
            await asyncio.sleep(0.05)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    backup = await load_backup(executor, job.backup_id)
    assert backup.status is BackupStatus.RUNNING  # the job goes back to the queue
    no_leftovers(data.storage)
    assert standin_processes() == []


async def test_real_pg_dump_killed_mid_stream(
    executor: ExecutorContext,
    tmp_path: Path,
    pg_server: PostgresServer,
    pg_database: Database,
) -> None:
    pg_server.execute(
        "CREATE TABLE big AS SELECT i, repeat(md5(i::text), 8) AS filler "
        "FROM generate_series(1, 400000) AS i", dbname=pg_database.name,
    )  # fmt: skip
    data = await seed(executor, tmp_path, engine=DatabaseEngine.POSTGRESQL, host=pg_server.host,
                      port=pg_server.port, database_name=pg_database.name,
                      username=pg_server.user, password=pg_server.password)  # fmt: skip
    job = await queue_backup(executor, data)
    run = BackupRun(executor, job)
    task = asyncio.create_task(run.execute())
    async with asyncio.timeout(30):
        while run.tool is None or run.stats.bytes_in == 0:
            await asyncio.sleep(0.01)
    pid = run.tool.pid
    # While it runs: the password is in neither the argv nor the environment.
    for name in ("cmdline", "environ"):
        assert pg_server.password.encode() not in Path(f"/proc/{pid}/{name}").read_bytes()
    os.killpg(pid, signal.SIGKILL)
    await task
    backup = await load_backup(executor, job.backup_id)
    assert (backup.status, backup.error_code) == (BackupStatus.FAILED, "dump_failed")
    no_leftovers(data.storage)


async def test_a_local_copy_is_checked_by_its_read_back(
    executor: ExecutorContext, tmp_path: Path, script_adapter: ScriptAdapter,
    monkeypatch: pytest.MonkeyPatch,
) -> None:  # fmt: skip
    """No second read of the whole artifact after the commit: the local writer read
    it back while it wrote, and its digest is the file's."""

    async def no_full_read(driver: LocalDriver, key: str) -> tuple[int, str]:
        raise AssertionError("the artifact was read back whole after the commit")

    monkeypatch.setattr(LocalDriver, "sha256", no_full_read)
    data = await seeded(executor, tmp_path)
    job = await queue_backup(executor, data)
    await BackupRun(executor, job).execute()
    backup = await load_backup(executor, job.backup_id)
    assert backup.status is BackupStatus.SUCCEEDED, backup.error_message
    [artifact, _] = stored_files(data.storage)
    assert hashlib.sha256(artifact.read_bytes()).hexdigest() == backup.sha256


@pytest.mark.parametrize(
    "damage",
    ["truncated after the commit", "changed before it was read back",
     "replaced after the commit", "changed after the commit, no read-back while writing"],
)  # fmt: skip
async def test_a_stored_copy_that_differs_is_detected(
    executor: ExecutorContext, tmp_path: Path, script_adapter: ScriptAdapter,
    monkeypatch: pytest.MonkeyPatch, damage: str,
) -> None:  # fmt: skip
    """The read-back check: a disk that loses or flips a byte, or a file swapped under
    the artifact's name. The local writer reads its bytes back while it writes; a
    writer that cannot (``Writer.read_back`` of the base class) has the artifact read
    back whole after the commit."""
    data = await seeded(executor, tmp_path)
    commit, read_at = LocalWriter.commit, local._read_at
    damaged: list[Path] = []

    async def commit_then_damage(writer: LocalWriter) -> None:
        await commit(writer)
        if damaged:
            return  # (the manifest, if the damage went unnoticed)
        [artifact] = damaged[:] = stored_files(data.storage)
        if damage == "truncated after the commit":
            os.truncate(artifact, artifact.stat().st_size - 1)
        elif damage == "replaced after the commit":
            other = artifact.with_name("other")
            other.write_bytes(bytes(artifact.stat().st_size))
            other.replace(artifact)
        else:
            flip_byte(artifact, 10)

    def damage_then_read(fd: int, buffer: memoryview, offset: int) -> int:
        if not damaged:  # the first read back: change the bytes it is about to read
            [partial] = damaged[:] = stored_files(data.storage)
            flip_byte(partial, offset + 10)
        return read_at(fd, buffer, offset)

    if damage == "changed before it was read back":
        monkeypatch.setattr(local, "_read_at", damage_then_read)
    else:
        monkeypatch.setattr(LocalWriter, "commit", commit_then_damage)
    if damage.endswith("no read-back while writing"):
        monkeypatch.setattr(LocalWriter, "read_back", Writer.read_back)
    job = await queue_backup(executor, data)
    await BackupRun(executor, job).execute()
    backup = await load_backup(executor, job.backup_id)
    assert damaged
    assert (backup.status, backup.error_code) == (BackupStatus.FAILED, "verify_mismatch")
    assert "differs from what was written" in (backup.error_message or "")
    no_leftovers(data.storage)
