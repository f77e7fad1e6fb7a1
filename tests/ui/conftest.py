"""The web pages in a real browser: the API service's app (JSON API and pages) on a
real port, with a migrated SQLite metadata DB, a real NATS and an in-process
executor doing real backups and restores of a real PostgreSQL; Debian's Chromium
driven by Playwright (async API: pytest-asyncio runs the event loop)."""

from __future__ import annotations

import re
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import nats
import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer
from playwright.async_api import Browser, BrowserContext, Page, async_playwright
from sqlalchemy import select

from proto.subjects import BACKUP_REQUESTED, EXECUTOR_DURABLE, JOBS_STREAM, RESTORE_REQUESTED
from services.api.app import setup_api
from services.api.context import API, ApiContext
from services.api.domain.destinations import ensure_default_destination
from services.api.pages import setup_pages
from services.common.credentials import CredentialCipher
from services.common.db.engine import create_engine, session_factory
from services.common.db.enums import BackupStatus, BackupTrigger, DatabaseEngine, ProjectRole
from services.common.db.models import Backup, Database, Project, ProjectMember, User
from services.common.migrate import upgrade
from services.common.passwords import hash_password
from services.common.secrets import resolve_secrets
from services.common.settings import Settings
from services.common.streams import ensure_streams
from services.common.work import WorkTracker
from services.executor.backup import BackupHandler
from services.executor.connection_test import ConnectionTester
from services.executor.context import ExecutorContext
from services.executor.restore import RestoreHandler
from services.executor.worker import JobWorker
from tests.servers import NatsServer

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
PASSWORD = "correct horse battery"
_HASH = hash_password(PASSWORD, rounds=4)
TIMEOUT_MS = 20_000


@dataclass
class Stack:
    url: str
    ctx: ApiContext

    async def user(self, name: str = "user", *, admin: bool = False) -> str:
        """A new account (password :data:`PASSWORD`); returns its email."""
        email = f"{name}-{uuid.uuid4().hex[:6]}@example.com"
        async with self.ctx.transaction() as session:
            session.add(User(email=email, password_hash=_HASH, is_admin=admin))
        return email

    async def project(self, name: str, members: dict[str, ProjectRole]) -> uuid.UUID:
        """A project with members given by email (made directly in the metadata DB)."""
        async with self.ctx.transaction() as session:
            project = Project(name=name, slug=f"{name.lower()}-{uuid.uuid4().hex[:6]}")
            session.add(project)
            await session.flush()
            for email, role in members.items():
                user_id = await session.scalar(select(User.id).where(User.email == email))
                session.add(ProjectMember(project_id=project.id, user_id=user_id, role=role))
            return project.id

    async def database(self, project_id: uuid.UUID, name: str = "orders") -> uuid.UUID:
        """A PostgreSQL database entry pointing nowhere in particular."""
        async with self.ctx.transaction() as session:
            database = Database(
                project_id=project_id,
                name=name,
                engine=DatabaseEngine.POSTGRESQL,
                host="db.invalid",
                port=5432,
                database_name=name,
                username="backup",
            )
            session.add(database)
            await session.flush()
            return database.id

    async def backup(
        self, database_id: uuid.UUID, status: BackupStatus = BackupStatus.SUCCEEDED
    ) -> uuid.UUID:
        """A backup row (no artifact behind it), as an executor leaves it."""
        now = self.ctx.clock()
        async with self.ctx.transaction() as session:
            backup = Backup(
                database_id=database_id,
                trigger=BackupTrigger.MANUAL,
                status=status,
                queued_at=now,
                started_at=now if status is not BackupStatus.QUEUED else None,
                finished_at=now if status is BackupStatus.SUCCEEDED else None,
                bytes_in=1000,
                bytes_out=400,
                sha256="0" * 64 if status is BackupStatus.SUCCEEDED else None,
                artifact_key="x/y/z.pgdump.zst",
            )
            session.add(backup)
            await session.flush()
            return backup.id


