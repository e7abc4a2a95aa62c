"""The console's outbound parts in real headless Chromium: the owner turns reminders on and sets
calling hours in the business profile form (a bad time is shown next to its field, nothing
saved), asks for a callback now on the Callbacks page, and cancels it on the Outbound calls
page."""

from __future__ import annotations

import httpx
import sqlalchemy as sa

from tests.browser import chromium_page
from tests.conftest import ADMIN_TOKEN, LiveServer
from tools.store import schema
from tools.store.db import Database
from tools.store.handoffs import record_handoff


async def business(live_server: LiveServer) -> dict[str, object]:
    db = Database(live_server.db_url)
    try:
        async with db.read() as conn:
            row = (await conn.execute(sa.select(schema.business))).mappings().one()
        return dict(row)
    finally:
        await db.close()


async def test_owner_turns_reminders_on_and_manages_outbound_calls(
    live_server: LiveServer,
) -> None:
    db = Database(live_server.db_url)
    try:
        handoff = await record_handoff(
            db,
            call_sid="",
            kind="message",
            reason="wants a quote for bridal hair",
            caller_name="Jo",
            caller_number="+14135550166",
            outcome="message_taken",
        )
    finally:
        await db.close()
    async with chromium_page(viewport={"width": 1280, "height": 900}) as page:
        page.set_default_timeout(30_000)
        errors: list[str] = []
        page.on("pageerror", lambda exc: errors.append(str(exc)))
        await page.goto(f"{live_server.url}/admin")
        await page.fill("#login-form [name=name]", "Owner")
        await page.fill("#login-form [name=password]", ADMIN_TOKEN)
        await page.click("#login-form button[type=submit]")
        await page.wait_for_selector("#app-view:not([hidden])")

        await page.click("nav a[href='#business']")
        form = "#profile-form"
        await page.wait_for_selector(f"{form} [name=calling_hours_start]")
        assert await page.input_value(f"{form} [name=calling_hours_end]") == "20:00"
        await page.check(f"{form} [name=reminders_enabled]")
        await page.fill(f"{form} [name=reminder_lead_hours]", "48")
        await page.fill(f"{form} [name=calling_hours_start]", "9.30")
        await page.click(f"{form} button[type=submit]")
        await page.wait_for_selector(f"{form} [data-field=calling_hours_start].invalid")
        assert "HH:MM" in await page.inner_text(f"{form} [data-error=calling_hours_start]")
        assert not (await business(live_server))["reminders_enabled"]  # nothing saved

        await page.fill(f"{form} [name=calling_hours_start]", "09:30")
        await page.fill(f"{form} [name=calling_hours_end]", "18:00")
        await page.click(f"{form} button[type=submit]")
        await page.wait_for_selector("#toast.show")
        stored = await business(live_server)
        assert (
            stored["reminders_enabled"],
            stored["reminder_lead_hours"],
            stored["calling_hours_start"],
            stored["calling_hours_end"],
            stored["auto_callbacks"],
        ) == (True, 48, "09:30", "18:00", False)

        await page.click("nav a[href='#callbacks']")
        await page.click("tr:has-text('bridal hair') button:has-text('Call back now')")
        await page.wait_for_selector("#toast:has-text('Callback scheduled')")

        await page.click("nav a[href='#outbound']")
        # The callbacks page's row says 'bridal hair' too until the outbound page replaces it:
        # wait for the outbound call's row, scheduled.
        row = page.locator("tr:has-text('bridal hair'):has-text('scheduled')")
        await row.wait_for()
        assert "callback" in await row.inner_text()
        await row.locator("button:has-text('Cancel')").click()
        await page.wait_for_selector("tr:has-text('bridal hair'):has-text('cancelled')")
        assert errors == []

    async with httpx.AsyncClient(
        base_url=live_server.url, headers={"Authorization": f"Bearer {ADMIN_TOKEN}"}
    ) as api:
        calls = (await api.get("/api/outbound")).json()["calls"]
    assert [(c["handoff_id"], c["status"]) for c in calls] == [(handoff, "cancelled")]
