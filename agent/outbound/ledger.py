"""An :class:`~agent.outbound.jobs.OutboundLedger` over the attempt-level store
(tools.store.outbound_attempts): what the webhooks and the calls themselves write."""

from __future__ import annotations

from typing import Any, cast

from agent.outbound.jobs import PURPOSES, OutboundJob, Outcome, Purpose
from tools.store.db import Database
from tools.store.outbound_attempts import OutboundAttempts


def job_from_row(row: dict[str, Any]) -> OutboundJob:
    """The job an ``outbound_calls`` row describes (its latest attempt)."""
    purpose = str(row["purpose"])
    if purpose not in PURPOSES:
        raise ValueError(f"outbound call {row['id']} has an unknown purpose {purpose!r}")
    return OutboundJob(
        id=int(row["id"]),
        to=str(row["to_phone"]),
        purpose=cast(Purpose, purpose),
        attempt=max(1, int(row["attempts"])),
        customer_id=row["customer_id"],
        appointment_id=row["appointment_id"],
        message=str(row["message"] or ""),
    )


class AttemptLedger:
    """Implements OutboundLedger on the database ``db`` (shared by all workers)."""

    def __init__(self, db: Database) -> None:
        self.attempts = OutboundAttempts(db)

    async def job_for_call(self, call_sid: str) -> OutboundJob | None:
        row = await self.attempts.attempt(call_sid)
        return job_from_row(row) if row else None

    async def answered(self, job_id: int, call_sid: str) -> None:
        await self.attempts.mark_answered(job_id, call_sid)

    async def finished(
        self, job_id: int, call_sid: str, outcome: Outcome, detail: str = ""
    ) -> None:
        await self.attempts.finish(job_id, call_sid, outcome.value, detail)

    async def machine_verdict(self, call_sid: str, answered_by: str) -> None:
        await self.attempts.record_verdict(call_sid, answered_by)

    async def answered_by(self, job_id: int) -> str:
        return await self.attempts.verdict(job_id)
