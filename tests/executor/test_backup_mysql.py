"""MySQL/MariaDB backups end to end against a real MariaDB server and the real
mariadb-dump: the artifact restores (through the ``mariadb`` client) to the same rows,
triggers, routines and events; credentials travel only in a 0600 defaults file that
is gone afterwards; failures leave a failed row, no artifact and no password."""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import stat
import subprocess
from collections.abc import AsyncIterator, Iterator
from decimal import Decimal
from pathlib import Path
from typing import Any

import aiomysql
import pytest
import zstandard
from nats.aio.msg import Msg

from services.common.db.enums import BackupStatus, DatabaseEngine
from services.executor.adapters import adapter_for
from services.executor.adapters.base import Target
from services.executor.adapters.mysql import MySQLAdapter, defaults_file, installed_dump_tools
from services.executor.backup import BackupRun
from services.executor.context import ExecutorContext
from services.executor.manifest import MANIFEST_SUFFIX
from tests.executor.conftest import Seeded, load_backup, queue_backup, seed, stored_files
from tests.executor.standin.procfs import exposed
from tests.servers import Database, MariaDBServer, free_port, unique_name

pytestmark = pytest.mark.integration

SCHEMA = [
    """CREATE TABLE items (
        id INT PRIMARY KEY AUTO_INCREMENT,
        name VARCHAR(200) NOT NULL,
        name_upper VARCHAR(200) NULL,
        note TEXT NULL,
        price DECIMAL(10,2) NULL,
        data LONGBLOB NULL,
        created DATETIME(6) NULL,
        doc JSON NULL
    ) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4""",
    "CREATE TABLE secret_table (id INT PRIMARY KEY, v TEXT)",
    "INSERT INTO secret_table VALUES (1, 'only in the full dump')",
    """CREATE TRIGGER items_upper BEFORE INSERT ON items FOR EACH ROW
        SET NEW.name_upper = UPPER(NEW.name)""",
    """CREATE FUNCTION with_tax(amount DECIMAL(10,2)) RETURNS DECIMAL(10,2) DETERMINISTIC
        RETURN amount * 1.2""",
    "CREATE PROCEDURE count_items(OUT n INT) SELECT COUNT(*) INTO n FROM items",
]
EVENT = """CREATE EVENT purge_nothing ON SCHEDULE EVERY 1 DAY DISABLE
    DO DELETE FROM items WHERE id < 0"""
ROWS = 1500
TRICKY_PASSWORD = "p\"a\\ss #w'rd ü;=x"


def item(i: int) -> tuple[Any, ...]:
    return (
        f"item {i} — ünïcødé 漢字 🎉 'single' \"double\" back\\slash",
        None if i % 3 == 0 else f"line one\nline two\ttab {i}",
        None if i % 5 == 0 else Decimal(i) / 4,
        None if i % 7 == 0 else bytes((i + k) % 256 for k in range(256)).hex(),  # NUL ' \
        None if i % 11 == 0 else dt.datetime(2024, 1, 1, 12, 0, 0, i),
        None if i % 2 == 0 else json.dumps({"n": i, "tags": ["a", "ü"]}),
    )


async def connect(server: MariaDBServer, dbname: str) -> Any:
    return await aiomysql.connect(host=server.host, port=server.port, user=server.user,
                                  password=server.password, db=dbname, autocommit=True,
                                  charset="utf8mb4")  # fmt: skip


async def fill(server: MariaDBServer, dbname: str, rows: int = ROWS) -> None:
    conn = await connect(server, dbname)
    try:
        async with conn.cursor() as cur:
            for statement in SCHEMA:
                await cur.execute(statement)
            with pytest.warns(aiomysql.Warning, match="Event scheduler is switched off"):
                await cur.execute(EVENT)
            await cur.executemany(
                "INSERT INTO items (name, note, price, data, created, doc) "
                "VALUES (%s, %s, %s, UNHEX(%s), %s, %s)",  # aiomysql 0.3 cannot escape bytes
                [item(i) for i in range(1, rows + 1)],
            )
    finally:
        conn.close()


async def query(
    server: MariaDBServer, dbname: str, sql: str, *args: object
) -> list[tuple[Any, ...]]:
    conn = await connect(server, dbname)
    try:
        async with conn.cursor() as cur:
            await cur.execute(sql, args or None)
            return list(await cur.fetchall())
    finally:
        conn.close()


