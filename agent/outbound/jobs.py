"""An outbound call to place, and the two sides that meet around it.

The scheduler (agent.outbound.scheduler) claims a due row of ``outbound_calls`` (one worker at a
time, under a lease), builds an :class:`OutboundJob` and hands it to a :class:`Dialer`. The
dialer places the call through Twilio; Twilio's status and answering-machine callbacks, and the
call itself when a person answers, report back through an :class:`OutboundLedger`, which the
scheduler's store implements: it records the outcome and decides whether to try again.
"""

from __future__ import annotations

from typing import Protocol

# The plain types live in tools/ (which may not import agent/); this module is their contract.
from tools.domain.outbound import PURPOSES, RETRIED, OutboundJob, Outcome, Purpose

__all__ = [
    "PURPOSES",
    "RETRIED",
    "DialError",
    "Dialer",
    "OutboundJob",
    "OutboundLedger",
    "Outcome",
    "Purpose",
]


class DialError(Exception):
    """Twilio would not place the call. ``retryable``: worth another attempt later (a network
    fault, a 5xx); not for a number Twilio refuses outright."""

    def __init__(self, message: str, *, retryable: bool) -> None:
        super().__init__(message)
        self.retryable = retryable


class Dialer(Protocol):
    """Places calls (the app's is Twilio's REST ``Calls.create`` with asynchronous AMD)."""

    async def place(self, job: OutboundJob) -> str:
        """Start calling ``job.to``; Twilio's CallSid. Raises :class:`DialError`."""
        ...


class OutboundLedger(Protocol):
    """Where what happened to a placed call is written (the scheduler's store)."""

    async def job_for_call(self, call_sid: str) -> OutboundJob | None:
        """The job whose current attempt is ``call_sid``; None: not an outbound call of ours."""
        ...

    async def answered(self, job_id: int, call_sid: str) -> None:
        """A person answered: the agent is talking with them."""
        ...

    async def finished(
        self, job_id: int, call_sid: str, outcome: Outcome, detail: str = ""
    ) -> None:
        """The attempt ended with ``outcome``: recorded, and for :data:`RETRIED` outcomes the job
        is due again after a backoff (inside calling hours) until its attempts run out. Idempotent:
        Twilio repeats callbacks, and the first final outcome of an attempt wins."""
        ...

    async def machine_verdict(self, call_sid: str, answered_by: str) -> None:
        """Keep Twilio's answering-machine verdict (``AnsweredBy``: human, unknown,
        machine_start, machine_end_beep, machine_end_silence, machine_end_other, fax) for
        attempt ``call_sid`` (``outbound_calls.answered_by``), where any worker can read it."""
        ...

    async def answered_by(self, job_id: int) -> str:
        """The verdict kept for job ``job_id``'s latest attempt ("" : none yet)."""
        ...
