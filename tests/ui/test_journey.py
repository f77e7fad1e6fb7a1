"""The main journey in a real browser: log in, create a project and a database, test
its connection, create a schedule and see its preview, back up now and watch the
progress reach success, download, restore into a new database, and see the
dashboard change."""

from __future__ import annotations

import hashlib
import re
import uuid
from pathlib import Path

import asyncpg
import pytest
from playwright.async_api import Page, expect

from services.executor.context import ExecutorContext
from tests.servers import Database, PostgresServer
from tests.ui.conftest import Stack, log_in

pytestmark = pytest.mark.integration
LONG_MS = 60_000


async def stat(page: Page, name: str) -> str:
    return (await page.locator(f'[data-stat="{name}"]').inner_text()).strip()


async def test_main_journey(
    stack: Stack,
    executor: ExecutorContext,
    page: Page,
    pg_server: PostgresServer,
    pg_database: Database,
    tmp_path: Path,
) -> None:
    pg_server.execute(
        "CREATE TABLE t AS SELECT i, md5(i::text) AS note FROM generate_series(1, 20000) i",
        dbname=pg_database.name,
    )
    email = await stack.user("owner")

    # Log in: the dashboard is empty and says what to do next.
    await log_in(page, stack, email)
    await expect(page.get_by_role("heading", name="Dashboard")).to_be_visible()
    assert await stat(page, "databases") == "0"
    await expect(page.get_by_text("No databases yet")).to_be_visible()

    # Create a project.
    await page.get_by_role("link", name="Create a project").click()
    await page.get_by_label("Name", exact=True).fill("Shop")
    await page.get_by_role("button", name="Create project").click()
    await expect(page.get_by_role("heading", name=re.compile("^Shop"))).to_be_visible()
    await expect(page.get_by_text("Project “Shop” created")).to_be_visible()

    # Add a database (PostgreSQL, the real server); the password is not shown back.
    await page.get_by_role("link", name="Add a database").click()
    await page.get_by_label("Name", exact=True).fill("orders")
    await page.get_by_label("Host").fill(pg_server.host)
    await page.get_by_label("Port").fill(str(pg_server.port))
    await page.get_by_label("Database name").fill(pg_database.name)
    await page.get_by_label("User name").fill(pg_server.user)
    await page.get_by_label("Password").fill(pg_server.password)
    await expect(page.locator("fieldset[data-engines='mongodb']")).to_be_hidden()
    await page.get_by_role("button", name="Add database").click()
    await expect(page.get_by_role("heading", name=re.compile("^orders"))).to_be_visible()
    assert pg_server.password not in await page.content()
    await page.get_by_role("link", name="Edit").click()
    assert await page.get_by_label("Password", exact=True).input_value() == ""
    assert pg_server.password not in await page.content()
    await page.go_back()

    # Test the connection: the server version and the latency.
    await page.get_by_role("button", name="Test connection").click()
    await expect(
        page.get_by_text(re.compile(r"Connected to PostgreSQL 1\d.* in \d+ ms"))
    ).to_be_visible()

    # Create a schedule: the preview follows the cron and the zone.
    await page.get_by_role("link", name="Add a schedule").click()
    await page.get_by_label("Preset").select_option(label="Custom expression…")
    await page.get_by_label("Cron expression").fill("30 2 * * 1-5")
    await page.get_by_label("Time zone").fill("Europe/Berlin")
    preview = page.locator("[data-cron-preview]")
    await expect(preview.locator("[data-cron-description]")).to_have_text(
        re.compile("At 02:30, Monday through Friday")
    )
    await expect(preview.locator("[data-cron-runs] li")).to_have_count(5)
    await expect(preview.locator("[data-cron-runs] li").first).to_contain_text("02:30 CE")
    await page.get_by_label("Keep the newest").fill("5")
    await page.get_by_role("button", name="Create schedule").click()
    await expect(page.get_by_text("Schedule “nightly” created")).to_be_visible()
    await expect(page.locator("ol.runs li")).to_have_count(5)
    await expect(page.get_by_text("Keep the newest 5")).to_be_visible()
    await expect(page.get_by_text("No backups from this schedule yet")).to_be_visible()

    # Back up now, and watch the live progress reach success (no reload by us).
    await page.get_by_role("link", name="orders").first.click()
    streams: list[str] = []
    page.on("request", lambda request: streams.append(request.url))
    await page.get_by_role("button", name="Back up now").click()
    await expect(page.get_by_text("Backup queued")).to_be_visible()
    backup_url = page.url
    assert re.search(r"/backups/[0-9a-f-]{36}$", backup_url)
    await expect(page.locator("[data-status-badge] .badge")).to_have_text(
        "succeeded", timeout=LONG_MS
    )
    assert any(url.endswith("/events") for url in streams), "the page did not open the SSE stream"
    await expect(page.get_by_role("heading", name="Progress")).to_have_count(0)
    checksum = (await page.locator("dt:text('SHA-256') + dd code").inner_text()).strip()
    assert re.fullmatch(r"[0-9a-f]{64}", checksum)

    # Download: the artifact's bytes match the checksum on the page.
    async with page.expect_download() as downloading:
        await page.get_by_role("link", name="Download").click()
    download = await downloading.value
    saved = tmp_path / "artifact"
    await download.save_as(saved)
    assert hashlib.sha256(saved.read_bytes()).hexdigest() == checksum
    assert download.suggested_filename.endswith(".pgdump.zst")

    # Restore into a new database, and watch it succeed.
    target = f"copy_{uuid.uuid4().hex[:8]}"
    try:
        await page.get_by_role("link", name="Restore…").click()
        await page.get_by_label("Database name on that server").fill(target)
        await page.get_by_role("button", name="Start restore").click()
        await expect(page.get_by_text("Tick this box to confirm", exact=False)).to_be_visible()
        await page.get_by_label("I want to write this backup").check()
        await page.get_by_role("button", name="Start restore").click()
        await expect(page.get_by_text("Restore queued")).to_be_visible()
        await expect(page.locator("[data-status-badge] .badge")).to_have_text(
            "succeeded", timeout=LONG_MS
        )
        conn = await asyncpg.connect(pg_server.dsn(target))
        try:
            assert await conn.fetchval("SELECT count(*) FROM t") == 20000
        finally:
            await conn.close()
    finally:
        pg_server.drop_database(target)

    # The dashboard changed.
    await page.get_by_role("link", name="Dashboard", exact=True).click()
    assert await stat(page, "databases") == "1"
    assert await stat(page, "schedules") == "1"
    assert await stat(page, "runs-24h") == "1"
    assert await stat(page, "success-rate") == "100 %"
    assert await stat(page, "storage") != "0 B"
    await expect(page.get_by_text("No databases yet")).to_have_count(0)
    recent = page.locator(".card", has=page.get_by_role("heading", name="Recent backups"))
    await expect(recent.get_by_role("link", name="orders")).to_be_visible()
    chart = page.locator("svg.chart").first
    await expect(chart.locator("title").first).to_have_text("Backups per day by status")
    assert "1 succeeded" in (await chart.inner_html())

    # Log out: the session ends on the server.
    await page.get_by_role("button", name="Log out").click()
    await expect(page.get_by_text("You are logged out")).to_be_visible()
    await page.goto(f"{stack.url}/databases")
    await expect(page).to_have_url(re.compile(r"/login\?next=/databases$"))