@pytest.fixture
async def shop_db(mariadb_server: MariaDBServer, mariadb_database: Database) -> Database:
    await fill(mariadb_server, mariadb_database.name)
    return mariadb_database


@pytest.fixture
def restored(mariadb_server: MariaDBServer) -> Iterator[str]:
    name = unique_name("restored")
    mariadb_server.create_database(name)
    try:
        yield name
    finally:
        mariadb_server.drop_database(name)


async def seeded_mariadb(executor: ExecutorContext, tmp_path: Path, server: MariaDBServer,
                         dbname: str, *, engine: DatabaseEngine = DatabaseEngine.MARIADB,
                         username: str | None = None, password: str | None = None,
                         options: dict[str, object] | None = None) -> Seeded:  # fmt: skip
    return await seed(
        executor, tmp_path, engine=engine, host=server.host, port=server.port,
        database_name=dbname, username=username or server.user,
        password=server.password if password is None else password, options=options,
    )  # fmt: skip


def restore(server: MariaDBServer, tmp_path: Path, dbname: str, sql: bytes) -> None:
    """Feed ``sql`` to the ``mariadb`` client; the password stays in a 0600 file."""
    config = tmp_path / "restore.cnf"
    config.touch(0o600)
    config.write_text(
        f"[client]\nhost={server.host}\nport={server.port}\nprotocol=TCP\n"
        f"user={server.user}\npassword={server.password}\n"
    )
    subprocess.run(
        ["mariadb", f"--defaults-extra-file={config}", "--default-character-set=utf8mb4", dbname],
        input=sql, check=True, capture_output=True, timeout=120,
    )  # fmt: skip


def decompress(data: bytes) -> bytes:
    return zstandard.ZstdDecompressor().decompressobj().decompress(data)


async def subscribe_events(executor: ExecutorContext) -> tuple[list[bytes], Any]:
    received: list[bytes] = []

    async def collect(msg: Msg) -> None:
        received.append(msg.data)

    return received, await executor.nc.subscribe("bm.v1.>", cb=collect)


async def test_backup_restores_rows_triggers_routines_and_events(
    executor: ExecutorContext,
    tmp_path: Path,
    mariadb_server: MariaDBServer,
    shop_db: Database,
    restored: str,
) -> None:
    seeded = await seeded_mariadb(executor, tmp_path, mariadb_server, shop_db.name)
    job = await queue_backup(executor, seeded)
    await BackupRun(executor, job).execute()

    backup = await load_backup(executor, job.backup_id)
    assert backup.status is BackupStatus.SUCCEEDED, backup.error_message
    assert backup.artifact_key is not None
    assert backup.artifact_key.endswith(f"-{job.backup_id}.sql.zst")
    artifact = seeded.storage / backup.artifact_key
    assert stored_files(seeded.storage) == sorted([artifact, Path(f"{artifact}{MANIFEST_SUFFIX}")])
    manifest = json.loads(Path(f"{artifact}{MANIFEST_SUFFIX}").read_text())
    assert manifest["database"]["engine"] == "mariadb"
    assert "MariaDB" in manifest["server_version"]
    assert manifest["tool_version"].startswith(("mariadb-dump", "mysqldump"))
    assert mariadb_server.password not in json.dumps(manifest)
    assert mariadb_server.password not in (backup.log_tail or "")

    dump = decompress(artifact.read_bytes())
    assert len(dump) == backup.bytes_in
    assert dump.startswith(MySQLAdapter.magic)
    assert b"-- MariaDB dump" in dump[:500] or b"-- MySQL dump" in dump[:500]
    assert b"CREATE DATABASE" not in dump  # restorable under another name

    await asyncio.to_thread(restore, mariadb_server, tmp_path, restored, dump)
    everything = "SELECT * FROM items ORDER BY id"
    original = await query(mariadb_server, shop_db.name, everything)
    assert len(original) == ROWS
    assert await query(mariadb_server, restored, everything) == original
    assert original[1][2] == original[1][1].upper()  # the trigger ran on insert

    await query(mariadb_server, restored, "INSERT INTO items (name) VALUES ('fresh')")
    assert await query(
        mariadb_server, restored, "SELECT name_upper FROM items WHERE name = 'fresh'"
    ) == [("FRESH",)]  # the trigger came back
    assert await query(mariadb_server, restored, "SELECT with_tax(10)") == [(Decimal("12.00"),)]
    routines = await query(mariadb_server, restored,
                           "SELECT routine_name FROM information_schema.routines "
                           "WHERE routine_schema = %s ORDER BY 1", restored)  # fmt: skip
    assert routines == [("count_items",), ("with_tax",)]
    events = await query(mariadb_server, restored,
                         "SELECT event_name FROM information_schema.events "
                         "WHERE event_schema = %s", restored)  # fmt: skip
    assert events == [("purge_nothing",)]


