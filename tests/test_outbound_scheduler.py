"""agent.outbound.scheduler against a real database (both backends), a fixed clock and a
recording Dialer standing in for Twilio: reminders and callbacks created once at their time,
nothing placed outside calling hours, do-not-call honoured, retries then given up, the caps on
concurrent calls, and two workers never placing one call twice."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest

from agent.outbound.jobs import DialError, Outcome
from agent.outbound.scheduler import OutboundScheduler
from agent.settings import Settings, SettingsError
from tests.outbound_helpers import (
    Clock,
    RecordingDialer,
    add_appointment,
    add_customer,
    reminder_outcome,
    set_business,
)
from tools.store.db import Database
from tools.store.handoffs import record_handoff
from tools.store.outbound import OutboundStore

NY = ZoneInfo("America/New_York")
THURSDAY = datetime(2026, 12, 3, 10, 0, tzinfo=NY)


class Lines:
    """Free lines as the app would count them."""

    def __init__(self, free: int = 10) -> None:
        self.free = free

    async def free_lines(self) -> int:
        return self.free


def scheduler(
    db: Database,
    clock: Clock,
    dialer: RecordingDialer | None,
    *,
    owner: str = "w1",
    lines: Lines | None = None,
    max_calls: int = 5,
    reserve_lines: int = 1,
) -> OutboundScheduler:
    return OutboundScheduler(
        OutboundStore(db, clock=clock),
        dialer,
        lines or Lines(),
        owner=owner,
        max_calls=max_calls,
        reserve_lines=reserve_lines,
    )


async def test_nothing_is_placed_outside_calling_hours(db: Database) -> None:
    clock = Clock(datetime(2026, 12, 3, 21, 0, tzinfo=NY))
    dialer = RecordingDialer()
    worker = scheduler(db, clock, dialer)
    job_id = await worker.store.schedule(purpose="custom", to="+14135550111", message="hi")
    late = await worker.tick()
    assert late.closed and late.placed == [] and dialer.placed == []
    clock.now = datetime(2026, 12, 4, 8, 59, tzinfo=NY)
    assert (await worker.tick()).placed == []
    clock.now = datetime(2026, 12, 4, 9, 0, tzinfo=NY)
    morning = await worker.tick()
    assert morning.placed == [job_id]
    assert [job.id for job, _sid in dialer.placed] == [job_id]
    row = await worker.store.get(job_id)
    assert row is not None and row["status"] == "dialing"
    assert row["call_sid"] == dialer.placed[0][1]


async def test_a_reminder_is_created_once_at_lead_time(db: Database) -> None:
    await set_business(db, reminders_enabled=True, reminder_lead_hours=24)
    clock = Clock(THURSDAY - timedelta(days=3))  # booked three days ahead
    dialer = RecordingDialer()
    worker = scheduler(db, clock, dialer)
    customer = await add_customer(db, "+14135550111", "Maria")
    starts = THURSDAY + timedelta(days=1, hours=5)  # Friday 15:00
    appointment = await add_appointment(db, customer, starts)

    clock.now = starts - timedelta(hours=24, minutes=1)
    assert (await worker.tick()).reminders == []
    clock.now = starts - timedelta(hours=24)
    first = await worker.tick()
    assert len(first.reminders) == 1 and first.placed == first.reminders
    ((job, _sid),) = dialer.placed
    assert (job.purpose, job.appointment_id, job.customer_id, job.to) == (
        "reminder",
        appointment,
        customer,
        "+14135550111",
    )
    clock.advance(timedelta(minutes=5))
    assert (await worker.tick()).reminders == []
    assert len(dialer.placed) == 1
    # The callee confirms (reported by the dialer's webhooks through the ledger).
    await worker.store.finished(job.id, dialer.placed[0][1], Outcome.CONFIRMED)
    assert await reminder_outcome(db, appointment) == "confirmed"
    assert (await worker.tick()).reminders == []


async def test_no_reminder_when_disabled_for_do_not_call_or_cancelled(db: Database) -> None:
    clock = Clock(THURSDAY - timedelta(days=3))
    worker = scheduler(db, clock, RecordingDialer())
    starts = THURSDAY + timedelta(hours=5)
    opted_out = await add_customer(db, "+14135550111", do_not_call=True)
    await add_appointment(db, opted_out, starts)
    cancelled = await add_appointment(
        db, await add_customer(db, "+14135550112"), starts, "cancelled"
    )
    # (an hour later: one staff member, one slot)
    wanted = await add_appointment(
        db, await add_customer(db, "+14135550113"), starts + timedelta(hours=1)
    )
    clock.now = THURSDAY
    assert (await worker.tick()).reminders == []  # reminders are off by default
    await set_business(db, reminders_enabled=True)
    created = (await worker.tick()).reminders
    rows = [await worker.store.get(job_id) for job_id in created]
    assert [row["appointment_id"] for row in rows if row] == [wanted]
    assert cancelled not in [row["appointment_id"] for row in await worker.store.list_calls()]


async def test_an_appointment_booked_inside_the_lead_time_gets_no_reminder(db: Database) -> None:
    await set_business(db, reminders_enabled=True)
    clock = Clock(THURSDAY)
    worker = scheduler(db, clock, RecordingDialer())
    customer = await add_customer(db, "+14135550111")
    starts = THURSDAY + timedelta(hours=3)
    await add_appointment(db, customer, starts, booked_at=THURSDAY - timedelta(minutes=5))
    assert (await worker.tick()).reminders == []
    # Booked a minute before its reminder time: reminded.
    other = await add_appointment(
        db,
        await add_customer(db, "+14135550112"),
        starts + timedelta(hours=1),
        booked_at=starts - timedelta(hours=24, minutes=1),
    )
    (job_id,) = (await worker.tick()).reminders
    row = await worker.store.get(job_id)
    assert row is not None and row["appointment_id"] == other


async def test_callback_placed_automatically_at_the_promised_time(db: Database) -> None:
    await set_business(db, auto_callbacks=True)
    clock = Clock(THURSDAY)
    dialer = RecordingDialer()
    worker = scheduler(db, clock, dialer)
    promised = THURSDAY + timedelta(hours=1)
    handoff = await record_handoff(
        db,
        call_sid="",
        kind="message",
        reason="wants to know if the balayage can be moved",
        caller_name="Sam",
        caller_number="+14135550111",
        outcome="message_taken",
        callback_after=promised.astimezone(UTC).isoformat(),  # as take_message writes it
    )
    clock.now = promised - timedelta(minutes=1)
    assert (await worker.tick()).callbacks == []
    clock.now = promised
    done = await worker.tick()
    assert len(done.callbacks) == 1 and done.placed == done.callbacks
    ((job, _sid),) = dialer.placed
    assert (job.purpose, job.message) == (
        "callback",
        "wants to know if the balayage can be moved",
    )
    row = await worker.store.get(job.id)
    assert row is not None and row["handoff_id"] == handoff
    assert (await worker.tick()).callbacks == []


async def test_retry_with_backoff_after_no_answer_then_given_up(db: Database) -> None:
    clock = Clock(THURSDAY)
    dialer = RecordingDialer()
    worker = scheduler(db, clock, dialer)
    job_id = await worker.store.schedule(purpose="custom", to="+14135550111", max_attempts=2)
    assert (await worker.tick()).placed == [job_id]
    await worker.store.finished(job_id, dialer.placed[-1][1], Outcome.NO_ANSWER)
    clock.advance(timedelta(minutes=9))
    assert (await worker.tick()).placed == []  # the first backoff is 10 minutes
    clock.advance(timedelta(minutes=1))
    assert (await worker.tick()).placed == [job_id]
    assert dialer.placed[-1][0].attempt == 2
    await worker.store.finished(job_id, dialer.placed[-1][1], Outcome.NO_ANSWER)
    clock.advance(timedelta(days=1))
    assert (await worker.tick()).placed == []
    row = await worker.store.get(job_id)
    assert row is not None and (row["status"], row["outcome"]) == ("given_up", "no_answer")


async def test_dial_errors_retry_or_give_up(db: Database) -> None:
    clock = Clock(THURSDAY)
    dialer = RecordingDialer()
    worker = scheduler(db, clock, dialer)
    job_id = await worker.store.schedule(purpose="custom", to="+14135550111")
    dialer.errors.append(DialError("Twilio 503", retryable=True))
    assert (await worker.tick()).failed == [job_id]
    row = await worker.store.get(job_id)
    assert row is not None
    assert (row["status"], row["outcome"], row["last_error"]) == (
        "scheduled",
        "failed",
        "Twilio 503",
    )
    clock.advance(timedelta(minutes=10))
    dialer.errors.append(DialError("21217: not a valid phone number", retryable=False))
    assert (await worker.tick()).failed == [job_id]
    row = await worker.store.get(job_id)
    assert row is not None and row["status"] == "given_up"
    clock.advance(timedelta(hours=3))
    assert (await worker.tick()).placed == []


async def test_do_not_call_set_after_scheduling_is_honoured_at_claim(db: Database) -> None:
    clock = Clock(THURSDAY)
    dialer = RecordingDialer()
    worker = scheduler(db, clock, dialer)
    customer = await add_customer(db, "+14135550111")
    job_id = await worker.store.schedule(purpose="custom", to="+14135550111", customer_id=customer)
    from tools.store import schema

    async with db.write() as conn:
        await conn.execute(schema.customers.update().values(do_not_call=True))
    done = await worker.tick()
    assert done.not_placed == [job_id] and dialer.placed == []
    row = await worker.store.get(job_id)
    assert row is not None and row["outcome"] == "opted_out"


async def test_outbound_calls_leave_lines_for_inbound_callers(db: Database) -> None:
    clock = Clock(THURSDAY)
    dialer = RecordingDialer()
    lines = Lines(free=3)
    worker = scheduler(db, clock, dialer, lines=lines, max_calls=5, reserve_lines=1)
    for n in range(5):
        await worker.store.schedule(purpose="custom", to=f"+1413555011{n}")
    # 3 free, 1 kept for inbound: 2 placed (being dialed, they hold no line yet).
    assert len((await worker.tick()).placed) == 2
    assert (await worker.tick()).placed == []  # the two being dialed count
    lines.free = 1
    for job, sid in dialer.placed:
        await worker.store.answered(job.id, sid)  # now they hold lines (free went to 1)
    assert (await worker.tick()).placed == []  # the last line is the inbound reserve


async def test_the_outbound_cap_holds_across_workers(db: Database) -> None:
    clock = Clock(THURSDAY)
    dialer = RecordingDialer()
    first = scheduler(db, clock, dialer, owner="w1", max_calls=2)
    second = scheduler(db, clock, dialer, owner="w2", max_calls=2)
    for n in range(6):
        await first.store.schedule(purpose="custom", to=f"+1413555011{n}")
    rounds = await asyncio.gather(first.tick(), second.tick())
    assert sum(len(r.placed) for r in rounds) == 2
    for job, sid in dialer.placed:
        await first.store.answered(job.id, sid)
    assert sum(len(r.placed) for r in await asyncio.gather(first.tick(), second.tick())) == 0
    job, sid = dialer.placed[0]
    await first.store.finished(job.id, sid, Outcome.COMPLETED)
    assert sum(len(r.placed) for r in await asyncio.gather(first.tick(), second.tick())) == 1


async def test_two_workers_never_place_the_same_call_twice(db: Database) -> None:
    """Two schedulers on one database, round after round, with a dialer slow enough for the
    rounds to overlap: every call is placed exactly once."""
    clock = Clock(THURSDAY)
    dialer = RecordingDialer(delay=0.01)
    workers = [
        scheduler(db, clock, dialer, owner=f"w{n}", max_calls=3, lines=Lines(50)) for n in range(2)
    ]
    ids = [
        await workers[0].store.schedule(purpose="custom", to=f"+141355502{n:02d}")
        for n in range(12)
    ]
    for _round in range(10):
        await asyncio.gather(*(w.tick() for w in workers))
        for job, sid in dialer.placed:  # each finishes before the next round
            await workers[0].store.finished(job.id, sid, Outcome.COMPLETED)
    placed = [job.id for job, _sid in dialer.placed]
    assert len(placed) == len(set(placed)), "a call was placed twice"
    assert sorted(placed) == sorted(ids)


async def test_without_a_dialer_calls_are_created_not_placed(db: Database) -> None:
    await set_business(db, reminders_enabled=True)
    clock = Clock(THURSDAY - timedelta(days=2))
    worker = scheduler(db, clock, None)
    await add_appointment(db, await add_customer(db, "+14135550111"), THURSDAY + timedelta(hours=3))
    clock.now = THURSDAY
    done = await worker.tick()
    assert len(done.reminders) == 1 and done.placed == []
    assert [r["status"] for r in await worker.store.list_calls("scheduled")] == ["scheduled"]


def test_outbound_settings_are_read_and_checked() -> None:
    settings = Settings.from_env(
        {
            "FRONTDESK_OUTBOUND_POLL_SECS": "2.5",
            "FRONTDESK_OUTBOUND_MAX_CALLS": "0",
            "FRONTDESK_OUTBOUND_RESERVE_LINES": "3",
            "FRONTDESK_OUTBOUND_BACKOFF_MINUTES": "5, 60",
        }
    )
    assert (
        settings.outbound_poll_secs,
        settings.outbound_max_calls,
        settings.outbound_reserve_lines,
        settings.outbound_backoff_minutes,
    ) == (2.5, 0, 3, (5.0, 60.0))
    defaults = Settings.from_env({})
    assert defaults.outbound_backoff_minutes == (10.0, 30.0, 120.0)
    for name, raw, message in [
        ("FRONTDESK_OUTBOUND_BACKOFF_MINUTES", "10,soon", "minutes separated by commas"),
        ("FRONTDESK_OUTBOUND_BACKOFF_MINUTES", "0", "each above 0"),
        ("FRONTDESK_OUTBOUND_BACKOFF_MINUTES", "", "at least one delay"),
        ("FRONTDESK_OUTBOUND_MAX_CALLS", "-1", ">= 0"),
        ("FRONTDESK_OUTBOUND_POLL_SECS", "0", ">= 0.1"),
    ]:
        with pytest.raises(SettingsError, match=message):
            Settings.from_env({name: raw})


async def test_old_promises_are_left_to_staff_and_unpromised_ones_go_at_once(
    db: Database,
) -> None:
    """A callback promised more than a day ago (a backlog when the setting is turned on) is not
    rung; a callback request with no promised time (a transfer nobody answered) is due when it
    was taken."""
    await set_business(db, auto_callbacks=True)
    now = datetime.now(UTC)
    clock = Clock(now)
    worker = scheduler(db, clock, RecordingDialer())
    await record_handoff(
        db,
        call_sid="",
        kind="message",
        reason="old",
        caller_number="+14135550111",
        outcome="message_taken",
        callback_after=(now - timedelta(hours=25)).isoformat(),
    )
    fresh = await record_handoff(
        db,
        call_sid="",
        kind="message",
        reason="nobody answered the transfer",
        caller_number="+14135550112",
        outcome="callback_requested",
    )
    opted_out = await add_customer(db, "+14135550113", do_not_call=True)
    await record_handoff(
        db,
        call_sid="",
        kind="message",
        reason="do not call me",
        caller_number="+14135550113",
        customer_id=opted_out,
        outcome="callback_requested",
    )
    clock.advance(timedelta(seconds=1))
    (job_id,) = (await worker.tick()).callbacks
    row = await worker.store.get(job_id)
    assert row is not None
    assert (row["handoff_id"], row["message"]) == (fresh, "nobody answered the transfer")


async def test_two_workers_create_one_reminder_and_place_it_once(db: Database) -> None:
    await set_business(db, reminders_enabled=True)
    clock = Clock(THURSDAY)
    dialer = RecordingDialer(delay=0.01)
    workers = [scheduler(db, clock, dialer, owner=f"w{n}") for n in range(3)]
    for n in range(4):
        customer = await add_customer(db, f"+1413555013{n}")
        await add_appointment(db, customer, THURSDAY + timedelta(hours=2 + n))
    rounds = await asyncio.gather(*(w.tick() for w in workers))
    rounds += await asyncio.gather(*(w.tick() for w in workers))
    created = [job_id for r in rounds for job_id in r.reminders]
    assert len(created) == len(set(created)) == 4
    placed = [job.appointment_id for job, _sid in dialer.placed]
    assert len(placed) == len(set(placed)) == 4


async def test_unusable_calling_hours_pause_placing(db: Database) -> None:
    """Hours written around the console's checks (start after end) stop all placing."""
    await set_business(db, calling_hours_start="20:00", calling_hours_end="09:00")
    dialer = RecordingDialer()
    worker = scheduler(db, Clock(THURSDAY), dialer)
    await worker.store.schedule(purpose="custom", to="+14135550111", message="hi")
    policy = await worker.store.policy()
    assert policy.hours is None and "must be before" in policy.hours_problem
    assert (await worker.tick()).closed and dialer.placed == []


async def test_a_bad_number_on_file_does_not_hold_up_the_others(db: Database) -> None:
    await set_business(db, reminders_enabled=True)
    dialer = RecordingDialer()
    worker = scheduler(db, Clock(THURSDAY), dialer)
    legacy = await add_customer(db, "413-555-0111")  # written before numbers were checked
    await add_appointment(db, legacy, THURSDAY + timedelta(hours=2))
    good = await add_appointment(
        db, await add_customer(db, "+14135550112"), THURSDAY + timedelta(hours=3)
    )
    done = await worker.tick()
    assert len(done.reminders) == 1 and len(done.placed) == 1
    assert [job.appointment_id for job, _sid in dialer.placed] == [good]
