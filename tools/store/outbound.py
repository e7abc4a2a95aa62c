"""Outbound calls as stored (``outbound_calls``): scheduling, claiming due calls under a lease,
the outcome of each attempt, retries with backoff inside calling hours, and the console's list.

A row's life: ``scheduled`` -claim-> ``dialing`` -answered-> ``in_progress`` -finished-> ``done``;
an attempt with a :data:`RETRIED` outcome goes back to ``scheduled`` (due after a backoff, inside
calling hours) or, its attempts spent, to ``given_up``; staff or do-not-call make it
``cancelled``.

Claiming is one conditional UPDATE per row (``status='scheduled' AND due_at<=now``, or a running
row whose lease expired because its claimant died), so of several workers exactly one wins each
row: on SQLite the write lock serialises them, on PostgreSQL the candidates are read ``FOR UPDATE
SKIP LOCKED`` and the UPDATE re-checks its condition on the locked row (claims also take the
advisory lock ``outbound_claim``, so a cap on running calls holds across workers). Each claim
is a new attempt: ``attempts`` counts them, and a row whose attempts are spent is given up
instead.

The claim lease covers dialing (seconds); once Twilio has the call (:meth:`OutboundStore.
record_dial`) the lease is extended to cover the whole call, since the outcome then arrives from
Twilio's callbacks, which any worker may receive. Framework-free: no pipecat, no web framework.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from typing import Any, Literal, Required, TypedDict, Unpack

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection

from tools.domain.calling_hours import CallingHours, CallingHoursError
from tools.domain.outbound import PURPOSES, RETRIED, OutboundJob, Outcome, Purpose
from tools.store import schema
from tools.store.audit import record_audit
from tools.store.db import Database, new_id
from tools.store.schema import iso_utc

_calls = schema.outbound_calls

#: The delay before the 2nd, 3rd, ... attempt (the last repeats), then moved into calling hours.
DEFAULT_BACKOFF: tuple[timedelta, ...] = (
    timedelta(minutes=10),
    timedelta(minutes=30),
    timedelta(hours=2),
)
MAX_ATTEMPTS_RANGE = (1, 10)
#: How long an answered call holds its row before it counts as lost (calls are shorter).
CALL_LEASE = timedelta(hours=1)
RUNNING = ("dialing", "in_progress")
FINISHED = ("done", "given_up", "cancelled")
ListStatus = Literal["scheduled", "running", "finished", "all"]

_E164 = re.compile(r"^\+[1-9]\d{6,14}$")


class NewCall(TypedDict, total=False):
    """The fields of a call to schedule (see :meth:`OutboundStore.schedule_once`)."""

    purpose: Required[str]
    to: Required[str]
    due_at: datetime | None
    customer_id: int | None
    appointment_id: int | None
    handoff_id: int | None
    message: str
    created_by: str
    max_attempts: int | None


@dataclass(frozen=True)
class Audit:
    """Who made a change and how the audit log describes it (numbers masked by the caller):
    written in the change's own transaction."""

    actor: str
    summary: str


class OutboundError(ValueError):
    """A call that cannot be scheduled as asked; the message says what was wrong."""


class DoNotCallError(OutboundError):
    """The number belongs to a customer who asked not to be called."""


@dataclass(frozen=True)
class OutboundPolicy:
    """The business's outbound settings (``business`` row, migration 0009) and its calling
    hours (``None`` when the stored ones are unusable, ``hours_problem`` says why: then
    nothing is placed)."""

    reminders_enabled: bool
    reminder_lead_hours: int
    auto_callbacks: bool
    max_attempts: int
    hours: CallingHours | None
    timezone: str
    hours_problem: str = ""


@dataclass(frozen=True)
class Claimed:
    """What one claim did: the jobs to dial now, and the calls not placed instead (do-not-call:
    cancelled, outcome opted_out; a reminder whose appointment was cancelled or has
    begun: cancelled; attempts already spent: given up)."""

    jobs: list[OutboundJob] = field(default_factory=list)
    opted_out: list[int] = field(default_factory=list)
    stale: list[int] = field(default_factory=list)
    given_up: list[int] = field(default_factory=list)


async def _audit(conn: AsyncConnection, audit: Audit | None, action: str, job_id: int) -> None:
    if audit is not None:
        await record_audit(conn, audit.actor, action, "outbound_call", job_id, audit.summary)