async def test_user_with_tricky_password_and_excluded_table(
    executor: ExecutorContext,
    tmp_path: Path,
    mariadb_server: MariaDBServer,
    shop_db: Database,
) -> None:
    """The ``mysql`` engine name, a password full of quoting traps (it must survive the
    option file), and an allow-listed option that reaches the tool."""
    user = unique_name("u")
    await query(mariadb_server, shop_db.name, "CREATE USER %s@'127.0.0.1' IDENTIFIED BY %s",
                user, TRICKY_PASSWORD)  # fmt: skip
    try:
        await query(mariadb_server, shop_db.name,
                    f"GRANT ALL ON `{shop_db.name}`.* TO '{user}'@'127.0.0.1'")  # fmt: skip
        # routines defined by someone else: SHOW CREATE FUNCTION reads mysql.proc
        await query(mariadb_server, shop_db.name,
                    f"GRANT SELECT ON mysql.proc TO '{user}'@'127.0.0.1'")  # fmt: skip
        seeded = await seeded_mariadb(
            executor, tmp_path, mariadb_server, shop_db.name, engine=DatabaseEngine.MYSQL,
            username=user, password=TRICKY_PASSWORD,
            options={"exclude_tables": ["secret_table"]},
        )  # fmt: skip
        job = await queue_backup(executor, seeded)
        await BackupRun(executor, job).execute()
        backup = await load_backup(executor, job.backup_id)
        assert backup.status is BackupStatus.SUCCEEDED, backup.error_message
        assert backup.artifact_key is not None
        dump = decompress((seeded.storage / backup.artifact_key).read_bytes())
        assert b"CREATE TABLE `items`" in dump
        assert b"secret_table" not in dump
    finally:
        await query(mariadb_server, shop_db.name, f"DROP USER '{user}'@'127.0.0.1'")


async def test_wrong_password_fails_clearly_and_leaks_nothing(
    executor: ExecutorContext,
    tmp_path: Path,
    mariadb_server: MariaDBServer,
    shop_db: Database,
    caplog: pytest.LogCaptureFixture,
) -> None:
    received, subscription = await subscribe_events(executor)
    seeded = await seeded_mariadb(executor, tmp_path, mariadb_server, shop_db.name,
                                  password="wrong-pw-123")  # fmt: skip
    job = await queue_backup(executor, seeded)
    await BackupRun(executor, job).execute()
    await executor.nc.flush()
    await subscription.unsubscribe()

    backup = await load_backup(executor, job.backup_id)
    assert (backup.status, backup.error_code) == (BackupStatus.FAILED, "authentication_failed")
    assert "check the username and password" in (backup.error_message or "")
    for text in (backup.error_message or "", backup.log_tail or "", caplog.text,
                 *(data.decode() for data in received)):  # fmt: skip
        assert "wrong-pw-123" not in text
    assert any(b"failed" in data for data in received)
    assert stored_files(seeded.storage) == []


async def test_missing_database_and_refused_port(
    executor: ExecutorContext,
    tmp_path: Path,
    mariadb_server: MariaDBServer,
) -> None:
    seeded = await seeded_mariadb(executor, tmp_path, mariadb_server, "no_such_db")
    job = await queue_backup(executor, seeded)
    await BackupRun(executor, job).execute()
    backup = await load_backup(executor, job.backup_id)
    assert (backup.status, backup.error_code) == (BackupStatus.FAILED, "database_missing")
    assert "'no_such_db' does not exist" in (backup.error_message or "")

    port = free_port()
    closed = await seed(executor, tmp_path, engine=DatabaseEngine.MARIADB, host="127.0.0.1",
                        port=port, database_name="x", username="u", password="p")  # fmt: skip
    job = await queue_backup(executor, closed)
    await BackupRun(executor, job).execute()
    backup = await load_backup(executor, job.backup_id)
    assert (backup.status, backup.error_code) == (BackupStatus.FAILED, "connection_refused")
    assert f"127.0.0.1:{port}" in (backup.error_message or "")
    assert stored_files(closed.storage) == []


