"""Scheduler firing at scale: 10,000 enabled schedules due in the same minute.

A real NATS (``tests/servers.py``) and a SQLite metadata DB (``--postgres``: a real
PostgreSQL instead) get 10,000 daily schedules (over 1,000 databases) whose next
slot is the same minute, a little after the scheduler starts. The scheduler runs
as its own process (``python -m services.scheduler``) on the real clock. When the
slot passes, every job is read back from the jobs stream: lateness is the time
JetStream stored the job minus the slot it fills (p50, p99, max). Then the
scheduler's CPU is read from ``/proc/<pid>/stat`` over 60 idle seconds (which
include one reconciliation of all 10,000 schedules), beside a second scheduler
process with no schedules at all.

Baseline, measured in the same run: publishing 10,000 pre-built jobs straight to
JetStream from one client the way the scheduler does (all at once, each acked) — the
floor for getting 10,000 jobs stored, with no rows, no cursors and no cron — and, for
comparison, one ack at a time with ``streams.publish`` (256 in flight).

Targets (issue 5): p99 lateness <= 1 s at 10,000 schedules; idle CPU <= 1 %.

    .venv/bin/python bench/scheduler_fire.py
    .venv/bin/python bench/scheduler_fire.py --schedules 2000 --idle-s 20
    .venv/bin/python bench/scheduler_fire.py --postgres
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import tempfile
import time
import uuid
from dataclasses import asdict, dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import nats
from nats.js import JetStreamContext
from sqlalchemy import func, insert, select

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from proto.jobs import BackupRequested  # noqa: E402
from proto.subjects import JOBS_STREAM  # noqa: E402
from proto.values import Trigger  # noqa: E402
from services.common.db.engine import create_engine, session_factory  # noqa: E402
from services.common.db.enums import DatabaseEngine, DestinationKind  # noqa: E402
from services.common.db.models import (  # noqa: E402
    Backup,
    Database,
    Destination,
    Project,
    Schedule,
    SchedulerCursor,
    schedule_destinations,
)
from services.common.migrate import upgrade  # noqa: E402
from services.common.streams import ensure_streams, publish  # noqa: E402
from services.scheduler.publisher import publish_all  # noqa: E402
from tests.processes import ServiceProcess, service_env, wait_for_status  # noqa: E402
from tests.servers import NatsServer, PostgresServer, unique_name  # noqa: E402

TARGET_P99_S = 1.0
TARGET_IDLE_CPU = 1.0  # percent of one core
RESULTS = REPO / "bench" / "results"
SCHEDULES_PER_DATABASE = 10
START_MARGIN_S = 45.0  # seconds between the scheduler being ready and the slot


@dataclass
class Result:
    schedules: int
    metadata_db: str
    slot: str
    jobs: int
    rows: int
    lateness_p50_s: float
    lateness_p99_s: float
    lateness_max_s: float
    first_job_s: float
    baseline_publish_s: float
    baseline_one_by_one_s: float
    burst_ratio: float
    idle_cpu_percent: float
    idle_cpu_empty_percent: float
    idle_s: float
    passed: bool


async def seed(url: str, count: int, created_at: datetime, slot: datetime) -> None:
    await upgrade(url)
    engine = create_engine(url)
    sessions = session_factory(engine)
    cron = f"{slot.minute} {slot.hour} * * *"
    async with sessions() as session, session.begin():
        project = Project(name="Bench", slug=f"bench-{uuid.uuid4().hex[:6]}")
        destination = Destination(name="d", kind=DestinationKind.LOCAL, config={"path": "/tmp/b"})
        session.add_all([project, destination])
        await session.flush()
        databases = [
            {"id": uuid.uuid4(), "project_id": project.id, "name": f"db{i}",
             "engine": DatabaseEngine.POSTGRESQL, "host": "127.0.0.1", "port": 5432,
             "created_at": created_at, "updated_at": created_at}
            for i in range(max(1, count // SCHEDULES_PER_DATABASE))
        ]  # fmt: skip
        await session.execute(insert(Database), databases)
        schedules = [
            {"id": uuid.uuid4(), "database_id": databases[i % len(databases)]["id"],
             "name": f"s{i}", "cron": cron, "timezone": "UTC",
             "created_at": created_at, "updated_at": created_at}
            for i in range(count)
        ]  # fmt: skip
        for start in range(0, count, 2000):
            part = schedules[start : start + 2000]
            await session.execute(insert(Schedule), part)
            await session.execute(
                insert(schedule_destinations),
                [{"schedule_id": s["id"], "destination_id": destination.id} for s in part],
            )
    await engine.dispose()


async def count_rows(url: str) -> int:
    engine = create_engine(url)
    async with session_factory(engine)() as session:
        found = await session.scalar(select(func.count()).select_from(Backup))
    await engine.dispose()
    return int(found or 0)


async def stored_jobs(js: JetStreamContext) -> list[tuple[str, datetime]]:
    """(Nats-Msg-Id, time stored) of every job in the jobs stream."""
    state = (await js.stream_info(JOBS_STREAM)).state
    if state.messages == 0:
        return []
    gate = asyncio.Semaphore(64)

    async def one(seq: int) -> tuple[str, datetime]:
        async with gate:
            msg = await js.get_msg(JOBS_STREAM, seq)
        assert msg.time is not None
        return (msg.headers or {}).get("Nats-Msg-Id", ""), msg.time

    return list(await asyncio.gather(*(one(s) for s in range(state.first_seq, state.last_seq + 1))))


async def wait_for_jobs(js: JetStreamContext, count: int, within_s: float) -> None:
    deadline = time.monotonic() + within_s
    while (await js.stream_info(JOBS_STREAM)).state.messages < count:
        if time.monotonic() > deadline:
            raise SystemExit(f"only some of {count} jobs arrived within {within_s:g}s")
        await asyncio.sleep(0.5)


async def wait_for_cursors(url: str, slot: datetime, count: int, within_s: float) -> None:
    """Until every schedule's cursor has moved past ``slot`` (bookkeeping done)."""
    engine = create_engine(url)
    deadline = time.monotonic() + within_s
    try:
        while True:
            async with session_factory(engine)() as session:
                done = await session.scalar(
                    select(func.count())
                    .select_from(SchedulerCursor)
                    .where(SchedulerCursor.last_slot_at >= slot)
                )
            if (done or 0) >= count:
                return
            if time.monotonic() > deadline:
                raise SystemExit(f"cursors not written within {within_s:g}s")
            await asyncio.sleep(0.5)
    finally:
        await engine.dispose()


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    utime, stime = int(fields[11]), int(fields[12])  # fields 14 and 15 of stat(5)
    return (utime + stime) / os.sysconf("SC_CLK_TCK")