def _utc_now() -> datetime:
    return datetime.now(UTC)


def _as_time(value: str | datetime) -> datetime:
    when = value if isinstance(value, datetime) else datetime.fromisoformat(value)
    return when if when.tzinfo else when.replace(tzinfo=UTC)


def _job(row: Any) -> OutboundJob:
    purpose: Purpose = row["purpose"]
    return OutboundJob(
        id=row["id"],
        to=row["to_phone"],
        purpose=purpose,
        attempt=row["attempts"],
        customer_id=row["customer_id"],
        appointment_id=row["appointment_id"],
        message=row["message"] or "",
    )


async def load_policy(conn: AsyncConnection) -> OutboundPolicy:
    """The business's outbound settings and calling hours (holidays closed)."""
    row = (await conn.execute(sa.select(schema.business))).mappings().first()
    if row is None:
        raise RuntimeError("no business profile in the database; seed it first")
    days = (await conn.execute(sa.select(schema.holidays.c.day))).scalars().all()
    hours: CallingHours | None
    try:
        hours = CallingHours.parse(
            row["calling_hours_start"],
            row["calling_hours_end"],
            row["timezone"],
            [date.fromisoformat(day) for day in days],
        )
    except (CallingHoursError, ValueError) as error:
        hours, problem = None, str(error)
    else:
        problem = ""
    return OutboundPolicy(
        reminders_enabled=bool(row["reminders_enabled"]),
        reminder_lead_hours=int(row["reminder_lead_hours"]),
        auto_callbacks=bool(row["auto_callbacks"]),
        max_attempts=int(row["outbound_max_attempts"]),
        hours=hours,
        timezone=row["timezone"],
        hours_problem=problem,
    )


def _reminder_moot(now: str) -> sa.ColumnElement[bool]:
    """True for a reminder whose appointment is no longer booked or has begun."""
    a = schema.appointments
    return sa.and_(
        _calls.c.purpose == "reminder",
        sa.not_(
            sa.exists(
                sa.select(a.c.id).where(
                    a.c.id == _calls.c.appointment_id, a.c.status == "booked", a.c.starts_at > now
                )
            )
        ),
    )


def _this_attempt(call_sid: str) -> sa.ColumnElement[bool]:
    """The row's current attempt is ``call_sid``'s: the same CallSid, or none recorded yet
    while it is being dialed (a report that came before :meth:`OutboundStore.record_dial`)."""
    if not call_sid:
        return _calls.c.call_sid == ""
    return sa.or_(
        _calls.c.call_sid == call_sid,
        sa.and_(_calls.c.call_sid == "", _calls.c.status == "dialing"),
    )


def _do_not_call(customer_id: Any, phone: Any) -> sa.ColumnElement[bool]:
    """True where the customer (by id, or by the number called) asked not to be called."""
    c = schema.customers
    return sa.exists(
        sa.select(c.c.id).where(
            c.c.do_not_call,
            sa.or_(c.c.id == customer_id, c.c.phone == phone),
        )
    )


