"""The admin API against the real app on a real port: auth, CSRF, every config endpoint with its
validation errors, the audit log, and the review lists."""

from __future__ import annotations

import wave
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from io import BytesIO
from pathlib import Path
from typing import Any

import httpx
import pytest
import sqlalchemy as sa

from tests.conftest import ADMIN_TOKEN
from tools.store import schema
from tools.store.business import load_business
from tools.store.calls import CallStore
from tools.store.db import Database

BEARER = {"Authorization": f"Bearer {ADMIN_TOKEN}"}

# Every admin endpoint with a body that would be valid, for the auth checks.
ENDPOINTS: list[tuple[str, str, dict[str, Any] | None]] = [
    ("GET", "/api/admin/session", None),
    ("GET", "/api/admin/config", None),
    ("PUT", "/api/admin/profile", {"name": "X", "timezone": "America/New_York"}),
    ("PUT", "/api/admin/hours", {"hours": {}}),
    ("PUT", "/api/admin/holidays", {"holidays": []}),
    ("POST", "/api/admin/services", {"name": "X", "duration_minutes": 30, "price": 1}),
    ("PUT", "/api/admin/services/1", {"name": "X", "duration_minutes": 30, "price": 1}),
    ("DELETE", "/api/admin/services/1", None),
    ("POST", "/api/admin/staff", {"name": "X"}),
    ("PUT", "/api/admin/staff/1", {"name": "X"}),
    ("DELETE", "/api/admin/staff/1", None),
    ("PUT", "/api/admin/escalation", {"escalation_number": ""}),
    ("PUT", "/api/admin/tools", {"enabled": {}}),
    ("PUT", "/api/admin/prompts", {"greeting": ""}),
    ("POST", "/api/admin/prompts/preview", {"greeting": ""}),
    ("GET", "/api/admin/providers", None),
    ("GET", "/api/admin/kb", None),
    ("POST", "/api/admin/kb", {"title": "X", "body": "Y"}),
    ("GET", "/api/admin/kb/1", None),
    ("PUT", "/api/admin/kb/1", {"title": "X", "body": "Y"}),
    ("DELETE", "/api/admin/kb/1", None),
    ("GET", "/api/admin/calls", None),
    ("GET", "/api/admin/calls/CA78000000000000000000000000000000", None),
    ("GET", "/api/admin/calls/CA78000000000000000000000000000000/recording", None),
    ("GET", "/api/admin/appointments", None),
    ("GET", "/api/admin/callbacks", None),
    ("PUT", "/api/admin/callbacks/1", {"outcome": "closed"}),
    ("GET", "/api/admin/audit", None),
    ("POST", "/api/admin/forget", {"phone": "+14135550100"}),
    ("PUT", "/api/admin/password", {"password": "long enough password"}),
    ("DELETE", "/api/admin/session", None),
]


#: The admin console's service (audit log, sessions, validation in one transaction) on both.
LIVE_BACKENDS = ("sqlite", "postgresql")


@pytest.fixture
async def api(live_server):
    async with httpx.AsyncClient(base_url=live_server.url, headers=BEARER, timeout=30) as client:
        yield client


@pytest.fixture
async def db(live_server):
    database = Database(live_server.db_url)
    yield database
    await database.close()


async def audit_entries(api: httpx.AsyncClient) -> list[dict]:
    return (await api.get("/api/admin/audit")).json()["entries"]


@asynccontextmanager
async def browser_session(live_server, **login) -> AsyncIterator[httpx.AsyncClient]:
    """A client signed in like the page: session cookie plus the CSRF header."""
    async with httpx.AsyncClient(base_url=live_server.url, timeout=30) as client:
        await sign_in(client, **login)
        yield client


async def sign_in(client: httpx.AsyncClient, **login) -> None:
    body = {"password": ADMIN_TOKEN, "name": "Maria", **login}
    response = await client.post("/api/admin/session", json=body)
    assert response.status_code == 200, response.text
    client.headers["X-CSRF-Token"] = response.json()["csrf_token"]


# --- Auth ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(("method", "path", "body"), ENDPOINTS)
async def test_every_endpoint_needs_credentials(live_server, method, path, body):
    async with httpx.AsyncClient(base_url=live_server.url, timeout=30) as client:
        anonymous = await client.request(method, path, json=body)
        wrong = await client.request(
            method, path, json=body, headers={"Authorization": "Bearer not-the-token"}
        )
        basic = await client.request(
            method, path, json=body, headers={"Authorization": f"Basic {ADMIN_TOKEN}"}
        )
    assert anonymous.status_code == 401, anonymous.text
    assert wrong.status_code == 401 and basic.status_code == 401


