"""tools.store.outbound on both backends: scheduling with dedupe, claiming under a lease (one
claimant per row, expired leases reclaimed), outcomes recorded once, retries with backoff inside
calling hours, do-not-call honoured at claim time, cancelling and listing."""

from __future__ import annotations

import asyncio
from datetime import datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import pytest

from agent.outbound.jobs import OutboundLedger, Outcome
from tests.outbound_helpers import Clock, add_appointment, add_customer, reminder_outcome
from tools.store.db import Database
from tools.store.handoffs import record_handoff
from tools.store.outbound import DoNotCallError, OutboundError, OutboundStore

NY = ZoneInfo("America/New_York")
# A Thursday morning in New York, inside the default calling hours 09:00-20:00.
MORNING = datetime(2026, 12, 3, 10, 0, tzinfo=NY)
LEASE = timedelta(seconds=60)
CALL_LEASE = timedelta(hours=1)


async def schedule(store: OutboundStore, **fields: Any) -> int:
    """Schedule a call that has no twin (its id, never None)."""
    job_id = await store.schedule(**fields)
    assert job_id is not None
    return job_id


def store_at(db: Database, when: datetime = MORNING) -> tuple[OutboundStore, Clock]:
    clock = Clock(when)
    return OutboundStore(db, clock=clock), clock


def test_the_store_is_a_ledger(db: Database) -> None:
    ledger: OutboundLedger = OutboundStore(db)  # mypy checks the protocol; this runs it
    assert callable(ledger.finished)


async def test_schedule_is_deduplicated_and_validated(db: Database) -> None:
    store, _ = store_at(db)
    first = await store.schedule_once("k:1", purpose="custom", to="+14135550111")
    assert first is not None
    assert await store.schedule_once("k:1", purpose="custom", to="+14135550111") is None
    with pytest.raises(OutboundError, match="purpose must be one of"):
        await schedule(store, purpose="sales", to="+14135550111")
    with pytest.raises(OutboundError, match=r"E\.164"):
        await schedule(store, purpose="custom", to="413-555-0111")
    with pytest.raises(OutboundError, match="max_attempts"):
        await schedule(store, purpose="custom", to="+14135550111", max_attempts=11)
    await add_customer(db, "+14135550122", do_not_call=True)
    with pytest.raises(DoNotCallError, match="asked not to be called"):
        await schedule(store, purpose="custom", to="+14135550122")
    rows = await store.list_calls("scheduled")
    assert [r["id"] for r in rows] == [first]
    assert rows[0]["max_attempts"] == 3  # the business's outbound_max_attempts


async def test_only_due_calls_are_claimed(db: Database) -> None:
    store, clock = store_at(db)
    later = await schedule(
        store, purpose="custom", to="+14135550111", due_at=MORNING + timedelta(minutes=5)
    )
    now = await schedule(store, purpose="custom", to="+14135550112", message="hello")
    claimed = await store.claim_due(owner="w1", lease=CALL_LEASE, limit=5)
    assert [(j.id, j.attempt, j.message) for j in claimed.jobs] == [(now, 1, "hello")]
    assert (await store.claim_due(owner="w1", lease=CALL_LEASE, limit=5)).jobs == []
    clock.advance(timedelta(minutes=5))
    assert [j.id for j in (await store.claim_due(owner="w1", lease=CALL_LEASE, limit=5)).jobs] == [
        later
    ]


async def test_claim_respects_the_limit(db: Database) -> None:
    store, _ = store_at(db)
    for n in range(5):
        await schedule(store, purpose="custom", to=f"+1413555011{n}")
    assert len((await store.claim_due(owner="w1", lease=LEASE, limit=2)).jobs) == 2
    assert len((await store.claim_due(owner="w1", lease=LEASE, limit=0)).jobs) == 0
    assert len((await store.claim_due(owner="w1", lease=LEASE, limit=9)).jobs) == 3


async def test_concurrent_claimants_never_share_a_row(db: Database) -> None:
    """Several stores on one database (as several workers) claim at once, round after round:
    every call is claimed exactly once."""
    store, clock = store_at(db)
    ids = [await schedule(store, purpose="custom", to=f"+141355502{n:02d}") for n in range(24)]
    others = [OutboundStore(db, clock=clock) for _ in range(4)]
    seen: list[int] = []
    for _round in range(8):
        results = await asyncio.gather(
            *(s.claim_due(owner=f"w{i}", lease=LEASE, limit=2) for i, s in enumerate(others))
        )
        seen += [job.id for claimed in results for job in claimed.jobs]
    assert len(seen) == len(set(seen)), "a call was claimed twice"
    assert sorted(seen) == sorted(ids)