class OutboundStore:
    """The ``outbound_calls`` table: what the scheduler, the API and the console use, and the
    :class:`~agent.outbound.jobs.OutboundLedger` the dialer's webhooks report to.

    ``backoff``: delays before further attempts; ``clock``: the current instant (tests fix it);
    ``call_lease``: how long an answered call holds its row.

    Twilio's callbacks may come before :meth:`record_dial` has written the attempt's CallSid
    (a dialer that puts the job id in its callback URLs can report at once): a report for a
    call still ``dialing`` with no CallSid yet is taken as this attempt's, and the CallSid kept.
    """

    def __init__(
        self,
        db: Database,
        *,
        backoff: tuple[timedelta, ...] = DEFAULT_BACKOFF,
        clock: Callable[[], datetime] = _utc_now,
        call_lease: timedelta = CALL_LEASE,
    ) -> None:
        if not backoff:
            raise ValueError("backoff needs at least one delay")
        self.db = db
        self.backoff = backoff
        self.clock = clock
        self.call_lease = call_lease

    # --- scheduling -----------------------------------------------------------------------

    async def policy(self) -> OutboundPolicy:
        async with self.db.read() as conn:
            return await load_policy(conn)

    async def schedule(self, *, audit: Audit | None = None, **call: Unpack[NewCall]) -> int:
        """Schedule a call (the fields of :meth:`schedule_once`, no dedupe key); its id."""
        job_id = await self.schedule_once(None, audit=audit, **call)
        assert job_id is not None  # without a key nothing is a duplicate
        return job_id

    async def schedule_once(
        self,
        dedupe_key: str | None,
        *,
        purpose: str,
        to: str,
        due_at: datetime | None = None,
        customer_id: int | None = None,
        appointment_id: int | None = None,
        handoff_id: int | None = None,
        message: str = "",
        created_by: str = "",
        max_attempts: int | None = None,
        audit: Audit | None = None,
    ) -> int | None:
        """Schedule a call to ``to`` (E.164) due at ``due_at`` (default now); its id, or None
        when a call with ``dedupe_key`` exists already (whatever its status: it is scheduled
        once). ``max_attempts`` defaults to the business's ``outbound_max_attempts``; ``audit``:
        logged as ``create``.
        :class:`DoNotCallError` for a do-not-call customer's number; :class:`OutboundError` for
        anything else invalid."""
        if purpose not in PURPOSES:
            raise OutboundError(f"purpose must be one of {', '.join(PURPOSES)}, not {purpose!r}")
        if not isinstance(to, str) or not _E164.match(to):
            raise OutboundError(f"'to' must be an E.164 phone number, not {to!r}")
        if max_attempts is not None and not (
            MAX_ATTEMPTS_RANGE[0] <= max_attempts <= MAX_ATTEMPTS_RANGE[1]
        ):
            raise OutboundError(
                f"max_attempts must be {MAX_ATTEMPTS_RANGE[0]}..{MAX_ATTEMPTS_RANGE[1]}, "
                f"not {max_attempts}"
            )
        now = self.clock()
        due = _as_time(due_at) if due_at is not None else now
        try:
            async with self.db.write() as conn:
                if dedupe_key is not None:
                    existing = (
                        await conn.execute(
                            sa.select(_calls.c.id).where(_calls.c.dedupe_key == dedupe_key)
                        )
                    ).scalar()
                    if existing is not None:
                        return None
                blocked = (await conn.execute(sa.select(_do_not_call(customer_id, to)))).scalar()
                if blocked:
                    raise DoNotCallError(
                        "this customer asked not to be called; clear their do-not-call flag "
                        "in the console first"
                    )
                if max_attempts is None:
                    max_attempts = (
                        await conn.execute(sa.select(schema.business.c.outbound_max_attempts))
                    ).scalar() or 3
                result = await conn.execute(
                    _calls.insert().values(
                        purpose=purpose,
                        to_phone=to,
                        customer_id=customer_id,
                        appointment_id=appointment_id,
                        handoff_id=handoff_id,
                        message=message[:2000],
                        status="scheduled",
                        due_at=iso_utc(due),
                        max_attempts=max_attempts,
                        created_by=created_by[:20],
                        dedupe_key=dedupe_key,
                        created_at=iso_utc(now),
                        updated_at=iso_utc(now),
                    )
                )
                job_id = new_id(result)
                await _audit(conn, audit, "create", job_id)
                return job_id
        except sa.exc.IntegrityError:
            # Another worker inserted the same dedupe_key between our check and insert.
            if dedupe_key is None:
                raise
            return None

    async def cancel(
        self, job_id: int, detail: str = "cancelled by staff", audit: Audit | None = None
    ) -> bool:
        """Cancel a scheduled call; False when there is none of that id still scheduled."""
        async with self.db.write() as conn:
            result = await conn.execute(
                _calls.update()
                .where(_calls.c.id == job_id, _calls.c.status == "scheduled")
                .values(
                    status="cancelled",
                    last_error=detail[:2000],
                    updated_at=iso_utc(self.clock()),
                )
            )
            if result.rowcount:
                await _audit(conn, audit, "cancel", job_id)
        return bool(result.rowcount)

    async def call_back_now(
        self, handoff_id: int, created_by: str = "admin", audit: Audit | None = None
    ) -> int:
        """A callback for the message ``handoff_id``, due now: its scheduled callback is
        brought forward, or a new one is scheduled. :class:`OutboundError` when there is no
        such message or no number to call."""
        handoff = await self._handoff(handoff_id)
        now = self.clock()
        async with self.db.write() as conn:
            moved = (
                await conn.execute(
                    _calls.update()
                    .where(_calls.c.handoff_id == handoff_id, _calls.c.status == "scheduled")
                    .values(due_at=iso_utc(now), updated_at=iso_utc(now))
                    .returning(_calls.c.id)
                )
            ).scalar()
            if moved is not None:
                await _audit(conn, audit, "call_back_now", int(moved))
        if moved is not None:
            return int(moved)
        return await self.schedule(
            purpose="callback",
            to=handoff["caller_number"],
            due_at=now,
            customer_id=handoff["customer_id"],
            handoff_id=handoff_id,
            message=handoff["reason"],
            created_by=created_by,
            audit=audit,
        )

    async def customer_id(self, phone: str) -> int | None:
        """The customer on ``phone`` (E.164), if there is one."""
        c = schema.customers
        async with self.db.read() as conn:
            found = (await conn.execute(sa.select(c.c.id).where(c.c.phone == phone))).scalar()
        return None if found is None else int(found)

    async def reminder_problem(self, appointment_id: int) -> str:
        """Why a reminder cannot be about this appointment ("" when it can): it must exist, be
        booked and not have begun."""
        a = schema.appointments
        async with self.db.read() as conn:
            row = (
                (
                    await conn.execute(
                        sa.select(a.c.status, a.c.starts_at).where(a.c.id == appointment_id)
                    )
                )
                .mappings()
                .first()
            )
        if row is None:
            return f"no appointment {appointment_id}"
        if row["status"] != "booked":
            return f"appointment {appointment_id} is {row['status']}, not booked"
        if _as_time(row["starts_at"]) <= self.clock():
            return f"appointment {appointment_id} has already begun"
        return ""

    async def _handoff(self, handoff_id: int) -> dict[str, Any]:
        h = schema.handoffs
        async with self.db.read() as conn:
            row = (await conn.execute(sa.select(h).where(h.c.id == handoff_id))).mappings().first()
        if row is None or row["kind"] != "message":
            raise OutboundError(f"no message with id {handoff_id}")
        if not _E164.match(row["caller_number"] or ""):
            raise OutboundError(f"message {handoff_id} has no caller number to call back")
        return dict(row)

    # --- claiming and dialing -------------------------------------------------------------

    async def claim_due(
        self, *, owner: str, lease: timedelta, limit: int, max_running: int | None = None
    ) -> Claimed:
        """Claim up to ``limit`` due calls for ``owner`` (an instance id) for ``lease``: each
        becomes ``dialing`` with its attempt counted. Calls to do-not-call customers are
        cancelled (outcome opted_out) instead, as are reminders of appointments no longer
        booked or already begun, and expired calls whose attempts are spent are
        given up; they are not dialed (so fewer than ``limit`` jobs may come back while more are
        due: the next claim finds them). On PostgreSQL only the rows taken are locked, so
        claimants running at once take different rows instead of waiting on each other.
        ``max_running``: at most this many calls running (``dialing`` or ``in_progress``) in
        all, across workers (the claims are serialised for that count to hold)."""
        claimed = Claimed()
        if limit <= 0:
            return claimed
        now = self.clock()
        stamp = iso_utc(now)
        claimable = sa.or_(
            sa.and_(_calls.c.status == "scheduled", _calls.c.due_at <= stamp),
            sa.and_(_calls.c.status.in_(RUNNING), _calls.c.lease_until < stamp),
        )
        async with self.db.write(serial="outbound_claim") as conn:
            if max_running is not None:
                running = (
                    await conn.execute(
                        sa.select(sa.func.count()).where(
                            _calls.c.status.in_(RUNNING),
                            _calls.c.lease_until >= stamp,  # an expired one is reclaimable
                        )
                    )
                ).scalar_one()
                limit = min(limit, max_running - int(running))
                if limit <= 0:
                    return claimed
            query = (
                sa.select(
                    _calls,
                    _do_not_call(_calls.c.customer_id, _calls.c.to_phone).label("blocked"),
                    _reminder_moot(stamp).label("moot"),
                )
                .where(claimable)
                .order_by(_calls.c.due_at, _calls.c.id)
                .limit(limit)
            )
            if self.db.is_postgresql:
                query = query.with_for_update(of=_calls, skip_locked=True)
            rows = (await conn.execute(query)).mappings().all()
            for row in rows:
                mine = _calls.update().where(_calls.c.id == row["id"], claimable)
                aside = _not_placed(row)
                if aside is not None:
                    kind, values = aside
                    done = await conn.execute(
                        mine.values(lease_owner="", lease_until=None, updated_at=stamp, **values)
                    )
                    if done.rowcount:
                        getattr(claimed, kind).append(row["id"])
                    continue
                won = await conn.execute(
                    mine.values(
                        status="dialing",
                        attempts=_calls.c.attempts + 1,
                        lease_owner=owner[:100],
                        lease_until=iso_utc(now + lease),
                        call_sid="",
                        answered_by="",
                        updated_at=stamp,
                    )
                )
                if won.rowcount:
                    claimed.jobs.append(_job({**row, "attempts": row["attempts"] + 1}))
        return claimed

    async def record_dial(self, job_id: int, call_sid: str, *, lease: timedelta) -> None:
        """Twilio accepted the call: its ``call_sid`` is this attempt's, and the lease now
        covers the call (its outcome comes from Twilio's callbacks)."""
        now = self.clock()
        async with self.db.write() as conn:
            await conn.execute(
                _calls.update()
                .where(
                    _calls.c.id == job_id,
                    _calls.c.status.in_(RUNNING),
                    _this_attempt(call_sid),
                )
                .values(
                    call_sid=call_sid[:64],
                    lease_until=iso_utc(now + lease),
                    updated_at=iso_utc(now),
                )
            )

    async def give_up(self, job_id: int, detail: str) -> None:
        """The call cannot be placed at all (Twilio refused the number): no more attempts."""
        await self._finish(job_id, "", Outcome.FAILED, detail, retry=False)

    # --- the ledger (Twilio's callbacks report here) --------------------------------------

    async def job_for_call(self, call_sid: str) -> OutboundJob | None:
        if not call_sid:
            return None
        async with self.db.read() as conn:
            row = (
                (await conn.execute(sa.select(_calls).where(_calls.c.call_sid == call_sid)))
                .mappings()
                .first()
            )
        return _job(row) if row is not None else None

    async def answered(self, job_id: int, call_sid: str) -> None:
        now = self.clock()
        async with self.db.write() as conn:
            await conn.execute(
                _calls.update()
                .where(
                    _calls.c.id == job_id,
                    _this_attempt(call_sid),
                    _calls.c.status == "dialing",
                )
                .values(
                    status="in_progress",
                    call_sid=call_sid[:64],
                    lease_until=iso_utc(now + self.call_lease),
                    updated_at=iso_utc(now),
                )
            )

    async def finished(
        self, job_id: int, call_sid: str, outcome: Outcome, detail: str = ""
    ) -> None:
        await self._finish(job_id, call_sid, Outcome(outcome), detail, retry=True)

    async def _finish(
        self, job_id: int, call_sid: str, outcome: Outcome, detail: str, *, retry: bool
    ) -> None:
        """Record the attempt's outcome once (the row must still be running that attempt:
        ``call_sid`` matches); reschedule :data:`RETRIED` outcomes while attempts remain."""
        now = self.clock()
        stamp = iso_utc(now)
        async with self.db.write() as conn:
            row = (
                (
                    await conn.execute(
                        sa.select(_calls).where(
                            _calls.c.id == job_id,
                            _this_attempt(call_sid),
                            _calls.c.status.in_(RUNNING),
                        )
                    )
                )
                .mappings()
                .first()
            )
            if row is None:
                return  # a repeated or late callback: the first final outcome won
            values: dict[str, Any] = {
                "call_sid": call_sid[:64],
                "outcome": outcome.value,
                "last_error": detail[:2000],
                "lease_owner": "",
                "lease_until": None,
                "updated_at": stamp,
            }
            if outcome in RETRIED and retry and row["attempts"] < row["max_attempts"]:
                values["status"] = "scheduled"
                values["due_at"] = iso_utc(await self._retry_at(conn, row["attempts"], now))
            elif outcome in RETRIED:
                values["status"] = "given_up"
            else:
                values["status"] = "done"
            await conn.execute(
                _calls.update()
                .where(_calls.c.id == job_id, _calls.c.status.in_(RUNNING))
                .values(**values)
            )
            if row["purpose"] == "reminder" and row["appointment_id"] is not None:
                await conn.execute(
                    schema.appointments.update()
                    .where(schema.appointments.c.id == row["appointment_id"])
                    .values(reminder_outcome=_reminder_outcome(outcome), updated_at=stamp)
                )
            if outcome is Outcome.OPTED_OUT and row["customer_id"] is not None:
                c = schema.customers
                await conn.execute(
                    c.update()
                    .where(c.c.id == row["customer_id"], sa.not_(c.c.do_not_call))
                    .values(do_not_call=True, do_not_call_at=stamp, updated_at=stamp)
                )

    async def machine_verdict(self, call_sid: str, answered_by: str) -> None:
        """Keep Twilio's AnsweredBy for attempt ``call_sid`` (added by out-tel: the answered
        call's agent, on whichever worker, reads it back with :meth:`answered_by`)."""
        if not call_sid:
            return
        async with self.db.write() as conn:
            await conn.execute(
                _calls.update()
                .where(_calls.c.call_sid == call_sid)
                .values(answered_by=answered_by[:30], updated_at=iso_utc(self.clock()))
            )

    async def answered_by(self, job_id: int) -> str:
        """The AnsweredBy kept for job ``job_id``'s latest attempt ("" : none yet)."""
        async with self.db.read() as conn:
            found = (
                await conn.execute(sa.select(_calls.c.answered_by).where(_calls.c.id == job_id))
            ).scalar()
        return str(found or "")

    async def _retry_at(self, conn: AsyncConnection, attempts: int, now: datetime) -> datetime:
        delay = self.backoff[min(max(attempts, 1), len(self.backoff)) - 1]
        policy = await load_policy(conn)
        due = now + delay
        return policy.hours.next_open(due) if policy.hours is not None else due

    # --- reading --------------------------------------------------------------------------

    async def get(self, job_id: int) -> dict[str, Any] | None:
        async with self.db.read() as conn:
            row = (
                (await conn.execute(sa.select(_calls).where(_calls.c.id == job_id)))
                .mappings()
                .first()
            )
        return _public(row) if row is not None else None

    async def list_calls(
        self, status: ListStatus = "all", limit: int = 200
    ) -> list[dict[str, Any]]:
        """Outbound calls for the console and API: scheduled ones soonest first, running and
        finished ones newest first ("all": every kind, newest first)."""
        query = sa.select(_calls).limit(limit)
        if status == "scheduled":
            query = query.where(_calls.c.status == "scheduled").order_by(
                _calls.c.due_at, _calls.c.id
            )
        elif status == "running":
            query = query.where(_calls.c.status.in_(RUNNING)).order_by(_calls.c.id.desc())
        elif status == "finished":
            query = query.where(_calls.c.status.in_(FINISHED)).order_by(
                _calls.c.updated_at.desc(), _calls.c.id.desc()
            )
        elif status == "all":
            query = query.order_by(_calls.c.id.desc())
        else:
            raise OutboundError(
                f"status must be scheduled, running, finished or all, not {status!r}"
            )
        async with self.db.read() as conn:
            rows = (await conn.execute(query)).mappings().all()
        return [_public(row) for row in rows]

    async def dialing_count(self) -> int:
        """Calls being dialed (not answered yet), all workers: they hold no line yet."""
        async with self.db.read() as conn:
            return int(
                (
                    await conn.execute(
                        sa.select(sa.func.count()).where(_calls.c.status == "dialing")
                    )
                ).scalar_one()
            )

    # --- what the scheduler creates -------------------------------------------------------

    async def reminders_due(self, lead: timedelta) -> list[dict[str, Any]]:
        """Booked appointments whose reminder time (start minus ``lead``) has come and that
        have no reminder call yet: not begun, booked before their reminder time (one booked
        later was just made; its customer knows), the customer not on do-not-call. Each as
        ``{appointment_id, customer_id, phone, starts_at}``, soonest first."""
        now = self.clock()
        a, c = schema.appointments, schema.customers
        query = (
            sa.select(
                a.c.id.label("appointment_id"),
                a.c.customer_id,
                a.c.starts_at,
                a.c.created_at,
                c.c.phone,
            )
            .join(c, c.c.id == a.c.customer_id)
            .where(
                a.c.status == "booked",
                a.c.starts_at > iso_utc(now),
                a.c.starts_at <= iso_utc(now + lead),
                sa.not_(c.c.do_not_call),
                sa.not_(
                    sa.exists(
                        sa.select(_calls.c.id).where(
                            _calls.c.appointment_id == a.c.id, _calls.c.purpose == "reminder"
                        )
                    )
                ),
            )
            .order_by(a.c.starts_at, a.c.id)
        )
        async with self.db.read() as conn:
            rows = (await conn.execute(query)).mappings().all()
        return [
            {k: row[k] for k in ("appointment_id", "customer_id", "phone", "starts_at")}
            for row in rows
            if _as_time(row["created_at"]) <= _as_time(row["starts_at"]) - lead
        ]

    async def callbacks_due(self, window: timedelta) -> list[dict[str, Any]]:
        """Messages taken with a callback promised (``handoffs`` of kind message, outcome
        message_taken or callback_requested) whose promised time (``callback_after``, else when
        the message was taken) has come within the last ``window`` (older ones are left to
        staff, so turning automatic callbacks on does not ring a backlog) and that have no
        callback call yet; not to do-not-call customers. Each as ``{handoff_id, customer_id,
        phone, reason, due_at}``."""
        now = self.clock()
        h = schema.handoffs
        promised = sa.func.coalesce(h.c.callback_after, h.c.created_at)
        query = (
            sa.select(
                h.c.id.label("handoff_id"),
                h.c.customer_id,
                h.c.caller_number.label("phone"),
                h.c.reason,
                h.c.callback_after,
                h.c.created_at,
            )
            .where(
                h.c.kind == "message",
                h.c.outcome.in_(("message_taken", "callback_requested")),
                h.c.caller_number.like("+%"),
                promised <= iso_utc(now),
                promised >= iso_utc(now - window),
                sa.not_(_do_not_call(h.c.customer_id, h.c.caller_number)),
                sa.not_(sa.exists(sa.select(_calls.c.id).where(_calls.c.handoff_id == h.c.id))),
            )
            .order_by(h.c.id)
        )
        async with self.db.read() as conn:
            rows = (await conn.execute(query)).mappings().all()
        return [
            {
                "handoff_id": row["handoff_id"],
                "customer_id": row["customer_id"],
                "phone": row["phone"],
                "reason": row["reason"],
                "due_at": row["callback_after"] or row["created_at"],
            }
            for row in rows
        ]


