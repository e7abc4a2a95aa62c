"""The routing policy around the model's line: what a 1.5B model needs to be a dependable
receptionist.

Owns: which tools the model may choose now (prerequisites), arguments it must have heard
(grounding, else it chooses again without that tool), parsing its line, the filler said as soon
as a tool is picked, a tool result's own sentence as the reply, and a shared goodbye ending the
call. :func:`respond` applies all of it to a :class:`LineSource`.
"""

from __future__ import annotations

import json
import re
from collections.abc import AsyncGenerator, Callable
from contextlib import aclosing
from dataclasses import dataclass, field
from typing import Any, Protocol

from loguru import logger

from agent.brain.prompt import Message, Tool, text_of, tool_say
from agent.prompts import phrases
from tools.catalog import FILLER_TOOLS

# A tool the model may call only after another ran in this call: booking is for a time that
# was offered (the instructions say so; a 1.5B model hearing "book" forgets it), and a code is
# checked only once one was sent (not any digits the caller says).
PREREQUISITES = {"book_appointment": "check_availability", "verify_code": "send_verification_code"}
# Arguments the model must take from the conversation, never invent: a 1.5B model asked "are
# you open on Sundays?" calls check_availability for a "haircut" nobody mentioned.
GROUNDED_ARGUMENTS = {"check_availability": ("service",)}


@dataclass(frozen=True)
class Say:
    """The model's line was a reply."""

    text: str


@dataclass(frozen=True)
class Call:
    """The model's line was a tool call."""

    tool: str
    arguments: dict[str, Any] = field(default_factory=dict)


Turn = Say | Call


class LineSource(Protocol):
    """What the policy needs from the model."""

    def line(
        self, messages: list[Message], tools: list[Tool], excluded: frozenset[str]
    ) -> AsyncGenerator[str, None]:
        """The model's line for ``messages``, piece by piece; ``excluded`` tools stay in the
        prompt but cannot be chosen. Closing the iterator early stops the generation."""
        ...

    def prime_later(self, messages: list[Message], tools: list[Tool]) -> None:
        """Evaluate ``messages`` into the cache in the background."""

    def prime_interim(self, messages: list[Message], tools: list[Tool], words: str) -> None:
        """Evaluate ``messages`` and the caller's words so far (``words``, the turn not over)
        into the cache in the background."""


def routable_tools(messages: list[Message], tools: list[Tool]) -> list[Tool]:
    """The tools the model may choose now: those whose prerequisite ran earlier in the call.

    The whole conversation counts, not just the trimmed window the model sees.
    """
    ran = {
        call.get("function", {}).get("name")
        for message in messages
        if message.get("role") == "assistant"
        for call in message.get("tool_calls") or []
    }
    return [
        t
        for t in tools
        if PREREQUISITES.get(t["function"]["name"], t["function"]["name"]) in ran
        or t["function"]["name"] not in PREREQUISITES
    ]


def ungrounded_arguments(call: Call, messages: list[Message]) -> list[str]:
    """The arguments of ``call`` that must come from the conversation (GROUNDED_ARGUMENTS) but
    share no word with it: the caller's words, and the bot's since the caller first spoke (the
    greeting does not count; it names the business, not what the caller wants)."""
    wanted = GROUNDED_ARGUMENTS.get(call.tool, ())
    values = {name: call.arguments.get(name) for name in wanted}
    if not any(isinstance(v, str) and v.strip() for v in values.values()):
        return []
    heard: set[str] = set()
    caller_spoke = False
    for message in messages:
        role = message.get("role")
        caller_spoke = caller_spoke or role == "user"
        if role == "user" or (role == "assistant" and caller_spoke):
            heard.update(_content_words(text_of(message.get("content"))))
    return [
        name
        for name, value in values.items()
        if isinstance(value, str) and value.strip() and not _shares_a_word(value, heard)
    ]


_STOP_WORDS = frozenset(
    "the and for you your are can could would what when with any have has this that there "
    "our out get got want like need just please some about from into".split()
)


def _content_words(text: str) -> set[str]:
    return {w for w in re.findall(r"[a-z]+", text.lower()) if len(w) >= 3} - _STOP_WORDS


def _shares_a_word(value: str, heard: set[str]) -> bool:
    """A word of ``value`` was heard, allowing for inflection and compounds ("cut" in
    "haircut", "colour" for "coloring")."""
    return any(
        w in h or h in w or (len(w) >= 4 and len(h) >= 4 and w[:4] == h[:4])
        for w in _content_words(value)
        for h in heard
    )


def parse_turn(raw: str, tools: list[Tool]) -> Turn:
    """Parse the model's line; a malformed or truncated line becomes a polite re-ask."""
    raw = raw.strip()
    if raw.startswith("say:"):
        return Say(raw[4:].strip() or phrases()["not_understood"])
    match = re.match(r"call (\w+) (\{.*\})\s*$", raw, re.S)
    names = {t["function"]["name"] for t in tools}
    if match and match.group(1) in names:
        try:
            arguments = json.loads(match.group(2))
        except ValueError:
            arguments = None
        if isinstance(arguments, dict):
            return Call(match.group(1), arguments)
    # What the model wrote may repeat what the caller said: its text only at DEBUG.
    logger.warning(f"local LLM produced an unusable line ({len(raw)} characters)")
    logger.debug(f"unusable line: {raw[:200]!r}")
    return Say(phrases()["not_understood"])


