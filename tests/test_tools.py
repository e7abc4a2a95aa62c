"""Business tools on a real (temporary) database, with a fixed clock."""

import asyncio
import itertools
from datetime import datetime

import pytest
import sqlalchemy as sa

from tests.conftest import BUSINESS_YAML, SUNDAY_MORNING, TZ, make_ctx
from tools.actions.business_info import get_business_info
from tools.actions.calendar import (
    book_appointment,
    cancel_appointment,
    check_availability,
    reschedule_appointment,
)
from tools.actions.crm import add_note, find_customer, list_my_appointments, save_customer
from tools.actions.handoff import take_message
from tools.actions.knowledge import search_knowledge_base
from tools.catalog import tool_registry
from tools.domain.business import ConfigError, escalation_numbers, read_config
from tools.errors import ToolError
from tools.registry import json_schema
from tools.store import schema
from tools.store.business import seed_business


async def count(db, table) -> int:
    async with db.read() as conn:
        return (await conn.execute(sa.select(sa.func.count()).select_from(table))).scalar_one()


async def test_seeding_is_idempotent_and_never_clobbers(db, tmp_path):
    before = {
        t.name: await count(db, t) for t in (schema.services, schema.kb_articles, schema.staff)
    }
    async with db.write() as conn:
        await conn.execute(
            schema.services.update()
            .where(schema.services.c.name == "Haircut")
            .values(price_cents=4500)
        )
    added = await seed_business(db, BUSINESS_YAML)
    assert not any(added.values())
    after = {
        t.name: await count(db, t) for t in (schema.services, schema.kb_articles, schema.staff)
    }
    assert after == before
    async with db.read() as conn:
        price = (
            await conn.execute(
                sa.select(schema.services.c.price_cents).where(schema.services.c.name == "Haircut")
            )
        ).scalar_one()
    assert price == 4500


# A valid number, one that is only of a possible length (no such US area code 200), nonsense,
# a national number read as a US one, and a UK number.
PHONE_SAMPLES = ["+1 413-555-0199", "+1 200 555 0123", "12", "(413) 555 0198", "+442079460958"]


@pytest.mark.parametrize("text", PHONE_SAMPLES)
def test_the_admin_console_the_config_and_the_tools_accept_the_same_phone_numbers(text, tmp_path):
    """One rule: each of the three accepts a number exactly when the others do, as one E.164."""
    from pydantic import ValidationError

    from tools.actions.identity import spoken_number
    from tools.admin.models import ProfileIn

    accepted: dict[str, str | None] = {}
    try:
        accepted["admin"] = ProfileIn(name="X", timezone="UTC", phone=text).phone
    except ValidationError as exc:
        assert [e["loc"] for e in exc.errors()] == [("phone",)]
        accepted["admin"] = None
    config = tmp_path / "business.yaml"
    config.write_text(f"name: X\ntimezone: UTC\nphone: '{text}'\nescalation_number: '{text}'\n")
    try:
        read_config(config)
        accepted["config"] = escalation_numbers(read_config(config))[0]
    except ConfigError as exc:
        assert "phone" in str(exc)
        accepted["config"] = None
    try:
        accepted["tools"] = spoken_number(text)
    except ToolError:
        accepted["tools"] = None
    assert len(set(accepted.values())) == 1, accepted
    valid = text not in ("12", "+1 200 555 0123")
    assert (accepted["admin"] is not None) == valid
    assert accepted["admin"] is None or accepted["admin"].startswith("+")


@pytest.mark.parametrize("zone", ["America/New_York", "UTC", "Mars/Olympus", "america/new_york"])
def test_the_admin_console_and_the_config_accept_the_same_time_zones(zone, tmp_path):
    from pydantic import ValidationError

    from tools.admin.models import ProfileIn

    try:
        ProfileIn(name="X", timezone=zone)
        admin = True
    except ValidationError:
        admin = False
    config = tmp_path / "business.yaml"
    config.write_text(f"name: X\ntimezone: {zone}\n")
    try:
        read_config(config)
        from_config = True
    except ConfigError:
        from_config = False
    assert admin == from_config == (zone in ("America/New_York", "UTC"))


def test_tools_has_no_import_cycle_and_no_web_or_pipeline_framework():
    """Every import inside tools/ (function-local ones too) goes one way; none is pipecat's,
    FastAPI's or Starlette's."""
    import ast
    import graphlib

    root = BUSINESS_YAML.parent
    graph: dict[str, set[str]] = {}
    for path in root.rglob("*.py"):
        parts = list(path.relative_to(root.parent).with_suffix("").parts)
        module = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
        imported: set[str] = set()
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Import):
                imported.update(alias.name for alias in node.names)
            elif isinstance(node, ast.ImportFrom) and node.module:
                imported.add(node.module)
                imported.update(f"{node.module}.{alias.name}" for alias in node.names)
        assert not {
            name for name in imported if name.split(".")[0] in ("pipecat", "fastapi", "starlette")
        }, module
        graph[module] = imported
    inside = {m: {i for i in imported if i in graph and i != m} for m, imported in graph.items()}
    assert "tools.actions.calendar" in inside["tools.catalog"]  # the graph is really there
    graphlib.TopologicalSorter(inside).prepare()  # raises CycleError naming the cycle


