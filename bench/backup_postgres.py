"""PostgreSQL backup throughput and memory: the executor's backup (trigger to
completed) against the shell pipeline ``pg_dump -Fc -Z0 | zstd -T0 -3 > file``,
measured in the same run on the same generated database.

A real PostgreSQL (``tests/servers.py``) gets one generated database per size:
customers, orders (text notes, numerics, timestamps, JSONB line items), events
(JSONB payloads) and attachments (random bytes), filled until
``pg_database_size`` reaches the size asked for. For each size, after one warm-up
dump that reads every table into the page cache, the baseline and the executor
run alternately ``--repeat`` times (default 3); the best wall time of each is
compared. Wall times suffer from anything else running on the machine, so the CPU
seconds of both sides and the load average are printed too.

The executor runs the real path — ``BackupRun(ctx, job).execute()`` with a migrated
SQLite metadata DB, a real NATS, and a local destination — in a child process of
its own, so its peak RSS (``VmHWM``) is the executor's alone (pg_dump is a
grandchild and not counted). Like ``ExecutorService.start``, the child calls
``prepare_for_jobs`` (installed pg_dumps found, ORM mappings configured, start-up
heap frozen) before the timed run. It also notes when pg_dump starts
(``Tool.start``) and when the artifact's commit begins (``LocalWriter.commit``: its
last byte written), to show the run's fixed cost before the stream and the work
left after it.

Targets (issue 4): wall-time ratio executor/baseline <= 1.10 (judged at the largest
size, ~1 GiB as the issue states it; smaller sizes are shown); executor peak RSS
<= 100 MiB at every size and not growing with the database size (compared as the
median peak of the runs of the smallest and the largest size).

    .venv/bin/python bench/backup_postgres.py                 # 100 MiB and 1 GiB
    .venv/bin/python bench/backup_postgres.py --quick         # 50 and 100 MiB
    .venv/bin/python bench/backup_postgres.py --size-mib 200 --size-mib 2048 --repeat 5
    .venv/bin/python bench/backup_postgres.py --quick --py-spy /path/to/py-spy

``--py-spy`` adds one profiled executor run per size (not timed) and writes a
speedscope profile per size to ``bench/results/``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import asyncpg

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from proto.codec import decode, encode  # noqa: E402
from proto.jobs import BackupRequested  # noqa: E402
from proto.values import Compression, Trigger  # noqa: E402
from services.common.db.engine import create_engine, session_factory  # noqa: E402
from services.common.db.enums import BackupStatus, DatabaseEngine, DestinationKind  # noqa: E402
from services.common.db.models import Backup, Database, Destination, Project  # noqa: E402
from services.common.secrets import resolve_secrets  # noqa: E402
from services.common.settings import Settings  # noqa: E402
from services.executor.adapters.pg_tools import choose_pg_dump  # noqa: E402

# The executor child imports this module too: what only the parent needs (the test
# servers, alembic for migrations) is imported where it is used, so the child's RSS
# is what the executor itself holds.
if TYPE_CHECKING:
    from tests.servers import PostgresServer

TARGET_RATIO = 1.10
TARGET_RSS_MIB = 100.0
RSS_GROWTH_TOLERANCE_MIB = 5.0  # "not growing": largest size within this of the smallest
MIB = 1 << 20
RESULTS = REPO / "bench" / "results"


# -- data --------------------------------------------------------------------------

SCHEMA = """
CREATE TABLE customers (
    id bigint PRIMARY KEY, name text NOT NULL, email text NOT NULL, country char(2),
    created_at timestamptz NOT NULL, balance numeric(12, 2), active boolean);
CREATE TABLE orders (
    id bigint PRIMARY KEY, customer_id bigint NOT NULL, placed_at timestamptz NOT NULL,
    status text NOT NULL, total numeric(12, 2), quantity int, discount real,
    note text, items jsonb);