async def test_repeated_failed_sign_ins_lock_out_that_client_only(live_server):
    # A client of its own (the app takes X-Forwarded-For from a loopback proxy), so the lock-out
    # does not reach the other tests' sign-ins.
    guesser = {"X-Forwarded-For": "203.0.113.9"}
    async with httpx.AsyncClient(base_url=live_server.url, timeout=30) as client:
        codes = [
            (
                await client.post(
                    "/api/admin/session", json={"password": f"guess-{n}"}, headers=guesser
                )
            ).status_code
            for n in range(10)
        ]
        right_but_locked = await client.post(
            "/api/admin/session", json={"password": ADMIN_TOKEN}, headers=guesser
        )
        await sign_in(client)  # everyone else can still sign in
    assert codes == [401] * 10
    assert right_but_locked.status_code == 429, right_but_locked.text


async def test_session_cookie_needs_the_csrf_token_for_changes(live_server):
    async with browser_session(live_server) as client:
        cookie = client.cookies.get("frontdesk_admin")
        assert cookie
        csrf = client.headers.pop("X-CSRF-Token")
        # Reading works with the cookie alone.
        session = await client.get("/api/admin/session")
        assert session.status_code == 200
        assert session.json()["actor"] == "Maria (admin token)"
        assert session.json()["csrf_token"] == csrf
        body = {"enabled": {"take_message": True}}
        missing = await client.put("/api/admin/tools", json=body)
        wrong = await client.put("/api/admin/tools", json=body, headers={"X-CSRF-Token": "nope"})
        cross_site = await client.put(
            "/api/admin/tools",
            json=body,
            headers={"X-CSRF-Token": csrf, "Origin": "https://evil.example"},
        )
        assert (missing.status_code, wrong.status_code, cross_site.status_code) == (403, 403, 403)
        assert "CSRF" in missing.json()["detail"]
        ok = await client.put(
            "/api/admin/tools", json=body, headers={"X-CSRF-Token": csrf, "Origin": live_server.url}
        )
        assert ok.status_code == 200, ok.text
        # Signing out ends the session for good.
        out = await client.delete("/api/admin/session", headers={"X-CSRF-Token": csrf})
        assert out.status_code == 200
        client.cookies.set("frontdesk_admin", cookie)
        assert (await client.get("/api/admin/config")).status_code == 401


async def test_login_cookie_is_httponly_and_strict_and_login_refuses_other_sites(live_server):
    async with httpx.AsyncClient(base_url=live_server.url, timeout=30) as client:
        response = await client.post("/api/admin/session", json={"password": ADMIN_TOKEN})
        header = response.headers["set-cookie"].lower()
        assert "httponly" in header and "samesite=strict" in header and "path=/" in header
        forged = await client.post(
            "/api/admin/session",
            json={"password": ADMIN_TOKEN},
            headers={"Origin": "https://evil.example"},
        )
        assert forged.status_code == 403
        bad = await client.post("/api/admin/session", json={"password": "guess"})
        assert bad.status_code == 401


async def test_password_set_at_first_sign_in_then_changed(live_server, api):
    assert (await api.get("/api/admin/session")).json()["password_set"] is False
    async with browser_session(live_server) as client:
        short = await client.put("/api/admin/password", json={"password": "short"})
        assert short.status_code == 422 and "password" in short.json()["errors"]
        first = await client.put("/api/admin/password", json={"password": "correct horse battery"})
        assert first.status_code == 200, first.text
        # Setting the password signed everyone out.
        assert (await client.get("/api/admin/config")).status_code == 401
    async with browser_session(live_server, password="correct horse battery", name="Jo") as client:
        assert (await client.get("/api/admin/session")).json()["actor"] == "Jo (password)"
        no_current = await client.put("/api/admin/password", json={"password": "another long one"})
        assert no_current.status_code == 422
        assert "current" in no_current.json()["errors"]
        changed = await client.put(
            "/api/admin/password",
            json={"password": "another long one", "current": "correct horse battery"},
        )
        assert changed.status_code == 200
    async with httpx.AsyncClient(base_url=live_server.url, timeout=30) as client:
        old = await client.post("/api/admin/session", json={"password": "correct horse battery"})
        new = await client.post("/api/admin/session", json={"password": "another long one"})
        assert (old.status_code, new.status_code) == (401, 200)
    entries = await audit_entries(api)
    assert [e["entity"] for e in entries if e["entity"] == "password"] == ["password", "password"]
    assert all("hash" not in str(e["changes"]) for e in entries)


