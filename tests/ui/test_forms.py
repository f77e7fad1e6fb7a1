"""Forms: field errors beside the fields (never a traceback), CSRF rejection, login
failures, and the pages working without JavaScript."""

from __future__ import annotations

import re

import pytest
from playwright.async_api import Browser, BrowserContext, Page, expect
from sqlalchemy import func, select, update

from services.common.db.enums import BackupStatus, ProjectRole
from services.common.db.models import Backup, Project
from tests.ui.conftest import TIMEOUT_MS, Stack, log_in

pytestmark = pytest.mark.integration


async def field_error(page: Page, field_id: str) -> str:
    return (await page.locator(f"#{field_id}-error").inner_text()).strip()


async def test_field_errors_on_bad_input(stack: Stack, page: Page) -> None:
    owner = await stack.user("owner")
    shop = await stack.project("Shop", {owner: ProjectRole.OWNER})
    database = await stack.database(shop)
    await log_in(page, stack, owner)

    # A project without a name: the form comes back with the error at the field.
    await page.goto(f"{stack.url}/projects/new")
    await page.get_by_label("Slug").fill("Not A Slug!")
    async with page.expect_response(lambda r: r.request.method == "POST") as answer:
        await page.get_by_role("button", name="Create project").click()
    assert (await answer.value).status == 422
    await expect(page.locator("#form-error")).to_contain_text("Some fields are invalid")
    assert "at least 1 character" in await field_error(page, "f-name")
    assert "should match pattern" in await field_error(page, "f-slug")
    await expect(page.get_by_label("Slug")).to_have_value("Not A Slug!")
    await expect(page.get_by_label("Name", exact=True)).to_have_attribute("aria-invalid", "true")

    # A database with a URL for a host and an impossible port; the password is not echoed.
    await page.goto(f"{stack.url}/databases/new?project={shop}")
    await page.get_by_label("Name", exact=True).fill("orders-2")
    await page.get_by_label("Host").fill("postgres://db.example.com")
    await page.get_by_label("Port").fill("70000")
    await page.get_by_label("Password").fill("s3cret-password")
    await page.get_by_role("button", name="Add database").click()
    assert "not a URL" in await field_error(page, "f-host")
    assert "65535" in await field_error(page, "f-port")
    assert "s3cret-password" not in await page.content()
    await expect(page.get_by_label("Host")).to_have_value("postgres://db.example.com")

    # A dump option the engine's allow-list refuses, at its field.
    await page.get_by_label("Host").fill("db.example.com")
    await page.get_by_label("Port").fill("")
    await page.get_by_label("Exclude schemas").fill("audit, -bad")
    await page.get_by_role("button", name="Add database").click()
    assert "must not start with '-'" in await field_error(page, "f-opt-postgresql-exclude_schemas")
    await expect(page.get_by_label("Exclude schemas")).to_have_value("audit, -bad")

    # A name already taken in the project: the domain's conflict, at the field.
    assert "required for postgresql" in await field_error(page, "f-database_name")
    await page.get_by_label("Exclude schemas").fill("audit")
    await page.get_by_label("Database name").fill("orders")
    await page.get_by_label("Name", exact=True).fill("orders")
    await page.get_by_role("button", name="Add database").click()
    assert "already taken" in await field_error(page, "f-name")

    # A schedule with an impossible cron and an unknown zone.
    await page.goto(f"{stack.url}/schedules/new?database={database}")
    await page.get_by_label("Preset").select_option("custom")
    await page.get_by_label("Cron expression").fill("61 * * * *")
    await expect(page.locator("[data-cron-description]")).to_contain_text("minute")
    await page.get_by_label("Time zone").fill("Mars/Olympus")
    await page.get_by_label("Keep the newest").fill("0")
    await page.get_by_role("button", name="Create schedule").click()
    assert "61" in await field_error(page, "f-cron")
    await expect(page.locator("#f-timezone-error")).to_contain_text("Mars/Olympus")
    assert "greater than or equal to 1" in await field_error(page, "f-retention-keep_last")