async def test_an_expired_lease_is_reclaimed_by_another_worker(db: Database) -> None:
    store, clock = store_at(db)
    job_id = await schedule(store, purpose="custom", to="+14135550111")
    (job,) = (await store.claim_due(owner="dead", lease=LEASE, limit=5)).jobs
    assert job.attempt == 1
    clock.advance(LEASE - timedelta(seconds=1))
    assert (await store.claim_due(owner="alive", lease=LEASE, limit=5)).jobs == []
    clock.advance(timedelta(seconds=2))
    (again,) = (await store.claim_due(owner="alive", lease=LEASE, limit=5)).jobs
    assert (again.id, again.attempt) == (job_id, 2)
    row = await store.get(job_id)
    assert row is not None and row["status"] == "dialing"


async def test_a_placed_call_keeps_its_lease_for_the_call(db: Database) -> None:
    store, clock = store_at(db)
    await schedule(store, purpose="custom", to="+14135550111")
    (job,) = (await store.claim_due(owner="w1", lease=LEASE, limit=5)).jobs
    await store.record_dial(job.id, "CA1", lease=CALL_LEASE)
    clock.advance(LEASE * 5)
    assert (await store.claim_due(owner="w2", lease=LEASE, limit=5)).jobs == []
    assert await store.job_for_call("CA1") == job
    assert await store.job_for_call("CA-unknown") is None


async def test_retry_with_backoff_inside_calling_hours_then_given_up(db: Database) -> None:
    store, clock = store_at(db, datetime(2026, 12, 3, 19, 45, tzinfo=NY))
    appointment = await add_appointment(
        db, await add_customer(db, "+14135550111"), MORNING + timedelta(days=1)
    )
    job_id = await schedule(
        store, purpose="reminder", to="+14135550111", appointment_id=appointment
    )
    (job,) = (await store.claim_due(owner="w1", lease=LEASE, limit=1)).jobs
    await store.record_dial(job.id, "CA1", lease=CALL_LEASE)
    await store.finished(job.id, "CA1", Outcome.NO_ANSWER, "rang out")
    row = await store.get(job_id)
    assert row is not None
    # 19:45 + 10 min is inside the hours (they end at 20:00).
    assert (row["status"], row["outcome"], row["attempts"]) == ("scheduled", "no_answer", 1)
    assert datetime.fromisoformat(row["due_at"]) == datetime(2026, 12, 3, 19, 55, tzinfo=NY)
    assert await reminder_outcome(db, appointment) == "no_answer"

    clock.now = datetime(2026, 12, 3, 19, 55, tzinfo=NY)
    (job,) = (await store.claim_due(owner="w1", lease=LEASE, limit=1)).jobs
    assert job.attempt == 2
    await store.record_dial(job.id, "CA2", lease=CALL_LEASE)
    await store.finished(job.id, "CA2", Outcome.BUSY)
    row = await store.get(job_id)
    assert row is not None
    # 19:55 + 30 min is after hours: moved to the next morning's 09:00.
    assert datetime.fromisoformat(row["due_at"]) == datetime(2026, 12, 4, 9, 0, tzinfo=NY)

    clock.now = datetime(2026, 12, 4, 9, 0, tzinfo=NY)
    (job,) = (await store.claim_due(owner="w1", lease=LEASE, limit=1)).jobs
    await store.record_dial(job.id, "CA3", lease=CALL_LEASE)
    await store.finished(job.id, "CA3", Outcome.NO_ANSWER)
    row = await store.get(job_id)
    assert row is not None
    assert (row["status"], row["outcome"], row["attempts"]) == ("given_up", "no_answer", 3)
    clock.advance(timedelta(days=1))
    assert (await store.claim_due(owner="w1", lease=LEASE, limit=1)).jobs == []