def _not_placed(row: Any) -> tuple[str, dict[str, str]] | None:
    """Why a claimable row is not dialed (the :class:`Claimed` list it goes to, and what it
    becomes), or None to dial it."""
    if row["blocked"]:
        return "opted_out", {
            "status": "cancelled",
            "outcome": Outcome.OPTED_OUT.value,
            "last_error": "do not call",
        }
    if row["moot"]:
        return "stale", {
            "status": "cancelled",
            "last_error": "the appointment was cancelled or has begun",
        }
    if row["attempts"] >= row["max_attempts"]:
        return "given_up", {
            "status": "given_up",
            "outcome": row["outcome"] or Outcome.FAILED.value,
            "last_error": "no outcome reported before the lease expired",
        }
    return None


def _reminder_outcome(outcome: Outcome) -> str:
    """``appointments.reminder_outcome`` for an attempt's outcome (a busy line: no answer)."""
    return Outcome.NO_ANSWER.value if outcome is Outcome.BUSY else outcome.value


def _public(row: Any) -> dict[str, Any]:
    """A row as the API shows it (the lease internals left out)."""
    return {
        "id": row["id"],
        "purpose": row["purpose"],
        "to": row["to_phone"],
        "status": row["status"],
        "outcome": row["outcome"],
        "due_at": row["due_at"],
        "attempts": row["attempts"],
        "max_attempts": row["max_attempts"],
        "customer_id": row["customer_id"],
        "appointment_id": row["appointment_id"],
        "handoff_id": row["handoff_id"],
        "message": row["message"],
        "call_sid": row["call_sid"],
        "answered_by": row["answered_by"],
        "last_error": row["last_error"],
        "created_by": row["created_by"],
        "created_at": row["created_at"],
        "updated_at": row["updated_at"],
    }
