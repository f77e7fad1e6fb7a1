"""Screenshots of every page into ``docs/screenshots/`` (run ``scripts/screenshots``).

Starts the stack the UI tests use (API and pages, SQLite, NATS, PostgreSQL, an
in-process executor), seeds demo data (projects, databases, schedules, a month of
backup history, a real backup and restore), and saves each page as PNG with
Debian's Chromium.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import random
import tempfile
import uuid
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import Any

from playwright.async_api import Page, ViewportSize, async_playwright
from sqlalchemy import select

from proto.backup_events import BackupProgressed
from proto.values import Compression as WireCompression
from services.api.auth.principal import Principal
from services.api.domain import backups, databases, projects, restores, schedules
from services.api.schemas.databases import DatabaseCreate
from services.api.schemas.schedules import ScheduleCreate
from services.common.db.enums import (
    AuditOutcome,
    BackupStatus,
    BackupTrigger,
    Compression,
    CopyStatus,
    ProjectRole,
    RestoreMode,
)
from services.common.db.models import (
    AuditEntry,
    Backup,
    BackupCopy,
    Destination,
    Restore,
    User,
)
from services.common.passwords import hash_password
from services.common.streams import publish
from tests.servers import NatsServer, PostgresServer
from tests.ui.conftest import (
    CHROMIUM,
    CHROMIUM_ARGS,
    PASSWORD,
    Stack,
    log_in,
    run_executor,
    start_stack,
    ui_settings,
)

log = logging.getLogger("screenshots")
OUT = Path(__file__).resolve().parents[2] / "docs" / "screenshots"
DESKTOP: ViewportSize = {"width": 1360, "height": 900}
PHONE: ViewportSize = {"width": 390, "height": 844}


@dataclass
class Demo:
    admin: str
    viewer: str
    shop: uuid.UUID
    orders: uuid.UUID
    schedule: uuid.UUID
    backup: uuid.UUID
    running: uuid.UUID
    restore: uuid.UUID
    ids: dict[str, uuid.UUID] = field(default_factory=dict)


async def seed(stack: Stack, pg: PostgresServer, dbname: str) -> Demo:
    """Demo data through the domain layer, plus a month of synthesized history."""
    ctx = stack.ctx
    admin = "admin@example.com"
    password_hash = hash_password(PASSWORD, rounds=4)
    async with ctx.transaction() as session:
        for email in (admin, "viewer@example.com", "ops@example.com"):
            session.add(User(email=email, password_hash=password_hash, is_admin=email == admin))
    async with ctx.transaction() as session:
        ids = {u.email: u.id for u in await session.scalars(select(User))}
    who = Principal(user_id=ids[admin], email=admin, is_admin=True)
    async with ctx.transaction() as session:
        shop = await projects.create_project(
            session, who, "Shop", "shop", "Orders, customers and the product catalogue"
        )
        analytics = await projects.create_project(
            session, who, "Analytics", "analytics", "Event store and reporting"
        )
        await projects.add_member(
            session, who, shop.id, email="viewer@example.com", user_id=None, role=ProjectRole.VIEWER
        )
        await projects.add_member(
            session, who, shop.id, email="ops@example.com", user_id=None, role=ProjectRole.OPERATOR
        )
        made: dict[str, uuid.UUID] = {}
        specs: list[dict[str, Any]] = [
            {
                "project_id": shop.id,
                "name": "orders",
                "engine": "postgresql",
                "host": pg.host,
                "port": pg.port,
                "database_name": dbname,
                "username": pg.user,
                "password": pg.password,
            },
            {
                "project_id": shop.id,
                "name": "customers",
                "engine": "postgresql",
                "host": "10.0.4.12",
                "database_name": "customers",
                "username": "backup",
            },
            {
                "project_id": shop.id,
                "name": "catalog",
                "engine": "mariadb",
                "host": "catalog.db.internal",
                "database_name": "catalog",
                "username": "backup",
                "options": {"routines": True},
            },
            {
                "project_id": shop.id,
                "name": "sessions",
                "engine": "redis",
                "host": "cache.internal",
            },
            {
                "project_id": analytics.id,
                "name": "events",
                "engine": "mongodb",
                "host": "mongo.internal",
                "database_name": "events",
                "username": "backup",
            },
        ]
        for spec in specs:
            database, _ = await databases.create_database(
                session, who, ctx.cipher, DatabaseCreate.model_validate(spec)
            )
            made[database.name] = database.id
        nightly, _ = await schedules.create_schedule(
            session,
            who,
            ScheduleCreate(
                database_id=made["orders"],
                name="nightly",
                cron="30 2 * * *",
                timezone="Europe/Berlin",
                retention={"keep_last": 7, "gfs": {"daily": 7, "weekly": 4}},
            ),
        )
        for name, cron in (
            ("customers", "0 */6 * * *"),
            ("catalog", "0 3 * * *"),
            ("events", "15 1 * * 1-5"),
        ):
            await schedules.create_schedule(
                session,
                who,
                ScheduleCreate(
                    database_id=made[name],
                    name="regular",
                    cron=cron,
                    timezone="UTC",
                    retention={"keep_last": 14},
                ),
            )
    await _history(stack, made, nightly.schedule.id)
    backup_id = await _real_backup(stack, who, made["orders"])
    restore_id = await _real_restore(stack, who, backup_id, f"{dbname}_restored")
    running = await _running(stack, made["customers"])
    await _audit(stack, ids, made, shop.id)
    return Demo(
        admin,
        "viewer@example.com",
        shop.id,
        made["orders"],
        nightly.schedule.id,
        backup_id,
        running,
        restore_id,
        made,
    )


async def _history(stack: Stack, made: dict[str, uuid.UUID], nightly: uuid.UUID) -> None:
    """A month of runs: mostly successes, a few failures, growing sizes."""
    rng = random.Random(7)
    now = stack.ctx.clock()
    destination = await _default_destination(stack)
    sizes = {"orders": 3.4e6, "customers": 42e6, "catalog": 12e6, "events": 610e6, "sessions": 3e6}
    async with stack.ctx.transaction() as session:
        for day in range(30, 0, -1):
            for name, database_id in made.items():
                if name == "sessions" and day % 2:
                    continue
                queued = (now - timedelta(days=day)).replace(hour=2, minute=30) + timedelta(
                    minutes=rng.randint(0, 50)
                )
                roll = rng.random()
                status = (
                    BackupStatus.FAILED
                    if roll < 0.06
                    else BackupStatus.MISSED
                    if roll < 0.08
                    else BackupStatus.SUCCEEDED
                )
                raw = int(sizes[name] * (1 + (30 - day) * 0.012) * rng.uniform(0.97, 1.03))
                took = timedelta(seconds=max(4, raw / 40e6 * rng.uniform(0.8, 1.2)))
                backup = Backup(
                    id=uuid.uuid4(),
                    database_id=database_id,
                    schedule_id=nightly if name == "orders" else None,
                    trigger=BackupTrigger.SCHEDULE,
                    status=status,
                    queued_at=queued,
                    started_at=queued + timedelta(seconds=2),
                    finished_at=queued + timedelta(seconds=2) + took,
                    attempts=1,
                    executor_id="executor-1",
                    compression=Compression.ZSTD,
                )
                if status is BackupStatus.SUCCEEDED:
                    backup.bytes_in = raw
                    backup.bytes_out = int(raw * rng.uniform(0.18, 0.24))
                    backup.sha256 = uuid.uuid4().hex + uuid.uuid4().hex
                    backup.artifact_key = f"demo/{name}/{queued:%Y/%m/%d}/{backup.id}.zst"
                elif status is BackupStatus.FAILED:
                    backup.error_code = "unreachable"
                    backup.error_message = (
                        f"Cannot reach {name} at its host: connection "
                        "timed out — check host, port and firewall"
                    )
                session.add(backup)
                await session.flush()
                if status is BackupStatus.SUCCEEDED:
                    session.add(
                        BackupCopy(
                            backup_id=backup.id,
                            destination_id=destination,
                            artifact_key=backup.artifact_key or "",
                            status=CopyStatus.STORED,
                            size_bytes=backup.bytes_out,
                            stored_at=backup.finished_at,
                        )
                    )


async def _default_destination(stack: Stack) -> uuid.UUID:
    async with stack.ctx.transaction() as session:
        found = await session.scalar(select(Destination.id).limit(1))
    assert found is not None
    return found


async def _real_backup(stack: Stack, who: Principal, database_id: uuid.UUID) -> uuid.UUID:
    async with stack.ctx.transaction() as session:
        backup, job = await backups.queue_backup(
            session,
            who,
            database_id,
            destination_ids=None,
            compression=WireCompression(),
            timeout_s=600,
        )
    await backups.send_job(stack.ctx.nc, job)
    await _wait(stack, Backup, backup.id)
    return backup.id


async def _real_restore(stack: Stack, who: Principal, backup_id: uuid.UUID, name: str) -> uuid.UUID:
    async with stack.ctx.transaction() as session:
        restore, job = await restores.request_restore(
            session,
            who,
            backup_id,
            target_database_id=None,
            target_name=name,
            mode=RestoreMode.INTO_EMPTY,
            confirm_overwrite_source=False,
            no_owner=False,
        )
    assert stack.ctx.nc is not None
    await publish(stack.ctx.nc, job)
    await _wait(stack, Restore, restore.id)
    return restore.id


async def _wait(stack: Stack, model: type[Backup] | type[Restore], row_id: uuid.UUID) -> None:
    async with asyncio.timeout(120):
        while True:
            async with stack.ctx.transaction() as session:
                status = await session.scalar(select(model.status).where(model.id == row_id))
            if status is not None and status.value not in {"queued", "running"}:
                return
            await asyncio.sleep(0.3)


async def _running(stack: Stack, database_id: uuid.UUID) -> uuid.UUID:
    """A run that looks in progress (no executor touches it)."""
    now = stack.ctx.clock()
    async with stack.ctx.transaction() as session:
        backup = Backup(
            database_id=database_id,
            trigger=BackupTrigger.MANUAL,
            status=BackupStatus.RUNNING,
            queued_at=now - timedelta(seconds=50),
            started_at=now - timedelta(seconds=48),
            bytes_in=61_234_567,
            bytes_out=12_845_112,
            executor_id="executor-1",
            attempts=1,
        )
        session.add(backup)
    return backup.id


async def _audit(
    stack: Stack, ids: dict[str, uuid.UUID], made: dict[str, uuid.UUID], shop: uuid.UUID
) -> None:
    """A few audit entries, as the pages and the API write them."""
    now = stack.ctx.clock()
    admin = "admin@example.com"
    entries: list[tuple[str | None, str, str | None, uuid.UUID | None, str, dict[str, Any]]] = [
        (admin, "project.create", "project", shop, "success", {"via": "web"}),
        (
            admin,
            "database.create",
            "database",
            made["orders"],
            "success",
            {"name": "orders", "engine": "postgresql", "password": "set"},
        ),
        (admin, "schedule.create", "schedule", made["orders"], "success", {"name": "nightly"}),
        ("ops@example.com", "database.test", "database", made["catalog"], "success", {"ok": False}),
        (
            "viewer@example.com",
            "backup.create",
            "database",
            made["orders"],
            "denied",
            {"status": 403},
        ),
        (None, "auth.login", None, None, "denied", {"email": "mallory@example.com"}),
        (
            "ops@example.com",
            "backup.create",
            "backup",
            made["customers"],
            "success",
            {"via": "web"},
        ),
    ]
    async with stack.ctx.transaction() as session:
        for minutes, (actor, action, kind, target, outcome, details) in enumerate(entries):
            session.add(
                AuditEntry(
                    at=now - timedelta(minutes=90 - minutes * 11),
                    actor=actor or str(details["email"]),
                    user_id=ids.get(actor or ""),
                    action=action,
                    target_type=kind,
                    target_id=str(target) if target else None,
                    project_id=shop if target else None,
                    client_address="10.0.8.21",
                    outcome=AuditOutcome(outcome),
                    details=details,
                )
            )


async def _progress(
    stack: Stack, backup_id: uuid.UUID, database_id: uuid.UUID, project_id: uuid.UUID
) -> None:
    """Progress events for the staged running backup, as an executor sends them."""
    assert stack.ctx.nc is not None
    for step in range(10_000):
        done = 61_234_567 + step * 2_400_000 % 60_000_000
        await publish(
            stack.ctx.nc,
            BackupProgressed(
                backup_id=backup_id,
                project_id=project_id,
                database_id=database_id,
                bytes_in=done,
                bytes_out=done // 5,
                rate_bps=24_300_000.0,
                elapsed_s=48.0 + step * 0.1,
                estimated_total_bytes=160_000_000,
            ),
        )
        await asyncio.sleep(0.1)


async def shoot(page: Page, url: str, name: str, *, full: bool = True) -> None:
    await page.goto(url)
    await page.wait_for_load_state("networkidle")
    path = OUT / f"{name}.png"
    await page.screenshot(path=str(path), full_page=full)
    log.info("saved %s", path.relative_to(OUT.parents[1]))


async def take(stack: Stack, demo: Demo) -> None:
    base = stack.url
    async with async_playwright() as playwright:
        browser = await playwright.chromium.launch(
            executable_path=str(CHROMIUM), args=CHROMIUM_ARGS, headless=True
        )
        try:
            context = await browser.new_context(viewport=DESKTOP, device_scale_factor=1)
            page = await context.new_page()
            await shoot(page, f"{base}/login", "login")
            await log_in(page, stack, demo.admin)
            pages = [
                ("/", "dashboard"),
                ("/projects", "projects"),
                (f"/projects/{demo.shop}", "project"),
                ("/projects/new", "project-new"),
                ("/databases", "databases"),
                (f"/databases/{demo.orders}", "database"),
                ("/databases/new", "database-new"),
                (f"/databases/{demo.ids['catalog']}/edit", "database-edit"),
                ("/schedules", "schedules"),
                (f"/schedules/{demo.schedule}", "schedule"),
                (f"/schedules/{demo.schedule}/edit", "schedule-edit"),
                ("/backups", "backups"),
                (f"/backups/{demo.backup}", "backup"),
                (f"/backups/{demo.running}", "backup-running"),
                (f"/backups/{demo.backup}/restore", "restore-form"),
                ("/restores", "restores"),
                (f"/restores/{demo.restore}", "restore"),
                ("/admin/users", "admin-users"),
                ("/admin/audit", "admin-audit"),
                ("/tokens", "tokens"),
                ("/no-such-page", "not-found"),
            ]
            progress = asyncio.create_task(
                _progress(stack, demo.running, demo.ids["customers"], demo.shop)
            )
            try:
                for path, name in pages:
                    await shoot(page, base + path, name)
            finally:
                progress.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await progress
            await context.close()
            phone = await browser.new_context(
                viewport=PHONE, device_scale_factor=2, is_mobile=True, has_touch=True
            )
            page = await phone.new_page()
            await log_in(page, stack, demo.admin)
            for path, name in (
                ("/", "phone-dashboard"),
                (f"/backups/{demo.backup}", "phone-backup"),
            ):
                await shoot(page, base + path, name)
            await phone.close()
        finally:
            await browser.close()


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    logging.getLogger("services").setLevel(logging.ERROR)
    logging.getLogger("aiohttp.access").setLevel(logging.WARNING)
    if not CHROMIUM.exists():
        raise SystemExit(f"{CHROMIUM} is missing: install Debian's chromium package")
    OUT.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="bm-screenshots-") as tmp:
        nats_server, pg = NatsServer(), PostgresServer()
        nats_server.start()
        pg.start()
        dbname = f"shop_{uuid.uuid4().hex[:6]}"
        try:
            pg.create_database(dbname)
            pg.execute(
                "CREATE TABLE orders AS SELECT i AS id, md5(i::text) AS note, "
                "now() - i * interval '1 minute' AS placed_at "
                "FROM generate_series(1, 50000) i",
                dbname=dbname,
            )
            stack, server, engine = await start_stack(ui_settings(Path(tmp)), nats_server.url)
            try:
                async for _ in run_executor(stack.ctx):
                    demo = await seed(stack, pg, dbname)
                    await take(stack, demo)
            finally:
                await server.close()
                if stack.ctx.nc is not None:
                    await stack.ctx.nc.close()
                await engine.dispose()  # type: ignore[attr-defined]
        finally:
            pg.stop()
            nats_server.stop()


if __name__ == "__main__":
    asyncio.run(main())