async def test_the_first_final_outcome_of_an_attempt_wins(db: Database) -> None:
    store, _ = store_at(db)
    appointment = await add_appointment(
        db, await add_customer(db, "+14135550111"), MORNING + timedelta(days=1)
    )
    job_id = await schedule(
        store, purpose="reminder", to="+14135550111", appointment_id=appointment
    )
    (job,) = (await store.claim_due(owner="w1", lease=LEASE, limit=1)).jobs
    await store.record_dial(job.id, "CA1", lease=CALL_LEASE)
    await store.answered(job.id, "CA1")
    assert (await store.list_calls("running"))[0]["status"] == "in_progress"
    await store.finished(job.id, "CA1", Outcome.CONFIRMED)
    await store.finished(job.id, "CA1", Outcome.NO_ANSWER)  # Twilio's repeated callback
    await store.finished(job.id, "CA-other", Outcome.FAILED)  # not this attempt
    row = await store.get(job_id)
    assert row is not None and (row["status"], row["outcome"]) == ("done", "confirmed")
    assert await reminder_outcome(db, appointment) == "confirmed"
    assert [r["id"] for r in await store.list_calls("finished")] == [job_id]


async def test_do_not_call_is_honoured_at_claim_time(db: Database) -> None:
    store, _ = store_at(db)
    customer = await add_customer(db, "+14135550111")
    job_id = await schedule(store, purpose="custom", to="+14135550111", customer_id=customer)
    async with db.write() as conn:
        from tools.store import schema

        await conn.execute(schema.customers.update().values(do_not_call=True))
    claimed = await store.claim_due(owner="w1", lease=LEASE, limit=5)
    assert claimed.jobs == [] and claimed.opted_out == [job_id]
    row = await store.get(job_id)
    assert row is not None and (row["status"], row["outcome"]) == ("cancelled", "opted_out")


async def test_opting_out_on_the_call_sets_do_not_call(db: Database) -> None:
    store, _ = store_at(db)
    customer = await add_customer(db, "+14135550111")
    await schedule(store, purpose="custom", to="+14135550111", customer_id=customer)
    (job,) = (await store.claim_due(owner="w1", lease=LEASE, limit=1)).jobs
    await store.record_dial(job.id, "CA1", lease=CALL_LEASE)
    await store.finished(job.id, "CA1", Outcome.OPTED_OUT)
    with pytest.raises(DoNotCallError):
        await schedule(store, purpose="custom", to="+14135550111", customer_id=customer)


async def test_a_refused_number_is_given_up_at_once(db: Database) -> None:
    store, _ = store_at(db)
    job_id = await schedule(store, purpose="custom", to="+14135550111")
    (job,) = (await store.claim_due(owner="w1", lease=LEASE, limit=1)).jobs
    await store.give_up(job.id, "21215: not allowed")
    row = await store.get(job_id)
    assert row is not None
    assert (row["status"], row["outcome"], row["last_error"]) == (
        "given_up",
        "failed",
        "21215: not allowed",
    )


async def test_cancel_only_a_scheduled_call(db: Database) -> None:
    store, _ = store_at(db)
    first = await schedule(store, purpose="custom", to="+14135550111")
    assert first is not None
    assert await store.cancel(first)
    assert not await store.cancel(first)
    assert not await store.cancel(9999)
    second = await schedule(store, purpose="custom", to="+14135550112")
    assert second is not None
    await store.claim_due(owner="w1", lease=LEASE, limit=1)
    assert not await store.cancel(second)  # already dialing
    assert (await store.claim_due(owner="w1", lease=LEASE, limit=5)).jobs == []


async def test_call_back_now_brings_a_scheduled_callback_forward(db: Database) -> None:
    store, _ = store_at(db)
    handoff = await record_handoff(
        db,
        call_sid="",
        kind="message",
        reason="wants a quote for a wedding",
        caller_number="+14135550111",
        outcome="callback_requested",
    )
    scheduled = await store.schedule_once(
        f"callback:{handoff}",
        purpose="callback",
        to="+14135550111",
        handoff_id=handoff,
        due_at=MORNING + timedelta(days=1),
    )
    assert await store.call_back_now(handoff) == scheduled
    (job,) = (await store.claim_due(owner="w1", lease=LEASE, limit=5)).jobs
    assert (job.id, job.purpose) == (scheduled, "callback")
    # Once that one is under way, "call back now" schedules a fresh call with the reason.
    again = await store.call_back_now(handoff)
    assert again != scheduled
    row = await store.get(again)
    assert row is not None and row["message"] == "wants a quote for a wedding"
    with pytest.raises(OutboundError, match="no message with id"):
        await store.call_back_now(9999)