CREATE INDEX orders_customer ON orders (customer_id);
CREATE INDEX orders_placed_at ON orders (placed_at);
CREATE TABLE events (
    id bigint PRIMARY KEY, at timestamptz NOT NULL, kind text NOT NULL, payload jsonb);
CREATE INDEX events_at ON events (at);
CREATE TABLE attachments (
    id bigint PRIMARY KEY, order_id bigint NOT NULL, name text, mime text, content bytea);
"""

WORDS = [
    "the", "quick", "brown", "fox", "jumps", "over", "lazy", "dog", "order", "shipped",
    "delayed", "customer", "asked", "refund", "invoice", "paid", "warehouse", "Berlin",
    "Lisbon", "Osaka", "parcel", "fragile", "express", "standard", "return", "damaged",
    "replacement", "coupon", "loyalty", "gift", "wrap", "note", "call", "before",
    "delivery", "weekend",
]  # fmt: skip
PLACEHOLDERS = {
    "{words}": "ARRAY[" + ",".join(f"'{w}'" for w in WORDS) + "]",
    "{last_word}": str(len(WORDS) - 1),
}

# $1, $2: first and last order id of the batch. Every 10th order id has a customer,
# every 20th an attachment; each order has one event.
BATCH_SQL = [
    """INSERT INTO customers
       SELECT i / 10, 'Customer ' || i || ' ' || substr(md5(i::text), 1, 8),
              'user' || i || '@example.' || (ARRAY['com','org','de','jp'])[1 + i % 4],
              (ARRAY['DE','FR','PT','JP','US','BR'])[1 + i % 6],
              now() - random() * interval '5 years', round((random() * 10000)::numeric, 2),
              random() > 0.1
       FROM generate_series($1::bigint, $2::bigint) AS i WHERE i % 10 = 0""",
    """INSERT INTO orders
       SELECT i, 1 + (random() * ($2::bigint / 10))::bigint,
              now() - random() * interval '3 years',
              (ARRAY['new','paid','shipped','delivered','returned'])[1 + (random() * 4)::int],
              round((random() * 500)::numeric, 2), 1 + (random() * 9)::int,
              (random() * 0.3)::real,
              array_to_string(ARRAY(SELECT ({words})[1 + (random() * {last_word})::int]
                                    FROM generate_series(1, 4 + i % 24)), ' '),
              (SELECT jsonb_agg(jsonb_build_object(
                          'sku', 'SKU-' || (random() * 99999)::int,
                          'qty', 1 + (random() * 5)::int,
                          'price', round((random() * 100)::numeric, 2),
                          'gift', random() > 0.8))
               FROM generate_series(1, 1 + i % 4))
       FROM generate_series($1::bigint, $2::bigint) AS i""",
    """INSERT INTO events
       SELECT i, now() - random() * interval '1 year',
              (ARRAY['page_view','add_to_cart','checkout','login','search'])[1 + i % 5],
              jsonb_build_object(
                  'session', md5(random()::text), 'ip', '10.' || (i % 256) || '.'
                  || ((i / 256) % 256) || '.' || (random() * 255)::int,
                  'agent', (ARRAY['Mozilla/5.0 (X11; Linux x86_64)',
                                  'Mozilla/5.0 (iPhone; CPU iPhone OS 17_0)',
                                  'curl/8.5.0'])[1 + i % 3],
                  'duration_ms', (random() * 5000)::int, 'score', random(),
                  'tags', jsonb_build_array('t' || i % 7, 't' || i % 11))
       FROM generate_series($1::bigint, $2::bigint) AS i""",
    # {random_bytes}: pgcrypto's or a built-in expression (see generate)
    """INSERT INTO attachments
       SELECT i, i, 'scan-' || i || '.bin', 'application/octet-stream', {random_bytes}
       FROM generate_series($1::bigint, $2::bigint) AS i WHERE i % 20 = 0""",
]
PGCRYPTO_BYTES = "gen_random_bytes(1024) || gen_random_bytes(1024) || gen_random_bytes(1024)"
BUILTIN_BYTES = (
    "(SELECT string_agg(uuid_send(gen_random_uuid()), ''::bytea) "
    "FROM generate_series(1, 192 + i % 2))"  # i: a correlated subquery, new bytes per row
)
BATCHES_PER_TARGET = 60
DATABASE_SIZE = "SELECT pg_database_size(current_database())"


async def generate(dsn: str, size_mib: int) -> dict[str, Any]:
    """Fill an empty database until it holds about ``size_mib`` MiB; two writers."""
    began = time.perf_counter()
    conn = await asyncpg.connect(dsn)
    try:
        await conn.execute(SCHEMA)
        try:
            await conn.execute("CREATE EXTENSION IF NOT EXISTS pgcrypto")
            random_bytes = PGCRYPTO_BYTES
        except asyncpg.PostgresError:
            random_bytes = BUILTIN_BYTES
        placeholders = PLACEHOLDERS | {"{random_bytes}": random_bytes}
        statements = []
        for sql in BATCH_SQL:
            for name, value in placeholders.items():
                sql = sql.replace(name, value)
            statements.append(sql)
        target = size_mib * MIB
        # ~1050 bytes on disk per order (with its event, share of a customer and an
        # attachment, indexes): enough batches to land within a few % of the target.
        rows = max(1000, target // 1050 // BATCHES_PER_TARGET)
        next_id = 1
        lock = asyncio.Lock()

        async def writer() -> None:
            nonlocal next_id
            worker = await asyncpg.connect(dsn)
            try:
                while True:
                    async with lock:
                        size = await worker.fetchval(DATABASE_SIZE)
                        if size >= target:
                            return
                        first, next_id = next_id, next_id + rows
                    async with worker.transaction():
                        for sql in statements:
                            await worker.execute(sql, first, first + rows - 1)
            finally:
                await worker.close()

        await asyncio.gather(writer(), writer())
        await conn.execute("VACUUM (FREEZE, ANALYZE)")  # hint bits set now, not by the dump
        await conn.execute("CHECKPOINT")
        size = await conn.fetchval(DATABASE_SIZE)
        counts = {
            table: await conn.fetchval(f"SELECT count(*) FROM {table}")  # noqa: S608
            for table in ("customers", "orders", "events", "attachments")
        }
    finally:
        await conn.close()
    return {
        "bytes": int(size), "rows": counts, "seconds": time.perf_counter() - began,
        "random_bytes": "pgcrypto" if random_bytes == PGCRYPTO_BYTES else "builtin",
    }  # fmt: skip


# -- baseline: pg_dump | zstd > file -----------------------------------------------


@dataclass
class Timing:
    seconds: float
    artifact_bytes: int
    cpu_s: float  # user + system of every process of the run
    peak_rss_kib: int = 0
    rss_before_kib: int = 0
    extra: dict[str, Any] = field(default_factory=dict)


def pg_dump_argv(pg_dump: str, server: PostgresServer, dbname: str) -> list[str]:
    """The executor adapter's flags: -Fc -Z0, password from PGPASSFILE."""
    return [pg_dump, "--format=custom", "--compress=0", "--no-password",
            f"--host={server.host}", f"--port={server.port}",
            f"--username={server.user}", f"--dbname={dbname}"]  # fmt: skip


