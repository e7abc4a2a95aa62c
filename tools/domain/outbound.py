"""What an outbound call is and what it came to: the plain types the scheduler's store
(tools.store.outbound), the scheduler and the dialer (agent.outbound) share. Re-exported by
agent.outbound.jobs, the contract between the two sides; they live here because tools/ may not
import agent/.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum
from typing import Literal

Purpose = Literal["reminder", "callback", "custom"]
PURPOSES: tuple[Purpose, ...] = ("reminder", "callback", "custom")


class Outcome(StrEnum):
    """What an outbound call came to (``outbound_calls.outcome``; for reminders also
    ``appointments.reminder_outcome``)."""

    CONFIRMED = "confirmed"  # the callee will come
    CANCELLED = "cancelled"  # the callee cancelled the appointment
    RESCHEDULED = "rescheduled"  # the callee moved it
    COMPLETED = "completed"  # a person talked with the agent (callbacks, custom calls)
    OPTED_OUT = "opted_out"  # the callee asked not to be called again
    VOICEMAIL = "voicemail"  # a machine answered; a message was left after the beep
    NO_ANSWER = "no_answer"  # rang out (retried)
    BUSY = "busy"  # (retried)
    FAILED = "failed"  # Twilio could not place it, or it broke (retried)


#: Outcomes after which the call is tried again (until its attempts run out).
RETRIED = frozenset({Outcome.NO_ANSWER, Outcome.BUSY, Outcome.FAILED})


@dataclass(frozen=True)
class OutboundJob:
    """One attempt at one outbound call."""

    id: int  # outbound_calls.id
    to: str  # E.164
    purpose: Purpose
    attempt: int  # 1 for the first try
    customer_id: int | None = None
    appointment_id: int | None = None
    #: custom: what to say; callback: the caller's reason, from their message.
    message: str = ""
