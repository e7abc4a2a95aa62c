"""Call records: the one read model of calls (the call list, one call in full, the admin
console's summaries) and the store that writes them (the call, each turn as it completes, each
tool call, faults and the outcome).

Every write is its own short transaction, so a crash loses at most the turn in progress.
"""

from __future__ import annotations

import json
from datetime import datetime
from typing import Any

import sqlalchemy as sa

from tools.store import schema
from tools.store.db import Database, new_id, utc_now


class CallRecords:
    """Reads call records: the rows of ``/api/calls`` and the admin console's review views."""

    def __init__(self, db: Database) -> None:
        self.db = db

    async def list_calls(self, limit: int = 100, offset: int = 0) -> list[dict[str, Any]]:
        """Calls newest first: the call's columns (no id), ``turn_count`` and the latest
        ``handoff`` as "kind:outcome" (None without one)."""
        async with self.db.read() as conn:
            turn_count = (
                sa.select(sa.func.count())
                .where(schema.turns.c.call_id == schema.calls.c.id)
                .scalar_subquery()
            )
            handoff = (
                sa.select(schema.handoffs.c.kind + ":" + schema.handoffs.c.outcome)
                .where(schema.handoffs.c.call_id == schema.calls.c.id)
                .order_by(schema.handoffs.c.id.desc())
                .limit(1)
                .scalar_subquery()
            )
            rows = await conn.execute(
                sa.select(schema.calls, turn_count.label("turn_count"), handoff.label("handoff"))
                .order_by(schema.calls.c.id.desc())
                .limit(limit)
                .offset(offset)
            )
            return [_call_dict(dict(r._mapping)) for r in rows]

    async def get_call(self, call_sid: str) -> dict[str, Any] | None:
        """The call (its columns, no id) with its ``turns``, ``tool_calls`` and ``handoffs`` in
        order; None for an unknown call."""
        async with self.db.read() as conn:
            row = (
                (
                    await conn.execute(
                        sa.select(schema.calls).where(schema.calls.c.call_sid == call_sid)
                    )
                )
                .mappings()
                .first()
            )
            if row is None:
                return None
            call = _call_dict(dict(row))
            turns = await conn.execute(
                sa.select(schema.turns)
                .where(schema.turns.c.call_id == row["id"])
                .order_by(schema.turns.c.idx)
            )
            call["turns"] = [
                {
                    "idx": t.idx,
                    "role": t.role,
                    "text": t.text,
                    "interrupted": bool(t.interrupted),
                    "timings": t.timings,
                    "at": t.created_at,
                }
                for t in turns
            ]
            tools = await conn.execute(
                sa.select(schema.tool_calls)
                .where(schema.tool_calls.c.call_id == row["id"])
                .order_by(schema.tool_calls.c.id)
            )
            call["tool_calls"] = [
                {
                    "name": t.name,
                    "arguments": t.arguments,
                    "result": t.result,
                    "ok": bool(t.ok),
                    "error": t.error,
                    "duration_ms": t.duration_ms,
                    "at": t.created_at,
                }
                for t in tools
            ]
            handoffs = await conn.execute(
                sa.select(schema.handoffs)
                .where(schema.handoffs.c.call_id == row["id"])
                .order_by(schema.handoffs.c.id)
            )
            call["handoffs"] = [
                {
                    "id": h.id,
                    "kind": h.kind,
                    "trigger": h.trigger,
                    "reason": h.reason,
                    "summary": h.summary,
                    "target": h.target,
                    "caller_name": h.caller_name,
                    "caller_number": h.caller_number,
                    "customer_id": h.customer_id,
                    "outcome": h.outcome,
                    "detail": h.detail,
                    "callback_after": h.callback_after,
                    "at": h.created_at,
                    "updated_at": h.updated_at,
                }
                for h in handoffs
            ]
            return call

    async def list_summaries(self, limit: int = 50, offset: int = 0) -> list[dict[str, Any]]:
        """:meth:`list_calls` in the list view's shape (:func:`call_summary`)."""
        return [call_summary(c) for c in await self.list_calls(limit, offset)]

    async def review(self, call_sid: str) -> dict[str, Any] | None:
        """One call in full (:meth:`get_call`) with its list-view fields (:func:`call_summary`)."""
        call = await self.get_call(call_sid)
        return None if call is None else {**call_summary(call), **call}


