"""One attempt of an outbound call as the telephony side sees it: the ``outbound_calls`` row
whose latest attempt is a CallSid, Twilio's answering-machine verdict on it, and its outcome.

Claiming due rows, leases and the scheduling of retries belong to the scheduler's store; what is
here is what the webhooks and the call itself write, keyed by the attempt's CallSid, so that any
worker may receive any of Twilio's callbacks. Outcomes are plain strings here (the values of
agent.outbound.jobs.Outcome).
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection

from tools.store import schema
from tools.store.db import Database, utc_now

#: AnsweredBy values that mean a person (or nobody could tell: then a person is assumed).
PERSON_VERDICTS = frozenset({"human", "unknown"})
#: Outcomes after which the attempt is tried again while attempts remain.
RETRIED_OUTCOMES = frozenset({"no_answer", "busy", "failed"})
#: The first retry waits this long; each later one twice the one before.
RETRY_BACKOFF = timedelta(minutes=10)


async def attempt_for_call(conn: AsyncConnection, call_sid: str) -> dict[str, Any] | None:
    """The ``outbound_calls`` row whose latest attempt is ``call_sid``, or None."""
    if not call_sid:
        return None
    row = (
        (
            await conn.execute(
                sa.select(schema.outbound_calls).where(schema.outbound_calls.c.call_sid == call_sid)
            )
        )
        .mappings()
        .first()
    )
    return dict(row) if row else None


class OutboundAttempts:
    """The attempt-level writes of outbound calls, over ``db``."""

    def __init__(self, db: Database) -> None:
        self.db = db

    async def attempt(self, call_sid: str) -> dict[str, Any] | None:
        async with self.db.read() as conn:
            return await attempt_for_call(conn, call_sid)

    async def mark_answered(self, job_id: int, call_sid: str) -> None:
        """A person is talking with the agent on attempt ``call_sid`` of job ``job_id``."""
        c = schema.outbound_calls.c
        async with self.db.write() as conn:
            await conn.execute(
                schema.outbound_calls.update()
                .where(c.id == job_id, c.call_sid == call_sid, c.outcome == "")
                .values(status="in_progress", updated_at=utc_now())
            )

    async def record_verdict(self, call_sid: str, answered_by: str) -> bool:
        """Keep Twilio's AnsweredBy for attempt ``call_sid``; False: no such attempt."""
        c = schema.outbound_calls.c
        async with self.db.write() as conn:
            result = await conn.execute(
                schema.outbound_calls.update()
                .where(c.call_sid == call_sid)
                .values(answered_by=answered_by[:30], updated_at=utc_now())
            )
        return bool(result.rowcount)

    async def verdict(self, job_id: int) -> str:
        """The AnsweredBy recorded for job ``job_id``'s latest attempt ("" : none yet)."""
        c = schema.outbound_calls.c
        async with self.db.read() as conn:
            found = (await conn.execute(sa.select(c.answered_by).where(c.id == job_id))).scalar()
        return str(found or "")

    async def finish(self, job_id: int, call_sid: str, outcome: str, detail: str = "") -> bool:
        """Record ``outcome`` for attempt ``call_sid`` unless it has one (the first wins; False
        then). A retried outcome makes the job due again after a backoff while attempts remain,
        else it is given up; any other ends it. A reminder's appointment gets the outcome too."""
        c = schema.outbound_calls.c
        async with self.db.write() as conn:
            row = (
                (
                    await conn.execute(
                        sa.select(c.attempts, c.max_attempts, c.purpose, c.appointment_id).where(
                            c.id == job_id, c.call_sid == call_sid, c.outcome == ""
                        )
                    )
                )
                .mappings()
                .first()
            )
            if row is None:
                return False
            status = "done"
            values: dict[str, Any] = {}
            if outcome in RETRIED_OUTCOMES:
                if row["attempts"] < row["max_attempts"]:
                    status = "scheduled"
                    wait = RETRY_BACKOFF * (2 ** max(0, row["attempts"] - 1))
                    values["due_at"] = (datetime.now(UTC) + wait).isoformat()
                else:
                    status = "given_up"
            await conn.execute(
                schema.outbound_calls.update()
                .where(c.id == job_id, c.call_sid == call_sid, c.outcome == "")
                .values(
                    status=status,
                    outcome=outcome,
                    last_error=detail[:500],
                    lease_owner="",
                    lease_until=None,
                    updated_at=utc_now(),
                    **values,
                )
            )
            if row["purpose"] == "reminder" and row["appointment_id"] is not None:
                await conn.execute(
                    schema.appointments.update()
                    .where(schema.appointments.c.id == row["appointment_id"])
                    .values(reminder_outcome=outcome, updated_at=utc_now())
                )
        return True