async def test_list_rejects_an_unknown_status(db: Database) -> None:
    store, _ = store_at(db)
    with pytest.raises(OutboundError, match="status must be"):
        await store.list_calls("sideways")  # type: ignore[arg-type]


async def test_a_reminder_for_a_cancelled_or_begun_appointment_is_not_placed(
    db: Database,
) -> None:
    store, clock = store_at(db)
    customer = await add_customer(db, "+14135550111")
    cancelled = await add_appointment(db, customer, MORNING + timedelta(days=1), "cancelled")
    soon = await add_appointment(db, customer, MORNING + timedelta(hours=2))
    later = await add_appointment(db, customer, MORNING + timedelta(days=2))
    ids = {
        appointment: await schedule(
            store, purpose="reminder", to="+14135550111", appointment_id=appointment
        )
        for appointment in (cancelled, soon, later)
    }
    clock.advance(timedelta(hours=3))  # the soon one has begun
    claimed = await store.claim_due(owner="w1", lease=LEASE, limit=5)
    assert [job.appointment_id for job in claimed.jobs] == [later]
    assert sorted(claimed.stale) == sorted([ids[cancelled], ids[soon]])
    row = await store.get(ids[soon])
    assert row is not None and row["status"] == "cancelled"


async def test_an_expired_lease_with_no_attempts_left_is_given_up(db: Database) -> None:
    store, clock = store_at(db)
    job_id = await schedule(store, purpose="custom", to="+14135550111", max_attempts=1)
    (job,) = (await store.claim_due(owner="dead", lease=LEASE, limit=5)).jobs
    await store.record_dial(job.id, "CA1", lease=CALL_LEASE)
    clock.advance(CALL_LEASE + timedelta(seconds=1))  # Twilio's callbacks never came
    claimed = await store.claim_due(owner="alive", lease=LEASE, limit=5)
    assert claimed.jobs == [] and claimed.given_up == [job_id]
    row = await store.get(job_id)
    assert row is not None and (row["status"], row["outcome"]) == ("given_up", "failed")
    # A late callback for that attempt changes nothing.
    await store.finished(job_id, "CA1", Outcome.CONFIRMED)
    row = await store.get(job_id)
    assert row is not None and row["status"] == "given_up"


async def test_the_running_cap_counts_every_worker(db: Database) -> None:
    store, clock = store_at(db)
    for n in range(4):
        await schedule(store, purpose="custom", to=f"+1413555011{n}")
    first = await store.claim_due(owner="w1", lease=LEASE, limit=5, max_running=3)
    second = await store.claim_due(owner="w2", lease=LEASE, limit=5, max_running=3)
    assert (len(first.jobs), len(second.jobs)) == (3, 0)
    clock.advance(LEASE + timedelta(seconds=1))  # their claimant died: no longer counted
    assert len((await store.claim_due(owner="w2", lease=LEASE, limit=5, max_running=3)).jobs) == 3


async def test_a_report_before_the_dial_is_recorded_is_this_attempts(db: Database) -> None:
    """Twilio answered and reported before record_dial wrote the CallSid: the report counts, the
    answered call keeps its row past the claim lease, and the late record_dial changes nothing."""
    store, clock = store_at(db)
    job_id = await schedule(store, purpose="custom", to="+14135550111")
    (job,) = (await store.claim_due(owner="w1", lease=LEASE, limit=1)).jobs
    await store.answered(job.id, "CA-fast")
    await store.record_dial(job.id, "CA-fast", lease=CALL_LEASE)
    clock.advance(LEASE * 3)
    assert (await store.claim_due(owner="w2", lease=LEASE, limit=1)).jobs == []
    assert await store.job_for_call("CA-fast") == job
    await store.finished(job.id, "CA-other", Outcome.NO_ANSWER)  # another attempt's
    await store.finished(job.id, "CA-fast", Outcome.COMPLETED)
    row = await store.get(job_id)
    assert row is not None
    assert (row["status"], row["outcome"], row["call_sid"]) == ("done", "completed", "CA-fast")
