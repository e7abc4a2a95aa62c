"""The offline brain: Qwen2.5-Coder-1.5B on llama.cpp behind an OpenAI-compatible endpoint.

The pipeline talks to it with pipecat's OpenAILLMService, exactly as it talks to a cloud model.
What makes a 1.5B model a dependable receptionist:

- Output is constrained to one line: ``say: <reply>`` or ``call <tool> <json args>``, with one
  branch per enabled tool and each tool's arguments following its schema (agent/decoding.py).
  The first decision (say or call) is read from the prompt's own logits, a plain reply then
  streams at the model's full speed, the tool is known (and the filler said) one pass later,
  and a tool call's fixed parts are fed in batches.
- The fixed prefix (instructions, tool list, worked examples) is identical for every call and
  evaluated at start-up; llama.cpp reuses it from the KV cache.
- After a tool result, the tool's own ``say`` sentence is the reply: grounded and instant.
- The conversation in the prompt is trimmed ten messages at a time (11-20 kept), so the cached
  prompt survives most turns of a long call.
"""

from __future__ import annotations

import asyncio
import ctypes
import hashlib
import json
import re
import secrets
import threading
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from fastapi import APIRouter, HTTPException, Request
from fastapi.responses import JSONResponse, StreamingResponse
from loguru import logger

from agent.decoding import Decoder, LlamaModel, Vocabulary, decode_line
from agent.prompts import load_text, phrases, without_tools
from agent.settings import Settings

# The conversation the model sees: at most MAX_HISTORY_MESSAGES, trimmed HISTORY_STEP at a time.
# Each trim changes the prompt after the cached prefix, and the kept messages are evaluated
# again (~10 s on 2 cores); trimming in steps makes that rare instead of every turn.
MAX_HISTORY_MESSAGES = 20
HISTORY_STEP = 10
# A tool the model may call only after another ran in this call: booking is for a time that
# was offered (the instructions say so; a 1.5B model hearing "book" forgets it).
PREREQUISITES = {"book_appointment": "check_availability"}
# Arguments the model must take from the conversation, never invent: a 1.5B model asked "are
# you open on Sundays?" calls check_availability for a "haircut" nobody mentioned.
GROUNDED_ARGUMENTS = {"check_availability": ("service",)}
IM_START, IM_END = "<|im_start|>", "<|im_end|>"


# --- Prompt ------------------------------------------------------------------------------------


def call_facts(system: str) -> str:
    """The part of the pipeline's system prompt the small model needs: its facts section.

    The instructions written for large models would only dilute the brain's own, tighter ones
    (prompts/brain.md); prompts/system.md ends with a "Facts:" section for this reason.
    """
    marker = system.rfind("Facts:")
    return system[marker:].strip() if marker >= 0 else system.strip()


def render_tools(tools: list[dict[str, Any]]) -> str:
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


def _as_line(message: dict[str, Any]) -> str:
    """An earlier assistant message in the same one-line format the model writes."""
    calls = message.get("tool_calls") or []
    if calls:
        function = calls[0].get("function", {})
        return f"call {function.get('name', '')} {function.get('arguments', '{}')}"
    return f"say: {_text(message.get('content'))}"


def _text(content: Any) -> str:
    if isinstance(content, list):
        return " ".join(str(p.get("text", "")) for p in content if isinstance(p, dict))
    return str(content or "")


def _tool_say(content: Any) -> tuple[str, bool]:
    """(sentence to say, ok) from a tool result message."""
    text = _text(content)
    try:
        data = json.loads(text)
    except (ValueError, TypeError):
        return text.strip()[:300], True
    if isinstance(data, dict):
        return str(data.get("say") or "").strip(), bool(data.get("ok", True))
    return "", True


@dataclass
class Turn:
    """What the endpoint decided for one request."""

    kind: str  # "say" | "call"
    text: str = ""
    tool: str = ""
    arguments: dict[str, Any] | None = None


