"""One call as a state machine, free of pipecat: who is calling, what the caller heard, the
turns and tools recorded, and how the call ends (:class:`Outcome`).

The media pipeline (agent.pipeline) drives a session through its named methods
(``greeted``, ``caller_turn_stopped``, ``bot_turn_stopped``, ``caller_idle`` ...) and the
serializer through :class:`telephony.serializer.StreamHooks`; the session acts on the pipeline
only through :class:`CallPipe`. Tools reach it as :class:`tools.registry.CallControl`.

How a call ends is decided in one place, :meth:`CallSession.conclude` and
:attr:`CallSession.outcome`:

* a reason to end the call (``max_duration``, ``caller_silent``, ``transferred``,
  ``provider_fault``, ``server_shutdown``, ``error``, a transfer that found the caller gone)
  replaces the one before it;
* the caller hanging up counts only when nothing else ended the call: it turns ``completed``
  into ``caller_hung_up`` unless the agent was already saying goodbye (so a transfer, then the
  caller's hang-up, stays ``transferred``).

A call we placed (``CallInfo.direction`` outbound) is the same call with three differences: the
other party is the number we dialed, proven (we called the number on file); the agent is silent
until the machine verdict (:meth:`CallSession.wait_for_person`); and what it came to is reported
to the outbound ledger when it ends (agent.outbound.calls).
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Awaitable, Callable, Coroutine
from dataclasses import dataclass, field
from datetime import UTC, datetime
from enum import StrEnum
from pathlib import Path
from typing import Any, Protocol

from loguru import logger

from agent import metrics
from agent.call_record import RecordWriter, TurnTimings
from agent.outbound.calls import MACHINE_MESSAGE, PERSON, Briefing, brief
from agent.outbound.jobs import OutboundLedger
from agent.outbound.jobs import Outcome as CallOutcome
from agent.prompts import build_system_prompt, fill, opening, phrases, recording_notice, with_notice
from agent.recording import RecordingWriter
from agent.settings import Settings
from agent.texting import call_texts
from telephony.audio import CallRecording
from telephony.playback import PlaybackLedger
from telephony.sids import is_browser_call_sid, is_call_sid, shown_sid
from tools.catalog import TOOL_NAMES, tool_registry
from tools.domain.business import Business
from tools.domain.speech import say_number
from tools.registry import Invocation, ToolContext, ToolRegistry
from tools.store.business import load_business
from tools.store.calls import CallStore
from tools.store.customers import lookup_customer
from tools.store.db import Database

#: Twilio's StirVerstat values for a caller ID the carrier vouched for.
VERIFIED_CALLER_ID = frozenset({"TN-Validation-Passed-A", "TN-Validation-Passed-B"})
PIPELINE_RATE = 8000  # phone calls; a browser call runs at its own (16 kHz) rate
#: The recording goes to its file in chunks of this much audio (the rest of the call is on disk).
RECORDING_CHUNK_SECS = 1.0
#: Records and observations a live client is told about, under these event names.
_EVENT_KINDS = {
    "add_turn": "turn",
    "add_tool_call": "tool_call",
    "transcript": "transcript",
    "interim": "interim",  # the caller's words so far, while they speak
}
#: What an outbound call came to when these tools succeeded; the highest rank wins.
_TOOL_OUTCOMES = {
    "confirm_appointment": CallOutcome.CONFIRMED,
    "reschedule_appointment": CallOutcome.RESCHEDULED,
    "cancel_appointment": CallOutcome.CANCELLED,
    "stop_calling_me": CallOutcome.OPTED_OUT,
}
_OUTCOME_RANK = [CallOutcome.CONFIRMED, CallOutcome.RESCHEDULED, CallOutcome.CANCELLED]
#: How often an answered outbound call looks for the machine verdict (another worker's webhook
#: may have written it).
VERDICT_POLL_SECS = 0.2


class Outcome(StrEnum):
    """How a call ended, as stored in the call record (``calls.outcome``)."""

    COMPLETED = "completed"  # the agent (or the model's end_call) said goodbye
    CALLER_HUNG_UP = "caller_hung_up"
    CALLER_SILENT = "caller_silent"  # prompted, then hung up on
    MAX_DURATION = "max_duration"
    TRANSFERRED = "transferred"  # moved to a person; the call goes on at Twilio
    PROVIDER_FAULT = "provider_fault"  # a provider kept failing (agent.faults)
    SERVER_SHUTDOWN = "server_shutdown"  # ended by a draining server (agent.shutdown)
    ERROR = "error"  # the pipeline failed
    # Set by the store, never by a session:
    IN_PROGRESS = "in_progress"  # the record of a call still running
    INTERRUPTED = "interrupted"  # left open by a previous run of the server


def spoken_limit(secs: int) -> str:
    """A call's time limit as said before "limit": "five-minute", "ninety-second"."""
    if secs % 60 == 0:
        return f"{say_number(secs // 60)}-minute"
    return f"{say_number(secs)}-second"


