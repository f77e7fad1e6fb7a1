"""Who sees what: a viewer sees no destructive controls and is refused if they try;
another project's pages answer 404; the admin pages are for administrators."""

from __future__ import annotations

import re

import pytest
from playwright.async_api import BrowserContext, Page, expect
from sqlalchemy import select

from services.common.db.enums import ProjectRole
from services.common.db.models import Schedule, User
from tests.ui.conftest import Stack, log_in

pytestmark = pytest.mark.integration

DESTRUCTIVE = (
    "Edit",
    "Delete",
    "Back up now",
    "Test connection",
    "Restore…",
    "Add a database",
    "Add a schedule",
    "Disable",
    "Enable",
)


async def status_of(page: Page, url: str) -> int:
    response = await page.goto(url)
    assert response is not None
    return response.status


async def assert_no_controls(page: Page) -> None:
    main = page.locator("main")
    for name in DESTRUCTIVE:
        await expect(main.get_by_role("link", name=name, exact=True)).to_have_count(0)
        await expect(main.get_by_role("button", name=name, exact=True)).to_have_count(0)


async def test_viewer_sees_no_destructive_controls(
    stack: Stack, page: Page, browser_context: BrowserContext
) -> None:
    owner, viewer = await stack.user("owner"), await stack.user("viewer")
    shop = await stack.project("Shop", {owner: ProjectRole.OWNER, viewer: ProjectRole.VIEWER})
    database = await stack.database(shop)
    backup = await stack.backup(database)
    await log_in(page, stack, viewer)

    await page.goto(f"{stack.url}/projects/{shop}")
    await expect(page.get_by_role("heading", name=re.compile("^Shop"))).to_be_visible()
    await expect(page.locator("h1 .role")).to_have_text("viewer")
    await assert_no_controls(page)
    await expect(page.get_by_role("button", name=re.compile("^Remove"))).to_have_count(0)
    await expect(page.get_by_label("Add a member by email")).to_have_count(0)

    await page.goto(f"{stack.url}/databases/{database}")
    await expect(page.get_by_role("heading", name=re.compile("^orders"))).to_be_visible()
    await assert_no_controls(page)

    await page.goto(f"{stack.url}/backups/{backup}")
    await expect(page.get_by_role("link", name="Download")).to_be_visible()
    await assert_no_controls(page)

    # Forms a viewer does not get answer "not allowed", and change nothing.
    for path in (
        f"/databases/{database}/edit",
        f"/backups/{backup}/restore",
        f"/projects/{shop}/delete",
        f"/schedules/new?database={database}",
    ):
        assert await status_of(page, stack.url + path) == 403, path
        await expect(page.get_by_role("heading", name="Not allowed")).to_be_visible()
    token = await page.locator("input[name=csrf_token]").first.input_value()
    refused = await browser_context.request.post(
        f"{stack.url}/databases/{database}/delete", form={"csrf_token": token}, max_redirects=0
    )
    assert refused.status == 303  # back, with the reason as a flash message
    await page.goto(f"{stack.url}/databases/{database}")
    await expect(page.get_by_text(re.compile("needs the owner role"))).to_be_visible()
    await expect(page.get_by_role("heading", name=re.compile("^orders"))).to_be_visible()


async def test_another_projects_pages_are_not_found(stack: Stack, page: Page) -> None:
    mine, theirs = await stack.user("me"), await stack.user("them")
    await stack.project("Mine", {mine: ProjectRole.OWNER})
    other = await stack.project("Theirs", {theirs: ProjectRole.OWNER})
    database = await stack.database(other)
    backup = await stack.backup(database)
    await log_in(page, stack, mine)
    for path in (
        f"/projects/{other}",
        f"/projects/{other}/edit",
        f"/databases/{database}",
        f"/databases/{database}/edit",
        f"/backups/{backup}",
        f"/backups/{backup}/download",
        f"/backups/{backup}/restore",
        f"/backups/{backup}/events",
        f"/schedules/new?database={database}",
    ):
        assert await status_of(page, stack.url + path) == 404, path
        await expect(page.get_by_role("heading", name="Not found")).to_be_visible()
        assert "Theirs" not in await page.content()
    await page.goto(f"{stack.url}/databases")
    await expect(page.get_by_text("No databases yet")).to_be_visible()
    await page.goto(f"{stack.url}/backups")
    await expect(page.get_by_text("No backups yet")).to_be_visible()


async def test_admin_pages_are_for_administrators(stack: Stack, page: Page) -> None:
    user = await stack.user("user")
    await log_in(page, stack, user)
    await expect(page.get_by_role("link", name="Admin")).to_have_count(0)
    for path in ("/admin/users", "/admin/audit"):
        assert await status_of(page, stack.url + path) == 403
        await expect(page.get_by_text("only an administrator", exact=False)).to_be_visible()
    await page.goto(f"{stack.url}/tokens")
    await expect(page.get_by_role("heading", name="API tokens")).to_be_visible()


async def test_every_delete_asks_first_and_posts_to_its_own_action(
    stack: Stack, page: Page
) -> None:
    admin = await stack.user("root", admin=True)
    other = await stack.user("other")
    shop = await stack.project("Shop", {admin: ProjectRole.OWNER})
    database = await stack.database(shop)
    backup = await stack.backup(database)
    async with stack.ctx.transaction() as session:
        schedule = Schedule(database_id=database, name="nightly", cron="@daily")
        session.add(schedule)
        await session.flush()
        other_id = await session.scalar(select(User.id).where(User.email == other))
    await log_in(page, stack, admin)
    pages = {
        f"/projects/{shop}": ("Delete project “Shop”?", "Delete project"),
        f"/databases/{database}": ("Delete database “orders”?", "Delete database"),
        f"/schedules/{schedule.id}": ("Delete schedule “nightly”?", "Delete schedule"),
        f"/backups/{backup}": ("Delete this backup?", "Delete backup"),
        f"/admin/users/{other_id}": (f"Delete the account {other}?", "Delete account"),
    }
    for path, (title, button) in pages.items():
        assert await status_of(page, f"{stack.url}{path}/delete") == 200, path
        await expect(page.get_by_role("heading", name=title)).to_be_visible()
        form = page.locator("main form.actions")
        assert await form.get_attribute("action") == f"{path}/delete"
        await expect(form.get_by_role("button", name=button)).to_be_visible()
        cancel = form.get_by_role("link", name="Cancel")
        assert await cancel.get_attribute("href") == (
            path if "admin" not in path else "/admin/users"
        )
    await expect(page.locator("dl.facts")).to_have_count(0)  # the account page lists none
    await page.goto(f"{stack.url}/backups/{backup}/delete")
    await expect(page.locator("dl.facts")).to_contain_text("x/y/z.pgdump.zst")
