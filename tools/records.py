"""Call records: the call, each turn as it completes, each tool call, and the outcome.

Every write is its own short transaction, so a crash loses at most the turn in progress.
"""

from __future__ import annotations

import json
from typing import Any

import sqlalchemy as sa

from tools import schema
from tools.db import Database, new_id, utc_now


class CallStore:
    def __init__(self, db: Database) -> None:
        self.db = db

    async def start_call(
        self,
        *,
        call_sid: str,
        stream_sid: str = "",
        source: str = "twilio",
        from_number: str = "",
        to_number: str = "",
        providers: dict[str, str] | None = None,
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
                    .values(stream_sid=stream_sid, outcome="in_progress", ended_at=None)
                )
                return int(existing)
            result = await conn.execute(
                schema.calls.insert().values(
                    call_sid=call_sid,
                    stream_sid=stream_sid,
                    source=source,
                    from_number=from_number,
                    to_number=to_number,
                    started_at=utc_now(),
                    providers=json.dumps(providers or {}),
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

    async def close_interrupted(self) -> int:
        """Mark calls left open by a crash as interrupted; returns how many."""
        async with self.db.write() as conn:
            result = await conn.execute(
                schema.calls.update()
                .where(schema.calls.c.ended_at.is_(None))
                .values(ended_at=utc_now(), outcome="interrupted")
            )
            return int(result.rowcount or 0)

    async def list_calls(self, limit: int = 100, offset: int = 0) -> list[dict[str, Any]]:
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


def _call_dict(row: dict[str, Any]) -> dict[str, Any]:
    row.pop("id", None)
    try:
        row["providers"] = json.loads(row.get("providers") or "{}")
    except ValueError:
        row["providers"] = {}
    row["faults"] = [f for f in (row.get("faults") or "").split("\n") if f]
    return row
