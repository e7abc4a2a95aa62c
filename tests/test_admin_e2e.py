"""End to end in real headless Chromium: an owner signs in on /admin, adds a knowledge-base
article, switches a tool off, and the next (replayed) call uses the article and never offers
the tool; the call then shows up on the page with its transcript and a playable recording."""

from __future__ import annotations

import re

from playwright.async_api import expect

from telephony.replay import replay
from tests.browser import ARTIFACTS, chromium_page
from tests.caller_audio import RATE, call_audio
from tests.conftest import ADMIN_TOKEN, AUTH_TOKEN, LiveServer
from tests.fakes.llm import Rule

ARTICLE_BODY = (
    "Bicycle racks are right by the front door on Maple Street. "
    "You can lock your bike there all day."
)


async def test_owner_configures_on_the_page_and_the_next_call_follows(
    live_server: LiveServer,
) -> None:
    ARTIFACTS.mkdir(exist_ok=True)
    script = live_server.script
    # The LLM stand-in sends bike questions to the knowledge base (as a real model would).
    script.rules.insert(
        0, Rule(r"\bbike\b|bicycle", tool="search_knowledge_base", arguments={"query": "bike"})
    )
    async with chromium_page(viewport={"width": 1280, "height": 900}) as page:
        page.set_default_timeout(30_000)
        errors: list[str] = []
        page.on("pageerror", lambda exc: errors.append(str(exc)))
        await page.goto(f"{live_server.url}/admin")

        # Sign in with the admin token (no password has been set yet).
        await page.fill("#login-form [name=name]", "Owner")
        await page.fill("#login-form [name=password]", ADMIN_TOKEN)
        await page.click("#login-form button[type=submit]")
        await page.wait_for_selector("#app-view:not([hidden])")
        assert "Owner (admin token)" in await page.inner_text("#who")
        assert "No admin password yet" in await page.inner_text("#banner")

        # Every page of the console renders (no script errors).
        for link in await page.locator("#nav a").all():
            target = await link.get_attribute("href")
            await link.click()
            await page.wait_for_selector(f"#nav a.active[href='{target}']")
            title = (await link.inner_text())[:8]  # "Callbacks" -> "Callback requests"
            await expect(page.locator("main h1")).to_have_text(re.compile("^" + re.escape(title)))
        await page.click("nav a[href='#services']")
        await page.wait_for_selector("form.service [name=name]")
        assert await page.locator("form.service").count() == 6  # five services and a new one
        await page.click("nav a[href='#business']")
        await page.wait_for_selector("#hours-form .range")
        assert await page.input_value("#profile-form [name=timezone]") == "America/New_York"

        # Add a knowledge-base article.
        await page.click("nav a[href='#kb']")
        new_article = page.locator("form.article-form").last
        await new_article.locator("[name=title]").fill("Bike parking")
        await new_article.locator("[name=body]").fill(ARTICLE_BODY)
        await new_article.locator("[name=tags]").fill("bike, bicycle, cycle")
        await new_article.locator("button[type=submit]").click()
        await page.wait_for_selector("details.article summary:has-text('Bike parking')")
        # It is searchable the way the agent searches.
        await page.fill("#kb-search input", "where can I lock my bicycle")
        await page.click("#kb-search button")
        await expect(page.locator("details.article summary").first).to_contain_text("Bike")

        # Escalation numbers are a list: a bad row is refused with a message next to that row.
        await page.click("nav a[href='#handling']")
        await page.click("#escalation-form button:has-text('Add number')")
        second = page.locator('#escalation-form [data-field="escalation_numbers.1"]')
        await second.fill("555-12")
        await page.click("#escalation-form button[type=submit]")
        message = page.locator('#escalation-form [data-error="escalation_numbers.1"]')
        await message.wait_for()
        assert "not a" in (await message.inner_text())
        assert "invalid" in (await second.get_attribute("class") or "")
        # Fixed, it is saved and shown back as dialled (E.164).
        await second.fill("(413) 555-0198")
        await page.click("#escalation-form button[type=submit]")
        await expect(
            page.locator('#escalation-form [data-field="escalation_numbers.1"]')
        ).to_have_value("+14135550198")

        # Switch take_message off.
        await page.uncheck("#tools-form input[name=take_message]")
        await page.click("#tools-form button[type=submit]")
        await page.wait_for_selector("#toast.show:has-text('Saved')")
        await page.screenshot(path=str(ARTIFACTS / "admin-tools.png"), full_page=True)

        # A caller rings and asks about bike parking. (Whether take_message is offered shows in
        # every request to the LLM, whatever the caller says; the replay stays on the line until
        # the answer has played.)
        before = len(script.requests)
        report, _ = await replay(
            call_audio(6.0, "Hi, where can I lock my bike?", 6.0),  # after the greeting
            RATE,
            live_server.url,
            auth_token=AUTH_TOKEN,
            admin_token=ADMIN_TOKEN,
        )
        record = report.call_record
        assert record is not None
        requests = script.requests[before:]
        offered = {t["function"]["name"] for r in requests for t in r.get("tools") or []}
        assert requests and "search_knowledge_base" in offered
        assert "take_message" not in offered
        systems = [m["content"] for r in requests for m in r["messages"] if m["role"] == "system"]
        assert systems and not any("take_message" in s for s in systems)
        searches = [c for c in record["tool_calls"] if c["name"] == "search_knowledge_base"]
        assert searches and searches[0]["ok"], record["turns"]
        assert searches[0]["result"]["passages"][0]["title"] == "Bike parking"
        assert "take_message" not in [c["name"] for c in record["tool_calls"]]
        bot_said = " ".join(t["text"] for t in record["turns"] if t["role"] == "bot")
        assert "Bicycle racks are right by" in bot_said  # what the caller heard

        # The owner finds the call on the page: transcript, tools, playable recording.
        await page.click("nav a[href='#appointments']")  # leave and come back: fresh list
        await page.click("nav a[href='#calls']")
        await page.locator("tr.link").first.click()
        await page.wait_for_selector(".transcript .turn.bot")
        transcript = await page.inner_text(".transcript")
        assert "Bicycle racks" in transcript and "bike" in transcript.lower()
        assert "search_knowledge_base" in await page.inner_text("main")
        duration = await page.evaluate(
            """() => new Promise((resolve, reject) => {
                const audio = document.querySelector('audio.recording');
                if (!audio) return reject('no audio element');
                if (audio.readyState >= 1) return resolve(audio.duration);
                audio.addEventListener('loadedmetadata', () => resolve(audio.duration));
                audio.addEventListener('error', () => reject('recording failed to load'));
                audio.load();
            })"""
        )
        assert duration > 5.0  # the whole call, playable in the page
        await page.screenshot(path=str(ARTIFACTS / "admin-call.png"), full_page=True)

        # The change log says who did what.
        await page.click("nav a[href='#audit']")
        await expect(page.locator("main h1")).to_have_text(
            "Change log"
        )  # not the last page's table
        await page.wait_for_selector("main table tbody tr")
        log = await page.inner_text("main table")
        assert "Owner (admin token)" in log
        assert "article Bike parking" in log and "disabled take_message" in log
        assert errors == []