async def baseline_publish(nats_url: str, count: int) -> tuple[float, float]:
    """Seconds to store ``count`` pre-built jobs: all at once as the scheduler does
    (``publish_all``), and one ack at a time with ``streams.publish`` (256 in flight)."""
    nc = await nats.connect(nats_url)
    js = nc.jetstream()
    slot = datetime(2020, 1, 1, tzinfo=UTC)
    jobs = [
        BackupRequested(backup_id=uuid.uuid4(), project_id=uuid.uuid4(), database_id=uuid.uuid4(),
                        schedule_id=uuid.uuid4(), trigger=Trigger.SCHEDULE, slot_at=slot,
                        destination_ids=(uuid.uuid4(),))
        for _ in range(count)
    ]  # fmt: skip
    await js.purge_stream(JOBS_STREAM)
    start = time.perf_counter()
    results = await publish_all(nc, [(job, f"a:{job.backup_id}") for job in jobs], timeout_s=30)
    at_once = time.perf_counter() - start
    assert not any(results)
    await js.purge_stream(JOBS_STREAM)
    pending = iter(jobs)

    async def worker() -> None:
        for job in pending:
            await publish(nc, job, ack_timeout_s=10)

    start = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(256)))
    one_by_one = time.perf_counter() - start
    await js.purge_stream(JOBS_STREAM)
    await nc.close()
    return at_once, one_by_one


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


