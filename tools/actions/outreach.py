"""Calls the business places: stop_calling_me (the callee's "please don't call me again")."""

from __future__ import annotations

from tools.actions.crm import proven_or_refused
from tools.registry import ToolContext, ToolResult
from tools.store.customers import stop_calling


async def stop_calling_me(ctx: ToolContext) -> ToolResult:
    """The caller asks not to be called by us again (reminders, callbacks): no outbound call
    reaches their number from now on. Only for a caller proven to own the number."""
    proven = await proven_or_refused(ctx)
    async with ctx.db.write() as conn:
        customer_id, cancelled = await stop_calling(conn, proven)
    ctx.facts["customer_id"] = customer_id
    return ToolResult(
        say="Understood, we won't call you again. You're always welcome to call us.",
        data={"do_not_call": True, "calls_cancelled": cancelled},
    )