def ui_settings(tmp_path: Path) -> Settings:
    return Settings(
        data_dir=tmp_path / "data",
        database_url=f"sqlite+aiosqlite:///{tmp_path}/meta.db",
        bcrypt_rounds=4,
        progress_interval_s=0.1,
        max_body_bytes=256 * 1024,
        api_workers=1,  # the app runs in this one process
    )


async def start_stack(settings: Settings, nats_url: str) -> tuple[Stack, TestServer, object]:
    await upgrade(settings.database_url)
    engine = create_engine(settings.database_url)
    nc = await nats.connect(nats_url)
    await ensure_streams(nc.jetstream())
    secrets = resolve_secrets(settings)
    ctx = ApiContext(
        settings=settings,
        secrets=secrets,
        sessions=session_factory(engine),
        nc=nc,
        cipher=CredentialCipher(secrets.credential_keys),
    )
    async with ctx.transaction() as session:
        await ensure_default_destination(session, settings)
    app = web.Application(client_max_size=settings.max_body_bytes)
    setup_api(app)
    setup_pages(app)
    app[API] = ctx
    server = TestServer(app, host="127.0.0.1")
    await server.start_server()
    return Stack(str(server.make_url("")).rstrip("/"), ctx), server, engine


@pytest.fixture
async def stack(tmp_path: Path, nats_server: NatsServer) -> AsyncIterator[Stack]:
    running, server, engine = await start_stack(ui_settings(tmp_path), nats_server.url)
    yield running
    await server.close()
    assert running.ctx.nc is not None
    await running.ctx.nc.close()
    await engine.dispose()  # type: ignore[attr-defined]


@pytest.fixture
async def executor(stack: Stack) -> AsyncIterator[ExecutorContext]:
    """An executor in this process, sharing the stack's metadata DB and NATS."""
    async for ctx in run_executor(stack.ctx):
        yield ctx


async def run_executor(api: ApiContext) -> AsyncIterator[ExecutorContext]:
    assert api.nc is not None
    ctx = ExecutorContext(
        settings=api.settings,
        sessions=api.sessions,
        nc=api.nc,
        cipher=api.cipher,
        executor_id="ui-test-executor",
    )
    work = WorkTracker()
    worker = JobWorker(
        api.nc.jetstream(),
        stream=JOBS_STREAM,
        durable=EXECUTOR_DURABLE,
        handlers={BACKUP_REQUESTED: BackupHandler(ctx), RESTORE_REQUESTED: RestoreHandler(ctx)},
        work=work,
        concurrency=2,
    )
    tester = ConnectionTester(ctx)
    await worker.start()
    await tester.start()
    try:
        yield ctx
    finally:
        await tester.stop()
        await worker.stop_taking_work()
        await work.drain(5)


@pytest.fixture
async def browser() -> AsyncIterator[Browser]:
    if not CHROMIUM.exists():
        pytest.skip(f"{CHROMIUM} is missing: install Debian's chromium package to run UI tests")
    async with async_playwright() as playwright:
        launched = await playwright.chromium.launch(
            executable_path=str(CHROMIUM), args=CHROMIUM_ARGS, headless=True
        )
        try:
            yield launched
        finally:
            await launched.close()


@pytest.fixture
async def browser_context(browser: Browser) -> AsyncIterator[BrowserContext]:
    context = await browser.new_context(
        accept_downloads=True, viewport={"width": 1280, "height": 900}
    )
    context.set_default_timeout(TIMEOUT_MS)
    try:
        yield context
    finally:
        await context.close()


@pytest.fixture
async def page(browser_context: BrowserContext) -> Page:
    return await browser_context.new_page()


async def log_in(page: Page, stack: Stack, email: str, password: str = PASSWORD) -> None:
    await page.goto(f"{stack.url}/login")
    await page.get_by_label("Email").fill(email)
    await page.get_by_label("Password").fill(password)
    await page.get_by_role("button", name="Log in").click()
    await page.wait_for_url(re.compile(r"^(?!.*/login).*$"))