# --- Configuration ------------------------------------------------------------------------------


async def test_profile_validation_saves_nothing_half_way(api, db):
    before = await load_business(db)
    bad = await api.put(
        "/api/admin/profile",
        json={
            "name": "Renamed Salon",
            "timezone": "Mars/Olympus_Mons",
            "address": "1 Elm St",
            "phone": "12",
            "slot_minutes": 15,
            "booking_horizon_days": 60,
        },
    )
    assert bad.status_code == 422
    errors = bad.json()["errors"]
    assert "unknown time zone" in errors["timezone"]
    assert "phone" in errors and "name" not in errors
    assert (await load_business(db)).name == before.name  # nothing saved
    typed = await api.put(
        "/api/admin/profile",
        json={"name": "X", "timezone": "America/New_York", "slot_minutes": "many"},
    )
    assert typed.status_code == 422 and "slot_minutes" in typed.json()["errors"]
    good = await api.put(
        "/api/admin/profile",
        json={
            "name": "Bella Hair & Beauty",
            "timezone": "America/Chicago",
            "address": "9 Oak Lane, Springfield",
            "phone": "(413) 555-0100",
            "slot_minutes": 15,
            "booking_horizon_days": 90,
        },
    )
    assert good.status_code == 200, good.text
    after = await load_business(db)
    assert (after.name, after.timezone, after.phone) == (
        "Bella Hair & Beauty",
        "America/Chicago",
        "+14135550100",
    )
    entry = (await audit_entries(api))[0]
    assert entry["actor"] == "api token" and entry["entity"] == "profile"
    assert entry["changes"]["name"] == [before.name, "Bella Hair & Beauty"]
    assert "phone" not in entry["changes"]  # unchanged fields are not listed


async def test_trusting_unverified_caller_id_is_a_profile_setting_off_by_default(api, db):
    assert (await load_business(db)).trust_unverified_caller_id is False
    profile = (await api.get("/api/admin/config")).json()["profile"]
    assert profile["trust_unverified_caller_id"] is False
    on = await api.put("/api/admin/profile", json={**profile, "trust_unverified_caller_id": True})
    assert on.status_code == 200, on.text
    assert (await load_business(db)).trust_unverified_caller_id is True
    assert (await api.get("/api/admin/config")).json()["profile"]["trust_unverified_caller_id"]
    entry = (await audit_entries(api))[0]
    assert entry["changes"] == {"trust_unverified_caller_id": [False, True]}
    del profile["trust_unverified_caller_id"]
    await api.put("/api/admin/profile", json=profile)  # a form without it turns it off
    assert (await load_business(db)).trust_unverified_caller_id is False


async def test_hours_are_validated_per_field(api, db):
    bad = await api.put(
        "/api/admin/hours",
        json={
            "hours": {
                "monday": [{"opens": "9am", "closes": "17:00"}],
                "tuesday": [{"opens": "18:00", "closes": "09:00"}],
                "wednesday": [
                    {"opens": "09:00", "closes": "13:00"},
                    {"opens": "12:00", "closes": "18:00"},
                ],
                "funday": [],
            }
        },
    )
    assert bad.status_code == 422
    errors = bad.json()["errors"]
    assert "09:00" in errors["hours.monday.0.opens"]
    assert "after opening" in errors["hours.tuesday.0.closes"]
    assert "overlaps" in errors["hours.wednesday.1.opens"]
    assert "unknown day" in errors["hours.funday"]
    assert (await load_business(db)).hours[0]  # Monday still open as before
    good = await api.put(
        "/api/admin/hours",
        json={
            "hours": {
                "monday": [],
                "tuesday": [
                    {"opens": "09:00", "closes": "12:30"},
                    {"opens": "13:30", "closes": "18:00"},
                ],
                "saturday": [{"opens": "10:00", "closes": "14:00"}],
            }
        },
    )
    assert good.status_code == 200, good.text
    business = await load_business(db)
    assert 0 not in business.hours and len(business.hours[1]) == 2
    assert set(business.hours) == {1, 5}
    config = (await api.get("/api/admin/config")).json()
    assert config["hours"]["tuesday"][1] == {"opens": "13:30", "closes": "18:00"}


