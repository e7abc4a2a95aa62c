"""The local brain served to other clients as OpenAI-compatible ``/v1/chat/completions``.

Owns the HTTP endpoint only (the call pipeline uses :mod:`agent.brain.service` in process):
chat completions, streamed (server-sent events) or not, behind the admin token.
"""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import AsyncIterator, Callable
from typing import Any

from fastapi import APIRouter, Depends, HTTPException, Request, Response
from fastapi.responses import JSONResponse, StreamingResponse
from loguru import logger

from agent.brain.policy import Call, LineSource, respond
from agent.brain.service import LOCAL_MODEL_NAME
from agent.prompts import phrases


def build_brain_router(
    brain: Callable[[], LineSource | None], require_admin: Callable[[Request], None]
) -> APIRouter:
    """The endpoint over ``brain()`` (None until the model is loaded), for admin-token holders."""
    router = APIRouter()

    @router.post(
        "/v1/chat/completions", include_in_schema=False, dependencies=[Depends(require_admin)]
    )
    async def chat_completions(request: Request) -> Response:
        model_source = brain()
        if model_source is None:
            raise HTTPException(503, "local LLM not loaded")
        try:
            body = await request.json()
            messages = list(body["messages"])
        except (ValueError, KeyError, TypeError):
            raise HTTPException(400, "expected a JSON body with 'messages'") from None
        tools = [t for t in body.get("tools") or [] if t.get("type") == "function"]
        model = str(body.get("model") or LOCAL_MODEL_NAME)
        completion_id = f"chatcmpl-{uuid.uuid4().hex[:20]}"
        events = respond(model_source, messages, tools)
        if not body.get("stream"):
            return JSONResponse(await _completion(completion_id, model, events))
        return StreamingResponse(
            _completion_chunks(completion_id, model, events), media_type="text/event-stream"
        )

    return router


async def _completion(
    completion_id: str, model: str, events: AsyncIterator[str | Call]
) -> dict[str, Any]:
    """The whole answer as one ``chat.completion``."""
    text, call = "", None
    async for event in events:
        if isinstance(event, Call):
            call = event
        else:
            text += event
    message: dict[str, Any] = {"role": "assistant", "content": text or None}
    if call is not None:
        message["tool_calls"] = [_tool_call(call)]
    return {
        "id": completion_id,
        "object": "chat.completion",
        "created": int(time.time()),
        "model": model,
        "choices": [
            {"index": 0, "message": message, "finish_reason": "tool_calls" if call else "stop"}
        ],
    }


async def _completion_chunks(
    completion_id: str, model: str, events: AsyncIterator[str | Call]
) -> AsyncIterator[str]:
    """The answer as server-sent ``chat.completion.chunk`` events, then ``[DONE]``."""
    yield _chunk(completion_id, model, {"role": "assistant", "content": ""})
    finish = "stop"
    try:
        async for event in events:
            if isinstance(event, Call):
                finish = "tool_calls"
                yield _chunk(completion_id, model, {"tool_calls": [_tool_call(event, 0)]})
            else:
                yield _chunk(completion_id, model, {"content": event})
    except Exception as exc:
        logger.error(f"local LLM failed: {exc}")
        yield _chunk(completion_id, model, {"content": phrases()["apology"]})
    yield _chunk(completion_id, model, {}, finish)
    yield "data: [DONE]\n\n"


def _chunk(completion_id: str, model: str, delta: dict[str, Any], finish: str | None = None) -> str:
    body = {
        "id": completion_id,
        "object": "chat.completion.chunk",
        "created": int(time.time()),
        "model": model,
        "choices": [{"index": 0, "delta": delta, "finish_reason": finish}],
    }
    return f"data: {json.dumps(body)}\n\n"


def _tool_call(call: Call, index: int | None = None) -> dict[str, Any]:
    body: dict[str, Any] = {
        "id": f"call_{uuid.uuid4().hex[:16]}",
        "type": "function",
        "function": {"name": call.tool, "arguments": json.dumps(call.arguments)},
    }
    if index is not None:
        body["index"] = index
    return body