def test_bad_config_names_the_field(tmp_path):
    bad = tmp_path / "b.yaml"
    bad.write_text("name: X\ntimezone: Mars/Olympus\n")
    with pytest.raises(ConfigError, match="timezone"):
        read_config(bad)
    bad.write_text("name: X\ntimezone: UTC\nhours: {monday: '18:00-09:00'}\n")
    with pytest.raises(ConfigError, match=r"hours\.monday"):
        read_config(bad)


def test_schemas_come_from_signatures_and_docstrings():
    description, params = json_schema(check_availability)
    assert "free appointment times" in description
    assert params["required"] == ["service", "when"]
    assert "this Friday at 2pm" in params["properties"]["when"]["description"]
    _, info = json_schema(get_business_info)
    assert "hours_today" in info["properties"]["topic"]["enum"]


async def test_availability_offers_concrete_slots_near_the_request(db):
    ctx = make_ctx(db)
    result = await check_availability(ctx, "haircut", "this Friday at 2pm")
    assert result.data["requested_free"] is True
    assert "Friday" in result.say or "friday" in result.say.lower()
    assert "two p m" in result.say
    morning = await check_availability(ctx, "color", "tomorrow morning")
    starts = [datetime.fromisoformat(s["start"]) for s in morning.data["slots"]]
    assert starts and all(s.astimezone(TZ).hour < 12 for s in starts)
    assert all(s.date().isoformat() == "2026-11-23" for s in starts)
    # Real choices, not three neighbouring quarter hours.
    gaps = [(b - a).total_seconds() / 60 for a, b in itertools.pairwise(starts)]
    assert all(g >= 45 for g in gaps), gaps


async def test_closed_days_and_unknown_services_are_explained(db):
    ctx = make_ctx(db)
    sunday = await check_availability(ctx, "haircut", "next Sunday")
    assert "closed on Sundays" in sunday.say
    assert sunday.data["slots"]  # and alternatives are offered
    with pytest.raises(ToolError, match="don't offer"):
        await check_availability(ctx, "tattoo", "Friday")
    christmas = await check_availability(ctx, "haircut", "December 25th")
    assert "Christmas" in christmas.say


async def test_book_then_list_cancel_and_reschedule(db):
    ctx = make_ctx(db)
    booked = await book_appointment(ctx, "haircut", "Friday at 2:30pm", customer_name="Anna Lee")
    assert "booked" in booked.say and "two thirty p m" in booked.say
    listed = await list_my_appointments(ctx)
    assert "haircut" in listed.say
    moved = await reschedule_appointment(ctx, "Saturday at 11am")
    assert "Saturday" in moved.say or "saturday" in moved.say.lower()
    async with db.read() as conn:
        row = (await conn.execute(sa.select(schema.appointments))).mappings().one()
    assert datetime.fromisoformat(row["starts_at"]).astimezone(TZ).hour == 11
    cancelled = await cancel_appointment(ctx)
    assert "cancelled your haircut" in cancelled.say
    async with db.read() as conn:
        status = (await conn.execute(sa.select(schema.appointments.c.status))).scalar_one()
    assert status == "cancelled"


async def test_booking_needs_an_exact_time_and_a_future_one(db):
    ctx = make_ctx(db)
    with pytest.raises(ToolError, match="What time") as exc:
        await book_appointment(ctx, "haircut", "Friday afternoon")
    assert exc.value.code == "need_exact_time"
    with pytest.raises(ToolError):
        await book_appointment(ctx, "haircut", "today at 9am")  # already past at 10:00
    assert await count(db, schema.appointments) == 0


async def test_two_calls_racing_for_one_slot_exactly_one_wins(db):
    # Beard trims only James does: one resource, one slot.
    results = await asyncio.gather(
        *[
            book_appointment(make_ctx(db, phone=f"+1413555010{i}"), "beard trim", "Friday at 3pm")
            for i in range(6)
        ],
        return_exceptions=True,
    )
    wins = [r for r in results if not isinstance(r, Exception)]
    losses = [r for r in results if isinstance(r, ToolError)]
    assert len(wins) == 1 and len(losses) == 5
    assert all(loss.code == "slot_taken" and loss.data["slots"] for loss in losses)
    assert await count(db, schema.appointments) == 1


