"""The outbound scheduler: each worker runs it; the database keeps them from doubling up.

Every ``FRONTDESK_OUTBOUND_POLL_SECS`` a round (:meth:`OutboundScheduler.tick`):

1. creates reminder calls for booked appointments whose reminder time (start minus the
   business's ``reminder_lead_hours``) has come, when ``reminders_enabled`` (dedupe key
   ``reminder:<appointment id>``: one per appointment, whichever worker sees it first);
2. creates callback calls for messages taken with a promised callback, at the promised time,
   when ``auto_callbacks`` (dedupe key ``callback:<handoff id>``, the caller's reason as the
   call's message);
3. inside calling hours only, claims due calls under a lease and hands them to the
   :class:`~agent.outbound.jobs.Dialer`: at most ``FRONTDESK_OUTBOUND_MAX_CALLS`` under way at
   once across workers, and never the last ``FRONTDESK_OUTBOUND_RESERVE_LINES`` lines of
   ``FRONTDESK_MAX_CALLS``, which stay free for inbound callers. An answered outbound call's
   media stream then holds a line like any call.

A :class:`DialError` that is ``retryable`` goes the way of a failed attempt (retried after a
backoff); one that is not gives the call up. Do-not-call is honoured when a call is created and
again when it is claimed.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Protocol

from loguru import logger

from agent.outbound.jobs import Dialer, DialError, OutboundJob, Outcome
from telephony.privacy import mask_phone
from tools.store.outbound import (
    CALL_LEASE,
    NewCall,
    OutboundError,
    OutboundPolicy,
    OutboundStore,
)

#: How long a claim holds a call while it is dialed (then another worker may take it).
CLAIM_LEASE = timedelta(minutes=2)
#: Promised callbacks older than this when first seen are left to staff (no backlog is rung).
CALLBACK_WINDOW = timedelta(hours=24)


class Lines(Protocol):
    """The app's phone lines (``FRONTDESK_MAX_CALLS``, shared by every worker)."""

    async def free_lines(self) -> int:
        """Lines free now for a new call, all workers counted (0 while shutting down)."""
        ...


@dataclass
class Round:
    """What one round of the scheduler did (call ids)."""

    reminders: list[int] = field(default_factory=list)
    callbacks: list[int] = field(default_factory=list)
    placed: list[int] = field(default_factory=list)
    failed: list[int] = field(default_factory=list)  # Twilio would not place it (yet)
    not_placed: list[int] = field(default_factory=list)  # do-not-call, moot, given up
    closed: bool = False  # outside calling hours: nothing was claimed


