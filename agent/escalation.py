"""Escalation to a person: when, how, and what the person hears first.

Triggers: the model calls ``transfer_to_human``, the caller presses 0, the agent fails to
understand the caller several turns in a row, or (wired elsewhere) a provider keeps failing. All
of them end in :meth:`Escalation.escalate` / :meth:`Escalation.request_transfer`:

* A transfer is possible when the call came through Twilio, the business has escalation numbers,
  it is open now and Twilio REST credentials are configured. Then the caller hears one short
  sentence; once Twilio acknowledges its mark (it has played), the live call is moved with the
  REST API to ``<Dial>`` TwiML ringing the escalation numbers. A warm transfer plays the person
  who answers a two-sentence summary (``/twilio/whisper``) first. Twilio reports the outcome to
  ``/twilio/dial-action``; when nobody answers the caller comes back to the agent on a new media
  stream of the same call, which offers to take a message.
* Otherwise (after hours, no number, no credentials, a REST failure) the caller is offered a
  message, which ``take_message`` stores as a callback request in the CRM.

Every attempt is a ``handoffs`` row (reason, summary, trigger, outcome). The summary is built
from the call's facts without the model, so it is the same every time.
"""

from __future__ import annotations

import asyncio
import json
import re
import time
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from loguru import logger

from agent.prompts import phrases
from agent.session import CallSession, Outcome
from agent.settings import Settings
from telephony import twiml
from telephony.privacy import mask_phone
from telephony.twilio_rest import TwilioRest, TwilioRestError, shared_rest
from tools.domain.speech import join_words, say_phone
from tools.store.business import load_business
from tools.store.customers import callback_customer, lookup_customer
from tools.store.db import Database
from tools.store.handoffs import get_handoff, record_handoff, update_handoff

#: Bot replies in a row that show the agent did not understand before a person takes over.
MISUNDERSTOOD_LIMIT = 3
#: Longest wait for the transfer sentence to reach the phone (a failing TTS must not keep the
#: caller waiting long), then for the phone to play it, before the call is moved anyway.
SYNTHESIS_TIMEOUT_SECS = 8.0
PLAYBACK_TIMEOUT_SECS = 15.0
#: Seconds the escalation numbers ring before Twilio reports no-answer.
DIAL_TIMEOUT_SECS = 20

# --- Pure parts -----------------------------------------------------------------------------

_NOT_UNDERSTOOD = re.compile(
    r"(say|repeat) (that|it) again|repeat that|could you repeat|"
    r"did(n't| not) (quite )?(catch|get|understand|hear)|"
    r"(don't|do not|not sure I) (understand|follow)|\bpardon\b|come again",
    re.I,
)


def is_misunderstanding(text: str) -> bool:
    """A short bot reply that asks the caller to repeat or says it did not understand."""
    return bool(text) and len(text.split()) <= 30 and bool(_NOT_UNDERSTOOD.search(text))


class MisunderstandingCounter:
    """Counts bot replies in a row that did not understand the caller."""

    def __init__(self, limit: int = MISUNDERSTOOD_LIMIT) -> None:
        self.limit = limit
        self.in_a_row = 0

    def note(self, bot_text: str) -> bool:
        """Record one bot reply; True (and start counting afresh) when the limit is reached."""
        if not is_misunderstanding(bot_text):
            self.in_a_row = 0
            return False
        self.in_a_row += 1
        if self.in_a_row >= self.limit:
            self.in_a_row = 0
            return True
        return False


_TOOL_DONE = {
    "check_availability": ("checked availability", "tried to check availability"),
    "book_appointment": ("booked an appointment", "tried to book an appointment"),
    "cancel_appointment": ("cancelled an appointment", "tried to cancel an appointment"),
    "reschedule_appointment": ("moved an appointment", "tried to move an appointment"),
    "confirm_appointment": ("confirmed an appointment", "tried to confirm an appointment"),
    "stop_calling_me": ("asked not to be called again", "asked not to be called again"),
    "find_customer": ("looked up their account", "could not find their account"),
    "save_customer": ("saved their details", "tried to save their details"),
    "add_note": ("added a note to their account", "tried to add a note"),
    "list_my_appointments": ("listed their appointments", "could not list their appointments"),
    "search_knowledge_base": ("answered a question", "could not answer a question"),
    "get_business_info": ("gave our hours or prices", "could not give our hours or prices"),
    "take_message": ("took a message", "tried to take a message"),
}
_GENERIC_REASON_WORDS = set(
    "the caller asked asks wants wanted would like requested request requests for to a an "
    "speak talk with person human real someone somebody representative operator agent live "
    "staff member manager transfer transferred be connected connect please".split()
)
_TRIGGER_ACTION = {
    "llm": "asked to speak with a person",
    "dtmf": "pressed zero to reach a person",
    "misunderstood": "is being passed to you because I could not understand them",
    "provider_failure": "is being passed to you because of a technical problem on my side",
}