async def test_holidays_are_ranges_without_overlaps(api, db):
    bad = await api.put(
        "/api/admin/holidays",
        json={
            "holidays": [
                {"start": "2026-12-24", "end": "2026-12-27", "name": "Christmas break"},
                {"start": "2026-12-26", "end": "2026-12-26", "name": "Boxing Day"},
                {"start": "2027-02-10", "end": "2027-02-01", "name": "Backwards"},
                {"start": "2027-13-01", "name": "Bad date"},
                {"start": "2027-03-01", "name": ""},
            ]
        },
    )
    assert bad.status_code == 422
    errors = bad.json()["errors"]
    assert "overlaps 'Christmas break'" in errors["holidays.1.start"]
    assert "before the first day" in errors["holidays.2.end"]
    assert "holidays.3.start" in errors and "holidays.4.name" in errors
    assert len((await load_business(db)).holidays) == 3  # the seeded ones, untouched
    good = await api.put(
        "/api/admin/holidays",
        json={
            "holidays": [
                {"start": "2026-12-24", "end": "2026-12-27", "name": "Christmas break"},
                {"start": "2027-01-01", "name": "New Year's Day"},
            ]
        },
    )
    assert good.status_code == 200, good.text
    assert len((await load_business(db)).holidays) == 5
    assert (await api.get("/api/admin/config")).json()["holidays"] == [
        {"start": "2026-12-24", "end": "2026-12-27", "name": "Christmas break"},
        {"start": "2027-01-01", "end": "2027-01-01", "name": "New Year's Day"},
    ]


async def test_services_create_update_remove(api, db):
    duplicate = await api.post(
        "/api/admin/services", json={"name": "haircut", "duration_minutes": 30, "price": 40}
    )
    assert duplicate.status_code == 422 and "already" in duplicate.json()["errors"]["name"]
    bad = await api.post(
        "/api/admin/services", json={"name": "Perm", "duration_minutes": 2, "price": "12.345"}
    )
    assert bad.status_code == 422
    assert set(bad.json()["errors"]) == {"duration_minutes", "price"}
    typed = await api.post(
        "/api/admin/services", json={"name": "Perm", "duration_minutes": "long", "price": 1}
    )
    assert typed.status_code == 422 and "duration_minutes" in typed.json()["errors"]
    created = await api.post(
        "/api/admin/services",
        json={"name": "Perm", "duration_minutes": 120, "price": "85.50", "aliases": "perm, waves"},
    )
    assert created.status_code == 201, created.text
    perm = created.json()
    assert perm["price"] == 85.5 and perm["aliases"] == "perm, waves"
    business = await load_business(db)
    assert business.service_named("waves").duration_minutes == 120
    changed = await api.put(
        f"/api/admin/services/{perm['id']}",
        json={"name": "Perm", "duration_minutes": 150, "price": 90},
    )
    assert changed.status_code == 200 and changed.json()["duration_minutes"] == 150
    removed = await api.delete(f"/api/admin/services/{perm['id']}")
    assert removed.status_code == 200
    assert "Perm" not in [s.name for s in (await load_business(db)).services]
    assert (await api.delete(f"/api/admin/services/{perm['id']}")).status_code == 404
    again = await api.post(
        "/api/admin/services", json={"name": "perm", "duration_minutes": 100, "price": 80}
    )
    assert again.status_code == 201 and again.json()["id"] == perm["id"]  # brought back
    assert (await api.put("/api/admin/services/9999", json=again.json())).status_code == 404
    kinds = [(e["action"], e["entity"]) for e in await audit_entries(api)][:4]
    assert kinds == [
        ("update", "service"),
        ("delete", "service"),
        ("update", "service"),
        ("create", "service"),
    ]


async def test_staff_and_their_services(api, db):
    config = (await api.get("/api/admin/config")).json()
    ids = {s["name"]: s["id"] for s in config["services"]}
    unknown = await api.post("/api/admin/staff", json={"name": "Lena", "services": [9999]})
    assert unknown.status_code == 422 and "services" in unknown.json()["errors"]
    duplicate = await api.post("/api/admin/staff", json={"name": "maria", "services": []})
    assert duplicate.status_code == 422 and "name" in duplicate.json()["errors"]
    lena = await api.post(
        "/api/admin/staff", json={"name": "Lena", "services": [ids["Hair Coloring"]]}
    )
    assert lena.status_code == 201, lena.text
    staff_id = lena.json()["id"]
    moved = await api.put(
        f"/api/admin/staff/{staff_id}",
        json={"name": "Lena", "services": [ids["Haircut"], ids["Blow Dry"]]},
    )
    assert moved.json()["services"] == sorted([ids["Haircut"], ids["Blow Dry"]])
    async with db.read() as conn:
        links = (
            await conn.execute(
                sa.select(schema.staff_services.c.service_id).where(
                    schema.staff_services.c.staff_id == staff_id
                )
            )
        ).all()
    assert sorted(r[0] for r in links) == sorted([ids["Haircut"], ids["Blow Dry"]])
    assert (await api.delete(f"/api/admin/staff/{staff_id}")).status_code == 200
    config = (await api.get("/api/admin/config")).json()
    assert [m["active"] for m in config["staff"] if m["name"] == "Lena"] == [False]


