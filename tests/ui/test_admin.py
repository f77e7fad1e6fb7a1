"""Administration through the pages: accounts, project members, API tokens (shown
once, revocable) and the audit log with its filters."""

from __future__ import annotations

import re

import pytest
from playwright.async_api import Page, expect

from tests.ui.conftest import PASSWORD, Stack, log_in

pytestmark = pytest.mark.integration


async def test_accounts_members_tokens_and_audit(stack: Stack, page: Page) -> None:
    admin = await stack.user("admin", admin=True)
    await log_in(page, stack, admin)

    # A new account; a weak password is refused at its field.
    await page.goto(f"{stack.url}/admin/users")
    new = page.locator("form[method=post][action='/admin/users']")
    await new.get_by_label("Email").fill("carol@example.com")
    await new.get_by_label("Password").fill("short")
    await new.get_by_role("button", name="Create account").click()
    await expect(page.locator("#f-password-error")).to_contain_text("at least 8 characters")
    await new.get_by_label("Password").fill(PASSWORD)
    await new.get_by_role("button", name="Create account").click()
    await expect(page.get_by_text("Account carol@example.com created")).to_be_visible()
    row = page.locator("tr", has_text="carol@example.com")
    await row.get_by_text("Manage").click()
    await row.get_by_role("button", name="Make administrator").click()
    await expect(page.get_by_text("carol@example.com is now an administrator")).to_be_visible()

    # A project, with carol as operator, then viewer; an unknown email is explained.
    await page.goto(f"{stack.url}/projects/new")
    await page.get_by_label("Name", exact=True).fill("Billing")
    await page.get_by_role("button", name="Create project").click()
    await page.get_by_label("Add a member by email").fill("nobody@example.com")
    await page.get_by_role("button", name="Add member").click()
    await expect(page.get_by_text("they must have an account first", exact=False)).to_be_visible()
    await page.get_by_label("Add a member by email").fill("carol@example.com")
    await page.get_by_label("Role", exact=True).select_option("operator")
    await page.get_by_role("button", name="Add member").click()
    await expect(page.get_by_text("carol@example.com is now operator")).to_be_visible()
    await page.get_by_label("Role of carol@example.com").select_option("viewer")
    await expect(page.get_by_text("carol@example.com is now viewer")).to_be_visible()

    # An API token: shown once, works against the JSON API, then revoked.
    await page.goto(f"{stack.url}/tokens")
    await page.get_by_label("Name").fill("ci")
    await page.get_by_label("Limit to role").select_option("viewer")
    await page.get_by_role("button", name="Create token").click()
    secret = (await page.locator("[data-new-token]").inner_text()).strip()
    assert secret.startswith("bmt_")
    api = page.context.request
    headers = {"Authorization": f"Bearer {secret}"}
    assert (await api.get(f"{stack.url}/api/v1/projects", headers=headers)).status == 200
    await page.goto(f"{stack.url}/tokens")
    assert secret not in await page.content()
    await page.get_by_role("button", name="Revoke ci").click()
    await expect(page.get_by_text("Token “ci” revoked")).to_be_visible()
    assert (await api.get(f"{stack.url}/api/v1/projects", headers=headers)).status == 401

    # The audit log has it all, marked as done through the pages, and filters.
    await page.goto(f"{stack.url}/admin/audit")
    table = page.locator("table")
    for action in (
        "user.create",
        "user.update",
        "project.create",
        "project.member.add",
        "auth.token.create",
        "auth.token.revoke",
        "auth.login",
    ):
        await expect(table.get_by_text(action, exact=True).first).to_be_visible()
    await expect(table.get_by_text("via=web").first).to_be_visible()
    await page.get_by_label("Action").fill("project.member.")
    await page.get_by_role("button", name="Filter").click()
    await expect(page).to_have_url(re.compile(r"action=project\.member\."))
    actions = await table.locator("tbody td:nth-child(3)").all_inner_texts()
    assert actions
    assert all(a.startswith("project.member.") for a in actions)
    await expect(table.get_by_text("denied")).to_be_visible()  # the unknown email
    await page.get_by_label("From").fill("2001-01-02")
    await page.get_by_label("To").fill("2001-01-01")
    await page.get_by_role("button", name="Filter").click()
    await expect(page.locator("#form-error")).to_contain_text("Some fields are invalid")