def _words(text: str, limit: int) -> str:
    words = " ".join(text.split()).split(" ")
    clipped = " ".join(words[:limit]).rstrip(".,;:!?")
    return clipped + ("…" if len(words) > limit else "")


def conversation_facts(messages: Iterable[Any]) -> tuple[list[str], list[tuple[str, bool]]]:
    """(the caller's words turn by turn, tools called with whether they worked) from LLM
    context messages (OpenAI format)."""
    lines: list[str] = []
    tools: list[tuple[str, bool]] = []
    pending: dict[str, str] = {}  # tool call id -> tool name, until its result arrives
    for message in messages:
        if not isinstance(message, dict):
            continue
        role = message.get("role")
        if role == "user" and (text := _message_text(message.get("content"))):
            lines.append(text)
        elif role == "assistant":
            for call in message.get("tool_calls") or []:
                function = call.get("function") or {}
                pending[str(call.get("id", ""))] = str(function.get("name", ""))
        elif role == "tool":
            name = pending.pop(str(message.get("tool_call_id", "")), "")
            if name:
                tools.append((name, _tool_worked(message.get("content"))))
    tools.extend((name, False) for name in pending.values())  # still running: not done yet
    return lines, tools


def _message_text(content: Any) -> str:
    """A message's words, whitespace collapsed: plain text or the text parts of a list."""
    text = content if isinstance(content, str) else ""
    if isinstance(content, list):
        text = " ".join(p.get("text", "") for p in content if isinstance(p, dict))
    return " ".join(text.split())


def _tool_worked(content: Any) -> bool:
    """Whether a tool result says it worked (``"ok": false`` in its JSON); unreadable: yes."""
    try:
        return bool(json.loads(content).get("ok", True)) if isinstance(content, str) else True
    except (ValueError, AttributeError):
        return True


def build_summary(
    *,
    caller_name: str,
    caller_number: str,
    reason: str,
    trigger: str,
    caller_lines: list[str],
    tools: list[tuple[str, bool]],
    caller_proven: bool = True,
) -> str:
    """Two short sentences for the person taking the call: who, what they want, what was tried.

    ``caller_proven`` False: the caller is "an unverified caller" whatever name is given, and
    ``caller_number`` is read as the number they called from, not as an identity.

    >>> build_summary(caller_name="Anna Lee", caller_number="", reason="a billing question",
    ...     trigger="llm", caller_lines=["Can I talk to someone?"], tools=[])
    'Anna Lee asked to speak with a person about a billing question. So far I had not looked \
anything up; their last words were: Can I talk to someone.'
    """
    who = (" ".join(caller_name.split()) or "A caller") if caller_proven else "An unverified caller"
    if caller_number:
        who += f", calling from {say_phone(caller_number)},"
    action = _TRIGGER_ACTION.get(trigger, "is being passed to you")
    reason_words = re.findall(r"[a-z']+", reason.lower())
    about = ""
    if trigger == "llm" and any(w not in _GENERIC_REASON_WORDS for w in reason_words):
        about = " about " + _words(reason, 20)
    first = f"{who} {action}{about}."
    done: list[str] = []
    for name, ok in tools:
        if name in ("transfer_to_human", "end_call"):
            continue
        phrase = _TOOL_DONE.get(name, (name.replace("_", " "), f"tried {name.replace('_', ' ')}"))
        text = phrase[0] if ok else phrase[1]
        if text not in done:
            done.append(text)
    tried = f"So far I {join_words(done, 'and')}" if done else "So far I had not looked anything up"
    last = f"; their last words were: {_words(caller_lines[-1], 25)}" if caller_lines else ""
    return f"{first} {tried}{last}."