def pg_env(passfile: Path) -> dict[str, str]:
    return {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "PGPASSFILE": str(passfile)}


def children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def run_baseline(argv: list[str], env: dict[str, str], out: Path) -> Timing:
    settle()
    cpu = children_cpu()
    began = time.perf_counter()
    with out.open("wb") as handle:
        dump = subprocess.Popen(argv, stdout=subprocess.PIPE, env=env)
        assert dump.stdout is not None
        zstd = subprocess.Popen(["zstd", "-T0", "-3", "-q", "-c"], stdin=dump.stdout,
                                stdout=handle)  # fmt: skip
        dump.stdout.close()  # zstd holds the pipe now
        codes = (zstd.wait(), dump.wait())
    seconds = time.perf_counter() - began
    if codes != (0, 0):
        raise SystemExit(f"baseline pipeline failed: pg_dump {codes[1]}, zstd {codes[0]}")
    return Timing(seconds, out.stat().st_size, children_cpu() - cpu)


def warm_up(argv: list[str], env: dict[str, str]) -> int:
    """One dump thrown away: every table read into the page cache before timing.
    Returns the size of the uncompressed dump."""
    size = 0
    dump = subprocess.Popen(argv, stdout=subprocess.PIPE, env=env)
    assert dump.stdout is not None
    while chunk := dump.stdout.read(MIB):
        size += len(chunk)
    if dump.wait() != 0:
        raise SystemExit(f"warm-up pg_dump failed with exit code {dump.returncode}")
    return size


