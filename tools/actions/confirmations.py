"""SMS confirmations: a short text to the customer after a booking, a move or a cancellation,
whether the agent's tools or the front desk (the admin console) made it.

Sent only when the business turned them on (``business.sms_confirmations``) and texting is
configured (a :class:`~tools.registry.TextSender`), and only to the number on the customer's
record. A text that cannot be sent never undoes what it confirms: :func:`send_confirmation`
reports ``"failed"`` and the sender (agent.texting) logs and counts it. The body is never
logged, here or there.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Literal

from tools.domain.business import Business
from tools.registry import TextSender
from tools.store.business import sms_confirmations_on
from tools.store.db import Database

Event = Literal["booked", "moved", "cancelled"]
#: sent; failed (the sender raised); off (the business does not send them); unavailable (no
#: sending number configured, or no number to send to).
Outcome = Literal["sent", "failed", "off", "unavailable"]
#: How long a confirmation may hold up the booking's answer (a tool has 8 s in all).
TEXT_TIMEOUT_SECS = 3.0


@dataclass(frozen=True)
class Confirmation:
    """What happened to which appointment, and the number on the customer's record."""

    event: Event
    phone: str  # E.164, the customer's own number on file
    service: str
    staff: str  # "" when no one in particular
    starts_at: datetime  # aware

    @classmethod
    def of(cls, event: Event, appointment: dict[str, Any]) -> Confirmation:
        """From an appointment as tools.store.appointments.appointment_detail reads it."""
        return cls(
            event=event,
            phone=appointment["phone"],
            service=appointment["service"],
            staff=appointment["staff"] or "",
            starts_at=datetime.fromisoformat(appointment["starts_at"]),
        )


def local_when(moment: datetime) -> str:
    """``Fri 5 Dec at 3:00 PM`` (``moment`` already in the business's zone)."""
    clock = moment.strftime("%I:%M %p").lstrip("0")
    return f"{moment:%a} {moment.day} {moment:%b} at {clock}"


def confirmation_text(business: Business, confirmation: Confirmation) -> str:
    """The text, in the business's time zone: "Bella Hair Studio: your haircut with Ana is
    booked for Fri 5 Dec at 3:00 PM. Reply or call +14135550100 to change it." """
    what = confirmation.service.lower()
    if confirmation.staff:
        what += f" with {confirmation.staff}"
    when = local_when(business.local(confirmation.starts_at))
    call = f"Reply or call {business.phone}" if business.phone else "Reply"
    if confirmation.event == "booked":
        news = f"your {what} is booked for {when}. {call} to change it."
    elif confirmation.event == "moved":
        news = f"your {what} is now {when}. {call} to change it."
    else:
        news = f"your {what} on {when} is cancelled. {call} to book again."
    return f"{business.name}: {news}"


async def send_confirmation(
    db: Database, texts: TextSender | None, business: Business, confirmation: Confirmation
) -> Outcome:
    """Text ``confirmation`` to the customer when the business sends confirmations; never
    raises (a texting failure is the sender's to log and count, and comes back ``failed``, as
    does one that takes longer than :data:`TEXT_TIMEOUT_SECS`)."""
    if not await sms_confirmations_on(db):
        return "off"
    if texts is None or not confirmation.phone.startswith("+"):
        return "unavailable"
    try:
        body = confirmation_text(business, confirmation)
        await asyncio.wait_for(texts.send_text(confirmation.phone, body), TEXT_TIMEOUT_SECS)
    except Exception:  # whatever the SMS vendor raised: the booking stands
        return "failed"
    return "sent"