class LocalBrain:
    """Owns the llama.cpp model; one generation at a time (two cores)."""

    def __init__(
        self, llama: Any, model_name: str = "frontdesk-local", model_path: str = ""
    ) -> None:
        self.llama = llama
        self.model_path = model_path
        self.model_name = model_name
        self._lock = threading.Lock()
        self._model = LlamaModel(llama)
        self._vocabulary: Vocabulary | None = None
        self._priming: threading.Thread | None = None

    @classmethod
    def load(cls, settings: Settings) -> LocalBrain:
        from llama_cpp import Llama

        from agent import install

        data_dir = Path(settings.data_dir).resolve()
        path = (
            Path(settings.llm_model_path)
            if settings.llm_model_path
            else install.model_path(data_dir)
        )
        if not path.exists():
            path = install.ensure_model(data_dir)
        started = time.perf_counter()
        llama = Llama(
            model_path=str(path),
            n_ctx=settings.llm_context_tokens,
            n_threads=settings.llm_threads,
            n_threads_batch=settings.llm_threads,
            n_batch=512,
            verbose=False,
        )
        logger.info(f"loaded local LLM {path.name} in {time.perf_counter() - started:.1f}s")
        return cls(llama, model_path=str(path))

    # The fixed prefix: everything before the per-call system message.
    def prefix(self, tools: list[dict[str, Any]]) -> str:
        from tools.catalog import TOOL_NAMES

        enabled = {t["function"]["name"] for t in tools}
        disabled = [n for n in TOOL_NAMES if n not in enabled]
        # Rules and worked examples for tools this business switched off are left out.
        instructions = without_tools(load_text("brain.md"), disabled)
        instructions = instructions.replace("{tools}", render_tools(tools))
        return f"{IM_START}system\n{instructions}\n"

    def build_prompt(
        self, messages: list[dict[str, Any]], tools: list[dict[str, Any]], open_reply: bool = True
    ) -> str:
        system = call_facts(
            "\n".join(
                _text(m.get("content"))
                for m in messages
                if m.get("role") in ("system", "developer")
            )
        )
        history = [m for m in messages if m.get("role") not in ("system", "developer")]
        history = history[history_start(len(history)) :]
        while history and history[0].get("role") == "tool":
            history.pop(0)
        parts = [self.prefix(tools), "\n# This call\n", system.strip(), f"{IM_END}\n"]
        for message in history:
            role = message.get("role")
            if role == "user":
                parts.append(f"{IM_START}user\n{_text(message.get('content')).strip()}{IM_END}\n")
            elif role == "assistant":
                parts.append(f"{IM_START}assistant\n{_as_line(message)}{IM_END}\n")
            elif role == "tool":
                say, ok = _tool_say(message.get("content"))
                parts.append(
                    f"{IM_START}system\nTool {'result' if ok else 'failed'}: {say}{IM_END}\n"
                )
        if open_reply:
            parts.append(f"{IM_START}assistant\n")
        return "".join(parts)

    def _decoder(self) -> Decoder:
        if self._vocabulary is None:
            self._vocabulary = Vocabulary.of(self._model)
        return Decoder(self._model, self._vocabulary)

    def warm_up(
        self,
        tools: list[dict[str, Any]],
        opening: list[dict[str, Any]] | None = None,
        cache_dir: Path | None = None,
    ) -> None:
        """Evaluate the fixed prefix (and a typical call opening) now, not on the first call.

        With ``cache_dir``, the evaluated KV cache is saved there and reused at the next start
        when the prompt is the same, so a restart does not pay for the prefix again.
        """
        started = time.perf_counter()
        prompt = self.build_prompt(opening or [], tools, open_reply=False)
        key = hashlib.sha256(
            f"{self.model_path}|{self.llama.n_ctx()}|{prompt}".encode()
        ).hexdigest()[:16]
        cached = cache_dir / f"prefix-{key}.npz" if cache_dir else None
        loaded = cached is not None and cached.exists() and self._load_kv(cached)
        evaluated = self.prime(opening or [], tools)
        if cached is not None and not loaded:
            self._save_kv(cached)
            for stale in cached.parent.glob("prefix-*.npz"):  # an older config's prefix
                if stale != cached:
                    stale.unlink(missing_ok=True)
        with self._lock:
            self._decoder()  # the vocabulary masks, computed once
        source = "restored from cache" if loaded else f"{evaluated} tokens evaluated"
        logger.info(
            f"local LLM prompt prefix ready ({source}) in {time.perf_counter() - started:.1f}s"
        )

    def _save_kv(self, path: Path) -> None:
        from llama_cpp import llama_cpp

        with self._lock:
            ctx = self.llama._ctx.ctx
            size = llama_cpp.llama_state_get_size(ctx)
            buffer = (ctypes.c_uint8 * int(size))()
            written = llama_cpp.llama_state_get_data(ctx, buffer, size)
            ids = np.asarray(self.llama.input_ids[: self.llama.n_tokens], dtype=np.int32)
            state = np.frombuffer(bytes(buffer)[: int(written)], dtype=np.uint8)
        path.parent.mkdir(parents=True, exist_ok=True)
        partial = path.with_suffix(".partial.npz")
        np.savez(partial, ids=ids, state=state)
        partial.replace(path)

    def _load_kv(self, path: Path) -> bool:
        from llama_cpp import llama_cpp

        try:
            with np.load(path, allow_pickle=False) as data:
                ids, state = data["ids"], data["state"]
            with self._lock:
                buffer = (ctypes.c_uint8 * len(state)).from_buffer_copy(state.tobytes())
                if llama_cpp.llama_state_set_data(self.llama._ctx.ctx, buffer, len(state)) != len(
                    state
                ):
                    raise RuntimeError("llama.cpp refused the saved state")
                self.llama.input_ids[: len(ids)] = ids
                self.llama.n_tokens = len(ids)
            return True
        except Exception as exc:
            logger.warning(f"ignoring the saved prompt cache {path.name}: {exc}")
            self.llama.n_tokens = 0
            return False

    def prime_later(self, messages: list[dict[str, Any]], tools: list[dict[str, Any]]) -> None:
        """Prime in a background thread (the model lock orders it before the next request)."""
        self._priming = threading.Thread(
            target=self._prime_quietly, args=(messages, tools), daemon=True
        )
        self._priming.start()

    def wait_primed(self, timeout: float | None = None) -> None:
        """Wait for background priming (a caller's next turn comes after it in a real call)."""
        if self._priming is not None:
            self._priming.join(timeout)

    def _prime_quietly(self, messages: list[dict[str, Any]], tools: list[dict[str, Any]]) -> None:
        try:
            self.prime(messages, tools)
        except Exception as exc:  # priming is an optimisation; never fail a call over it
            logger.warning(f"local LLM priming failed: {exc}")

    def prime(self, messages: list[dict[str, Any]], tools: list[dict[str, Any]]) -> int:
        """Evaluate the conversation so far into the KV cache while nobody waits for it.

        Called at call start (during the greeting) and after each reply (while it plays), so
        the next request only evaluates the caller's new words (after a reply, the opening of
        the caller's turn is evaluated too). Returns tokens evaluated.
        """
        prompt = self.build_prompt(messages, tools, open_reply=False)
        if messages and messages[-1].get("role") == "assistant":
            prompt += f"{IM_START}user\n"  # the caller speaks next
        tokens = self.llama.tokenize(prompt.encode(), add_bos=False, special=True)
        with self._lock:
            cached = self.llama.n_tokens
            current = list(self.llama._input_ids[:cached])
            common = 0
            for a, b in zip(current, tokens, strict=False):
                if a != b:
                    break
                common += 1
            if common == len(tokens):
                return 0
            self.llama.n_tokens = common
            self.llama.eval(tokens[common:])
            return len(tokens) - common

    def stream(
        self,
        messages: list[dict[str, Any]],
        tools: list[dict[str, Any]],
        excluded: frozenset[str] = frozenset(),
    ) -> Iterator[str]:
        """Blocking generator of the model's line, piece by piece (holding the model lock).

        ``excluded`` tools stay in the prompt (its cached prefix is unchanged) but cannot be
        chosen."""
        prompt = self.build_prompt(messages, tools)
        choosable = [
            t for t in routable_tools(messages, tools) if t["function"]["name"] not in excluded
        ]
        with self._lock:
            started = time.perf_counter()
            decoder = self._decoder()
            evaluated = self._model.sync(self._model.tokenize(prompt))
            confidences: list[float] = []
            line = ""
            for piece in decode_line(decoder, choosable, confidences):
                line += piece
                yield piece
            logger.debug(
                f"local LLM: {evaluated} prompt tokens, line {line[:80]!r}, "
                f"confidence {', '.join(f'{c:.2f}' for c in confidences)}, "
                f"{time.perf_counter() - started:.2f}s"
            )