def settle() -> None:
    """Write back the previous run's dirty pages so they don't slow this run."""
    os.sync()
    time.sleep(0.5)


# -- the executor, in a child process ------------------------------------------------


@dataclass
class Meta:
    """The metadata DB, NATS and secrets the executor child shares with us."""

    data_dir: Path
    database_url: str
    nats_url: str


async def prepare_metadata(meta: Meta) -> None:
    import nats

    from services.common.migrate import upgrade
    from services.common.streams import ensure_streams

    await upgrade(meta.database_url)
    resolve_secrets(Settings(data_dir=meta.data_dir, database_url=meta.database_url))

    nc = await nats.connect(meta.nats_url)
    try:
        await ensure_streams(nc.jetstream())
    finally:
        await nc.close()


async def seed_rows(
    meta: Meta, server: PostgresServer, dbname: str, storage: Path
) -> BackupRequested:
    """Project, database and destination rows (once per size): a job template."""
    from services.common.credentials import CredentialCipher

    settings = Settings(data_dir=meta.data_dir, database_url=meta.database_url)
    cipher = CredentialCipher(resolve_secrets(settings).credential_keys)
    engine = create_engine(meta.database_url)
    try:
        async with session_factory(engine)() as session, session.begin():
            project = Project(name="Bench", slug=f"bench-{uuid.uuid4().hex[:6]}")
            session.add(project)
            await session.flush()
            database = Database(
                project_id=project.id, name=dbname, engine=DatabaseEngine.POSTGRESQL,
                host=server.host, port=server.port, database_name=dbname,
                username=server.user, encrypted_password=cipher.encrypt(server.password).encode(),
                options={},
            )  # fmt: skip
            destination = Destination(name=f"local-{dbname}", kind=DestinationKind.LOCAL,
                                      config={"path": str(storage)})  # fmt: skip
            session.add_all([database, destination])
    finally:
        await engine.dispose()
    return BackupRequested(
        backup_id=uuid.uuid4(), project_id=project.id, database_id=database.id,
        trigger=Trigger.MANUAL, compression=Compression(), destination_ids=(destination.id,),
        timeout_s=6 * 3600,
    )  # fmt: skip


async def queue(meta: Meta, template: BackupRequested) -> BackupRequested:
    """A fresh queued backup row, as the API's "back up now" creates it."""
    engine = create_engine(meta.database_url)
    try:
        async with session_factory(engine)() as session, session.begin():
            backup = Backup(database_id=template.database_id, trigger=Trigger.MANUAL)
            session.add(backup)
    finally:
        await engine.dispose()
    return template.model_copy(update={"backup_id": backup.id})


async def finished_row(meta: Meta, backup_id: uuid.UUID) -> Backup:
    engine = create_engine(meta.database_url)
    try:
        async with session_factory(engine)() as session:
            backup = await session.get(Backup, backup_id)
    finally:
        await engine.dispose()
    assert backup is not None
    return backup