async def test_probe_reports_version_size_and_latency(
    mariadb_server: MariaDBServer, shop_db: Database
) -> None:
    target = Target(engine="mariadb", host=mariadb_server.host, port=mariadb_server.port,
                    database=shop_db.name, username=mariadb_server.user,
                    password=mariadb_server.password)  # fmt: skip
    result = await adapter_for("mariadb").probe(target, 10)
    assert "MariaDB" in result.server_version
    assert result.database_size_bytes is not None
    assert result.database_size_bytes > 0
    assert result.latency_ms > 0


@pytest.fixture
async def locked_items(mariadb_server: MariaDBServer, shop_db: Database) -> AsyncIterator[Any]:
    """A session holding ``LOCK TABLES items WRITE``: a dump blocks on the table's rows
    until the test unlocks it, so its process can be inspected while it runs."""
    conn = await connect(mariadb_server, shop_db.name)
    try:
        async with conn.cursor() as cur:
            await cur.execute("LOCK TABLES items WRITE")
        yield conn
    finally:
        conn.close()


async def test_running_dump_exposes_no_password(
    executor: ExecutorContext,
    tmp_path: Path,
    mariadb_server: MariaDBServer,
    shop_db: Database,
    locked_items: Any,
) -> None:
    seeded = await seeded_mariadb(executor, tmp_path, mariadb_server, shop_db.name)
    job = await queue_backup(executor, seeded)
    run = BackupRun(executor, job)
    task = asyncio.create_task(run.execute())
    try:
        async with asyncio.timeout(60):
            while not await _dump_is_waiting(mariadb_server, shop_db.name):
                await asyncio.sleep(0.05)
        assert run.tool is not None
        tree = exposed(run.tool.pid)
        assert tree
        assert tree[0].pid == run.tool.pid
        argv = tree[0].cmdline.split(b"\0")
        assert Path(argv[0].decode()).name in ("mariadb-dump", "mysqldump")
        assert argv[1].startswith(b"--defaults-extra-file=")  # must be the first argument
        for process in tree:
            assert not process.mentions(mariadb_server.password), process.pid
            assert b"MYSQL_PWD" not in process.environ
        config = Path(argv[1].split(b"=", 1)[1].decode())
        assert stat.S_IMODE(config.stat().st_mode) == 0o600
        assert mariadb_server.password in config.read_text()
    finally:
        async with locked_items.cursor() as cur:
            await cur.execute("UNLOCK TABLES")
        await task
    backup = await load_backup(executor, job.backup_id)
    assert backup.status is BackupStatus.SUCCEEDED, backup.error_message
    assert not config.exists()  # the defaults file is deleted after the dump


async def _dump_is_waiting(server: MariaDBServer, dbname: str) -> bool:
    rows = await query(server, dbname,
                       "SELECT COUNT(*) FROM information_schema.processlist "
                       "WHERE db = %s AND state LIKE 'Waiting for table%%'", dbname)  # fmt: skip
    return bool(rows[0][0])


def test_defaults_file_quotes_every_trap() -> None:
    tool = installed_dump_tools()[0] if installed_dump_tools() else None
    if tool is None:
        pytest.skip("mariadb-dump not found: apt-get install mariadb-client")
    target = Target(engine="mysql", host="db.example", port=3306, database="shop",
                    username="app", password=TRICKY_PASSWORD + "\n")  # fmt: skip
    text = defaults_file(target, tool)
    assert text.startswith("[client]\n")
    assert 'password="p\\"a\\\\ss #w\'rd ü;=x\\n"\n' in text
    assert "protocol=TCP" in text


def test_stderr_errors_are_recognised() -> None:
    adapter = MySQLAdapter()
    assert adapter.stderr_error("mariadb-dump: Got error: 1045: Access denied") is not None
    assert adapter.stderr_error("mysqldump: Couldn't execute 'SHOW x': boom (1146)") is not None
    assert adapter.stderr_error("Warning: Couldn't read keys from table t; not sorted") is None
    assert (
        adapter.stderr_error(
            "mysqldump: [Warning] Using a password on the command line interface can be insecure."
        )
        == "the dump tool warned that a password was on its command line"
    )
    assert adapter.stderr_error("") is None