async def run(args: argparse.Namespace, work: Path, nats_url: str, url: str, empty_url: str,
              label: str) -> Result:  # fmt: skip
    nc = await nats.connect(nats_url)
    js = nc.jetstream()
    await ensure_streams(js)
    baseline, one_by_one = await baseline_publish(nats_url, args.schedules)
    print(
        f"baseline: {args.schedules} jobs published straight to JetStream in {baseline:.3f}s "
        f"({one_by_one:.3f}s one ack at a time)"
    )

    created = datetime.now(UTC)
    slot = (created + timedelta(seconds=START_MARGIN_S + 20)).replace(second=0, microsecond=0)
    slot += timedelta(minutes=1)
    t = time.perf_counter()
    await seed(url, args.schedules, created, slot)
    await seed(empty_url, 0, created, slot)
    print(f"seeded {args.schedules} schedules in {time.perf_counter() - t:.1f}s; slot {slot:%H:%M}")

    loaded = ServiceProcess("scheduler", service_env(work / "a", nats_url, url),
                            work / "scheduler.log").start()  # fmt: skip
    empty = ServiceProcess("scheduler", service_env(work / "b", nats_url, empty_url),
                           work / "scheduler-empty.log").start()  # fmt: skip
    try:
        for process in (loaded, empty):
            wait_for_status(f"{process.base_url}/readyz", 200, timeout=120)
        margin = (slot - datetime.now(UTC)).total_seconds()
        print(f"schedulers ready; the slot is {margin:.1f}s away")
        if margin < 1:
            raise SystemExit("the scheduler took too long to start; run again")
        await wait_for_jobs(js, args.schedules, margin + 120)
        stored = await stored_jobs(js)
        lateness = [(at - slot).total_seconds() for _, at in stored]
        await wait_for_cursors(url, slot, args.schedules, 300)  # the burst is over
        await asyncio.sleep(2)
        assert loaded.process is not None
        assert empty.process is not None
        before = cpu_seconds(loaded.process.pid), cpu_seconds(empty.process.pid)
        t = time.perf_counter()
        await asyncio.sleep(args.idle_s)
        idle = time.perf_counter() - t
        after = cpu_seconds(loaded.process.pid), cpu_seconds(empty.process.pid)
    finally:
        loaded.stop()
        empty.stop()
        await nc.close()
        for line in loaded.log().splitlines():
            if "released" in line or "could not" in line or "ERROR" in line:
                print("scheduler:", line)
    rows = await count_rows(url)
    cpu, cpu_empty = ((a - b) / idle * 100 for a, b in zip(after, before, strict=True))
    p99 = percentile(lateness, 0.99)
    burst = max(lateness) - min(lateness)
    return Result(
        schedules=args.schedules, metadata_db=label, slot=slot.isoformat(), jobs=len(stored),
        rows=rows, lateness_p50_s=round(percentile(lateness, 0.5), 4),
        lateness_p99_s=round(p99, 4), lateness_max_s=round(max(lateness), 4),
        first_job_s=round(min(lateness), 4), baseline_publish_s=round(baseline, 4),
        baseline_one_by_one_s=round(one_by_one, 4),
        burst_ratio=round(burst / baseline, 2) if baseline else 0.0,
        idle_cpu_percent=round(cpu, 3), idle_cpu_empty_percent=round(cpu_empty, 3),
        idle_s=round(idle, 1),
        passed=p99 <= TARGET_P99_S and cpu <= TARGET_IDLE_CPU and len(stored) == args.schedules
        and rows == args.schedules,
    )  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--schedules", type=int, default=10_000)
    parser.add_argument("--idle-s", type=float, default=60.0)
    parser.add_argument("--postgres", action="store_true", help="PostgreSQL metadata DB")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="bench-scheduler-") as tmp, NatsServer() as server:
        work = Path(tmp)
        if args.postgres:
            with PostgresServer() as pg:
                names = unique_name("bench"), unique_name("empty")
                for name in names:
                    pg.create_database(name)
                result = asyncio.run(run(args, work, server.url, pg.url(names[0]),
                                         pg.url(names[1]), "postgresql"))  # fmt: skip
        else:
            result = asyncio.run(run(args, work, server.url, f"sqlite+aiosqlite:///{work}/a.db",
                                     f"sqlite+aiosqlite:///{work}/b.db", "sqlite"))  # fmt: skip
    print(json.dumps(asdict(result), indent=2))
    print(
        f"lateness p50 {result.lateness_p50_s:.3f}s, p99 {result.lateness_p99_s:.3f}s "
        f"(target <= {TARGET_P99_S:g}s), max {result.lateness_max_s:.3f}s; burst "
        f"{result.burst_ratio:.2f}x the bare publish baseline; idle CPU "
        f"{result.idle_cpu_percent:.2f}% (target <= {TARGET_IDLE_CPU:g}%; an empty "
        f"scheduler: {result.idle_cpu_empty_percent:.2f}%)"
    )
    RESULTS.mkdir(parents=True, exist_ok=True)
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    (RESULTS / f"scheduler_fire-{stamp}.json").write_text(json.dumps(asdict(result), indent=2))
    raise SystemExit(0 if result.passed else 1)


if __name__ == "__main__":
    main()