@dataclass
class CallInfo:
    call_sid: str
    stream_sid: str = ""
    source: str = "twilio"  # twilio | browser
    from_number: str = ""
    to_number: str = ""
    account_sid: str = ""
    public_base: str = ""  # the base URL Twilio reached us on (FRONTDESK_PUBLIC_URL wins)
    resume_handoff: int = 0  # back from a transfer nobody answered (same CallSid)
    caller_verstat: str = ""  # Twilio's StirVerstat for from_number ("" when it sent none)
    direction: str = "inbound"  # outbound: a call we placed (to_number is the callee)
    outbound_job: int = 0  # outbound_calls.id of a call we placed

    @property
    def outbound(self) -> bool:
        return self.direction == "outbound"

    @property
    def customer_phone(self) -> str:
        """The other party's number: the caller's, or for a call we placed the one we dialed."""
        return self.to_number if self.outbound else self.from_number

    def __post_init__(self) -> None:
        """The sid names the call's record and recording file: a Twilio CallSid, or on the
        browser path a demo call id (telephony.sids); anything else is refused here too."""
        browser = self.source == "browser"
        if not (is_browser_call_sid if browser else is_call_sid)(self.call_sid):
            what = "browser call id (BR + 32 hex digits)" if browser else "Twilio CallSid"
            raise ValueError(f"call sid {shown_sid(self.call_sid)} is not a {what}")

    @property
    def caller_id_verified(self) -> bool:
        """Twilio verified the caller ID (STIR/SHAKEN attestation A or B)."""
        return self.caller_verstat in VERIFIED_CALLER_ID

    @property
    def demo(self) -> bool:
        """A browser demo call: its own time limit, and always an unknown caller (a browser
        has no caller ID and proves no number, whatever it sends)."""
        return self.source == "browser"

    @property
    def caller_id(self) -> str:
        """The number the call's tools may go by: the caller ID (E.164 from Twilio), or for a
        call we placed the number we dialed; "" for anonymous callers and every browser call."""
        number = self.customer_phone
        if self.demo or not number.startswith("+"):
            return ""
        return number


class CallPipe(Protocol):
    """What a session asks of its running media pipeline (agent.pipeline implements it)."""

    async def speak(self, text: str) -> None:
        """Synthesize and play ``text`` (not added to the model's context)."""
        ...

    async def interrupt(self) -> None:
        """Stop what the bot is saying now."""
        ...

    async def rerun_llm(self) -> None:
        """Ask the model again for a reply to the context as it is."""
        ...

    async def end(self) -> None:
        """End the pipeline once everything queued has been played."""
        ...

    async def cancel(self) -> None:
        """End the pipeline at once."""
        ...

    def messages(self) -> list[dict[str, Any]]:
        """The model's context (OpenAI format)."""
        ...

    def remember(self, text: str) -> None:
        """Add ``text`` to the model's context as the assistant's."""
        ...

    def send_event(self, message: dict[str, Any]) -> None:
        """Tell a client that shows the call (the browser demo) about ``message``; a no-op
        when the client takes no events."""
        ...


