"""The local brain as an in-process pipecat LLM service (no HTTP hop inside the server).

Owns :class:`LocalLLMService`: it turns an ``LLMContextFrame`` into frames exactly as pipecat's
OpenAI service does (``LLMFullResponseStartFrame``, ``LLMTextFrame`` as the reply streams, a
function call through ``run_function_calls``, ``LLMFullResponseEndFrame``). An interruption
cancels the request and so stops the generation; a model that fails, or goes silent for the
stall timeout, is reported as an ``ErrorFrame`` from this service, which the call's fault
handler (agent.faults) answers with an apology and one retry.

Also owns :class:`InterimPrimer`, placed after the STT: it feeds the caller's words into the
local model's KV cache as interim transcripts arrive, so that at the turn's end only the last
few tokens are left to evaluate.
"""

from __future__ import annotations

import asyncio
import uuid
from typing import Any

from pipecat.frames.frames import (
    Frame,
    FunctionCallFromLLM,
    InterimTranscriptionFrame,
    LLMContextFrame,
    LLMFullResponseEndFrame,
    LLMFullResponseStartFrame,
    TranscriptionFrame,
)
from pipecat.processors.aggregators.llm_context import LLMContext
from pipecat.processors.frame_processor import FrameDirection, FrameProcessor
from pipecat.services.settings import LLMSettings

from agent.brain.policy import Call, LineSource, respond
from agent.brain.prompt import Message, Tool
from agent.turns import ToolCallsAfterTurn

#: The model name the service reports (and the optional HTTP endpoint answers with).
LOCAL_MODEL_NAME = "frontdesk-local"


class LocalLLMService(ToolCallsAfterTurn):
    """Answers each context with the local brain, in this process; a reply started before the
    caller's turn ended makes its tool call once the turn is confirmed (agent.turns).

    ``stall_timeout_secs`` is how long the brain may go without producing anything (a piece of
    reply, the filler, or the tool call) before the request is abandoned as a fault.
    """

    def __init__(
        self, brain: LineSource, *, system_instruction: str, stall_timeout_secs: float
    ) -> None:
        super().__init__(
            settings=LLMSettings(model=LOCAL_MODEL_NAME, system_instruction=system_instruction)
        )
        self._brain = brain
        self._stall_timeout_secs = stall_timeout_secs

    async def process_frame(self, frame: Frame, direction: FrameDirection) -> None:
        await super().process_frame(frame, direction)
        if not isinstance(frame, LLMContextFrame):
            await self.push_frame(frame, direction)
            return
        await self.push_frame(LLMFullResponseStartFrame())
        await self.start_processing_metrics()
        try:
            await self._answer(frame.context)
        except TimeoutError as exc:
            await self._call_event_handler("on_completion_timeout")
            await self.push_error(error_msg="LLM completion timeout", exception=exc)
        except Exception as exc:
            await self.push_error(error_msg=f"Error during completion: {exc}", exception=exc)
        finally:
            await self.stop_processing_metrics()
            await self.push_frame(LLMFullResponseEndFrame())

    async def _prompt_parts(self, context: LLMContext) -> tuple[list[Message], list[Tool]]:
        """The messages (the system instruction first) and tools the brain reads ``context``
        as."""
        params = await self.get_llm_adapter().get_llm_invocation_params(
            context,
            system_instruction=str(self._settings.system_instruction or "") or None,
            convert_developer_to_user=False,
        )
        messages: list[Message] = [dict(m) for m in params["messages"]]
        offered = params["tools"]
        tools: list[Tool] = [dict(t) for t in offered] if isinstance(offered, list) else []
        return messages, tools

    async def prime_interim(self, context: LLMContext, words: str) -> None:
        """Evaluate ``context`` and the caller's words so far into the brain's cache (in the
        background; a request pre-empts it)."""
        messages, tools = await self._prompt_parts(context)
        self._brain.prime_interim(messages, tools, words)

    async def _answer(self, context: LLMContext) -> None:
        messages, tools = await self._prompt_parts(context)
        calls: list[FunctionCallFromLLM] = []
        await self.start_ttfb_metrics()
        events = respond(self._brain, messages, tools)
        try:
            while True:
                try:
                    async with asyncio.timeout(self._stall_timeout_secs):
                        event = await anext(events)
                except StopAsyncIteration:
                    break
                await self.stop_ttfb_metrics()
                if isinstance(event, Call):
                    await self.stop_ttfat_metrics()
                    calls.append(_function_call(context, event))
                else:
                    await self._push_llm_text(event)
        finally:
            await events.aclose()  # on cancellation or timeout: the generation stops
        if calls:
            await self.run_function_calls(calls)


def _function_call(context: LLMContext, call: Call) -> FunctionCallFromLLM:
    arguments: dict[str, Any] = dict(call.arguments)
    return FunctionCallFromLLM(
        context=context,
        tool_call_id=f"call_{uuid.uuid4().hex[:16]}",
        function_name=call.tool,
        arguments=arguments,
    )


class InterimPrimer(FrameProcessor):
    """After the STT: each interim transcript (and each final one inside the turn) has the
    caller's words so far primed into the local model, joined to the turn's earlier final
    segments. A turn's segments are those since the context last changed."""

    def __init__(self, llm: LocalLLMService, context: LLMContext) -> None:
        super().__init__()
        self._llm = llm
        self._context = context
        self._finals: list[str] = []
        self._messages = -1  # the context's length when the finals were collected

    async def process_frame(self, frame: Frame, direction: FrameDirection) -> None:
        await super().process_frame(frame, direction)
        await self.push_frame(frame, direction)
        if isinstance(frame, InterimTranscriptionFrame | TranscriptionFrame):
            count = len(self._context.get_messages())
            if count != self._messages:
                self._finals, self._messages = [], count
            words = " ".join(w for w in [*self._finals, frame.text.strip()] if w)
            if isinstance(frame, TranscriptionFrame) and frame.text.strip():
                self._finals.append(frame.text.strip())
            if words:
                await self._llm.prime_interim(self._context, words)


def interim_primers(llm: FrameProcessor, context: LLMContext) -> list[FrameProcessor]:
    """What the pipeline places after the STT for ``llm``: an :class:`InterimPrimer` for the
    local brain, nothing for a remote LLM."""
    return [InterimPrimer(llm, context)] if isinstance(llm, LocalLLMService) else []
