"""A scripted OpenAI-compatible chat-completions server (the vendor we cannot reach).

Speaks the real protocol: POST /v1/chat/completions, streamed as server-sent
``chat.completion.chunk`` events with content deltas or tool-call deltas, then ``[DONE]``.
Rules map the caller's last words to a reply or a tool call; after a tool result it says the
tool's ``say`` sentence. Every request is kept for assertions.
"""

from __future__ import annotations

import asyncio
import json
import re
import threading
import time
import uuid
from dataclasses import dataclass, field
from typing import Any

import uvicorn
from fastapi import FastAPI, Request
from fastapi.responses import StreamingResponse


@dataclass
class Rule:
    pattern: str  # regex, matched case-insensitively against the last user message
    reply: str = ""
    tool: str = ""
    arguments: dict[str, Any] = field(default_factory=dict)
    first_token_delay: float = 0.0
    # More tool calls in the same answer, as (tool, arguments): a model's parallel tool calls.
    parallel: list[tuple[str, dict[str, Any]]] = field(default_factory=list)


@dataclass
class ScriptedLLM:
    rules: list[Rule]
    default_reply: str = "Sorry, could you say that again?"
    requests: list[dict[str, Any]] = field(default_factory=list)
    fail_next: int = 0  # answer the next N requests with HTTP 500
    hang_next: int = 0  # hang the next N requests (a provider timeout)
    first_token_delay: float = 0.0  # for every reply whose rule sets none (incl. after tools)
    token_interval: float = 0.0  # between streamed words, as a real model's token rate

    def decide(self, messages: list[dict[str, Any]]) -> Rule:
        last = messages[-1] if messages else {}
        if last.get("role") == "tool":
            try:
                say = json.loads(last.get("content") or "{}").get("say", "")
            except ValueError:
                say = ""
            return Rule(".*", reply=say or "Done.")
        user: dict[str, Any] = next((m for m in reversed(messages) if m.get("role") == "user"), {})
        text = user.get("content") or ""
        if isinstance(text, list):
            text = " ".join(p.get("text", "") for p in text if isinstance(p, dict))
        for rule in self.rules:
            if re.search(rule.pattern, text, re.I):
                return rule
        return Rule(".*", reply=self.default_reply)


def _chunk(cid: str, delta: dict[str, Any], finish: str | None = None) -> str:
    body = {
        "id": cid,
        "object": "chat.completion.chunk",
        "created": int(time.time()),
        "model": "scripted",
        "choices": [{"index": 0, "delta": delta, "finish_reason": finish}],
    }
    return f"data: {json.dumps(body)}\n\n"


def build_app(script: ScriptedLLM) -> FastAPI:
    app = FastAPI()

    @app.post("/v1/chat/completions")
    async def completions(request: Request) -> Any:
        body = await request.json()
        script.requests.append(body)
        if script.hang_next > 0:
            script.hang_next -= 1
            await asyncio.sleep(3600)
        if script.fail_next > 0:
            script.fail_next -= 1
            from fastapi.responses import JSONResponse

            return JSONResponse({"error": {"message": "scripted failure"}}, status_code=500)
        rule = script.decide(body.get("messages", []))
        cid = f"chatcmpl-{uuid.uuid4().hex[:12]}"

        async def stream() -> Any:
            delay = rule.first_token_delay or script.first_token_delay
            if delay:
                await asyncio.sleep(delay)
            yield _chunk(cid, {"role": "assistant", "content": ""})
            if rule.tool:
                for index, (tool, arguments) in enumerate(
                    [(rule.tool, rule.arguments), *rule.parallel]
                ):
                    call = {
                        "index": index,
                        "id": f"call_{uuid.uuid4().hex[:8]}",
                        "type": "function",
                        "function": {"name": tool, "arguments": json.dumps(arguments)},
                    }
                    yield _chunk(cid, {"tool_calls": [call]})
                yield _chunk(cid, {}, "tool_calls")
            else:
                for index, word in enumerate(re.findall(r"\S+\s*", rule.reply)):
                    if index and script.token_interval:
                        await asyncio.sleep(script.token_interval)
                    yield _chunk(cid, {"content": word})
                yield _chunk(cid, {}, "stop")
            yield "data: [DONE]\n\n"

        return StreamingResponse(stream(), media_type="text/event-stream")

    return app


class ServerThread:
    """Run an ASGI app with uvicorn on a free loopback port in a background thread."""

    def __init__(self, app: Any, port: int) -> None:
        self.port = port
        self.server = uvicorn.Server(
            uvicorn.Config(
                app,
                host="127.0.0.1",
                port=port,
                log_level="warning",
                ws="websockets",
                proxy_headers=False,  # as run.py: the app reads X-Forwarded-* (agent/forwarded.py)
            )
        )
        self.thread = threading.Thread(target=self.server.run, daemon=True)

    def __enter__(self) -> ServerThread:
        self.thread.start()
        deadline = time.time() + 900  # a local model warming up on a busy 2-core machine
        while not self.server.started:
            if time.time() > deadline or not self.thread.is_alive():
                raise RuntimeError("server did not start")
            time.sleep(0.05)
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=30)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"