async def test_escalation_numbers_reach_the_next_call(live_server, api, db):
    seeded = (await api.get("/api/admin/config")).json()["escalation"]
    assert seeded["escalation_numbers"] == ["+14135550199"]  # tools/business.yaml
    assert seeded["escalation_number"] == "+14135550199"
    before = len(await audit_entries(api))
    saved = await api.put(
        "/api/admin/escalation",
        json={"escalation_numbers": ["(413) 555-0198", "+44 20 7946 0958"], "warm_transfer": False},
    )
    assert saved.status_code == 200, saved.text
    business = await load_business(db)  # what the next call's transfer rings
    assert business.escalation_numbers == ("+14135550198", "+442079460958")
    assert (business.escalation_number, business.warm_transfer) == ("+14135550198", False)
    # The over-capacity fallback dials the new first number without a restart.
    shown = (await api.get("/api/admin/config")).json()["escalation"]
    assert shown["escalation_numbers"] == ["+14135550198", "+442079460958"]
    entries = await audit_entries(api)
    assert len(entries) == before + 1 and entries[0]["entity"] == "escalation"
    assert entries[0]["changes"]["escalation_numbers"] == [
        "+14135550199",
        "+14135550198,+442079460958",
    ]
    assert entries[0]["changes"]["escalation_number"] == ["+14135550199", "+14135550198"]
    # Order matters: the first is the one the over-capacity fallback dials.
    reordered = await api.put(
        "/api/admin/escalation",
        json={"escalation_numbers": ["+442079460958", "+14135550198"], "warm_transfer": True},
    )
    assert reordered.status_code == 200, reordered.text
    business = await load_business(db)
    assert business.escalation_numbers == ("+442079460958", "+14135550198")
    assert business.escalation_number == "+442079460958"
    # Ten ring at once; none at all means a message is taken instead.
    ten = [f"+1413555{110 + i:04d}" for i in range(10)]
    full = await api.put("/api/admin/escalation", json={"escalation_numbers": ten})
    assert full.status_code == 200, full.text
    assert (await load_business(db)).escalation_numbers == tuple(ten)
    cleared = await api.put("/api/admin/escalation", json={"escalation_numbers": []})
    assert cleared.status_code == 200, cleared.text
    business = await load_business(db)
    assert (business.escalation_numbers, business.escalation_number) == ((), "")


async def test_escalation_numbers_are_checked_per_row_and_nothing_is_saved(api, db):
    start = await api.put(
        "/api/admin/escalation",
        json={"escalation_numbers": ["+14135550198"], "warm_transfer": True},
    )
    assert start.status_code == 200, start.text
    before, audited = await load_business(db), len(await audit_entries(api))
    own = "(413) 555-0100"  # the business's own number, written differently
    assert (await load_business(db)).phone == "+14135550100"
    bad = await api.put(
        "/api/admin/escalation",
        json={
            "escalation_numbers": [
                "+44 20 7946 0958",
                "555-12",
                " ",
                own,
                "+1 413-555-0198",
                "+442079460958",
            ],
            "warm_transfer": False,
        },
    )
    assert bad.status_code == 422
    errors = bad.json()["errors"]
    assert set(errors) == {f"escalation_numbers.{i}" for i in (1, 2, 3, 5)}
    assert "not a" in errors["escalation_numbers.1"]
    assert "empty" in errors["escalation_numbers.2"]
    assert "loop" in errors["escalation_numbers.3"]
    assert "same number as number 1" in errors["escalation_numbers.5"]
    too_many = [f"+1413555{110 + i:04d}" for i in range(11)]
    eleven = await api.put("/api/admin/escalation", json={"escalation_numbers": too_many})
    assert eleven.status_code == 422
    assert "at most 10" in eleven.json()["errors"]["escalation_numbers"]
    for body, field in (
        ({"escalation_numbers": "+14135550198"}, "escalation_numbers"),
        ({"escalation_numbers": [4135550198]}, "escalation_numbers.0"),
        ({"warm_transfer": False}, "escalation_numbers"),  # neither form: nothing is cleared
    ):
        refused = await api.put("/api/admin/escalation", json=body)
        assert refused.status_code == 422 and field in refused.json()["errors"], refused.text
    after = await load_business(db)
    assert (after.escalation_numbers, after.warm_transfer) == (before.escalation_numbers, True)
    assert len(await audit_entries(api)) == audited


