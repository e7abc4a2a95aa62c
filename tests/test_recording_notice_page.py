"""The recording notice on the admin console's page, in real headless Chromium: shown with its
wording, refused next to its field when removed, saved when reworded."""

from __future__ import annotations

import httpx
from playwright.async_api import expect

from tests.browser import chromium_page, screenshot
from tests.conftest import ADMIN_TOKEN, LiveServer
from tools.store.business import load_business
from tools.store.db import Database

DEFAULT_NOTICE = "This call may be recorded for quality and training."


async def test_the_owner_rewords_the_notice_but_cannot_remove_it(live_server: LiveServer) -> None:
    async with chromium_page(viewport={"width": 1280, "height": 900}) as page:
        page.set_default_timeout(30_000)
        await page.goto(f"{live_server.url}/admin")
        await page.fill("#login-form [name=name]", "Owner")
        await page.fill("#login-form [name=password]", ADMIN_TOKEN)
        await page.click("#login-form button[type=submit]")
        await page.wait_for_selector("#app-view:not([hidden])")
        await page.click("nav a[href='#prompts']")
        notice = page.locator("#prompts-form [name=recording_notice]")
        await expect(notice).to_have_value(DEFAULT_NOTICE)  # blank stored: the default

        # Removed: refused, with the reason next to the field, nothing saved.
        await notice.fill("")
        await page.click("#prompts-form button[type=submit]")
        error = page.locator('#prompts-form [data-error="recording_notice"]')
        await expect(error).to_contain_text("callers must be told")
        # Reworded so it no longer says so: refused too.
        await notice.fill("Thanks for calling, we value you.")
        await page.click("#prompts-form button[type=submit]")
        await expect(error).to_contain_text("must still tell callers the call is recorded")
        await screenshot(page, "admin-recording-notice-refused.png")

        # Reworded: saved, and the preview reads it as callers will hear it.
        await notice.fill("Calls to {business_name} are recorded to train our team.")
        await page.click("#preview-button")
        await expect(page.locator(".greeting-preview")).to_contain_text(
            "Calls to Bella Hair Studio are recorded to train our team."
        )
        await page.click("#prompts-form button[type=submit]")
        await expect(error).to_have_text("")
        db = Database(live_server.db_url)
        try:
            for _ in range(50):
                stored = (await load_business(db)).recording_notice
                if stored.startswith("Calls to"):
                    break
                await page.wait_for_timeout(100)
            assert stored == "Calls to {business_name} are recorded to train our team."
        finally:
            await db.close()

    # Put the default wording back for the module's other tests.
    async with httpx.AsyncClient(headers={"authorization": f"Bearer {ADMIN_TOKEN}"}) as client:
        answer = await client.put(
            f"{live_server.url}/api/admin/prompts",
            json={"greeting": "", "persona": "", "recording_notice": DEFAULT_NOTICE},
        )
        assert answer.status_code == 200, answer.text