def run_executor(meta: Meta, job: BackupRequested, *, wrap: list[str] | None = None) -> Timing:
    """``execute()`` in a child process, which writes its measurements to a file."""
    out = meta.data_dir / f"child-{job.backup_id}.json"
    spec = {"data_dir": str(meta.data_dir), "database_url": meta.database_url,
            "nats_url": meta.nats_url, "job": encode(job).decode(), "report": str(out)}  # fmt: skip
    argv = [sys.executable, str(Path(__file__).resolve()), "--executor-child", json.dumps(spec)]
    settle()
    proc = subprocess.run([*(wrap or []), *argv], capture_output=True, text=True, check=False)
    if proc.returncode != 0 or not out.exists():
        raise SystemExit(f"executor child failed ({proc.returncode}):\n{proc.stderr[-4000:]}")
    report = json.loads(out.read_text())
    out.unlink()
    return Timing(
        report["seconds"], 0, report["cpu_s"], report["peak_rss_kib"], report["rss_before_kib"],
        {"pg_dump_cpu_s": report["children_cpu_s"],
         "before_dump_s": report["before_dump_s"],
         "after_last_byte_s": report["after_last_byte_s"]},
    )  # fmt: skip


def proc_status_kib(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(f"{field}:"):
            return int(line.split()[1])
    return 0


def peak_rss_kib() -> int:
    """This process's own peak RSS. Not ``ru_maxrss``: Linux carries it across
    exec, so a child started by fork or vfork from this benchmark (about 100 MiB)
    reported the parent's RSS as its peak whenever its own stayed below that."""
    return proc_status_kib("VmHWM") or resource.getrusage(resource.RUSAGE_SELF).ru_maxrss


async def executor_child(spec: dict[str, str]) -> dict[str, Any]:
    """What runs in the child: a real ExecutorContext, then one BackupRun."""
    import nats

    from services.common.credentials import CredentialCipher
    from services.common.destinations.local import LocalWriter
    from services.executor.backup import BackupRun
    from services.executor.context import ExecutorContext, prepare_for_jobs
    from services.executor.tool import Tool

    # When pg_dump was started and when the artifact's commit began (its last byte
    # written): the run's fixed cost before the stream and its work after it.
    marks: dict[str, float] = {}
    start, commit = Tool.start, LocalWriter.commit

    async def noted_start(tool: Tool, *, stdin: bool = False) -> None:
        marks.setdefault("tool_start", time.perf_counter())
        await start(tool, stdin=stdin)

    async def noted_commit(writer: LocalWriter) -> None:
        marks.setdefault("commit", time.perf_counter())
        await commit(writer)

    Tool.start = noted_start  # type: ignore[method-assign,assignment]
    LocalWriter.commit = noted_commit  # type: ignore[method-assign,assignment]

    settings = Settings(data_dir=Path(spec["data_dir"]), database_url=spec["database_url"])
    engine = create_engine(settings.database_url)
    nc = await nats.connect(spec["nats_url"])
    try:
        ctx = ExecutorContext(
            settings=settings, sessions=session_factory(engine), nc=nc,
            cipher=CredentialCipher(resolve_secrets(settings).credential_keys),
            executor_id="bench-executor",
        )  # fmt: skip
        job = decode(BackupRequested, spec["job"])
        await prepare_for_jobs()
        rss_before = proc_status_kib("VmRSS")
        usage = resource.getrusage(resource.RUSAGE_SELF)
        began = time.perf_counter()
        await BackupRun(ctx, job).execute()  # trigger ... BackupCompleted published
        seconds = time.perf_counter() - began
        after = resource.getrusage(resource.RUSAGE_SELF)
    finally:
        await nc.close()
        await engine.dispose()
    children = resource.getrusage(resource.RUSAGE_CHILDREN)
    return {
        "seconds": seconds,
        "cpu_s": after.ru_utime + after.ru_stime - usage.ru_utime - usage.ru_stime,
        "children_cpu_s": children.ru_utime + children.ru_stime,
        "peak_rss_kib": peak_rss_kib(),
        "rss_before_kib": rss_before,
        "before_dump_s": marks["tool_start"] - began,
        "after_last_byte_s": began + seconds - marks["commit"],
    }


# -- one size ------------------------------------------------------------------------


@dataclass
class SizeResult:
    size_mib: int
    database_bytes: int
    dump_bytes: int
    rows: dict[str, int]
    generate_s: float
    baseline: list[Timing]
    executor: list[Timing]

    @property
    def best_baseline(self) -> Timing:
        return min(self.baseline, key=lambda t: t.seconds)

    @property
    def best_executor(self) -> Timing:
        return min(self.executor, key=lambda t: t.seconds)

    @property
    def ratio(self) -> float:
        return self.best_executor.seconds / self.best_baseline.seconds

    @property
    def median_ratio(self) -> float:
        return statistics.median(t.seconds for t in self.executor) / statistics.median(
            t.seconds for t in self.baseline
        )

    @property
    def cpu_ratio(self) -> float:
        """Median CPU seconds, executor process + pg_dump over pg_dump + zstd: the
        work each side does, steadier than wall time when other work shares the CPUs."""
        executor: float = statistics.median(
            t.cpu_s + t.extra["pg_dump_cpu_s"] for t in self.executor
        )
        return executor / statistics.median(t.cpu_s for t in self.baseline)

    @property
    def peak_rss_mib(self) -> float:
        return max(t.peak_rss_kib for t in self.executor) / 1024

    @property
    def median_peak_rss_mib(self) -> float:
        return statistics.median(t.peak_rss_kib for t in self.executor) / 1024

    def phase_s(self, name: str) -> float:
        return statistics.median(float(t.extra[name]) for t in self.executor)

    @property
    def idle_rss_mib(self) -> float:
        return statistics.median(t.rss_before_kib for t in self.executor) / 1024


async def measure_size(server: PostgresServer, meta: Meta, work: Path, size_mib: int,
                       repeat: int, py_spy: str | None) -> SizeResult:  # fmt: skip
    dbname = f"bench_{size_mib}mib"
    server.create_database(dbname)
    print(f"[{size_mib} MiB] generating ...", flush=True)
    generated = await generate(server.dsn(dbname), size_mib)
    print(f"[{size_mib} MiB] {generated['bytes'] / MIB:.0f} MiB on disk in "
          f"{generated['seconds']:.0f}s: {generated['rows']}", flush=True)  # fmt: skip

    version = str(await _server_version(server))
    pg_dump, _ = choose_pg_dump(version)
    passfile = work / "pgpass"
    passfile.write_text(f"*:*:*:*:{server.password}\n")
    passfile.chmod(0o600)
    argv, env = pg_dump_argv(pg_dump, server, dbname), pg_env(passfile)
    dump_bytes = warm_up(argv, env)

    storage = work / f"storage-{size_mib}"
    template = await seed_rows(meta, server, dbname, storage)
    baseline: list[Timing] = []
    executor: list[Timing] = []

    async def one_executor(wrap: list[str] | None = None) -> Timing:
        job = await queue(meta, template)
        timing = run_executor(meta, job, wrap=wrap)
        row = await finished_row(meta, job.backup_id)
        if row.status is not BackupStatus.SUCCEEDED:
            raise SystemExit(f"executor backup {row.status}: {row.error_message}")
        timing.artifact_bytes = int(row.bytes_out or 0)
        shutil.rmtree(storage, ignore_errors=True)  # keep the disk (and the cache) tidy
        return timing

    for attempt in range(repeat):
        order = ("baseline", "executor") if attempt % 2 == 0 else ("executor", "baseline")
        for which in order:
            if which == "baseline":
                out = work / "baseline.pgdump.zst"
                baseline.append(run_baseline(argv, env, out))
                out.unlink()
                timing = baseline[-1]
            else:
                executor.append(await one_executor())
                timing = executor[-1]
            print(f"[{size_mib} MiB] {which:<8} run {attempt + 1}: {timing.seconds:.2f}s"
                  + (f", peak RSS {timing.peak_rss_kib / 1024:.1f} MiB"
                     if which == "executor" else ""), flush=True)  # fmt: skip

    if py_spy:
        stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
        profile = RESULTS / f"backup_postgres-{size_mib}mib-{stamp}.speedscope.json"
        RESULTS.mkdir(exist_ok=True)
        wrap = [py_spy, "record", "--rate", "200", "--threads", "--idle", "--format",
                "speedscope", "--output", str(profile), "--"]  # fmt: skip
        profiled = await one_executor(wrap)
        print(f"[{size_mib} MiB] profiled run {profiled.seconds:.2f}s -> {profile}", flush=True)

    server.drop_database(dbname)
    return SizeResult(size_mib, generated["bytes"], dump_bytes, generated["rows"],
                      generated["seconds"], baseline, executor)  # fmt: skip


async def _server_version(server: PostgresServer) -> str:
    conn = await asyncpg.connect(server.dsn())
    try:
        return str(await conn.fetchval("SHOW server_version")).split(" ")[0]
    finally:
        await conn.close()


# -- report --------------------------------------------------------------------------


def verdict(ok: bool) -> str:
    return "PASS" if ok else "MISS"


def report(results: list[SizeResult]) -> tuple[str, dict[str, bool]]:
    lines = [
        f"{'size':>6} {'on disk':>8} {'dump -Z0':>9} {'baseline':>9} {'executor':>9} "
        f"{'ratio':>6} {'base .zst':>10} {'exec .zst':>10} {'base cpu':>9} {'exec cpu':>9} "
        f"{'RSS idle':>9} {'peak max':>9} {'median':>8} {'run adds':>9}",
    ]
    for r in results:
        b, e = r.best_baseline, r.best_executor
        lines.append(
            f"{r.size_mib:>4}Mi {r.database_bytes / MIB:>6.0f}Mi {r.dump_bytes / MIB:>7.0f}Mi "
            f"{b.seconds:>8.2f}s {e.seconds:>8.2f}s {r.ratio:>6.3f} "
            f"{b.artifact_bytes / MIB:>8.1f}Mi {e.artifact_bytes / MIB:>8.1f}Mi "
            f"{b.cpu_s:>8.1f}s {e.cpu_s + e.extra['pg_dump_cpu_s']:>8.1f}s "
            f"{r.idle_rss_mib:>7.1f}Mi {r.peak_rss_mib:>7.1f}Mi {r.median_peak_rss_mib:>6.1f}Mi "
            f"{r.median_peak_rss_mib - r.idle_rss_mib:>7.1f}Mi"
        )
    lines.append(
        "(wall: best of each side; cpu: user+system of pg_dump and zstd / of pg_dump and the "
        "executor process, same runs; RSS idle: the executor process ready to run, before "
        "execute(); peak: VmHWM, max and median over the runs; run adds: median peak "
        "minus idle)"
    )
    for r in results:
        lines.append(
            f"{r.size_mib} MiB: median wall ratio {r.median_ratio:.3f}, median CPU ratio "
            f"{r.cpu_ratio:.3f} (not targets; steadier on a busy machine); executor, "
            f"median: {r.phase_s('before_dump_s'):.3f}s from the trigger to pg_dump started "
            f"(claim, probe, started event), {r.phase_s('after_last_byte_s'):.3f}s from the "
            "last byte written to completed (commit, read-back check, manifest, row, event)"
        )
    # The issue states the ratio for the ~1 GiB database; below that, the fixed cost
    # of a run (claim, probe, manifest, final row and events: ~0.1 s) weighs on it.
    judged = max(results, key=lambda r: r.size_mib)
    peak = max(r.peak_rss_mib for r in results)
    checks = {
        f"ratio executor/baseline <= {TARGET_RATIO:.2f} at {judged.size_mib} MiB "
        f"(best of each side: {judged.ratio:.3f})": judged.ratio <= TARGET_RATIO,
        f"executor peak RSS <= {TARGET_RSS_MIB:.0f} MiB (worst {peak:.1f} MiB)":
            peak <= TARGET_RSS_MIB,
    }  # fmt: skip
    if len(results) > 1:
        smallest = min(results, key=lambda r: r.size_mib)
        largest = max(results, key=lambda r: r.size_mib)
        # medians: one run's peak varies by +-10 MiB with thread timing
        growth = largest.median_peak_rss_mib - smallest.median_peak_rss_mib
        checks[
            f"median peak RSS not growing with size ({smallest.size_mib} -> "
            f"{largest.size_mib} MiB: {growth:+.1f} MiB, tolerance {RSS_GROWTH_TOLERANCE_MIB:.0f})"
        ] = growth <= RSS_GROWTH_TOLERANCE_MIB
    for name, ok in checks.items():
        lines.append(f"{verdict(ok)}  {name}")
    return "\n".join(lines), checks


async def main(sizes: list[int], repeat: int, py_spy: str | None) -> int:
    from tests.servers import NatsServer, PostgresServer

    load_before = os.getloadavg()
    results: list[SizeResult] = []
    with tempfile.TemporaryDirectory(prefix="bm-bench-") as tmp:
        work = Path(tmp)
        nats_server, pg = NatsServer(), PostgresServer()
        nats_server.start()
        try:
            pg.start()
            meta = Meta(work / "data", f"sqlite+aiosqlite:///{work}/data/metadata.db",
                        nats_server.url)  # fmt: skip
            meta.data_dir.mkdir()
            await prepare_metadata(meta)
            for size in sizes:
                results.append(await measure_size(pg, meta, work, size, repeat, py_spy))
        finally:
            pg.stop()
            nats_server.stop()
    load_after = os.getloadavg()
    table, checks = report(results)
    print(table)
    print(f"{os.cpu_count()} CPUs; load average before {load_before[0]:.2f}, "
          f"after {load_after[0]:.2f} (other work on the machine skews wall times)")  # fmt: skip
    RESULTS.mkdir(exist_ok=True)
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    path = RESULTS / f"backup_postgres-{stamp}.json"
    path.write_text(json.dumps({
        "at": stamp, "cpus": os.cpu_count(), "repeat": repeat,
        "loadavg_before": load_before, "loadavg_after": load_after,
        "targets": {"ratio": TARGET_RATIO, "peak_rss_mib": TARGET_RSS_MIB},
        "checks": {name: verdict(ok) for name, ok in checks.items()},
        "sizes": [asdict(r) | {"ratio": r.ratio, "median_ratio": r.median_ratio,
                               "cpu_ratio": r.cpu_ratio, "peak_rss_mib": r.peak_rss_mib,
                               "median_peak_rss_mib": r.median_peak_rss_mib,
                               "idle_rss_mib": r.idle_rss_mib} for r in results],
    }, indent=2))  # fmt: skip
    print(f"results: {path}")
    return 0 if all(checks.values()) else 1


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--size-mib",
        type=int,
        action="append",
        help="database size to generate (repeatable; default 100 and 1024)",
    )
    parser.add_argument("--quick", action="store_true", help="50 and 100 MiB: a fast check")
    parser.add_argument(
        "--repeat",
        type=int,
        default=3,
        help="runs of each side per size, the best taken (default 3)",
    )
    parser.add_argument("--py-spy", metavar="PATH", help="profile one extra executor run per size")
    parser.add_argument("--executor-child", metavar="SPEC", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.executor_child:
        child_spec = json.loads(args.executor_child)
        measured = asyncio.run(executor_child(child_spec))
        Path(child_spec["report"]).write_text(json.dumps(measured))
        sys.exit(0)
    sizes = args.size_mib or ([50, 100] if args.quick else [100, 1024])
    sys.exit(asyncio.run(main(sorted(set(sizes)), max(1, args.repeat), args.py_spy)))
