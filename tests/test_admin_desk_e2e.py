"""The front desk in real headless Chromium: staff book a walk-in from the Appointments page
(picking a free time), are refused a double booking with the message next to the time, move
it, open the customer's history and flag them do-not-call, cancel, and find them again."""

from __future__ import annotations

from playwright.async_api import expect

from tests.browser import ARTIFACTS, chromium_page
from tests.conftest import ADMIN_TOKEN, LiveServer
from tests.test_admin_desk_api import weekday_ahead


async def test_staff_book_move_flag_and_cancel_on_the_page(live_server: LiveServer) -> None:
    ARTIFACTS.mkdir(exist_ok=True)
    day = weekday_ahead(1, weeks=2)
    async with chromium_page(viewport={"width": 1280, "height": 900}) as page:
        page.set_default_timeout(30_000)
        errors: list[str] = []
        page.on("pageerror", lambda exc: errors.append(str(exc)))
        page.on("dialog", lambda dialog: dialog.accept())
        await page.goto(f"{live_server.url}/admin")
        await page.fill("#login-form [name=name]", "Desk")
        await page.fill("#login-form [name=password]", ADMIN_TOKEN)
        await page.click("#login-form button[type=submit]")
        await page.wait_for_selector("#app-view:not([hidden])")

        # Book a haircut with Maria at a free time the page offers.
        await page.click("nav a[href='#appointments']")
        form = page.locator("#book-form")
        await form.locator("[name=phone]").fill("(413) 555-0301")
        await form.locator("[name=name]").fill("Wanda Walkin")
        await form.locator("[name=service_id]").select_option(label="Haircut (30 min)")
        await form.locator("[name=staff_id]").select_option(label="Maria")
        await form.locator("[name=day]").fill(day)
        await form.locator("[name=day]").dispatch_event("change")
        await form.locator(".free-times button", has_text="10:00").click()
        await expect(form.locator("[name=start]")).to_have_value("10:00")
        await form.locator("button[type=submit]").click()
        row = page.locator("main table tbody tr", has_text="Wanda Walkin")
        await expect(row).to_contain_text("Maria")
        await expect(row).to_contain_text("10:00")

        # The same time again for someone else: refused, the message next to the time.
        form = page.locator("#book-form")
        await form.locator("[name=phone]").fill("+1 413 555 0302")
        await form.locator("[name=staff_id]").select_option(label="Maria")
        await form.locator("[name=day]").fill(day)
        await form.locator("[name=start]").fill("10:00")
        await form.locator("button[type=submit]").click()
        message = form.locator('[data-error="start"]')
        await expect(message).to_contain_text("Maria is booked then")
        assert "invalid" in (await form.locator("[name=start]").get_attribute("class") or "")
        await expect(page.locator("main table tbody tr", has_text="555-0302")).to_have_count(0)
        await page.screenshot(path=str(ARTIFACTS / "admin-appointments.png"), full_page=True)

        # Move it to 11:30.
        await row.locator("button", has_text="Move").click()
        move = page.locator("form.move-form")
        await move.locator("[name=start]").fill("11:30")
        await move.locator("button[type=submit]").click()
        row = page.locator("main table tbody tr", has_text="Wanda Walkin")
        await expect(row).to_contain_text("11:30")

        # Her history; flag her do-not-call.
        await row.locator("a", has_text="Wanda Walkin").click()
        await expect(page.locator("main h1")).to_have_text("Wanda Walkin")
        await expect(page.locator("main table").first).to_contain_text("booked")
        await page.click("#do-not-call button")
        await expect(page.locator("#do-not-call .badge")).to_contain_text("Do not call · since")
        await page.screenshot(path=str(ARTIFACTS / "admin-customer.png"), full_page=True)

        # Cancel from her page; the appointment says so.
        await page.locator("main table").first.locator("button", has_text="Cancel").click()
        await expect(page.locator("main table").first).to_contain_text("cancelled")

        # Find her by part of her number.
        await page.click("nav a[href='#customers']")
        await page.fill("#customer-search [name=q]", "555-0301")
        await page.click("#customer-search button")
        found = page.locator("main table tbody tr", has_text="Wanda Walkin")
        await expect(found).to_contain_text("do not call")

        # The change log names the desk for each change.
        await page.click("nav a[href='#audit']")
        await expect(page.locator("main h1")).to_have_text("Change log")
        await page.wait_for_selector("main table tbody tr")
        log = await page.inner_text("main table")
        assert "Desk (admin token)" in log
        for what in ("booked Haircut", "moved Haircut", "do-not-call set", "cancelled Haircut"):
            assert what in log, what
        assert errors == []
