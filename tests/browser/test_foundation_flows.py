"""What an operator sees: log in, the Overview with a live worker, roles enforced, connection test."""

from __future__ import annotations

from playwright.async_api import Page, expect

from models import Role
from tests.browser.conftest import log_in, screenshot

pytestmark = __import__("pytest").mark.browser


async def test_wrong_password_then_login_shows_overview_with_live_worker(page: Page, user_factory):
    admin = await user_factory(Role.ADMIN)
    await log_in(page, admin.username, "definitely wrong")
    await expect(page.get_by_role("alert")).to_contain_text("Wrong username or password.")
    await screenshot(page, "login-error")
    await log_in(page, admin.username)
    await expect(page.get_by_role("heading", name="Overview")).to_be_visible()
    # The worker process started with the app beats every few seconds; htmx refreshes the card.
    await expect(page.get_by_test_id("workers-alive")).to_have_text("1 alive", timeout=20_000)
    await expect(page.locator(".kc-sandbox")).to_contain_text("Sandbox")
    await screenshot(page, "overview")


async def test_viewer_is_refused_on_write_pages_and_crafted_posts(page: Page, user_factory):
    viewer = await user_factory(Role.VIEWER)
    await log_in(page, viewer.username)
    await expect(page.get_by_role("heading", name="Overview")).to_be_visible()
    await expect(page.get_by_role("link", name="Users")).to_have_count(0)
    response = await page.goto("/users/")
    assert response is not None and response.status == 403
    await expect(page.get_by_role("heading", name="Not allowed")).to_be_visible()
    await screenshot(page, "viewer-403")
    await page.goto("/connection")
    await expect(page.get_by_text("Only admins can change the key.")).to_be_visible()
    # A hand-made request with a valid CSRF token is still refused by the server.
    status = await page.evaluate(
        """async () => {
            const token = JSON.parse(document.body.getAttribute('hx-headers'))['x-csrftoken'];
            const r = await fetch('/connection/key', {method: 'POST',
                headers: {'x-csrftoken': token, 'content-type': 'application/x-www-form-urlencoded'},
                body: 'private_key=pk_aaaaaaaaaaaaaaaaaaaaaaaa'});
            return r.status;
        }"""
    )
    assert status == 403
    await screenshot(page, "viewer-connection")


async def test_admin_tests_the_sandbox_connection_through_the_worker(page: Page, user_factory):
    admin = await user_factory(Role.ADMIN)
    await log_in(page, admin.username)
    await page.goto("/connection")
    await expect(page.get_by_text("built-in simulator")).to_be_visible()
    await page.get_by_role("button", name="Test connection").click()
    await expect(page.get_by_test_id("connection-ok")).to_contain_text("Sandbox Store", timeout=20_000)
    await screenshot(page, "connection-sandbox-ok")


async def test_admin_adds_an_operator_from_the_users_page(page: Page, user_factory):
    admin = await user_factory(Role.ADMIN)
    await log_in(page, admin.username)
    await page.goto("/users/")
    await page.fill("input[name=username]", "pat-operator")
    await page.fill("input[name=password]", "long-enough-password")
    await page.get_by_role("button", name="Add user").click()
    await expect(page.locator("#users-table")).to_contain_text("pat-operator")
    await screenshot(page, "users")
    await page.goto("/audit/")
    await expect(page.locator("#audit-rows")).to_contain_text("user.create")
    await screenshot(page, "audit")


async def test_layout_is_usable_on_a_narrow_screen(browser, live_server, user_factory):
    context = await browser.new_context(base_url=live_server, viewport={"width": 800, "height": 900})
    page = await context.new_page()
    viewer = await user_factory(Role.VIEWER)
    await log_in(page, viewer.username)
    await expect(page.get_by_role("heading", name="Overview")).to_be_visible()
    # The sidebar folds above the content; every area stays one tap away.
    for label in ("Connection", "Runs", "Uploads"):
        await expect(page.get_by_role("link", name=label, exact=True)).to_be_visible()
    box = await page.get_by_role("heading", name="Overview").bounding_box()
    assert box is not None and box["x"] < 100
    await screenshot(page, "overview-narrow")
    await context.close()


async def test_refused_htmx_actions_show_their_message(page: Page, user_factory):
    admin = await user_factory(Role.ADMIN)
    await log_in(page, admin.username)
    await page.goto("/users/")
    await page.fill("input[name=username]", admin.username)  # taken: the server answers 400
    await page.fill("input[name=password]", "long-enough-password")
    await page.get_by_role("button", name="Add user").click()
    await expect(page.locator("#users-table")).to_contain_text("already exists")
    await screenshot(page, "users-duplicate")