class OutboundScheduler:
    """Creates, claims and places outbound calls (see the module's docstring).

    ``dialer`` None: calls are created and listed, never placed (Twilio is not configured).
    ``owner``: this worker's instance id, written on the calls it claims."""

    def __init__(
        self,
        store: OutboundStore,
        dialer: Dialer | None,
        lines: Lines,
        *,
        owner: str,
        max_calls: int = 2,
        reserve_lines: int = 1,
        claim_lease: timedelta = CLAIM_LEASE,
        call_lease: timedelta = CALL_LEASE,
    ) -> None:
        self.store = store
        self.dialer = dialer
        self.lines = lines
        self.owner = owner
        self.max_calls = max_calls
        self.reserve_lines = reserve_lines
        self.claim_lease = claim_lease
        self.call_lease = call_lease
        self._warned_no_dialer = False
        self._hours_problem = ""  # logged once while it lasts
        self._refused: set[str] = set()  # dedupe keys whose call could not be made (logged)

    async def tick(self) -> Round:
        """One round: create what has come due, then place what may be placed now."""
        done = Round()
        policy = await self.store.policy()
        if policy.reminders_enabled:
            done.reminders = await self.create_reminders(policy)
        if policy.auto_callbacks:
            done.callbacks = await self.create_callbacks()
        if policy.hours is None:
            if policy.hours_problem != self._hours_problem:
                logger.error(f"outbound calls paused: {policy.hours_problem}")
            self._hours_problem = policy.hours_problem
            done.closed = True
            return done
        self._hours_problem = ""
        if not policy.hours.contains(self.store.clock()):
            done.closed = True
            return done
        await self.place_due(done)
        return done

    async def create_reminders(self, policy: OutboundPolicy) -> list[int]:
        due = await self.store.reminders_due(timedelta(hours=policy.reminder_lead_hours))
        return await self._create_each(
            (
                f"reminder:{d['appointment_id']}",
                NewCall(
                    purpose="reminder",
                    to=d["phone"],
                    customer_id=d["customer_id"],
                    appointment_id=d["appointment_id"],
                    created_by="reminder",
                ),
            )
            for d in due
        )

    async def create_callbacks(self) -> list[int]:
        due = await self.store.callbacks_due(CALLBACK_WINDOW)
        return await self._create_each(
            (
                f"callback:{d['handoff_id']}",
                NewCall(
                    purpose="callback",
                    to=d["phone"],
                    customer_id=d["customer_id"],
                    handoff_id=d["handoff_id"],
                    message=d["reason"],
                    created_by="callback",
                ),
            )
            for d in due
        )

    async def _create_each(self, calls: Iterable[tuple[str, NewCall]]) -> list[int]:
        """:meth:`_create` for each (key, call); the ids of those scheduled now."""
        created = []
        for key, call in calls:
            if (job_id := await self._create(key, call)) is not None:
                created.append(job_id)
        return created

    async def _create(self, key: str, call: NewCall) -> int | None:
        """Schedule ``call`` once for ``key``; None when it exists, or cannot be made (a number
        that is not E.164, do-not-call set meanwhile: logged once, the others go on)."""
        try:
            job_id = await self.store.schedule_once(key, **call)
        except OutboundError as error:
            if key not in self._refused:
                self._refused.add(key)
                logger.warning(f"outbound {key}: not scheduled: {error}")
            return None
        if job_id is not None:
            logger.info(f"outbound {job_id}: {key} to {mask_phone(call['to'])}")
        return job_id

    async def room(self) -> int:
        """Calls that may be started now as far as the lines go: the free ones, less the
        reserve for inbound callers and the calls being dialed (they take a line once
        answered)."""
        free = await self.lines.free_lines()
        return free - self.reserve_lines - await self.store.dialing_count()

    async def place_due(self, done: Round) -> None:
        if self.dialer is None:
            if not self._warned_no_dialer and await self._anything_due():
                self._warned_no_dialer = True
                logger.warning("outbound calls are due but not placed: no dialer (Twilio)")
            return
        room = min(self.max_calls, await self.room())
        if room <= 0:
            return
        claimed = await self.store.claim_due(
            owner=self.owner, lease=self.claim_lease, limit=room, max_running=self.max_calls
        )
        done.not_placed += claimed.opted_out + claimed.stale + claimed.given_up
        for job_id in claimed.opted_out:
            logger.info(f"outbound {job_id}: not placed, the customer asked not to be called")
        results = await asyncio.gather(*(self._place(self.dialer, job) for job in claimed.jobs))
        for job, placed in zip(claimed.jobs, results, strict=True):
            (done.placed if placed else done.failed).append(job.id)

    async def _anything_due(self) -> bool:
        soonest = await self.store.list_calls("scheduled", limit=1)
        return bool(soonest) and datetime.fromisoformat(soonest[0]["due_at"]) <= self.store.clock()

    async def _place(self, dialer: Dialer, job: OutboundJob) -> bool:
        """Dial ``job``; True when Twilio has the call."""
        try:
            call_sid = await dialer.place(job)
        except DialError as error:
            logger.warning(
                f"outbound {job.id}: attempt {job.attempt} to {mask_phone(job.to)} not placed "
                f"({'will retry' if error.retryable else 'given up'}): {error}"
            )
            if error.retryable:
                await self.store.finished(job.id, "", Outcome.FAILED, str(error))
            else:
                await self.store.give_up(job.id, str(error))
            return False
        except Exception as error:  # a bug or an outage in the dialer: retried like a 5xx
            logger.exception(f"outbound {job.id}: dialing failed")
            await self.store.finished(job.id, "", Outcome.FAILED, f"{type(error).__name__}")
            return False
        await self.store.record_dial(job.id, call_sid, lease=self.call_lease)
        logger.info(
            f"outbound {job.id}: {job.purpose} attempt {job.attempt} to {mask_phone(job.to)} "
            f"placed as {call_sid}"
        )
        return True

    async def run(self, poll_secs: float) -> None:
        """Rounds every ``poll_secs`` until cancelled; a failing round is logged, the next one
        tried (the database may be away for a while)."""
        while True:
            try:
                await self.tick()
            except Exception as exc:
                logger.warning(f"outbound scheduler round failed: {type(exc).__name__}: {exc}")
            await asyncio.sleep(poll_secs)