class Escalating(Protocol):
    """One call's escalation to a person (agent.escalation.Escalation)."""

    holding: bool  # a transfer is under way: the model is not asked again
    blocked: str  # why transfers are off for the rest of the call ("" when they are not)

    async def request_transfer(self, reason: str) -> tuple[str, dict[str, Any]]: ...

    async def escalate(self, reason: str, trigger: str) -> None: ...

    async def can_transfer(self) -> bool: ...

    def note_bot_turn(self, text: str) -> None:
        """Each complete model reply, as written ("" for a tool call)."""
        ...

    async def settle(self) -> None: ...


class FaultVoice(Protocol):
    """The call's provider-fault policy (agent.faults.FaultHandler), as the session uses it."""

    async def say_clip(self, name: str, *, remember: bool = False) -> None: ...

    async def close(self) -> None: ...


@dataclass(frozen=True)
class CallSetup:
    """What a call starts with: the config, the caller, the tools' context and the opening."""

    business: Business
    caller: dict[str, Any] | None
    tools: ToolContext
    system_prompt: str
    greeting: str
    earlier: list[dict[str, Any]] = field(default_factory=list)  # before an unanswered transfer


def record_heard_reply(
    messages: list[dict[str, Any]], heard: str, callers_before: int
) -> list[dict[str, Any]]:
    """Make the interrupted bot reply in ``messages`` read as what the caller actually heard.

    The reply answered the ``callers_before``-th caller message (and any tool calls after it).
    pipecat may have recorded it in full, in part, or (cut off in its first sentence) not at all;
    afterwards it is exactly the heard words, marked as cut off.
    """
    text = f"{heard} —(cut off)" if heard else "—(cut off before the caller heard anything)"
    index, seen = 0, 0
    while index < len(messages) and seen < callers_before:
        if _role(messages[index]) == "user":
            seen += 1
        index += 1
    while index < len(messages) and (
        _role(messages[index]) == "tool"
        or (_role(messages[index]) == "assistant" and messages[index].get("tool_calls"))
    ):
        index += 1
    if index < len(messages) and _role(messages[index]) == "assistant":
        return [*messages[:index], {"role": "assistant", "content": text}, *messages[index + 1 :]]
    return [*messages[:index], {"role": "assistant", "content": text}, *messages[index:]]


def _role(message: object) -> str:
    return str(message.get("role", "")) if isinstance(message, dict) else ""


def earlier_messages(call: dict[str, Any] | None, limit: int = 40) -> list[dict[str, Any]]:
    """The recorded turns of a call as LLM context messages (the newest ``limit``), so an agent
    that takes the caller back after a transfer knows the conversation so far."""
    messages = []
    for turn in (call or {}).get("turns", [])[-limit:]:
        text = str(turn.get("text") or "").strip()
        if text:
            role = "user" if turn.get("role") == "caller" else "assistant"
            messages.append({"role": role, "content": text})
    return messages