_FAREWELL = re.compile(
    r"\b(good ?bye|bye|see you|have a (good|great|nice) (day|one|evening|night|weekend)|"
    r"that'?s (all|everything)|take care)\b",
    re.I,
)


def is_farewell(text: str) -> bool:
    return bool(_FAREWELL.search(text or ""))


def wants_filler(tool_name: str) -> bool:
    """Whether the caller hears the filler while ``tool_name`` runs."""
    return tool_name in FILLER_TOOLS


def _said_since_caller(messages: list[Message], test: Callable[[str], bool]) -> bool:
    for message in reversed(messages):
        if message.get("role") == "user":
            return False
        if message.get("role") == "assistant" and test(text_of(message.get("content"))):
            return True
    return False


def _last_user_text(messages: list[Message]) -> str:
    for message in reversed(messages):
        if message.get("role") == "user":
            return text_of(message.get("content"))
    return ""


async def respond(
    model: LineSource, messages: list[Message], tools: list[Tool]
) -> AsyncGenerator[str | Call, None]:
    """The answer to ``messages``: text to speak as it streams (a str), or one :class:`Call`.

    A tool turn may first yield the filler phrase, as soon as the tool is chosen.
    """
    answer = (
        _relay_tool_result(model, messages, tools)
        if messages and messages[-1].get("role") == "tool"
        else _decide(model, messages, tools)
    )
    async with aclosing(answer):  # a consumer that stops early stops the generation
        async for event in answer:
            yield event


async def _relay_tool_result(
    model: LineSource, messages: list[Message], tools: list[Tool]
) -> AsyncGenerator[str | Call, None]:
    """After a tool ran: its ``say`` (the model is not asked), unless it is a second goodbye."""
    say, _ok = tool_say(messages[-1].get("content"))
    reply = say or phrases()["not_understood"]
    if is_farewell(reply) and _said_since_caller(messages, is_farewell):
        return  # the goodbye was already spoken before the call ended
    yield reply
    model.prime_later([*messages, {"role": "assistant", "content": reply}], tools)


@dataclass
class _Line:
    """One decoded line as it streams: what was decoded, how much of a reply was spoken, and
    whether the filler was said (once per request, however often a line is decoded again)."""

    announced: bool = False
    raw: str = ""
    emitted: int = 0


async def _decode(
    model: LineSource,
    messages: list[Message],
    tools: list[Tool],
    excluded: frozenset[str],
    line: _Line,
) -> AsyncGenerator[str, None]:
    """Stream one line from the model into ``line``, yielding a reply's text as it grows and
    (unless already said) the filler as soon as a tool is chosen."""
    pieces = model.line(messages, tools, excluded)
    try:
        async for piece in pieces:
            line.raw += piece
            if line.raw.startswith("say:"):
                reply = line.raw[4:].lstrip()
                if len(reply) > line.emitted:
                    yield reply[line.emitted :]
                    line.emitted = len(reply)
            elif not line.announced and (started := re.match(r"call (\w+)( |$)", line.raw)):
                # The model has chosen a tool (the decoder writes its name whole); its
                # arguments take a moment more. Say the filler now: no silence meanwhile.
                if wants_filler(started.group(1)):
                    line.announced = True
                    yield phrases()["filler"]
    finally:
        await pieces.aclose()  # a consumer that stops early stops the generation


async def _decide(
    model: LineSource, messages: list[Message], tools: list[Tool]
) -> AsyncGenerator[str | Call, None]:
    """The model's turn: a reply streamed as it is decoded, or a tool call whose arguments
    the caller really gave (a tool with invented arguments is excluded and the model asked
    again)."""
    routable = {t["function"]["name"] for t in routable_tools(messages, tools)}
    excluded = frozenset(t["function"]["name"] for t in tools) - routable
    line = _Line()
    while True:
        line = _Line(announced=line.announced)
        async with aclosing(_decode(model, messages, tools, excluded, line)) as texts:
            async for text in texts:
                yield text
        turn = parse_turn(line.raw, tools)
        if isinstance(turn, Say) or not (invented := ungrounded_arguments(turn, messages)):
            break
        # Choose again without that tool; the prompt, and so its cache, stay as they are.
        logger.info(f"local LLM: {turn.tool} with arguments nobody said; choosing again")
        logger.debug(f"invented arguments: {invented}")
        excluded |= {turn.tool}
    if not isinstance(turn, Say):
        yield turn
        return
    model.prime_later([*messages, {"role": "assistant", "content": turn.text}], tools)
    if is_farewell(turn.text) and is_farewell(_last_user_text(messages)):
        if any(t["function"]["name"] == "end_call" for t in tools):
            # The caller said goodbye and so did the model: end the call, politely.
            yield Call("end_call", {"reason": "caller said goodbye"})
            return
    if line.emitted == 0:
        yield turn.text
