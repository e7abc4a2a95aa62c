"""The local model's ChatML prompt: the fixed prefix, the call's facts, the trimmed history.

Owns how OpenAI-style chat messages become the text Qwen reads: the instructions
(prompts/brain.md) with the enabled tools rendered compactly, the "Facts:" part of the
pipeline's system prompt, earlier replies and tool calls in the model's own one-line format,
and tool results as their spoken sentence. The history is trimmed HISTORY_STEP messages at a
time, so the prompt (and llama.cpp's cache of it) stays the same from turn to turn.
"""

from __future__ import annotations

import json
from typing import Any

from agent.prompts import load_text, without_tools
from tools.catalog import TOOL_NAMES

#: An OpenAI-style chat message or tool definition, as JSON.
Message = dict[str, Any]
Tool = dict[str, Any]

# The conversation the model sees: at most MAX_HISTORY_MESSAGES, trimmed HISTORY_STEP at a time.
# Each trim changes the prompt after the cached prefix, and the kept messages are evaluated
# again (~10 s on 2 cores); trimming in steps makes that rare instead of every turn.
MAX_HISTORY_MESSAGES = 20
HISTORY_STEP = 10
IM_START, IM_END = "<|im_start|>", "<|im_end|>"


def text_of(content: object) -> str:
    """A message's content as plain text (a list of parts is joined)."""
    if isinstance(content, list):
        return " ".join(str(p.get("text", "")) for p in content if isinstance(p, dict))
    return str(content or "")


def tool_say(content: object) -> tuple[str, bool]:
    """(sentence to say, ok) from a tool result message's content."""
    text = text_of(content)
    try:
        data = json.loads(text)
    except (ValueError, TypeError):
        return text.strip()[:300], True
    if isinstance(data, dict):
        return str(data.get("say") or "").strip(), bool(data.get("ok", True))
    return "", True


def call_facts(system: str) -> str:
    """The part of the pipeline's system prompt the small model needs: its facts section.

    The instructions written for large models would only dilute the brain's own, tighter ones
    (prompts/brain.md); prompts/system.md ends with a "Facts:" section for this reason.
    """
    marker = system.rfind("Facts:")
    return system[marker:].strip() if marker >= 0 else system.strip()


def render_tools(tools: list[Tool]) -> str:
    """One line per tool: ``- name(required, optional?): description``."""
    lines = []
    for tool in tools:
        function = tool["function"]
        params = function.get("parameters") or {}
        args = ", ".join(
            f"{k}{'' if k in (params.get('required') or []) else '?'}"
            for k in (params.get("properties") or {})
        )
        lines.append(f"- {function['name']}({args}): {function.get('description', '')}")
    return "\n".join(lines)


def as_line(message: Message) -> str:
    """An earlier assistant message in the same one-line format the model writes."""
    calls = message.get("tool_calls") or []
    if calls:
        function = calls[0].get("function", {})
        return f"call {function.get('name', '')} {function.get('arguments', '{}')}"
    return f"say: {text_of(message.get('content'))}"


def history_start(count: int) -> int:
    """The first of ``count`` messages the prompt keeps. It moves HISTORY_STEP messages at a
    time, so the prompt (and llama.cpp's cache of it) stays the same from turn to turn; between
    MAX_HISTORY_MESSAGES - HISTORY_STEP + 1 and MAX_HISTORY_MESSAGES messages are kept."""
    if count <= MAX_HISTORY_MESSAGES:
        return 0
    return ((count - MAX_HISTORY_MESSAGES - 1) // HISTORY_STEP + 1) * HISTORY_STEP


def prefix(tools: list[Tool]) -> str:
    """The fixed prefix: everything before the per-call system message."""
    enabled = {t["function"]["name"] for t in tools}
    disabled = [n for n in TOOL_NAMES if n not in enabled]
    # Rules and worked examples for tools this business switched off are left out.
    instructions = without_tools(load_text("brain.md"), disabled)
    instructions = instructions.replace("{tools}", render_tools(tools))
    return f"{IM_START}system\n{instructions}\n"


def build_prompt(messages: list[Message], tools: list[Tool], open_reply: bool = True) -> str:
    """The whole prompt for ``messages``; ``open_reply`` ends it with the assistant's turn open."""
    system = call_facts(
        "\n".join(
            text_of(m.get("content")) for m in messages if m.get("role") in ("system", "developer")
        )
    )
    history = [m for m in messages if m.get("role") not in ("system", "developer")]
    history = history[history_start(len(history)) :]
    while history and history[0].get("role") == "tool":
        history.pop(0)
    parts = [prefix(tools), "\n# This call\n", system.strip(), f"{IM_END}\n"]
    for message in history:
        role = message.get("role")
        if role == "user":
            parts.append(f"{IM_START}user\n{text_of(message.get('content')).strip()}{IM_END}\n")
        elif role == "assistant":
            parts.append(f"{IM_START}assistant\n{as_line(message)}{IM_END}\n")
        elif role == "tool":
            say, ok = tool_say(message.get("content"))
            parts.append(f"{IM_START}system\nTool {'result' if ok else 'failed'}: {say}{IM_END}\n")
    if open_reply:
        parts.append(f"{IM_START}assistant\n")
    return "".join(parts)


def priming_prompt(messages: list[Message], tools: list[Tool]) -> str:
    """What can be evaluated before the caller's next words: the conversation so far, and after
    a reply the opening of the caller's turn."""
    prompt = build_prompt(messages, tools, open_reply=False)
    if messages and messages[-1].get("role") == "assistant":
        prompt += f"{IM_START}user\n"  # the caller speaks next
    return prompt


def interim_prompt(messages: list[Message], tools: list[Tool], words: str) -> str:
    """The conversation so far with the caller's turn opened on ``words`` (an interim
    transcript, the turn not over): the request at the turn's end extends it with the last
    words and the turn's close."""
    return build_prompt(messages, tools, open_reply=False) + f"{IM_START}user\n{words.strip()}"