class CallStore(CallRecords):
    """Writes call records (and reads them, as :class:`CallRecords`); the calls it starts are
    stamped with ``instance_id``, the process running them (tools.store.instances)."""

    def __init__(self, db: Database, instance_id: str = "") -> None:
        super().__init__(db)
        self.instance_id = instance_id

    async def start_call(
        self,
        *,
        call_sid: str,
        stream_sid: str = "",
        source: str = "twilio",
        from_number: str = "",
        to_number: str = "",
        providers: dict[str, str] | None = None,
        direction: str = "inbound",
    ) -> int:
        async with self.db.write() as conn:
            existing = (
                await conn.execute(
                    sa.select(schema.calls.c.id).where(schema.calls.c.call_sid == call_sid)
                )
            ).scalar()
            if existing is not None:
                await conn.execute(
                    schema.calls.update()
                    .where(schema.calls.c.id == existing)
                    .values(
                        stream_sid=stream_sid,
                        outcome="in_progress",
                        ended_at=None,
                        instance_id=self.instance_id,
                    )
                )
                return int(existing)
            result = await conn.execute(
                schema.calls.insert().values(
                    call_sid=call_sid,
                    stream_sid=stream_sid,
                    source=source,
                    from_number=from_number,
                    to_number=to_number,
                    direction=direction,
                    started_at=utc_now(),
                    providers=json.dumps(providers or {}),
                    instance_id=self.instance_id,
                )
            )
            return int(new_id(result))

    async def set_customer(self, call_id: int, customer_id: int) -> None:
        async with self.db.write() as conn:
            await conn.execute(
                schema.calls.update()
                .where(schema.calls.c.id == call_id)
                .values(customer_id=customer_id)
            )

    async def add_turn(
        self,
        call_id: int,
        *,
        role: str,
        text: str,
        timings: dict[str, Any],
        interrupted: bool = False,
    ) -> None:
        async with self.db.write() as conn:
            idx = (
                await conn.execute(
                    sa.select(sa.func.coalesce(sa.func.max(schema.turns.c.idx), -1)).where(
                        schema.turns.c.call_id == call_id
                    )
                )
            ).scalar_one() + 1
            await conn.execute(
                schema.turns.insert().values(
                    call_id=call_id,
                    idx=idx,
                    role=role,
                    text=text,
                    interrupted=interrupted,
                    timings=timings,
                    created_at=utc_now(),
                )
            )

    async def cut_off_last_bot_turn(self, call_id: int, *, heard: str) -> None:
        """The call's latest turn, a bot turn, was cut off by the caller: it is marked interrupted
        and, when the caller heard any of it, becomes the words heard. Does nothing when the
        latest turn is the caller's."""
        async with self.db.write() as conn:
            last = (
                await conn.execute(
                    sa.select(schema.turns.c.id, schema.turns.c.role)
                    .where(schema.turns.c.call_id == call_id)
                    .order_by(schema.turns.c.idx.desc())
                    .limit(1)
                )
            ).first()
            if last is None or last.role != "bot":
                return
            await conn.execute(
                schema.turns.update()
                .where(schema.turns.c.id == last.id)
                .values(interrupted=True, **({"text": heard} if heard else {}))
            )

    async def add_tool_call(
        self,
        call_id: int,
        *,
        name: str,
        arguments: dict[str, Any],
        result: dict[str, Any] | None,
        ok: bool,
        error: str,
        duration_ms: float,
    ) -> None:
        async with self.db.write() as conn:
            await conn.execute(
                schema.tool_calls.insert().values(
                    call_id=call_id,
                    name=name,
                    arguments=arguments,
                    result=result,
                    ok=ok,
                    error=error,
                    duration_ms=duration_ms,
                    created_at=utc_now(),
                )
            )

    async def add_fault(self, call_id: int, fault: str) -> None:
        async with self.db.write() as conn:
            current = (
                await conn.execute(
                    sa.select(schema.calls.c.faults).where(schema.calls.c.id == call_id)
                )
            ).scalar() or ""
            joined = (current + "\n" + fault).strip()[-4000:]
            await conn.execute(
                schema.calls.update().where(schema.calls.c.id == call_id).values(faults=joined)
            )

    async def finish_call(self, call_id: int, *, outcome: str, recording_path: str = "") -> None:
        values: dict[str, Any] = {"ended_at": utc_now(), "outcome": outcome}
        if recording_path:
            values["recording_path"] = recording_path
        async with self.db.write() as conn:
            await conn.execute(
                schema.calls.update().where(schema.calls.c.id == call_id).values(**values)
            )


def _call_dict(row: dict[str, Any]) -> dict[str, Any]:
    row.pop("id", None)
    try:
        row["providers"] = json.loads(row.get("providers") or "{}")
    except ValueError:
        row["providers"] = {}
    row["faults"] = [f for f in (row.get("faults") or "").split("\n") if f]
    return row


def call_summary(call: dict[str, Any]) -> dict[str, Any]:
    """The list view of a call: when, who, how long, how it ended, any handoff."""
    duration = None
    if call.get("ended_at") and call.get("started_at"):
        ended = datetime.fromisoformat(call["ended_at"])
        duration = round((ended - datetime.fromisoformat(call["started_at"])).total_seconds(), 1)
    handoff = call.get("handoff")
    if handoff is None and call.get("handoffs"):
        last = call["handoffs"][-1]
        handoff = f"{last['kind']}:{last['outcome']}"
    return {
        "call_sid": call["call_sid"],
        "started_at": call["started_at"],
        "ended_at": call.get("ended_at"),
        "caller": call.get("from_number", ""),
        "source": call.get("source", ""),
        "duration_secs": duration,
        "outcome": call.get("outcome", ""),
        "handoff": handoff or "",
        "turn_count": call.get("turn_count", len(call.get("turns", []))),
    }