class CallSession:
    """One call's state and record. Implements StreamHooks (telephony) and CallControl (tools).

    ``escalation`` builds the call's escalation from the session (agent.escalation.Escalation);
    ``clock`` fixes the time of day the call sees (tests; None means real time).
    """

    def __init__(
        self,
        info: CallInfo,
        *,
        settings: Settings,
        db: Database,
        store: CallStore,
        escalation: Callable[[CallSession], Escalating],
        rate: int = PIPELINE_RATE,
        clock: Callable[[], datetime] | None = None,
        outbound: OutboundLedger | None = None,
    ) -> None:
        self.info = info
        self.outbound = outbound  # where a call we placed reports what it came to
        self.briefing: Briefing | None = None  # what the agent knows of the call it placed
        #: A call we placed is silent until the machine verdict says a person answered.
        self.awaiting_person = info.outbound
        self.outbound_outcome: CallOutcome | None = None
        self._over = False  # the media pipeline has ended
        self.clock = clock
        self.settings = settings
        self.db = db
        self.store = store
        self.rate = rate
        self.ledger = PlaybackLedger()
        self.recording = CallRecording(rate)
        self.recorder: RecordingWriter | None = None  # streams the recording to its file
        self.timings = TurnTimings()
        self.heard_correction: tuple[str, int] | None = None  # (heard words, caller turns before)
        self.registry: ToolRegistry = tool_registry()
        self.records: RecordWriter | None = None
        self.pipe: CallPipe | None = None  # set while the media pipeline runs
        self.faults: FaultVoice | None = None  # provider faults: apology, retry, offer
        self.bot_speaking = False
        self._speech_started = asyncio.Event()  # set at each start of the bot's speech
        self.clears = 0  # barge-ins so far
        self.facts: dict[str, Any] = {}  # the tools' per-call memory
        self.business: Business | None = None  # the config this call started with
        self._outcome = Outcome.COMPLETED
        self._ending = False
        self._caller_hung_up = False
        self._caller: dict[str, Any] | None = None  # the customer on file, if any
        self._tools: ToolContext | None = None  # what the tools get besides their arguments
        self._bot_turn_open = False  # between the assistant aggregator's turn start and stop
        self._last_heard: str | None = None  # what the caller heard of the open turn, if cut off
        self._idle_prompts = 0
        self._tasks: set[asyncio.Future[Any]] = set()
        self.escalation = escalation(self)

    # --- How the call ends (the rule, in one place) --------------------------------------------

    @property
    def outcome(self) -> Outcome:
        """How the call ends: the last reason given to :meth:`conclude`; a caller's hang-up only
        when nothing else ended the call and no goodbye was under way."""
        if self._outcome is Outcome.COMPLETED and self._caller_hung_up and not self._ending:
            return Outcome.CALLER_HUNG_UP
        return self._outcome

    def conclude(self, outcome: Outcome) -> None:
        """The call ends for ``outcome`` (replacing an earlier reason)."""
        self._outcome = outcome

    def caller_left(self) -> None:
        """The caller hung up (the stream stopped or the socket closed)."""
        self._caller_hung_up = True

    @property
    def ending(self) -> bool:
        """A goodbye is under way: the call ends once it has played."""
        return self._ending

    # --- Lifecycle ---------------------------------------------------------------------------

    async def run(self, media: Callable[[], Awaitable[None]]) -> None:
        """Open the call's record, run ``media`` (the pipeline) to its end, and always leave a
        finished record (outcome, recording) behind."""
        call_id = await self.store.start_call(
            call_sid=self.info.call_sid,
            stream_sid=self.info.stream_sid,
            source=self.info.source,
            from_number=self.info.from_number,
            to_number=self.info.to_number,
            providers=self.settings.provider_names(),
            direction=self.info.direction,
        )
        self.records = RecordWriter(self.store, call_id, listener=self.emit)
        if self.settings.recording:  # FRONTDESK_RECORDING=0: no audio is kept at all
            path = Path(self.settings.data_dir) / "recordings" / f"{self.info.call_sid}.wav"
            # One call, one recording: a call back from a transfer goes on in the same file.
            self.recorder = RecordingWriter(path, self.rate, resume=bool(self.info.resume_handoff))
        metrics.call_started()
        try:
            await media()
        except Exception as exc:
            self.conclude(Outcome.ERROR)
            logger.exception(f"call {self.info.call_sid} failed: {exc}")
            self.records.put("add_fault", fault=f"pipeline: {type(exc).__name__}: {exc}")
        finally:
            self._over = True
            await self.escalation.settle()
            if self.faults is not None:
                await self.faults.close()
            recording_path = await self._finish_recording()
            self.records.put(
                "finish_call", outcome=self.outcome.value, recording_path=recording_path
            )
            await self.records.close()
            metrics.call_ended(self.outcome.value)
            await self._report_outbound()

    async def prepare(self) -> CallSetup:
        """Load what the call starts with: the business config (kept for the whole call), the
        caller on file, the enabled tools, the system prompt and the opening words."""
        assert self.records is not None, "run() opens the call record first"
        business = self.business = await load_business(self.db)
        # Without texts the verification tools stay (the prompt, and the local model's cached
        # prefix, are the same for every call); their answers offer the other ways instead.
        texts = call_texts(self.settings, self.info.source)
        disabled = business.disabled_tools
        self.registry = tool_registry([n for n in TOOL_NAMES if n not in disabled])
        tools = self._tools = ToolContext(
            db=self.db,
            caller_phone=self.info.caller_id,
            # A call we placed reached the number on file: the callee is proven to own it.
            caller_id_verified=self.info.caller_id_verified or self.info.outbound,
            anonymous=self.info.demo,  # a browser call proves nothing, whatever it sends
            call_sid=self.info.call_sid,
            call=self,
            business=business,  # the whole call keeps the config it started with
            now=self.clock,
            texts=texts,
            placed_call=self.info.outbound,
        )
        self.facts = tools.facts
        caller = None
        proven = await tools.proven_phone()  # only a proven caller is greeted by name
        if proven:
            async with self.db.read() as conn:
                caller = await lookup_customer(conn, proven)
            if caller:
                self.records.put("set_customer", customer_id=caller["id"])
        self._caller = caller
        # The recording notice is in the first words (a call resumed after a transfer has
        # already said it).
        first_words = opening(business, caller, recording=self.settings.recording)
        purpose = ""
        if self.info.outbound:
            self.briefing = await self._brief(business)
            purpose = self.briefing.purpose
            first_words = self.briefing.opening
            if self.settings.recording:
                first_words = with_notice(first_words, recording_notice(business))
        earlier: list[dict[str, Any]] = []
        if self.info.resume_handoff:  # nobody answered the transfer: pick up where we left off
            earlier = earlier_messages(await self.store.get_call(self.info.call_sid))
            first_words = phrases()["transfer_no_answer"]
            self.escalation.blocked = "nobody answered"
        return CallSetup(
            business=business,
            caller=caller,
            tools=tools,
            system_prompt=build_system_prompt(
                business,
                caller,
                bool(self.info.caller_id),
                self.now(),
                proven=bool(proven),
                purpose=purpose,
            ),
            greeting=first_words,
            earlier=earlier,
        )

    async def _brief(self, business: Business) -> Briefing:
        """The briefing of the call we placed (its job, read back by CallSid)."""
        if self.outbound is None:
            raise RuntimeError("an outbound call needs the outbound ledger")
        job = await self.outbound.job_for_call(self.info.call_sid)
        if job is None or job.id != self.info.outbound_job:
            raise RuntimeError(f"outbound call {self.info.call_sid} has no job of ours")
        return await brief(self.db, business, job, self.now())

    async def wait_for_person(self) -> bool:
        """A call we placed: wait (silent) for the machine verdict, read from the database
        (the AMD webhook may have reached another worker), at most
        FRONTDESK_OUTBOUND_AMD_WAIT_SECS (then a person is assumed). True: a person answered,
        the agent may greet them. A machine whose greeting ended gets the voicemail message and
        the call ends (outcome voicemail); one that cannot take a message (still greeting, a
        fax) is hung up on at once (outcome failed)."""
        if self.outbound is None or self.briefing is None:
            self.awaiting_person = False
            return True
        job = self.briefing.job
        deadline = time.monotonic() + self.settings.outbound_amd_wait_secs
        verdict = ""
        while not verdict and time.monotonic() < deadline and not self._gone:
            verdict = await self.outbound.answered_by(job.id)
            if not verdict:
                await asyncio.sleep(VERDICT_POLL_SECS)
        if self._gone:
            return False
        if verdict in PERSON or not verdict:
            logger.info(f"outbound call {self.info.call_sid}: a person ({verdict or 'no verdict'})")
            self.awaiting_person = False
            await self.outbound.answered(job.id, self.info.call_sid)
            return True
        if verdict in MACHINE_MESSAGE:
            logger.info(f"outbound call {self.info.call_sid}: {verdict}; leaving a message")
            self.outbound_outcome = CallOutcome.VOICEMAIL
            await self.say(self.briefing.voicemail)
        else:
            logger.info(f"outbound call {self.info.call_sid}: {verdict}; hanging up")
            self.outbound_outcome = CallOutcome.FAILED
        await self.hang_up_after_speaking(f"answered by {verdict}")
        return False

    @property
    def _gone(self) -> bool:
        """Nobody is left to speak to: the callee hung up or the call ended."""
        return self._caller_hung_up or self._over

    async def _report_outbound(self) -> None:
        """Tell the ledger what the call we placed came to (see agent.outbound.calls). A call
        that ended before the verdict reports nothing: Twilio's completed status decides."""
        if self.outbound is None or self.briefing is None:
            return
        outcome = self.outbound_outcome
        if outcome is None and self.awaiting_person:
            return
        if outcome is None:
            broken = {Outcome.ERROR, Outcome.PROVIDER_FAULT, Outcome.SERVER_SHUTDOWN}
            outcome = CallOutcome.FAILED if self.outcome in broken else CallOutcome.COMPLETED
        try:
            await self.outbound.finished(
                self.briefing.job.id, self.info.call_sid, outcome, f"call: {self.outcome.value}"
            )
        except Exception as exc:  # Twilio's completed status records a fallback outcome
            logger.warning(f"outbound outcome not recorded: {type(exc).__name__}: {exc}")

    def _note_outbound_tool(self, name: str) -> None:
        """A tool that succeeded may decide what the call we placed came to."""
        found = _TOOL_OUTCOMES.get(name)
        if found is None or self.outbound_outcome is CallOutcome.OPTED_OUT:
            return
        current = self.outbound_outcome
        if (
            found is CallOutcome.OPTED_OUT
            or current not in _OUTCOME_RANK
            or _OUTCOME_RANK.index(found) >= _OUTCOME_RANK.index(current)
        ):
            self.outbound_outcome = found

    async def _finish_recording(self) -> str:
        """Write the rest of the recording and finish its file: its path ("" if it failed)."""
        if self.recorder is None:
            return ""
        self.recorder.write(self.recording.take_rest())
        return await self.recorder.close()

    # --- Driven by the pipeline ----------------------------------------------------------------

    def greeted(self) -> None:
        """The stream is up: the greeting's "voice to voice" counts from now."""
        self.timings = TurnTimings()
        self.timings.mark("speech_end")

    def caller_turn_started(self) -> None:
        self._idle_prompts = 0

    def caller_turn_stopped(self, text: str) -> None:
        """Record the caller's turn; bot timings are measured from it on."""
        timings = self.timings.caller_part()
        keep = {k: v for k, v in self.timings.values.items() if k in timings}
        self.timings = TurnTimings(dict(keep))
        if text and self.records is not None:
            self.records.put("add_turn", role="caller", text=text, timings=timings)

    def bot_turn_started(self) -> None:
        self._bot_turn_open, self._last_heard = True, None

    def bot_turn_stopped(self, text: str, interrupted: bool) -> None:
        """Record the bot's turn as the caller heard it; a turn with no words is no turn."""
        self._bot_turn_open = False
        heard, self._last_heard = self._last_heard, None
        if interrupted and heard:
            text = heard
        if text and self.records is not None:
            timings = self.timings.bot_part()
            self.records.put(
                "add_turn", role="bot", text=text, timings=timings, interrupted=interrupted
            )
            metrics.turn_timed(timings)

    async def caller_idle(self) -> None:
        """The caller said nothing for a while: ask if they are there, then say goodbye."""
        if self._ending or self.escalation.holding or self.awaiting_person:
            return
        self._idle_prompts += 1
        if self._idle_prompts <= self.settings.caller_idle_prompts:
            await self.say(phrases()["still_there"])
        else:
            self.conclude(Outcome.CALLER_SILENT)
            await self.say(phrases()["idle_goodbye"])
            await self.hang_up_after_speaking("caller silent")

    @property
    def max_call_secs(self) -> int:
        """The call's longest allowed duration: FRONTDESK_DEMO_MAX_CALL_SECS for a browser demo
        call, FRONTDESK_MAX_CALL_SECS for a phone call."""
        if self.info.demo:
            return self.settings.demo_max_call_secs
        return self.settings.max_call_secs

    def time_limit_goodbye(self) -> str:
        """What the caller hears when :attr:`max_call_secs` is reached."""
        if self.info.demo:
            limit = spoken_limit(self.settings.demo_max_call_secs)
            return fill(phrases()["demo_max_duration"], limit=limit)
        return phrases()["max_duration"]

    async def timed_out(self) -> None:
        """The call reached its longest allowed duration (:attr:`max_call_secs`)."""
        self.conclude(Outcome.MAX_DURATION)
        await self.say(self.time_limit_goodbye())
        await self.hang_up_after_speaking("max duration")

    async def run_tool(self, name: str, arguments: Any) -> Invocation:
        """Run one tool call to its end and record it (and a customer it identified)."""
        assert self.records is not None, "run() opens the call record first"
        assert self._tools is not None, "prepare() sets the tools' context first"
        invocation = await self.registry.invoke(self._tools, name, arguments)
        self.records.put(
            "add_tool_call",
            name=invocation.name,
            arguments=invocation.arguments,
            result=invocation.payload,
            ok=invocation.ok,
            error=invocation.error,
            duration_ms=invocation.duration_ms,
        )
        known = invocation.error != "unknown_tool"  # a name the model made up is no label
        result = invocation.error.partition(":")[0] or "ok"
        metrics.tool_called(invocation.name if known else "unknown", result)
        if invocation.ok and self.info.outbound:
            self._note_outbound_tool(invocation.name)
        if self.facts.get("customer_id") and not (self._caller or {}).get("id"):
            self.records.put("set_customer", customer_id=self.facts["customer_id"])
        return invocation

    # --- StreamHooks (called by the serializer, synchronously) --------------------------------

    def on_caller_audio(self, pcm: bytes) -> None:
        if self.recorder is None:
            return  # not recording
        self.recording.add_caller(pcm)
        if self.recording.ready_bytes >= RECORDING_CHUNK_SECS * self.rate * 4:  # stereo 16-bit
            self.recorder.write(self.recording.take_ready())

    def on_bot_audio(self, pcm: bytes) -> None:
        if self.recorder is not None:
            self.recording.add_bot(pcm)
        self.timings.mark("first_audio_sent")

    def on_mark(self, name: str) -> None:
        if not self.ledger.acknowledge(name):
            logger.debug(f"call {self.info.call_sid}: unknown mark {name!r}")

    def on_clear(self) -> None:
        self.clears += 1
        metrics.barge_in()
        self.recording.clear_bot()
        heard, cut_off = self.ledger.interrupt()
        if not cut_off:
            return
        if self.pipe is not None:
            callers = sum(1 for m in self.pipe.messages() if _role(m) == "user")
            if self.heard_correction is None or self.heard_correction[1] != callers:
                self.heard_correction = (heard, callers)
        if self._bot_turn_open:
            self._last_heard = heard  # the open turn is recorded as heard when it stops
        elif self.records is not None:
            # The reply's text was complete (and recorded) but its audio was still playing.
            self.records.put("cut_off_last_bot_turn", heard=heard)

    def on_dtmf(self, digit: str) -> None:
        logger.info(f"call {self.info.call_sid}: DTMF {digit}")
        if digit == "0":
            self.spawn(self.escalate("caller pressed 0 for a person", "dtmf"))

    def on_stop(self) -> None:
        self.caller_left()

    # --- Live events (for a client that shows the call, such as the browser demo) -----------

    def emit(self, kind: str, **data: Any) -> None:
        """Forward a record or transcript to the client, if it takes events.

        Faults go out without their text (internals stay in the log); other kinds are dropped.
        """
        if self.pipe is None:
            return
        if kind == "add_fault":
            message: dict[str, Any] = {"kind": "fault"}
        elif kind in _EVENT_KINDS:
            message = {**data, "kind": _EVENT_KINDS[kind]}
        else:
            return
        self.pipe.send_event(message)

    # --- CallControl (called by tools) -----------------------------------------------------------

    async def request_transfer(self, reason: str) -> tuple[str, dict[str, Any]]:
        return await self.escalation.request_transfer(reason)

    async def escalate(self, reason: str, trigger: str) -> None:
        """Hand the caller to a person (warm/cold transfer) or, when nobody can take the call,
        offer to take a message. ``trigger``: dtmf | misunderstood | provider_failure | ..."""
        await self.escalation.escalate(reason, trigger)

    async def request_hangup(self, reason: str) -> None:
        """A tool ends the call (CallControl): the reply to that tool (its goodbye) is still
        to come, so the call ends once that reply has started and played."""
        self._begin_ending(reply_to_come=True)

    async def hang_up_after_speaking(self, reason: str) -> None:
        """End the call once what is being said (already queued) has played."""
        self._begin_ending(reply_to_come=False)

    def _begin_ending(self, *, reply_to_come: bool) -> None:
        """Mark the call as ending; a client that shows the call is told how it ends (an
        ``ending`` event with the outcome)."""
        self._ending = True
        if self.pipe is not None:
            self.pipe.send_event({"kind": "ending", "outcome": self.outcome.value})
        if reply_to_come:
            self._speech_started.clear()
        self._tasks.add(task := asyncio.create_task(self._end_after_speaking(reply_to_come)))
        task.add_done_callback(self._tasks.discard)

    async def _end_after_speaking(
        self, reply_to_come: bool, timeout: float = 15.0, reply_wait: float = 5.0
    ) -> None:
        """Let the goodbye play out (marks acknowledged), then end the pipeline. With
        ``reply_to_come`` (a tool asked to hang up) the reply to that tool, a model round trip
        and a synthesis away, must start first: for at most ``reply_wait`` seconds."""
        deadline = time.monotonic() + timeout
        if reply_to_come:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._speech_started.wait(), reply_wait)
        await asyncio.sleep(0.5)
        while time.monotonic() < deadline:
            if self.ledger.outstanding == 0 and not self.bot_speaking:
                break
            await asyncio.sleep(0.1)
        await self.end()

    def bot_started_speaking(self) -> None:
        """The bot's speech started (a reply or a phrase reached the TTS)."""
        self.bot_speaking = True
        self._speech_started.set()

    async def end_politely(self, clip: str, outcome: Outcome) -> None:
        """Say a pre-synthesized goodbye (agent.faults) and end the call with ``outcome``."""
        if self._ending:
            return
        self.conclude(outcome)
        if self.faults is not None:
            await self.faults.say_clip(clip)
        await self.hang_up_after_speaking(outcome.value)

    async def end(self) -> None:
        """End the pipeline once what is queued has played."""
        if self.pipe is not None:
            await self.pipe.end()

    async def cancel(self) -> None:
        """End the pipeline at once (a goodbye that could not finish)."""
        if self.pipe is not None:
            await self.pipe.cancel()

    # --- For agent/escalation.py and agent/faults.py ------------------------------------------

    def spawn(self, work: Coroutine[Any, Any, Any]) -> None:
        """Run a coroutine alongside the pipeline, keeping a reference until it is done."""
        self._tasks.add(task := asyncio.ensure_future(work))
        task.add_done_callback(self._tasks.discard)
        task.add_done_callback(self._log_failure)

    def _log_failure(self, task: asyncio.Future[Any]) -> None:
        if not task.cancelled() and task.exception() is not None:
            error = task.exception()
            logger.opt(exception=error).error(f"call {self.info.call_sid}: task failed: {error}")
            self.add_fault(f"task: {type(error).__name__}: {error}")

    async def say(self, text: str, *, to_model: bool = False) -> None:
        """Speak a fixed sentence (no LLM) and record it as a bot turn; with ``to_model`` it
        joins the LLM context too (the model continues the conversation from it)."""
        if self.pipe is None or self.records is None:
            return
        if to_model:
            self.pipe.remember(text)
        await self.pipe.speak(text)
        self.records.put("add_turn", role="bot", text=text, timings={"fixed_phrase": 1.0})

    async def stop_talking(self) -> None:
        """Cut the bot off if it is saying (or about to play) anything."""
        if self.pipe is not None and (self.bot_speaking or self.ledger.outstanding):
            await self.pipe.interrupt()

    def messages(self) -> list[dict[str, Any]]:
        return self.pipe.messages() if self.pipe is not None else []

    def now(self) -> datetime:
        """The time of day the call sees (opening hours, callbacks)."""
        return self.clock() if self.clock is not None else datetime.now(UTC)

    async def proven_phone(self) -> str:
        """The number the caller is proven to own (``ToolContext.proven_phone``); "" before
        :meth:`prepare` or when none."""
        return await self._tools.proven_phone() if self._tools is not None else ""

    def public_base(self) -> str:
        return self.settings.public_url or self.info.public_base

    def add_fault(self, fault: str) -> None:
        if self.records is not None:
            self.records.put("add_fault", fault=fault)