def transfer_urls(base: str, handoff_id: int) -> tuple[str, str]:
    """(Dial action URL, whisper URL) for a handoff under the public base URL."""
    root = base.rstrip("/")
    return (
        f"{root}/twilio/dial-action?handoff={handoff_id}",
        f"{root}/twilio/whisper?handoff={handoff_id}",
    )


#: Twilio's DialCallStatus -> our handoff outcome.
DIAL_OUTCOMES = {
    "completed": "answered",
    "answered": "answered",
    "busy": "busy",
    "no-answer": "no_answer",
    "failed": "failed",
    "canceled": "caller_hung_up",
}


# --- The application side: Twilio REST and the transfer webhooks -----------------------------


@dataclass(frozen=True)
class DialNext:
    """What the caller's leg does after the Dial: ``hangup``, ``resume`` (back to the agent on
    a new media stream) or ``goodbye`` (say ``text`` and hang up)."""

    kind: str
    text: str = ""


class HandoffDesk:
    """Shared by all calls: the Twilio REST client and the transfer webhooks' logic."""

    def __init__(self, db: Database, settings: Settings) -> None:
        self.db = db
        self.settings = settings

    def rest_for(self, account_sid: str) -> TwilioRest | None:
        """A REST client for the configured account (or the call's), None without credentials."""
        sid = self.settings.twilio_account_sid or account_sid
        token = self.settings.twilio_auth_token
        if not sid or not token:
            return None
        return shared_rest(sid, token.reveal(), self.settings.twilio_api_base_url)

    async def whisper_text(self, handoff_id: int, parent_call_sid: str) -> str | None:
        """The summary to whisper for a transfer of the call ``parent_call_sid``, or None."""
        handoff = await get_handoff(self.db, handoff_id)
        if handoff is None or handoff["kind"] != "transfer":
            return None
        if parent_call_sid and parent_call_sid != handoff["call_sid"]:
            logger.warning(f"whisper for handoff {handoff_id} asked by another call; refused")
            return None
        return str(handoff["summary"]) or "A caller is being transferred to you."

    async def dial_finished(
        self, handoff_id: int, form: dict[str, str], can_resume: bool
    ) -> DialNext | None:
        """Record how the Dial ended and decide what the caller's leg does next."""
        db = self.db
        handoff = await get_handoff(db, handoff_id)
        call_sid = form.get("CallSid", "")
        if handoff is None or handoff["kind"] != "transfer" or handoff["call_sid"] != call_sid:
            logger.warning(f"dial action for unknown handoff {handoff_id} (call {call_sid})")
            return None
        status = form.get("DialCallStatus", "")
        outcome = DIAL_OUTCOMES.get(status, "failed")
        detail = f"DialCallStatus={status or '?'}"
        if form.get("DialCallDuration"):
            detail += f", talked {form['DialCallDuration']} s"
        await update_handoff(db, handoff_id, outcome=outcome, detail=detail)
        logger.info(f"call {call_sid}: transfer {handoff_id} ended {status or '?'} -> {outcome}")
        if outcome in ("answered", "caller_hung_up"):
            return DialNext("hangup")
        if can_resume:
            return DialNext("resume")
        # Nobody answered and no line is free for the agent: keep a callback request.
        number = handoff["caller_number"] or form.get("From", "")
        if number.startswith("+"):
            customer_id = await callback_customer(db, number, handoff["caller_name"])
            await record_handoff(
                db,
                call_sid=call_sid,
                kind="message",
                trigger="no_answer",
                reason=handoff["reason"],
                summary=handoff["summary"],
                caller_name=handoff["caller_name"],
                caller_number=number,
                customer_id=customer_id,
                outcome="callback_requested",
            )
        return DialNext("goodbye", phrases()["transfer_lines_busy"])


# --- One call's side ----------------------------------------------------------------------


@dataclass(frozen=True)
class _Plan:
    ok: bool
    phrase: str = ""  # the message offer when not ok
    why: str = ""
    numbers: tuple[str, ...] = ()
    warm: bool = True


