"""The app's side of a placed outbound call: its webhooks (:class:`OutboundCalls`, the
telephony.host.OutboundDesk), and what the agent is told before it speaks (:func:`brief`).

How an attempt ends, whoever sees it first (the ledger keeps the first final outcome):

* Twilio's status ``no-answer`` / ``busy`` / ``failed`` / ``canceled``: NO_ANSWER, BUSY, FAILED,
  FAILED (retried by the scheduler);
* the conversation, when its stream ends: confirmed / cancelled / rescheduled / opted_out from
  the tools used, voicemail after a message left for a machine, failed after a machine that
  could not take one (machine_start, fax) or a call that broke, else completed;
* Twilio's ``completed`` after the call was answered is no outcome by itself: after a short
  grace (FRONTDESK_OUTBOUND_SETTLE_SECS) the worker that received it records ``completed``
  (a person, or nobody could tell) or ``failed`` (a machine, no message left), unless the
  conversation reported first. So a worker that dies mid-call still leaves an outcome.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import sqlalchemy as sa
from loguru import logger

from agent.outbound.jobs import OutboundJob, OutboundLedger, Outcome
from agent.prompts import fill, phrases
from telephony.privacy import mask_phone
from tools.domain.business import Business
from tools.domain.speech import say_phone, say_when
from tools.store import schema
from tools.store.db import Database

#: AnsweredBy: a person answered (``unknown``: nobody could tell, so a person is assumed).
PERSON = frozenset({"human", "unknown"})
#: AnsweredBy: a machine whose greeting ended; a message is left after the beep.
MACHINE_MESSAGE = frozenset({"machine_end_beep", "machine_end_silence", "machine_end_other"})
#: AnsweredBy: a machine that cannot take a message now (still greeting, or a fax): hang up.
MACHINE_NO_MESSAGE = frozenset({"machine_start", "fax"})
VERDICTS = PERSON | MACHINE_MESSAGE | MACHINE_NO_MESSAGE
#: Twilio CallStatus values that end an attempt unanswered.
UNANSWERED = {
    "no-answer": Outcome.NO_ANSWER,
    "busy": Outcome.BUSY,
    "failed": Outcome.FAILED,
    "canceled": Outcome.FAILED,
}


@dataclass(frozen=True)
class Briefing:
    """What the agent knows of the call it placed, and what it says first."""

    job: OutboundJob
    first_name: str
    purpose: str  # for the system prompt
    opening: str  # to a person
    voicemail: str  # to a machine, after the beep


async def brief(db: Database, business: Business, job: OutboundJob, now: datetime) -> Briefing:
    """The briefing for ``job``: the customer's first name, and for a reminder the
    appointment's service, staff member and time in the business's zone."""
    texts = phrases()
    first = await _first_name(db, job)
    hello = f"Hi {first}" if first else "Hi"
    today = business.local(now).date()
    who = first or "the customer"
    common = {"hello": hello, "business_name": business.name}
    if job.purpose == "reminder":
        appointment = await _appointment(db, job.appointment_id)
        if appointment is None:
            raise ValueError(f"reminder {job.id}: appointment {job.appointment_id} not found")
        start = business.local(datetime.fromisoformat(appointment["starts_at"]))
        when = say_when(start, today)
        service = str(appointment["service"]).lower()
        staff = f" with {appointment['staff']}" if appointment["staff"] else ""
        purpose = (
            f"You called {who} to remind them of their {service}{staff} {when}. Ask whether "
            "they can still make it: if yes, use confirm_appointment; if they want another "
            "time, reschedule_appointment; if they cannot come, cancel_appointment."
        )
        opening = fill(texts["outbound_reminder"], **common, service=service, when=when)
    elif job.purpose == "callback":
        reason = job.message or "no reason noted"
        purpose = f"You are returning {who}'s call. Their message was: {reason}"
        opening = fill(texts["outbound_callback"], **common)
    else:
        purpose = f"You called {who} with this message from the business: {job.message}"
        opening = fill(texts["outbound_custom"], **common, message=job.message)
    purpose += (
        " You placed this call to the number on file. If they ask not to be called again, "
        "use stop_calling_me."
    )
    voicemail = fill(
        texts["outbound_voicemail"],
        hello=hello,
        business_name=business.name,
        business_phone=say_phone(business.phone) if business.phone else "",
    )
    return Briefing(job, first, purpose, opening, voicemail)


async def _first_name(db: Database, job: OutboundJob) -> str:
    customers = schema.customers.c
    query = (
        sa.select(customers.name).where(customers.id == job.customer_id)
        if job.customer_id is not None
        else sa.select(customers.name).where(customers.phone == job.to)
    )
    async with db.read() as conn:
        name = (await conn.execute(query)).scalar()
    return str(name or "").split(" ")[0]


async def _appointment(db: Database, appointment_id: int | None) -> dict[str, Any] | None:
    if appointment_id is None:
        return None
    a = schema.appointments
    async with db.read() as conn:
        row = (
            (
                await conn.execute(
                    sa.select(
                        a.c.starts_at,
                        schema.services.c.name.label("service"),
                        schema.staff.c.name.label("staff"),
                    )
                    .join(schema.services, schema.services.c.id == a.c.service_id)
                    .join(schema.staff, schema.staff.c.id == a.c.staff_id, isouter=True)
                    .where(a.c.id == appointment_id)
                )
            )
            .mappings()
            .first()
        )
    return dict(row) if row else None


class OutboundCalls:
    """The outbound webhooks' logic (implements telephony.host.OutboundDesk) over ``ledger``;
    ``settle_secs``: the grace after a talked call's ``completed`` (see the module doc)."""

    def __init__(self, ledger: OutboundLedger, settle_secs: float = 10.0) -> None:
        self.ledger = ledger
        self.settle_secs = settle_secs
        #: Graces under way, with the attempt each decides.
        self._settling: dict[asyncio.Task[None], tuple[OutboundJob, str]] = {}

    async def stream_details(self, form: dict[str, str]) -> dict[str, str] | None:
        call_sid = form.get("CallSid", "")
        job = await self.ledger.job_for_call(call_sid)
        if job is None:
            return None
        return {
            "direction": "outbound",
            "job": str(job.id),
            "from": form.get("From", ""),  # our number
            "to": job.to,  # the callee: the number we dialed, on file
        }

    async def call_status(self, form: dict[str, str]) -> None:
        call_sid, status = form.get("CallSid", ""), form.get("CallStatus", "")
        job = await self.ledger.job_for_call(call_sid)
        if job is None:
            logger.info(f"status {status!r} for {call_sid}: not an outbound call of ours")
            return
        if status in UNANSWERED:
            detail = f"twilio: {status}"
            if form.get("SipResponseCode"):
                detail += f" (SIP {form['SipResponseCode']})"
            logger.info(f"outbound call {job.id} to {mask_phone(job.to)}: {status}")
            await self.ledger.finished(job.id, call_sid, UNANSWERED[status], detail)
        elif status == "completed":
            task = asyncio.create_task(self._settle(job, call_sid))
            self._settling[task] = (job, call_sid)
            task.add_done_callback(lambda done: self._settling.pop(done, None))

    async def _settle(self, job: OutboundJob, call_sid: str) -> None:
        await asyncio.sleep(self.settle_secs)
        await self._fallback(job, call_sid)

    async def _fallback(self, job: OutboundJob, call_sid: str) -> None:
        """``completed`` (a person, or nobody could tell), or ``failed`` (a machine took no
        message), unless the conversation reported an outcome first. A failure is logged (the
        scheduler's lease on the call runs out instead)."""
        try:
            verdict = await self.ledger.answered_by(job.id)
            outcome = Outcome.COMPLETED if verdict in PERSON or not verdict else Outcome.FAILED
            detail = f"twilio: completed ({verdict})"
            await self.ledger.finished(job.id, call_sid, outcome, detail)
        except Exception as exc:
            logger.warning(f"outbound call {job.id}: fallback outcome not recorded: {exc}")

    async def machine_verdict(self, form: dict[str, str]) -> None:
        call_sid, verdict = form.get("CallSid", ""), form.get("AnsweredBy", "")
        if verdict not in VERDICTS:
            logger.warning(f"outbound call {call_sid}: unknown AnsweredBy {verdict[:30]!r}")
            verdict = "unknown"
        logger.info(f"outbound call {call_sid} answered by: {verdict}")
        await self.ledger.machine_verdict(call_sid, verdict)

    async def close(self) -> None:
        """Cut pending graces short: each records its fallback now (the server is stopping)."""
        pending = dict(self._settling)
        for task in pending:
            task.cancel()
        await asyncio.gather(*pending, return_exceptions=True)
        for job, call_sid in pending.values():
            await self._fallback(job, call_sid)
