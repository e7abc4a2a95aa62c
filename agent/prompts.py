"""Prompts and phrases: the text files in prompts/ with named {placeholders}, filled for a call
(the per-call system prompt, the greeting). Pipecat-free, so the admin console can preview them."""

from __future__ import annotations

import re
import string
from collections.abc import Iterable
from datetime import datetime
from functools import lru_cache
from pathlib import Path
from typing import Any

import yaml

from tools.domain.business import Business, describe_hours

PROMPTS_DIR = Path(__file__).resolve().parent.parent / "prompts"


class _Lenient(dict[str, Any]):
    def __missing__(self, key: str) -> str:
        return ""


def fill(template: str, **values: Any) -> str:
    """Fill {placeholders}; unknown ones become empty rather than failing a call."""
    return string.Formatter().vformat(template, (), _Lenient(values)).strip()


@lru_cache(maxsize=8)
def load_text(name: str) -> str:
    return (PROMPTS_DIR / name).read_text(encoding="utf-8")


@lru_cache(maxsize=1)
def phrases() -> dict[str, str]:
    data = yaml.safe_load(load_text("phrases.yaml"))
    return {str(k): str(v) for k, v in data.items()}


def without_tools(text: str, disabled: Iterable[str]) -> str:
    """``text`` minus the lines that name a disabled tool, so the model is never told to use one.

    A worked example ``call <tool> {...}`` goes together with the ``Caller:`` line before it.
    """
    names = [n for n in disabled if n]
    if not names:
        return text
    pattern = re.compile(r"\b(" + "|".join(re.escape(n) for n in names) + r")\b")
    kept: list[str] = []
    for line in text.split("\n"):
        if pattern.search(line):
            if line.startswith("call ") and kept and kept[-1].startswith("Caller:"):
                kept.pop()
            continue
        kept.append(line)
    return "\n".join(kept)


def build_system_prompt(
    business: Business,
    caller: dict[str, Any] | None,
    has_caller_id: bool,
    now: datetime | None = None,
    *,
    proven: bool = False,
    purpose: str = "",
) -> str:
    """The per-call system prompt. What varies between calls (the time, the caller) comes last,
    under "This call:", so a local model keeps everything before it cached across calls.
    ``now`` defaults to the current time; ``proven``: the caller ID proves who is calling
    (``caller`` is then their record, if any). ``purpose``: why we placed this call (an
    outbound call), added last."""
    now = business.local(now or datetime.now(business.tz))
    services = "; ".join(
        f"{s.name} ({s.duration_minutes} min, ${s.price_cents / 100:.0f})"
        for s in business.services
    )
    if caller and caller.get("name"):
        who = f"{caller['name']}, a returning customer (phone on file, confirmed)"
    elif has_caller_id and proven:
        who = "no name on file yet; phone number confirmed by caller ID"
    elif has_caller_id:
        who = (
            "phone number from caller ID, not confirmed; their existing bookings and details "
            "stay private until they confirm the number"
        )
    else:
        who = "no name on file and no caller ID; ask for a phone number before booking"
    facts = {
        "business_name": business.name,
        "address": business.address,
        "services": services,
        "hours": describe_hours(business),
    }
    prompt = fill(
        without_tools(load_text("system.md"), business.disabled_tools),
        **facts,
        now=f"{now:%A %B %d %Y, %I:%M %p}",
        caller=who,
        persona=fill(business.persona, **facts),  # the admin's persona may use the facts too
    )
    return f"{prompt}\n- Why you called them: {purpose}" if purpose else prompt


def recording_notice(business: Business) -> str:
    """What callers are told about recording: the admin's wording, or the default."""
    wording = business.recording_notice.strip() or phrases()["recording_notice"]
    return fill(wording, business_name=business.name)


def with_notice(greeting_text: str, notice: str) -> str:
    """``greeting_text`` telling the caller ``notice`` too: before the greeting's closing
    question (its last sentence, when that asks something and something comes before it),
    so a caller who answers at once has heard it; otherwise after the greeting."""
    sentences = re.findall(r"[^.!?]+[.!?]*\s*", greeting_text.strip())
    if len(sentences) > 1 and sentences[-1].rstrip().endswith("?"):
        return "".join(sentences[:-1]).rstrip() + f" {notice} " + sentences[-1].strip()
    return f"{greeting_text.strip()} {notice}".strip()


def opening(business: Business, caller: dict[str, Any] | None, *, recording: bool) -> str:
    """What a call says first: the :func:`greeting`, with the :func:`recording_notice` while
    calls are recorded (FRONTDESK_RECORDING)."""
    words = greeting(business, caller)
    return with_notice(words, recording_notice(business)) if recording else words


def greeting(business: Business, caller: dict[str, Any] | None) -> str:
    """The call's first words: the admin's greeting, or the phrase (by name for a known caller)."""
    texts = phrases()
    first = (caller or {}).get("name", "").split(" ")[0] if caller else ""
    if business.greeting and not first:
        return fill(business.greeting, business_name=business.name)
    key = "greeting_returning" if first else "greeting"
    return fill(texts[key], business_name=business.name, first_name=first)