async def test_csrf_rejection(
    stack: Stack, page: Page, browser: Browser, browser_context: BrowserContext
) -> None:
    owner = await stack.user("owner")
    await log_in(page, stack, owner)

    # A form whose token was tampered with changes nothing.
    await page.goto(f"{stack.url}/projects/new")
    await page.get_by_label("Name", exact=True).fill("Forged")
    await page.locator("input[name=csrf_token]").last.evaluate("e => e.value = 'forged'")
    async with page.expect_response(lambda r: r.request.method == "POST") as answer:
        await page.get_by_role("button", name="Create project").click()
    assert (await answer.value).status == 403
    await expect(page.get_by_role("heading", name="Form expired")).to_be_visible()
    await expect(page.get_by_text("nothing was changed", exact=False)).to_be_visible()

    # A request from elsewhere (the session cookie, but no token) is refused too.
    forged = await browser_context.request.post(
        f"{stack.url}/projects/new", form={"name": "Forged"}, max_redirects=0
    )
    assert forged.status == 403
    assert "Form expired" in await forged.text()
    async with stack.ctx.transaction() as session:
        assert await session.scalar(select(func.count()).select_from(Project)) == 0

    # Logging in needs the login form's token as well.
    anonymous = await browser.new_context()
    try:
        refused = await anonymous.request.post(
            f"{stack.url}/login", form={"email": owner, "password": "x"}, max_redirects=0
        )
        assert refused.status == 403
    finally:
        await anonymous.close()


async def test_login_failures_are_explained(stack: Stack, page: Page) -> None:
    email = await stack.user("someone")
    await page.goto(f"{stack.url}/projects")
    await expect(page).to_have_url(re.compile(r"/login\?next=/projects$"))
    await page.get_by_label("Email").fill(email)
    await page.get_by_label("Password").fill("wrong password")
    await page.get_by_role("button", name="Log in").click()
    await expect(page.locator("#form-error")).to_have_text(re.compile("Wrong email or password"))
    await expect(page.get_by_label("Email")).to_have_value(email)
    await expect(page.get_by_label("Password")).to_have_value("")
    await page.get_by_label("Password").fill("correct horse battery")
    await page.get_by_role("button", name="Log in").click()
    await expect(page).to_have_url(re.compile(r"/projects$"))
    await expect(page.get_by_text("No projects yet")).to_be_visible()


async def test_pages_work_without_javascript(stack: Stack, browser: Browser) -> None:
    owner = await stack.user("owner")
    shop = await stack.project("Shop", {owner: ProjectRole.OWNER})
    database = await stack.database(shop)
    running = await stack.backup(database, BackupStatus.RUNNING)
    context = await browser.new_context(java_script_enabled=False)
    context.set_default_timeout(TIMEOUT_MS)
    try:
        page = await context.new_page()
        await log_in(page, stack, owner)
        # The cron builder previews through its Preview button.
        await page.goto(f"{stack.url}/schedules/new?database={database}")
        await page.get_by_label("Preset").select_option("custom")
        await page.get_by_label("Cron expression").fill("0 4 * * 0")
        await page.get_by_role("button", name="Preview").click()
        await expect(page.locator("[data-cron-description]")).to_have_text(
            "At 04:00, only on Sunday"
        )
        await expect(page.locator(".runs li")).to_have_count(5)
        await page.get_by_role("button", name="Create schedule").click()
        await expect(page.get_by_text("Schedule “nightly” created")).to_be_visible()
        await expect(page.locator("p.lead")).to_contain_text("At 04:00, only on Sunday")
        # A running backup's page shows its state, and reloads itself until it ends.
        await page.goto(f"{stack.url}/backups/{running}")
        await expect(page.locator("[data-status-badge] .badge")).to_have_text("running")
        await expect(page.locator("noscript").first).to_have_count(1)
        async with stack.ctx.transaction() as session:
            await session.execute(
                update(Backup)
                .where(Backup.id == running)
                .values(status=BackupStatus.SUCCEEDED, finished_at=stack.ctx.clock())
            )
        await page.reload()
        await expect(page.locator("[data-status-badge] .badge")).to_have_text("succeeded")
        await expect(page.get_by_role("heading", name="Progress")).to_have_count(0)
    finally:
        await context.close()
