"""Live progress: Server-Sent Events fed by the runs' NATS events, read raw and in the
browser (the page follows a run to its end without being reloaded by hand)."""

from __future__ import annotations

import asyncio
import json
import re
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import aiohttp
import pytest
from playwright.async_api import Page, expect
from sqlalchemy import update

from proto.backup_events import BackupFailed, BackupProgressed
from services.common.db.enums import BackupStatus, ProjectRole
from services.common.db.models import Backup
from services.common.streams import publish
from tests.ui.conftest import PASSWORD, Stack, log_in

pytestmark = pytest.mark.integration


@asynccontextmanager
async def logged_in(stack: Stack, email: str) -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession(cookie_jar=aiohttp.CookieJar(unsafe=True)) as http:
        async with http.get(f"{stack.url}/login") as response:
            found = re.search(r'name="csrf_token" value="([^"]+)"', await response.text())
        assert found is not None
        form = {"email": email, "password": PASSWORD, "csrf_token": found.group(1)}
        async with http.post(f"{stack.url}/login", data=form) as response:
            assert response.status == 200
            assert response.url.path == "/"
        yield http


async def frames(response: aiohttp.ClientResponse) -> AsyncIterator[tuple[str, dict[str, Any]]]:
    """``(event, data)`` of each Server-Sent Event."""
    name, data = "", ""
    async for raw in response.content:
        line = raw.decode().rstrip("\n")
        if line.startswith("event: "):
            name = line.removeprefix("event: ")
        elif line.startswith("data: "):
            data = line.removeprefix("data: ")
        elif not line and name:
            yield name, json.loads(data)
            name, data = "", ""


async def progress(
    stack: Stack, backup_id: uuid.UUID, project: uuid.UUID, database: uuid.UUID, done: int
) -> None:
    assert stack.ctx.nc is not None
    await publish(
        stack.ctx.nc,
        BackupProgressed(
            backup_id=backup_id,
            project_id=project,
            database_id=database,
            bytes_in=done,
            bytes_out=done // 4,
            rate_bps=5 * 1024 * 1024,
            elapsed_s=12.5,
            estimated_total_bytes=100 * 1024 * 1024,
        ),
    )


async def finish(
    stack: Stack, backup_id: uuid.UUID, project: uuid.UUID, database: uuid.UUID
) -> None:
    async with stack.ctx.transaction() as session:
        await session.execute(
            update(Backup)
            .where(Backup.id == backup_id)
            .values(
                status=BackupStatus.FAILED,
                finished_at=stack.ctx.clock(),
                error_code="tool_failed",
                error_message="pg_dump: error: out of memory",
            )
        )
    assert stack.ctx.nc is not None
    await publish(
        stack.ctx.nc,
        BackupFailed(
            backup_id=backup_id,
            project_id=project,
            database_id=database,
            code="tool_failed",
            message="pg_dump: error: out of memory",
        ),
    )


async def test_event_stream_follows_a_backup(stack: Stack) -> None:
    owner, stranger = await stack.user("owner"), await stack.user("stranger")
    project = await stack.project("Shop", {owner: ProjectRole.OWNER})
    database = await stack.database(project)
    backup = await stack.backup(database, BackupStatus.RUNNING)
    url = f"{stack.url}/backups/{backup}/events"
    async with logged_in(stack, stranger) as http, http.get(url) as response:
        assert response.status == 404
    async with logged_in(stack, owner) as http, http.get(url) as response:
        assert response.status == 200
        assert response.content_type == "text/event-stream"
        stream = frames(response)
        async with asyncio.timeout(15):
            assert await anext(stream) == (
                "state",
                {
                    "status": "running",
                    "final": False,
                    "bytes_in": "1000 B",
                    "bytes_out": "400 B",
                },
            )
            other = uuid.uuid4()  # another run's progress is not shown
            await progress(stack, other, project, database, 1)
            await progress(stack, backup, project, database, 50 * 1024 * 1024)
            name, data = await anext(stream)
            assert name == "progress"
            assert data == {
                "status": "running",
                "bytes_in": "50.0 MiB",
                "bytes_out": "12.5 MiB",
                "rate": "5.0 MiB/s",
                "elapsed": "12.5 s",
                "percent": 50.0,
            }
            await finish(stack, backup, project, database)
            assert (await anext(stream))[0] == "state"
            name, data = await anext(stream)
            assert (name, data["status"], data["final"]) == ("done", "failed", True)


async def test_the_page_follows_a_run_to_its_end(stack: Stack, page: Page) -> None:
    owner = await stack.user("owner")
    project = await stack.project("Shop", {owner: ProjectRole.OWNER})
    database = await stack.database(project)
    backup = await stack.backup(database, BackupStatus.RUNNING)
    await log_in(page, stack, owner)
    async with page.expect_response(re.compile(r"/events$")):
        await page.goto(f"{stack.url}/backups/{backup}")
    live = page.locator("[data-live]")
    await expect(live.locator('[data-field="status"]')).to_have_text("running")
    await asyncio.sleep(0.3)  # the stream subscribed before it sent its first state
    await progress(stack, backup, project, database, 30 * 1024 * 1024)
    await expect(live.locator('[data-field="bytes_in"]')).to_have_text("30.0 MiB")
    await expect(live.locator('[data-field="rate"]')).to_have_text("5.0 MiB/s")
    await expect(live.locator("progress")).to_be_visible()
    assert await live.locator("progress").evaluate("e => e.value") == 30
    await finish(stack, backup, project, database)
    await expect(page.locator("[data-status-badge] .badge")).to_have_text("failed")
    await expect(page.get_by_role("heading", name="Progress")).to_have_count(0)
    await expect(page.get_by_role("alert")).to_contain_text("pg_dump: error: out of memory")
