"""What the telephony routes need from the application that hosts them: typed protocols.

The routes never see the application's own state. The Twilio routes get a :class:`TwilioHost`
(call slots, stream tokens, the number to dial when busy, the transfer desk) and a
:class:`TwilioRouteConfig`; the browser demo gets :class:`DemoSlots` (its own, never the
phone lines) and a :class:`DemoRouteConfig`. The configs are fixed for the app's lifetime;
the host's properties are read on every request, so live changes (the admin console's
escalation number, shutdown) take effect at once. Everything the host answers is shared by
all workers (the app keeps it in the database), so no request needs to reach the worker that
handled an earlier one.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Protocol

from telephony.media_socket import PendingStarts
from telephony.tokens import StreamTokens


class CallSlots(Protocol):
    """The app's call capacity, shared by phone and browser calls and by all workers."""

    async def has_room(self) -> bool:
        """A new call would be taken now: calls are accepted (no shutdown) and a slot is free."""
        ...

    async def take_slot(self, *, answered: bool = False) -> str:
        """Take a slot: its id, or "" (nothing taken) when refused.

        A new call is refused unless :meth:`has_room`. ``answered``: the call was already
        answered by the voice webhook (its media stream is starting), so only a free slot counts.
        """
        ...

    async def release_slot(self, slot: str) -> None:
        """Give back a slot that :meth:`take_slot` gave."""
        ...

    def refused(self, reason: str) -> None:
        """A request or call was turned away for ``reason`` (a fixed word: over_capacity,
        bad_token, forged_signature, rate_limited ...), for the app's metrics. The host counts
        ``over_capacity`` as ``shutting_down`` while it takes no new calls."""
        ...

    @property
    def pending_starts(self) -> PendingStarts:
        """This process's media sockets waiting for their start, capped
        (FRONTDESK_MAX_PENDING_STREAMS); a socket over the cap is refused before it is
        accepted (``too_many_pending``)."""
        ...


class DemoSlots(CallSlots, Protocol):
    """The browser demo's own call slots: counted apart from phone lines, shared by all
    workers."""

    @property
    def accepting(self) -> bool:
        """False while the server drains (shuts down): it takes no new calls at all."""
        ...


class ClientLimit(Protocol):
    """A per-client rate limit (the app's is shared by all workers)."""

    async def hit(self, key: str) -> float:
        """Record an attempt by client ``key``: 0.0 when allowed, else the seconds until one
        would be (a refused attempt is not counted)."""
        ...


class DialNext(Protocol):
    """What the caller's leg does after a transfer's ``<Dial>``: ``kind`` is ``hangup``,
    ``resume`` (back to the agent on a new media stream) or ``goodbye`` (say ``text``, hang up)."""

    @property
    def kind(self) -> str: ...

    @property
    def text(self) -> str: ...


class HandoffDesk(Protocol):
    """The transfer webhooks' logic (it records handoffs; the routes only answer Twilio)."""

    async def whisper_text(self, handoff_id: int, parent_call_sid: str) -> str | None:
        """What the person answering transfer ``handoff_id`` hears first; None: unknown."""
        ...

    async def dial_finished(
        self, handoff_id: int, form: dict[str, str], can_resume: bool
    ) -> DialNext | None:
        """Record how the Dial ended (``form``: Twilio's signed callback) and decide the
        caller's next step; ``can_resume``: a slot is free for the agent. None: unknown."""
        ...


class OutboundDesk(Protocol):
    """The outbound-call webhooks' logic (the app's records the verdicts and outcomes through
    the scheduler's ledger; the routes only answer Twilio). Every method takes Twilio's signed
    form and may run in any worker."""

    async def stream_details(self, form: dict[str, str]) -> dict[str, str] | None:
        """An outbound call was answered: the details its media stream token carries (signed:
        ``direction`` "outbound", the job's id, the dialed number). None: not a call of ours
        (it is hung up)."""
        ...

    async def call_status(self, form: dict[str, str]) -> None:
        """Twilio's progress report for an outbound call (``CallStatus``)."""
        ...

    async def machine_verdict(self, form: dict[str, str]) -> None:
        """Twilio's answering-machine verdict for an outbound call (``AnsweredBy``)."""
        ...


class TwilioHost(CallSlots, Protocol):
    """Everything the Twilio routes read from the app while it runs."""

    @property
    def tokens(self) -> StreamTokens:
        """Issues a media stream's one-time token in the webhook, consumes it at stream start."""
        ...

    async def escalation_number(self) -> str:
        """Dialled after the busy message when over capacity ("" : hang up instead); read when
        needed, so an admin's change applies in every worker."""
        ...

    @property
    def handoff_desk(self) -> HandoffDesk: ...

    @property
    def outbound_desk(self) -> OutboundDesk: ...


@dataclass(frozen=True)
class TwilioRouteConfig:
    """The Twilio routes' settings."""

    #: TWILIO_AUTH_TOKEN, which signs every webhook ("" : not configured, webhooks answer 503).
    auth_token: str = field(repr=False)
    #: The public base URL Twilio reaches us on ("" : the request's own).
    public_url: str
    #: Said to a caller when every line is busy or the server is shutting down.
    busy_message: str


@dataclass(frozen=True)
class DemoRouteConfig:
    """The browser demo's settings."""

    enabled: bool
    #: Calls one client address may start a minute.
    calls_per_minute: int
    #: The public base URL, an allowed Origin besides the server's own ("" : none).
    public_url: str
    #: Demo calls at once across all workers (FRONTDESK_DEMO_MAX_CALLS), told to a refused page.
    max_calls: int = 2