class Escalation:
    """One call's escalation state: idle -> announcing -> transferred (or back to idle)."""

    def __init__(self, session: CallSession, desk: HandoffDesk) -> None:
        self.session = session
        self.desk = desk
        self.status = "idle"
        self.holding = False
        self.blocked = ""  # set once a transfer failed in this call: offer messages instead
        self.counter = MisunderstandingCounter()
        self._task: asyncio.Task[None] | None = None

    # Entry points ---------------------------------------------------------------------------

    async def request_transfer(self, reason: str) -> tuple[str, dict[str, Any]]:
        """The model called transfer_to_human: (sentence, data) for the tool result."""
        if self.status != "idle":
            return phrases()["transfer_connecting"], {"transfer": "connecting", "no_reply": True}
        plan = await self._plan()
        if not plan.ok:
            await self._record_unavailable(reason, "llm", plan)
            return plan.phrase, {"transfer": "unavailable", "why": plan.why}
        self._start(reason, "llm", plan)
        return phrases()["transfer_connecting"], {"transfer": "connecting", "no_reply": True}

    async def escalate(self, reason: str, trigger: str) -> None:
        """Hand the caller to a person now (or offer a message), whatever the model is doing."""
        if self.status != "idle" or self.session.ending:
            return
        self.status = "deciding"
        try:
            if trigger == "dtmf":  # the caller acted: stop what the bot is saying at once
                await self.session.stop_talking()
            plan = await self._plan()
        except Exception:
            self.status = "idle"
            raise
        if not plan.ok:
            self.status = "idle"
            await self._record_unavailable(reason, trigger, plan)
            await self.session.say(plan.phrase, to_model=True)
            return
        self._start(reason, trigger, plan)

    async def can_transfer(self) -> bool:
        """Whether a transfer to a person could start now (nothing under way, someone to dial)."""
        return self.status == "idle" and not self.session.ending and (await self._plan()).ok

    def note_bot_turn(self, text: str) -> None:
        """Each complete model reply ("" for a tool call); several "sorry, say that again" in a
        row escalate."""
        if self.status == "idle" and self.counter.note(text):
            self.session.spawn(
                self.escalate(
                    f"the assistant did not understand the caller {MISUNDERSTOOD_LIMIT} "
                    "times in a row",
                    "misunderstood",
                )
            )

    async def settle(
        self, timeout: float = SYNTHESIS_TIMEOUT_SECS + PLAYBACK_TIMEOUT_SECS + 15.0
    ) -> None:
        """Wait (bounded) for a transfer in progress to finish its bookkeeping."""
        if self._task is not None and not self._task.done():
            try:
                await asyncio.wait_for(asyncio.shield(self._task), timeout)
            except Exception as exc:
                logger.error(f"call {self.session.info.call_sid}: transfer unfinished: {exc}")

    # Internals ------------------------------------------------------------------------------

    async def _plan(self) -> _Plan:
        texts = phrases()
        info = self.session.info
        business = self.session.business or await load_business(self.session.db)
        numbers = business.escalation_numbers
        if self.blocked:
            return _Plan(False, texts["transfer_unavailable"], self.blocked)
        if info.source != "twilio":
            return _Plan(False, texts["transfer_unavailable"], "not a phone call")
        if not numbers:
            return _Plan(False, texts["transfer_unavailable"], "no escalation number")
        if not business.is_open_at(self.session.now()):
            return _Plan(False, texts["transfer_after_hours"], "after hours")
        if self.desk.rest_for(info.account_sid) is None:
            return _Plan(False, texts["transfer_unavailable"], "Twilio credentials missing")
        return _Plan(True, numbers=numbers, warm=business.warm_transfer)

    def _start(self, reason: str, trigger: str, plan: _Plan) -> None:
        self.status = "announcing"
        self.holding = True
        self._task = asyncio.create_task(self._transfer(reason, trigger, plan))

    async def _caller(self) -> tuple[str, str, int | None, bool]:
        """(name on file, number, customer id, proven) of the caller.

        A record is looked up only on the number the caller is proven to own
        (``ToolContext.proven_phone``); otherwise the name is "" and the number is the caller
        ID as given, so the person answering never hears whose record an unproven number is."""
        info = self.session.info
        number = info.caller_id
        proven = await self.session.proven_phone()
        customer: dict[str, Any] | None = None
        if proven:
            async with self.session.db.read() as conn:
                customer = await lookup_customer(conn, proven)
        customer_id = (customer or {}).get("id") or self.session.facts.get("customer_id")
        return (customer or {}).get("name", "") or "", number, customer_id, bool(proven)

    async def _record_unavailable(self, reason: str, trigger: str, plan: _Plan) -> None:
        name, number, customer_id, _ = await self._caller()
        await record_handoff(
            self.session.db,
            call_sid=self.session.info.call_sid,
            kind="transfer",
            trigger=trigger,
            reason=reason,
            caller_name=name,
            caller_number=number,
            customer_id=customer_id,
            outcome="unavailable",
            detail=plan.why,
        )
        logger.info(f"call {self.session.info.call_sid}: no transfer ({plan.why}); offer message")

    async def _transfer(self, reason: str, trigger: str, plan: _Plan) -> None:
        session = self.session
        info = session.info
        db = session.db
        handoff_id = 0
        try:
            name, number, customer_id, proven = await self._caller()
            lines, tools = conversation_facts(session.messages())
            summary = build_summary(
                caller_name=name,
                caller_number=number,
                caller_proven=proven,
                reason=reason,
                trigger=trigger,
                caller_lines=lines,
                tools=tools,
            )
            handoff_id = await record_handoff(
                db,
                call_sid=info.call_sid,
                kind="transfer",
                trigger=trigger,
                reason=reason,
                summary=summary,
                target=plan.numbers[0],
                caller_name=name,
                caller_number=number,
                customer_id=customer_id,
                detail=f"ringing {', '.join(mask_phone(n) for n in plan.numbers)}",
            )
            await self._say_and_wait(phrases()["transfer_connecting"])
            action_url, whisper_url = transfer_urls(session.public_base(), handoff_id)
            body = twiml.transfer_dial(
                list(plan.numbers), action_url, whisper_url if plan.warm else "", DIAL_TIMEOUT_SECS
            )
            rest = self.desk.rest_for(info.account_sid)
            if rest is None:
                raise TwilioRestError(0, 0, "TWILIO_ACCOUNT_SID / TWILIO_AUTH_TOKEN not set")
            await rest.redirect(info.call_sid, body)
        except TwilioRestError as exc:
            await self._failed(handoff_id, exc)
            return
        except Exception as exc:
            logger.exception(f"call {info.call_sid}: transfer failed: {exc}")
            await self._failed(handoff_id, TwilioRestError(0, 0, f"{type(exc).__name__}: {exc}"))
            return
        await update_handoff(db, handoff_id, outcome="dialing", detail="call moved to <Dial>")
        logger.info(
            f"call {info.call_sid}: transferring ({'warm' if plan.warm else 'cold'}) to "
            f"{', '.join(mask_phone(n) for n in plan.numbers)}"
        )
        self.status = "transferred"
        session.conclude(Outcome.TRANSFERRED)
        await session.end()  # the call goes on at Twilio; only our media stream ends

    async def _failed(self, handoff_id: int, exc: TwilioRestError) -> None:
        session = self.session
        logger.error(f"call {session.info.call_sid}: transfer failed: {exc}")
        session.add_fault(f"transfer: {exc}")
        if handoff_id:
            await update_handoff(session.db, handoff_id, outcome="rest_error", detail=str(exc))
        self.blocked = "transfer failed"
        self.holding = False
        self.status = "idle"
        if exc.call_gone:
            session.conclude(Outcome.CALLER_HUNG_UP)
            await session.end()
            return
        await session.say(phrases()["transfer_failed"], to_model=True)

    async def _say_and_wait(self, text: str) -> None:
        """Say ``text`` and return once Twilio has played it (its mark came back), the caller
        talked over it, or the wait timed out."""
        session = self.session
        ledger = session.ledger
        closed, clears = ledger.closed_segments, session.clears
        await session.say(text)
        deadline = time.monotonic() + SYNTHESIS_TIMEOUT_SECS
        while time.monotonic() < deadline and session.clears == clears:
            if ledger.closed_segments > closed:  # it reached the phone: now let it play
                deadline = time.monotonic() + PLAYBACK_TIMEOUT_SECS
                break
            await asyncio.sleep(0.05)
        while time.monotonic() < deadline and session.clears == clears:
            played = not ledger.outstanding and not session.bot_speaking
            if ledger.closed_segments > closed and played:
                return
            await asyncio.sleep(0.05)
        if session.clears == clears:
            logger.warning(f"call {session.info.call_sid}: transfer sentence not confirmed played")