async def test_the_single_escalation_number_field_still_works_for_scripts(live_server, api, db):
    two = ["+14135550198", "+442079460958"]
    assert (
        await api.put("/api/admin/escalation", json={"escalation_numbers": two})
    ).status_code == 200
    bad = await api.put(
        "/api/admin/escalation", json={"escalation_number": "555-12", "warm_transfer": True}
    )
    assert bad.status_code == 422 and "escalation_number" in bad.json()["errors"]
    own = (await load_business(db)).phone
    loop = await api.put(
        "/api/admin/escalation", json={"escalation_number": own, "warm_transfer": True}
    )
    assert loop.status_code == 422
    assert "loop" in loop.json()["errors"]["escalation_number"]
    # Sent alone it sets the one number to ring, replacing the list.
    good = await api.put(
        "/api/admin/escalation",
        json={"escalation_number": "+1 (413) 555-0197", "warm_transfer": False},
    )
    assert good.status_code == 200, good.text
    business = await load_business(db)
    assert business.escalation_numbers == ("+14135550197",)
    assert (business.escalation_number, business.warm_transfer) == ("+14135550197", False)
    # A config read back with only the list edited: the list wins over the stale single number.
    escalation = (await api.get("/api/admin/config")).json()["escalation"]
    escalation["escalation_numbers"] = two
    edited = await api.put("/api/admin/escalation", json=escalation)
    assert edited.status_code == 200, edited.text
    assert (await load_business(db)).escalation_numbers == tuple(two)
    # Both changed and they disagree: refused rather than guessing.
    clash = await api.put(
        "/api/admin/escalation",
        json={"escalation_numbers": two, "escalation_number": "+14135550197"},
    )
    assert clash.status_code == 422 and "escalation_number" in clash.json()["errors"]
    assert (await load_business(db)).escalation_numbers == tuple(two)
    cleared = await api.put(
        "/api/admin/escalation", json={"escalation_number": "", "warm_transfer": True}
    )
    assert cleared.status_code == 200
    business = await load_business(db)
    assert (business.escalation_numbers, business.escalation_number) == ((), "")


async def test_tools_switch_on_and_off(api, db):
    unknown = await api.put("/api/admin/tools", json={"enabled": {"launch_rockets": False}})
    assert unknown.status_code == 422 and "tools.launch_rockets" in unknown.json()["errors"]
    required = await api.put("/api/admin/tools", json={"enabled": {"end_call": False}})
    assert required.status_code == 422 and "tools.end_call" in required.json()["errors"]
    off = await api.put(
        "/api/admin/tools", json={"enabled": {"take_message": False, "add_note": False}}
    )
    assert off.status_code == 200
    assert (await load_business(db)).disabled_tools == {"take_message", "add_note"}
    tools = {t["name"]: t for t in (await api.get("/api/admin/config")).json()["tools"]}
    assert not tools["take_message"]["enabled"] and tools["end_call"]["required"]
    on = await api.put("/api/admin/tools", json={"enabled": {"take_message": True}})
    assert on.status_code == 200
    assert (await load_business(db)).disabled_tools == {"add_note"}
    assert (await audit_entries(api))[0]["summary"] == "tools: enabled take_message"
    await api.put("/api/admin/tools", json={"enabled": {"add_note": True}})