def history_start(count: int) -> int:
    """The first of ``count`` messages the prompt keeps. It moves HISTORY_STEP messages at a
    time, so the prompt (and llama.cpp's cache of it) stays the same from turn to turn; between
    MAX_HISTORY_MESSAGES - HISTORY_STEP + 1 and MAX_HISTORY_MESSAGES messages are kept."""
    if count <= MAX_HISTORY_MESSAGES:
        return 0
    return ((count - MAX_HISTORY_MESSAGES - 1) // HISTORY_STEP + 1) * HISTORY_STEP


def routable_tools(
    messages: list[dict[str, Any]], tools: list[dict[str, Any]]
) -> list[dict[str, Any]]:
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


def ungrounded_arguments(turn: Turn, messages: list[dict[str, Any]]) -> list[str]:
    """The arguments of ``turn`` that must come from the conversation (GROUNDED_ARGUMENTS) but
    share no word with it: the caller's words, and the bot's since the caller first spoke (the
    greeting does not count; it names the business, not what the caller wants)."""
    wanted = GROUNDED_ARGUMENTS.get(turn.tool, ())
    values = {name: (turn.arguments or {}).get(name) for name in wanted}
    if not any(isinstance(v, str) and v.strip() for v in values.values()):
        return []
    heard: set[str] = set()
    caller_spoke = False
    for message in messages:
        role = message.get("role")
        caller_spoke = caller_spoke or role == "user"
        if role == "user" or (role == "assistant" and caller_spoke):
            heard.update(_content_words(_text(message.get("content"))))
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


def parse_turn(raw: str, tools: list[dict[str, Any]]) -> Turn:
    """Parse the model's line; a malformed or truncated line becomes a polite re-ask."""
    raw = raw.strip()
    if raw.startswith("say:"):
        text = raw[4:].strip()
        return Turn("say", text=text or phrases()["not_understood"])
    match = re.match(r"call (\w+) (\{.*\})\s*$", raw, re.S)
    names = {t["function"]["name"] for t in tools}
    if match and match.group(1) in names:
        try:
            arguments = json.loads(match.group(2))
        except ValueError:
            arguments = None
        if isinstance(arguments, dict):
            return Turn("call", tool=match.group(1), arguments=arguments)
    logger.warning(f"local LLM produced an unusable line: {raw[:200]!r}")
    return Turn("say", text=phrases()["not_understood"])


_FAREWELL = re.compile(
    r"\b(good ?bye|bye|see you|have a (good|great|nice) (day|one|evening|night|weekend)|"
    r"that'?s (all|everything)|take care)\b",
    re.I,
)


def is_farewell(text: str) -> bool:
    return bool(_FAREWELL.search(text or ""))


def wants_filler(tool_name: str) -> bool:
    from tools.catalog import tool_registry

    spec = tool_registry().specs.get(tool_name)
    return bool(spec and spec.filler)


def _said_since_caller(messages: list[dict[str, Any]], test: Any) -> bool:
    for message in reversed(messages):
        if message.get("role") == "user":
            return False
        if message.get("role") == "assistant" and test(_text(message.get("content"))):
            return True
    return False


def _last_user_text(messages: list[dict[str, Any]]) -> str:
    for message in reversed(messages):
        if message.get("role") == "user":
            return _text(message.get("content"))
    return ""


# --- OpenAI-compatible endpoint ----------------------------------------------------------------


def _chunk(completion_id: str, model: str, delta: dict[str, Any], finish: str | None = None) -> str:
    body = {
        "id": completion_id,
        "object": "chat.completion.chunk",
        "created": int(time.time()),
        "model": model,
        "choices": [{"index": 0, "delta": delta, "finish_reason": finish}],
    }
    return f"data: {json.dumps(body)}\n\n"


async def generate_events(
    brain: LocalBrain, messages: list[dict[str, Any]], tools: list[dict[str, Any]]
) -> AsyncIterator[tuple[str, Any]]:
    """Yield ("text", delta) while a reply streams, or one ("call", Turn) for a tool call."""
    if messages and messages[-1].get("role") == "tool":
        say, _ok = _tool_say(messages[-1].get("content"))
        reply = say or phrases()["not_understood"]
        if is_farewell(reply) and _said_since_caller(messages, is_farewell):
            return  # the goodbye was already spoken before the call ended
        yield "text", reply
        brain.prime_later([*messages, {"role": "assistant", "content": reply}], tools)
        return
    announced = False  # the filler was said (once per request, whatever is decoded again)
    excluded: frozenset[str] = frozenset()
    while True:
        raw = ""
        emitted = 0
        async for piece in _line_pieces(brain, messages, tools, excluded):
            raw += piece
            if raw.startswith("say:"):
                reply = raw[4:].lstrip()
                if len(reply) > emitted:
                    yield "text", reply[emitted:]
                    emitted = len(reply)
            elif not announced and (started := re.match(r"call (\w+)( |$)", raw)):
                # The model has chosen a tool (the decoder writes its name whole); its arguments
                # take a moment more. Say the filler now so the caller is not left in silence.
                if wants_filler(started.group(1)):
                    announced = True
                    yield "text", phrases()["filler"]
        turn = parse_turn(raw, tools)
        invented = ungrounded_arguments(turn, messages) if turn.kind == "call" else []
        if not invented:
            break
        # Choose again without that tool; the prompt, and so its cache, stay as they are.
        logger.info(f"local LLM: {turn.tool} with {invented} nobody said; choosing again")
        excluded |= {turn.tool}
    if turn.kind == "say":
        brain.prime_later([*messages, {"role": "assistant", "content": turn.text}], tools)
    if turn.kind == "say" and is_farewell(turn.text) and is_farewell(_last_user_text(messages)):
        if any(t["function"]["name"] == "end_call" for t in tools):
            # The caller said goodbye and so did the model: end the call, politely.
            turn = Turn("call", tool="end_call", arguments={"reason": "caller said goodbye"})
    if turn.kind == "call":
        yield "call", turn
    elif emitted == 0:
        yield "text", turn.text


async def _line_pieces(
    brain: LocalBrain,
    messages: list[dict[str, Any]],
    tools: list[dict[str, Any]],
    excluded: frozenset[str],
) -> AsyncIterator[str]:
    """The model's line piece by piece, decoded on a worker thread as it is generated."""
    loop = asyncio.get_running_loop()
    queue: asyncio.Queue[str | BaseException | None] = asyncio.Queue()

    def produce() -> None:
        try:
            for piece in brain.stream(messages, tools, excluded):
                loop.call_soon_threadsafe(queue.put_nowait, piece)
        except BaseException as exc:  # delivered to the consumer
            loop.call_soon_threadsafe(queue.put_nowait, exc)
        finally:
            loop.call_soon_threadsafe(queue.put_nowait, None)

    threading.Thread(target=produce, name="local-llm", daemon=True).start()
    while (piece := await queue.get()) is not None:
        if isinstance(piece, BaseException):
            raise piece
        yield piece


def build_brain_router(state: Any) -> APIRouter:
    router = APIRouter()

    @router.post("/v1/chat/completions", include_in_schema=False)
    async def chat_completions(request: Request) -> Any:
        auth = request.headers.get("authorization", "").encode()
        keys = [f"Bearer {state.local_llm_key}".encode()]
        if state.admin_token:
            keys.append(f"Bearer {state.admin_token.reveal()}".encode())
        if not any(secrets.compare_digest(auth, key) for key in keys):
            raise HTTPException(401, "local LLM endpoint: use the admin token as the API key")
        if state.brain is None:
            raise HTTPException(503, "local LLM not loaded")
        try:
            body = await request.json()
            messages = list(body["messages"])
        except (ValueError, KeyError, TypeError):
            raise HTTPException(400, "expected a JSON body with 'messages'") from None
        tools = [t for t in body.get("tools") or [] if t.get("type") == "function"]
        model = str(body.get("model") or state.brain.model_name)
        completion_id = f"chatcmpl-{uuid.uuid4().hex[:20]}"
        events = generate_events(state.brain, messages, tools)
        if not body.get("stream"):
            text, call = "", None
            async for kind, value in events:
                if kind == "text":
                    text += value
                else:
                    call = value
            message: dict[str, Any] = {"role": "assistant", "content": text or None}
            if call is not None:
                message["tool_calls"] = [_tool_call(call)]
            return JSONResponse(
                {
                    "id": completion_id,
                    "object": "chat.completion",
                    "created": int(time.time()),
                    "model": model,
                    "choices": [
                        {
                            "index": 0,
                            "message": message,
                            "finish_reason": "tool_calls" if call else "stop",
                        }
                    ],
                }
            )

        async def sse() -> AsyncIterator[str]:
            yield _chunk(completion_id, model, {"role": "assistant", "content": ""})
            finish = "stop"
            try:
                async for kind, value in events:
                    if kind == "text":
                        yield _chunk(completion_id, model, {"content": value})
                    else:
                        finish = "tool_calls"
                        call = _tool_call(value)
                        call["index"] = 0
                        yield _chunk(completion_id, model, {"tool_calls": [call]})
            except Exception as exc:
                logger.error(f"local LLM failed: {exc}")
                yield _chunk(completion_id, model, {"content": phrases()["apology"]})
            yield _chunk(completion_id, model, {}, finish)
            yield "data: [DONE]\n\n"

        return StreamingResponse(sse(), media_type="text/event-stream")

    return router


def _tool_call(turn: Turn) -> dict[str, Any]:
    return {
        "id": f"call_{uuid.uuid4().hex[:16]}",
        "type": "function",
        "function": {"name": turn.tool, "arguments": json.dumps(turn.arguments or {})},
    }
