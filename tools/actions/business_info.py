"""The get_business_info tool: hours, today's hours, address, prices and services, in words."""

from __future__ import annotations

from datetime import timedelta
from typing import Any, Literal

from tools.domain.business import WEEKDAYS, describe_hours
from tools.domain.speech import join_words, say_date, say_duration, say_price, say_time
from tools.errors import ToolError
from tools.registry import ToolContext, ToolResult


async def get_business_info(
    ctx: ToolContext,
    topic: Literal["hours", "hours_today", "address", "prices", "services", "all"] = "all",
) -> ToolResult:
    """Opening hours, today's hours, the address, or service prices and durations.

    Args:
        topic: What the caller asked about: hours, hours_today, address, prices, services or all.
    """
    business = await ctx.current_business()
    now = business.local(ctx.current_time())
    today_ranges = business.opening_on(now.date())
    if now.date() in business.holidays:
        today = f"We're closed today for {business.holidays[now.date()]}."
    elif not today_ranges:
        today = "We're closed today."
    else:
        spans = " and ".join(f"{say_time(o)} to {say_time(c)}" for o, c in today_ranges)
        state = "open now" if business.is_open_at(now) else "closed right now"
        today = f"Today we're open {spans}, and we're {state}."
    prices = "; ".join(
        f"{s.name.lower()} is {say_price(s.price_cents)} "
        f"and takes {say_duration(s.duration_minutes)}"
        for s in business.services
    )
    data: dict[str, Any] = {
        "business": business.name,
        "address": business.address,
        "hours": {
            WEEKDAYS[d]: [f"{o:%H:%M}-{c:%H:%M}" for o, c in r] for d, r in business.hours.items()
        },
        "open_now": business.is_open_at(now),
        "services": [
            {"name": s.name, "minutes": s.duration_minutes, "price": s.price_cents / 100}
            for s in business.services
        ],
    }
    upcoming = [
        f"{name} on {say_date(day)}"
        for day, name in sorted(business.holidays.items())
        if now.date() <= day <= now.date() + timedelta(days=30)
    ]
    say = {
        "hours": f"Our hours are {describe_hours(business)}.",
        "hours_today": today,
        "address": f"We're at {business.address}.",
        "prices": f"Prices: {prices}.",
        "services": f"We offer {business.service_list()}.",
    }.get(topic)
    if say is None:
        say = f"{today} We're at {business.address}."
    if topic in ("hours", "hours_today") and upcoming:
        say += f" Note we're closed for {join_words(upcoming, 'and')}."
    if not say:
        raise ToolError("Sorry, I don't have that information.")
    return ToolResult(say=say, data=data)