async def test_greeting_and_persona_placeholders_and_preview(api, db):
    bad = await api.put(
        "/api/admin/prompts", json={"greeting": "Hi from {salon}!", "persona": "Be {kind"}
    )
    assert bad.status_code == 422
    errors = bad.json()["errors"]
    assert "unknown placeholder {salon}" in errors["greeting"]
    assert "{business_name}" in errors["greeting"]
    assert "braces" in errors["persona"]
    preview = await api.post(
        "/api/admin/prompts/preview",
        json={
            "greeting": "Good day, {business_name} here.",
            "persona": "You are Rosa. We are at {address}.",
        },
    )
    assert preview.status_code == 200, preview.text
    shown = preview.json()
    business = await load_business(db)
    notice = "This call may be recorded for quality and training."  # calls are recorded
    assert shown["greeting"] == f"Good day, {business.name} here. {notice}"
    assert f"You are Rosa. We are at {business.address}." in shown["system_prompt"]
    assert (await load_business(db)).persona == ""  # a preview saves nothing
    saved = await api.put(
        "/api/admin/prompts",
        json={"greeting": "Good day, {business_name} here.", "persona": "You are Rosa."},
    )
    assert saved.status_code == 200
    assert (await load_business(db)).greeting == "Good day, {business_name} here."


async def test_knowledge_base_articles(api):
    empty = await api.post("/api/admin/kb", json={"title": " ", "body": ""})
    assert empty.status_code == 422 and set(empty.json()["errors"]) == {"title", "body"}
    taken = await api.post("/api/admin/kb", json={"title": "PARKING", "body": "x"})
    assert taken.status_code == 422 and "already exists" in taken.json()["errors"]["title"]
    created = await api.post(
        "/api/admin/kb",
        json={
            "title": "Bridal packages",
            "body": "Bridal hair trials are 60 dollars. Book the trial a month ahead.",
            "tags": "wedding, bride",
        },
    )
    assert created.status_code == 201, created.text
    article = created.json()
    found = (await api.get("/api/admin/kb", params={"q": "do you do weddings?"})).json()
    assert found["articles"][0]["id"] == article["id"]
    edited = await api.put(
        f"/api/admin/kb/{article['id']}",
        json={"title": "Bridal packages", "body": "Bridal trials are 75 dollars.", "tags": "bride"},
    )
    assert edited.status_code == 200 and edited.json()["body"].startswith("Bridal trials are 75")
    assert (await api.get("/api/admin/kb", params={"q": "wedding"})).json()["articles"] == []
    assert (await api.delete(f"/api/admin/kb/{article['id']}")).status_code == 200
    assert (await api.get(f"/api/admin/kb/{article['id']}")).status_code == 404
    titles = [a["title"] for a in (await api.get("/api/admin/kb")).json()["articles"]]
    assert "Parking" in titles and "Bridal packages" not in titles
    actions = [(e["action"], e["entity"]) for e in await audit_entries(api)][:3]
    assert actions == [("delete", "kb_article"), ("update", "kb_article"), ("create", "kb_article")]


async def test_failed_validation_leaves_no_audit_entry(api):
    before = len(await audit_entries(api))
    await api.put("/api/admin/profile", json={"name": "", "timezone": "Nowhere"})
    await api.post("/api/admin/kb", json={"title": "", "body": ""})
    assert len(await audit_entries(api)) == before


# --- Review -------------------------------------------------------------------------------------


def _wav() -> bytes:
    buffer = BytesIO()
    with wave.open(buffer, "wb") as w:
        w.setnchannels(2)
        w.setsampwidth(2)
        w.setframerate(8000)
        w.writeframes(b"\x00\x01" * 1600)
    return buffer.getvalue()


