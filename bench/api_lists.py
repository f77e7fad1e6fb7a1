"""List endpoints under load: 100,000 backup runs and 100,000 audit entries seeded
straight into a migrated SQLite metadata DB, the real API service
(``python -m services.api``, with its default of one process per CPU unless
``--workers`` says otherwise) in front of it, and 20 concurrent aiohttp clients on
the same machine.

Prints requests/s and p50/p99 latency per endpoint (a page of 50 for lists) and the
ratio to the baseline measured in the same run (``GET /healthz``: HTTP without auth
or SQL). Target (issue 3): p99 <= 50 ms on the SQLite default.

    .venv/bin/python bench/api_lists.py [--requests 2000] [--clients 20] [--seconds 20]
                                        [--workers N]

An endpoint whose path is not in the API's OpenAPI document yet is reported as
"not yet" — add a ``Case`` for a new list (``/backups``, issue 4) and it is measured
as soon as it exists.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import signal
import statistics
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import aiohttp
from sqlalchemy import insert
from sqlalchemy.ext.asyncio import AsyncConnection

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from services.api.auth.tokens import issue_access_token  # noqa: E402
from services.common.db.engine import create_engine  # noqa: E402
from services.common.db.models import (  # noqa: E402
    AuditEntry,
    Backup,
    BackupCopy,
    Database,
    Destination,
    Project,
    ProjectMember,
    Schedule,
    SchedulerCursor,
    User,
)
from services.common.migrate import upgrade  # noqa: E402
from services.common.passwords import hash_password  # noqa: E402
from services.common.secrets import resolve_secrets  # noqa: E402
from services.common.settings import Settings  # noqa: E402
from tests.processes import ServiceProcess, service_env, wait_for_status  # noqa: E402
from tests.servers import NatsServer  # noqa: E402

TARGET_P99_MS = 50.0
PAGE = 50
BACKUPS = 100_000
AUDIT_ENTRIES = 100_000
PROJECTS = 20
DATABASES_PER_PROJECT = 5
HISTORY = timedelta(days=180)
CHUNK = 5_000
STATUS_MIX = [("succeeded", 93), ("failed", 4), ("missed", 1), ("skipped", 1), ("cancelled", 1)]
ACTIONS = [
    "auth.login",
    "project.create",
    "project.update",
    "project.member.add",
    "database.create",
    "database.update",
    "schedule.update",
    "backup.create",
]


@dataclass(frozen=True)
class Case:
    name: str
    path: str
    caller: str  # "admin" | "member" | "none"


CASES = [
    Case("baseline: /healthz", "/healthz", "none"),
    Case("audit (admin)", f"/api/v1/audit?limit={PAGE}", "admin"),
    Case("audit action=project. (admin)", f"/api/v1/audit?limit={PAGE}&action=project.", "admin"),
    Case("audit, a later page (admin)", f"/api/v1/audit?limit={PAGE}&cursor={{cursor}}", "admin"),
    Case("projects (admin)", f"/api/v1/projects?limit={PAGE}", "admin"),
    Case("projects (member)", f"/api/v1/projects?limit={PAGE}", "member"),
    Case("backups (admin)", f"/api/v1/backups?limit={PAGE}", "admin"),
    Case("backups (member)", f"/api/v1/backups?limit={PAGE}", "member"),
    Case("stats/dashboard (admin)", "/api/v1/stats/dashboard", "admin"),
    Case("stats/dashboard (member)", "/api/v1/stats/dashboard", "member"),
    Case("stats/storage (admin)", "/api/v1/stats/storage", "admin"),
]


@dataclass
class Result:
    name: str
    alone_p50_ms: float  # one client: the service time of one request
    server_cpu_ms: float  # CPU of the API processes per request under load
    requests: int
    errors: int
    seconds: float
    p50_ms: float
    p99_ms: float
    max_ms: float

    @property
    def rps(self) -> float:
        return self.requests / self.seconds if self.seconds else 0.0


# -- seeding -----------------------------------------------------------------------


def _ids(count: int) -> list[uuid.UUID]:
    return [uuid.uuid4() for _ in range(count)]


def _chunks(rows: list[dict[str, Any]]) -> Iterator[list[dict[str, Any]]]:
    for start in range(0, len(rows), CHUNK):
        yield rows[start : start + CHUNK]


async def _insert(conn: AsyncConnection, table: Any, rows: list[dict[str, Any]]) -> None:
    for chunk in _chunks(rows):
        await conn.execute(insert(table), chunk)


async def seed(database_url: str, now: datetime) -> dict[str, uuid.UUID]:
    """Users, 20 projects x 5 databases with an hourly schedule each, destinations,
    100,000 backups (one stored copy per success) and 100,000 audit entries."""
    rng = random.Random(3)
    password = hash_password("bench password", rounds=4)
    admin_id, member_id = uuid.uuid4(), uuid.uuid4()
    users = [
        {"id": admin_id, "email": "admin@bench.test", "is_admin": True},
        {"id": member_id, "email": "member@bench.test", "is_admin": False},
    ]
    users += [
        {"id": uuid.uuid4(), "email": f"u{i}@bench.test", "is_admin": False} for i in range(50)
    ]
    for user in users:
        user.update(password_hash=password, is_active=True, created_at=now, updated_at=now)
    project_ids = _ids(PROJECTS)
    projects = [
        {"id": pid, "name": f"Project {i}", "slug": f"project-{i}", "description": "",
         "created_at": now - timedelta(days=i), "updated_at": now}
        for i, pid in enumerate(project_ids)
    ]  # fmt: skip
    members = [{"project_id": pid, "user_id": admin_id, "role": "owner", "created_at": now}
               for pid in project_ids]  # fmt: skip
    # The member sees 2 projects: a typical non-admin dashboard.
    members += [{"project_id": pid, "user_id": member_id, "role": "operator", "created_at": now}
                for pid in project_ids[:2]]  # fmt: skip
    shared_id = uuid.uuid4()
    destinations = [
        {"id": shared_id, "name": "shared", "kind": "local", "config": {"path": "/srv/b"},
         "project_id": None, "enabled": True, "created_at": now, "updated_at": now}
    ]  # fmt: skip
    databases: list[dict[str, Any]] = []
    schedules: list[dict[str, Any]] = []
    cursors: list[dict[str, Any]] = []
    for p, pid in enumerate(project_ids):
        for d in range(DATABASES_PER_PROJECT):
            did, sid = uuid.uuid4(), uuid.uuid4()
            databases.append(
                {"id": did, "project_id": pid, "name": f"db-{p}-{d}", "engine": "postgresql",
                 "host": "db.internal", "port": 5432, "database_name": "app", "username": "app",
                 "tls_mode": "prefer", "options": {}, "created_at": now, "updated_at": now}
            )  # fmt: skip
            schedules.append(
                {"id": sid, "database_id": did, "name": "hourly", "cron": f"{d * 7} * * * *",
                 "timezone": "UTC", "enabled": True, "overlap_policy": "skip",
                 "compression": "zstd", "encryption": "none", "timeout_s": 3600,
                 "retention": {"keep_last": 1000}, "verify": "off",
                 "created_at": now - HISTORY, "updated_at": now - HISTORY}
            )  # fmt: skip
            cursors.append(
                {"schedule_id": sid, "next_slot_at": now + timedelta(minutes=d * 7),
                 "last_slot_at": now - timedelta(hours=1), "updated_at": now}
            )  # fmt: skip
    statuses = [s for s, weight in STATUS_MIX for _ in range(weight)]
    backups: list[dict[str, Any]] = []
    copies: list[dict[str, Any]] = []
    step = HISTORY / (BACKUPS // len(databases))
    for i in range(BACKUPS):
        database, schedule = databases[i % len(databases)], schedules[i % len(databases)]
        queued = now - HISTORY + step * (i // len(databases)) + timedelta(seconds=i % 97)
        status = rng.choice(statuses)
        ran = status in {"succeeded", "failed", "cancelled"}
        bid = uuid.uuid4()
        size = rng.randint(10_000, 50_000_000) if status == "succeeded" else None
        backups.append(
            {"id": bid, "database_id": database["id"], "schedule_id": schedule["id"],
             "trigger": "schedule", "status": status, "slot_at": queued, "queued_at": queued,
             "started_at": queued + timedelta(seconds=2) if ran else None,
             "finished_at": queued + timedelta(seconds=90) if ran else None,
             "attempts": 1 if ran else 0, "bytes_in": size and size * 4, "bytes_out": size,
             "compression": "zstd", "encryption": "none",
             "artifact_key": f"k/{bid}" if size else None}
        )  # fmt: skip
        if size:
            copies.append(
                {"backup_id": bid, "destination_id": shared_id, "artifact_key": f"k/{bid}",
                 "status": "stored", "size_bytes": size, "created_at": queued,
                 "stored_at": queued + timedelta(seconds=90)}
            )  # fmt: skip
    audit_step = HISTORY / AUDIT_ENTRIES
    audit = [
        {"id": uuid.uuid4(), "at": now - HISTORY + audit_step * i,
         "user_id": users[i % len(users)]["id"], "actor": users[i % len(users)]["email"],
         "action": ACTIONS[i % len(ACTIONS)], "target_type": "project",
         "target_id": str(project_ids[i % PROJECTS]), "project_id": project_ids[i % PROJECTS],
         "client_address": "10.0.0.1", "outcome": "success" if i % 17 else "denied",
         "details": {"status": 200}}
        for i in range(AUDIT_ENTRIES)
    ]  # fmt: skip
    engine = create_engine(database_url)
    try:
        async with engine.begin() as conn:
            for table, rows in (
                (User, users), (Project, projects), (ProjectMember, members),
                (Destination, destinations), (Database, databases), (Schedule, schedules),
                (SchedulerCursor, cursors), (Backup, backups), (BackupCopy, copies),
                (AuditEntry, audit),
            ):  # fmt: skip
                await _insert(conn, table.__table__, rows)
    finally:
        await engine.dispose()
    return {"admin": admin_id, "member": member_id}


# -- load --------------------------------------------------------------------------


async def measure(
    session: aiohttp.ClientSession,
    base: str,
    case: Case,
    headers: dict[str, str],
    requests: int,
    clients: int,
    budget_s: float,
    server_cpu_s: Callable[[], float],
) -> Result:
    """``requests`` requests from ``clients`` concurrent clients, or as many as fit
    in ``budget_s`` seconds (a slow endpoint must not stall the whole run)."""
    url = base + case.path
    latencies: list[float] = []
    errors = 0
    remaining = requests

    async def one() -> None:
        nonlocal errors
        start = time.perf_counter()
        async with session.get(url, headers=headers) as response:
            await response.read()
            if response.status != 200:
                errors += 1
        latencies.append((time.perf_counter() - start) * 1000)

    async def client() -> None:
        nonlocal remaining
        while remaining > 0 and time.perf_counter() < deadline:
            remaining -= 1
            await one()

    for _ in range(min(20, requests)):  # warm caches and the connection pool
        await one()
    latencies.clear()
    for _ in range(min(100, requests)):
        await one()
    alone_p50_ms = statistics.median(latencies)
    latencies.clear()
    errors = 0
    began, cpu_began = time.perf_counter(), server_cpu_s()
    deadline = began + budget_s
    await asyncio.gather(*(client() for _ in range(clients)))
    seconds = time.perf_counter() - began
    ordered = sorted(latencies)
    return Result(
        name=case.name,
        alone_p50_ms=alone_p50_ms,
        server_cpu_ms=(server_cpu_s() - cpu_began) / len(ordered) * 1000,
        requests=len(ordered),
        errors=errors,
        seconds=seconds,
        p50_ms=statistics.median(ordered),
        p99_ms=ordered[max(0, round(0.99 * len(ordered)) - 1)],
        max_ms=ordered[-1],
    )


def process_tree_cpu_s(pid: int) -> float:
    """CPU seconds (user + system) used so far by ``pid`` and its child processes
    (the API's workers): what a request costs the server, whatever else runs."""
    children = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
    total = 0
    for each in (pid, *map(int, children)):
        fields = Path(f"/proc/{each}/stat").read_text().rsplit(")", 1)[1].split()
        total += int(fields[11]) + int(fields[12])  # utime, stime
    return total / os.sysconf("SC_CLK_TCK")


async def every_worker_listening(base: str, workers: int, within_s: float) -> None:
    """Worker 0 is ready first and the others bind the port once they are: wait for
    them, or every connection the clients keep open would go to worker 0."""
    seen: set[str] = set()
    deadline = time.monotonic() + within_s
    while len(seen) < workers:
        if time.monotonic() > deadline:
            raise RuntimeError(f"only workers {sorted(seen)} of {workers} answered")
        async with aiohttp.ClientSession() as fresh, fresh.get(f"{base}/healthz") as response:
            seen.add(response.headers["X-Worker"])
        await asyncio.sleep(0.02)


async def later_cursor(session: aiohttp.ClientSession, base: str, headers: dict[str, str]) -> str:
    """The cursor of the 100th page of the audit log (keyset: as cheap as the first)."""
    cursor = ""
    for _ in range(100):
        suffix = f"&cursor={cursor}" if cursor else ""
        async with session.get(f"{base}/api/v1/audit?limit={PAGE}{suffix}", headers=headers) as r:
            body = await r.json()
        cursor = body["next_cursor"]
    return cursor


async def run_load(
    base: str, tokens: dict[str, str], requests: int, clients: int, budget_s: float,
    server_cpu_s: Callable[[], float],
) -> list[Result]:  # fmt: skip
    connector = aiohttp.TCPConnector(limit=clients)
    async with aiohttp.ClientSession(connector=connector) as session:
        async with session.get(base + "/api/v1/openapi.json") as response:
            paths = set((await response.json())["paths"])
        admin = {"Authorization": f"Bearer {tokens['admin']}"}
        cursor = await later_cursor(session, base, admin)
        results: list[Result] = []
        for case in CASES:
            path = case.path.split("?")[0]
            if path.startswith("/api/v1") and path not in paths:
                print(f"  {case.name}: not yet (no {path} in the OpenAPI document)")
                continue
            headers = {} if case.caller == "none" else {
                "Authorization": f"Bearer {tokens[case.caller]}"
            }  # fmt: skip
            measured = Case(case.name, case.path.replace("{cursor}", cursor), case.caller)
            result = await measure(
                session, base, measured, headers, requests, clients, budget_s, server_cpu_s
            )
            results.append(result)
            print(
                f"  {case.name}: alone p50 {result.alone_p50_ms:.1f} ms; {clients} clients: "
                f"{result.requests} requests, p50 {result.p50_ms:.1f} ms, "
                f"p99 {result.p99_ms:.1f} ms, server CPU {result.server_cpu_ms:.2f} ms a request",
                flush=True,
            )
        return results


# -- report ------------------------------------------------------------------------


def report(results: list[Result], clients: int) -> str:
    baseline = results[0]
    lines = [
        f"{'endpoint':<34} {'alone p50':>9} {'CPU ms':>6} {'req/s':>7} {'p50 ms':>8} {'p99 ms':>8} "
        f"{'max ms':>8} {'p50 x base':>10} {'errors':>6}  target p99<={TARGET_P99_MS:.0f}ms",
    ]
    for result in results:
        verdict = "" if result is baseline else (
            "ok" if result.p99_ms <= TARGET_P99_MS else "MISSED"
        )  # fmt: skip
        lines.append(
            f"{result.name:<34} {result.alone_p50_ms:>9.1f} {result.server_cpu_ms:>6.2f} "
            f"{result.rps:>7.0f} "
            f"{result.p50_ms:>8.1f} {result.p99_ms:>8.1f} "
            f"{result.max_ms:>8.1f} {result.p50_ms / baseline.p50_ms:>10.1f} {result.errors:>6}  "
            f"{verdict}"
        )
    lines.append(
        f"(alone: one client; CPU: the API processes' CPU per request under load; the "
        f"rest: {clients} concurrent clients; lists return a page "
        f"of {PAGE}; {os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.1f} at the end)"
    )
    return "\n".join(lines)


async def main(requests: int, clients: int, budget_s: float, workers: int) -> int:
    with tempfile.TemporaryDirectory(prefix="bm-bench-") as tmp:
        data_dir = Path(tmp) / "data"
        database_url = f"sqlite+aiosqlite:///{data_dir}/metadata.db"
        settings = Settings(data_dir=data_dir, database_url=database_url)
        secrets = resolve_secrets(settings)  # generated once; the API process reads them
        await upgrade(database_url)
        now = datetime.now(UTC)
        began = time.perf_counter()
        users = await seed(database_url, now)
        print(f"seeded {BACKUPS:,} backups and {AUDIT_ENTRIES:,} audit entries "
              f"in {time.perf_counter() - began:.1f}s")  # fmt: skip
        tokens = {
            role: issue_access_token(user_id, secret=secrets.jwt_secret, now=now, ttl_s=86400)
            for role, user_id in users.items()
        }
        nats = NatsServer()
        nats.start()
        env = service_env(data_dir, nats.url, database_url, BM_LOG_LEVEL="WARNING")
        # The product's default (one API process per CPU) unless --workers says.
        del env["BM_API_WORKERS"]
        if workers:
            env["BM_API_WORKERS"] = str(workers)
        count = Settings(api_workers=workers).api_worker_count()
        print(f"API workers: {count}")
        api = ServiceProcess("api", env, Path(tmp) / "api.log").start()
        try:
            wait_for_status(f"{api.base_url}/readyz", 200, timeout=30)
            await every_worker_listening(api.base_url, count, within_s=30)
            assert api.process is not None
            pid = api.process.pid
            results = await run_load(
                api.base_url, tokens, requests, clients, budget_s, lambda: process_tree_cpu_s(pid)
            )
        finally:
            api.stop()
            nats.stop()
            log = api.log()
    table = report(results, clients)
    print(table)
    if "Traceback" in log:
        print("the API logged errors:\n" + log[-4000:])
    out = REPO / "bench" / "results"
    out.mkdir(exist_ok=True)
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    (out / f"api_lists-{stamp}.json").write_text(
        json.dumps(
            {
                "target_p99_ms": TARGET_P99_MS,
                "clients": clients,
                "api_workers": Settings(api_workers=workers).api_worker_count(),
                "seeded": {"backups": BACKUPS, "audit": AUDIT_ENTRIES},
                "results": [asdict(r) | {"rps": r.rps} for r in results],
            },
            indent=2,
        )
    )
    missed = [r for r in results[1:] if r.p99_ms > TARGET_P99_MS]
    return 1 if missed or any(r.errors for r in results) else 0


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--requests", type=int, default=2000, help="per endpoint")
    parser.add_argument("--clients", type=int, default=20)
    parser.add_argument("--seconds", type=float, default=20.0, help="at most, per endpoint")
    parser.add_argument(
        "--workers", type=int, default=0, help="API processes (BM_API_WORKERS); 0: the default"
    )
    args = parser.parse_args()
    # A SIGTERM (e.g. from `timeout`) still stops the API and NATS processes.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    sys.exit(asyncio.run(main(args.requests, args.clients, args.seconds, args.workers)))