async def test_callers_racing_for_a_time_two_stylists_offer_book_both_of_them(db):
    # Haircuts Maria and James both do: a caller who loses Maria to another call gets James.
    results = await asyncio.gather(
        *[
            book_appointment(make_ctx(db, phone=f"+1413555020{i}"), "haircut", "Friday at 2pm")
            for i in range(8)
        ],
        return_exceptions=True,
    )
    wins = [r for r in results if not isinstance(r, BaseException)]
    assert sorted(w.data["staff"] for w in wins) == ["James", "Maria"], results
    losses = [r for r in results if r not in wins]
    assert all(isinstance(r, ToolError) and r.code == "slot_taken" for r in losses)


async def test_crm_tools(db):
    ctx = make_ctx(db)
    assert (await find_customer(ctx)).data["found"] is False
    saved = await save_customer(ctx, name="Jane Doe", email="jane dot doe at example dot com")
    assert saved.data["email"] == "jane.doe@example.com"
    found = await find_customer(ctx)
    assert found.data["found"] and "Jane" in found.say
    await add_note(ctx, "prefers Maria")
    assert await count(db, schema.customer_notes) == 1
    with pytest.raises(ToolError, match="email"):
        await save_customer(ctx, email="not an email")
    with pytest.raises(ToolError, match="phone number"):
        await find_customer(ctx, phone="12")


async def test_knowledge_base_ranks_the_relevant_article_first(db):
    ctx = make_ctx(db)
    parking = await search_knowledge_base(ctx, "is there somewhere to park my car?")
    assert parking.data["passages"][0]["title"] == "Parking"
    pay = await search_knowledge_base(ctx, "can I pay with apple pay")
    assert pay.data["passages"][0]["title"] == "Payment"
    with pytest.raises(ToolError):
        await search_knowledge_base(ctx, "quantum chromodynamics")


async def test_business_info_is_spoken_in_words(db):
    info = await get_business_info(make_ctx(db), "prices")
    assert "forty dollars" in info.say and "$" not in info.say
    today = await get_business_info(make_ctx(db), "hours_today")
    assert "closed today" in today.say  # Sunday


async def test_messages_are_stored_with_a_callback_time(db):
    after_hours = datetime(2026, 11, 24, 21, 30, tzinfo=TZ)  # Tuesday evening
    result = await take_message(make_ctx(db, now=after_hours), "call me about a color", name="Sam")
    assert "Wednesday" in result.say or "tomorrow" in result.say
    async with db.read() as conn:
        row = (await conn.execute(sa.select(schema.handoffs))).mappings().one()
    assert row["kind"] == "message" and row["caller_number"] == "+14135550123"


async def test_registry_turns_every_failure_into_a_sentence(db):
    registry = tool_registry()
    ctx = make_ctx(db)
    missing = await registry.invoke(ctx, "book_appointment", {"service": "haircut"})
    assert not missing.ok and "day and time" in missing.payload["say"]
    nonsense = await registry.invoke(ctx, "book_appointment", "not a dict")
    assert not nonsense.ok and nonsense.payload["say"]
    unknown = await registry.invoke(ctx, "launch_rocket", {})
    assert not unknown.ok and unknown.error == "unknown_tool"
    extra = await registry.invoke(ctx, "get_business_info", {"topic": "address", "bogus": 1})
    assert extra.ok and "Maple Street" in extra.payload["say"]
    assert await count(db, schema.appointments) == 0


def test_fixed_clock_is_used():
    assert SUNDAY_MORNING.weekday() == 6


async def test_a_recorded_bot_turn_cut_off_later_keeps_only_what_was_heard(db):
    from tools.store.calls import CallStore

    store = CallStore(db)
    call_id = await store.start_call(call_sid="CA63757431000000000000000000000000")
    await store.add_turn(call_id, role="bot", text="We open at nine. We close at six.", timings={})
    await store.cut_off_last_bot_turn(call_id, heard="We open at nine.")
    await store.add_turn(call_id, role="caller", text="And on Sundays?", timings={})
    await store.cut_off_last_bot_turn(call_id, heard="never the caller's turn")
    await store.add_turn(call_id, role="bot", text="We are closed on Sundays.", timings={})
    await store.cut_off_last_bot_turn(call_id, heard="")  # nothing heard: the words stay
    record = await store.get_call("CA63757431000000000000000000000000")
    assert record is not None
    assert [(t["role"], t["text"], t["interrupted"]) for t in record["turns"]] == [
        ("bot", "We open at nine.", True),
        ("caller", "And on Sundays?", False),
        ("bot", "We are closed on Sundays.", True),
    ]