async def test_calls_appointments_and_callbacks(live_server, api, db):
    from tests.conftest import make_ctx
    from tools.actions.calendar import book_appointment
    from tools.actions.handoff import take_message

    store = CallStore(db)
    call_id = await store.start_call(
        call_sid="CA72657669657731000000000000000000", from_number="+14135550111"
    )
    await store.add_turn(call_id, role="bot", text="Thanks for calling.", timings={})
    await store.add_turn(
        call_id, role="caller", text="Can I leave a message?", timings={"speech_end": 1.0}
    )
    await store.add_turn(
        call_id,
        role="bot",
        text="Of course.",
        timings={"voice_to_voice_ms": 812.5, "llm_first_token_ms": 300.0},
    )
    ctx = make_ctx(db, phone="+14135550111")
    ctx.call_sid = "CA72657669657731000000000000000000"
    await take_message(ctx, "Please call me about a refund", name="Sam Reed")
    from datetime import UTC, datetime

    real = make_ctx(db, now=datetime.now(UTC), phone="+14135550112")
    await book_appointment(real, "haircut", "next Tuesday at 11am", customer_name="Kim Lo")
    recordings = Path(live_server.data_dir) / "recordings"
    recordings.mkdir(exist_ok=True)
    (recordings / "CA72657669657731000000000000000000.wav").write_bytes(_wav())
    await store.finish_call(
        call_id,
        outcome="completed",
        recording_path=str(recordings / "CA72657669657731000000000000000000.wav"),
    )
    # A call whose stored recording path points outside the recordings folder is not served.
    other = await store.start_call(call_sid="CA72657669657732000000000000000000")
    await store.finish_call(other, outcome="completed", recording_path="/etc/passwd")

    calls = (await api.get("/api/admin/calls")).json()["calls"]
    row = next(c for c in calls if c["call_sid"] == "CA72657669657731000000000000000000")
    assert row["caller"] == "+14135550111" and row["outcome"] == "completed"
    assert row["handoff"] == "message:message_taken" and row["duration_secs"] >= 0
    detail = (await api.get("/api/admin/calls/CA72657669657731000000000000000000")).json()
    assert [t["role"] for t in detail["turns"]] == ["bot", "caller", "bot"]
    assert detail["turns"][2]["timings"]["voice_to_voice_ms"] == 812.5
    assert (
        detail["recording_url"] == "/api/admin/calls/CA72657669657731000000000000000000/recording"
    )
    audio = await api.get(detail["recording_url"])
    assert audio.status_code == 200 and audio.headers["content-type"] == "audio/wav"
    assert audio.content == _wav()
    assert (await api.get("/api/admin/calls/CA72657669657732000000000000000000")).json()[
        "recording_url"
    ] == ""
    assert (
        await api.get("/api/admin/calls/CA72657669657732000000000000000000/recording")
    ).status_code == 404
    assert (await api.get("/api/admin/calls/CA6e6f7065000000000000000000000000")).status_code == 404

    upcoming = (await api.get("/api/admin/appointments")).json()["appointments"]
    assert [(a["customer"], a["service"], a["status"]) for a in upcoming] == [
        ("Kim Lo", "Haircut", "booked")
    ]
    assert (await api.get("/api/admin/appointments", params={"scope": "past"})).json()[
        "appointments"
    ] == []
    callbacks = (await api.get("/api/admin/callbacks")).json()["callbacks"]
    assert [(c["caller_name"], c["message"], c["call_sid"]) for c in callbacks] == [
        ("Sam Reed", "Please call me about a refund", "CA72657669657731000000000000000000")
    ]
    bad = await api.put(f"/api/admin/callbacks/{callbacks[0]['id']}", json={"outcome": "maybe"})
    assert bad.status_code == 422 and "outcome" in bad.json()["errors"]
    done = await api.put(
        f"/api/admin/callbacks/{callbacks[0]['id']}", json={"outcome": "called_back"}
    )
    assert done.status_code == 200
    assert (await api.get("/api/admin/callbacks")).json()["callbacks"] == []
    everything = (await api.get("/api/admin/callbacks", params={"status": "all"})).json()
    assert everything["callbacks"][0]["outcome"] == "called_back"


async def test_providers_are_read_only_and_secret_free(live_server, api):
    providers = (await api.get("/api/admin/providers")).json()
    assert providers["llm"].startswith("openai-compatible") and providers["stt"] == "whisper-local"
    assert providers["telephony"] == "twilio"
    text = str(providers)
    assert ADMIN_TOKEN not in text and "twilio-test-auth-token" not in text
    assert (await api.put("/api/admin/providers", json={})).status_code == 405


async def test_openapi_documents_the_admin_api(live_server):
    async with httpx.AsyncClient(base_url=live_server.url) as client:
        schema_doc = (await client.get("/openapi.json")).json()
    paths = schema_doc["paths"]
    for path in ("/api/admin/profile", "/api/admin/hours", "/api/admin/kb/{article_id}"):
        assert path in paths
    assert "ProfileIn" in schema_doc["components"]["schemas"]


async def test_admin_page_is_self_contained(live_server):
    async with httpx.AsyncClient(base_url=live_server.url) as client:
        page = await client.get("/admin")
        script = await client.get("/admin/assets/admin.js")
    assert page.status_code == 200 and "text/html" in page.headers["content-type"]
    csp = page.headers["content-security-policy"]
    assert "default-src 'self'" in csp and "frame-ancestors 'none'" in csp
    assert "http://" not in page.text and "https://" not in page.text  # no CDN
    assert script.status_code == 200 and "innerHTML" not in script.text
    assert script.headers["x-content-type-options"] == "nosniff"
    async with httpx.AsyncClient(base_url=live_server.url, headers=BEARER) as client:
        config = await client.get("/api/admin/config")
    assert config.headers["cache-control"] == "no-store"
