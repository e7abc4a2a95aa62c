"""The offline brain: constrained decoding, prompt, routing policy and the in-process service on
a scripted model (fast), and a smoke test of the real model (slow: loaded once per session).

How often the real model routes well is measured by ``bench.brain``, not asserted here.
"""

import asyncio
import itertools
import json
import math
import threading
import time

import pytest
from pipecat.adapters.llm.schemas.function_schema import FunctionSchema
from pipecat.adapters.llm.schemas.tools_schema import ToolsSchema
from pipecat.frames.frames import (
    ErrorFrame,
    FunctionCallResultFrame,
    InterruptionFrame,
    LLMContextFrame,
    LLMFullResponseEndFrame,
    LLMFullResponseStartFrame,
    LLMTextFrame,
)
from pipecat.processors.aggregators.llm_context import LLMContext
from pipecat.services.llm_service import FunctionCallParams
from pipecat.tests.utils import SleepFrame, run_test

from agent.brain.decoding import Decoder, Vocabulary, decode_line
from agent.brain.model import LocalBrain
from agent.brain.policy import (
    PREREQUISITES,
    Call,
    Say,
    is_farewell,
    parse_turn,
    respond,
    routable_tools,
    ungrounded_arguments,
)
from agent.brain.prompt import (
    HISTORY_STEP,
    MAX_HISTORY_MESSAGES,
    build_prompt,
    history_start,
    render_tools,
)
from agent.brain.service import LocalLLMService
from agent.prompts import phrases
from tests.fakes.scripted_model import ScriptedModel
from tools.catalog import tool_registry

TOOLS = tool_registry().openai_tools()


def decode(target: str, tools=TOOLS) -> tuple[str, ScriptedModel]:
    model = ScriptedModel(target)
    line = "".join(decode_line(Decoder(model, Vocabulary.of(model)), tools))
    return line, model


def test_a_reply_streams_until_the_end_of_the_line():
    line, _ = decode("say: Hello there! How can I help?")
    assert line == "say: Hello there! How can I help?"
    line, _ = decode("say: One line.\nA second line the decoder must not write.")
    assert line == "say: One line."


@pytest.mark.parametrize(
    "target",
    [
        'call check_availability {"service": "haircut", "when": "this Friday at 2pm"}',
        "call list_my_appointments {}",
        "call cancel_appointment {}",
        'call cancel_appointment {"when": "Thursday"}',
        'call save_customer {"email": "jo at example dot com"}',  # optional "name" skipped
        'call take_message {"message": "call back", "phone": "555 0142"}',
        'call get_business_info {"topic": "hours"}',
        'call get_business_info {"topic": "hours_today"}',
        'call reschedule_appointment {"new_when": "Monday at 11", "current_when": "Friday"}',
    ],
)
def test_tool_calls_follow_the_schema_and_parse(target):
    line, _ = decode(target)
    assert line == target
    turn = parse_turn(line, TOOLS)
    assert isinstance(turn, Call) and f"call {turn.tool} " in target
    assert turn.arguments == json.loads(target.split(" ", 2)[2])


def test_required_arguments_are_always_written():
    # The model wants to close the object early; "when" is required, so it must be written.
    line, _ = decode('call check_availability {"service": "haircut"}')
    assert line.startswith('call check_availability {"service": "haircut", "when": "')


def test_only_enabled_tools_and_known_enum_values_can_be_written():
    few = [t for t in TOOLS if t["function"]["name"] in ("end_call", "check_availability")]
    line, _ = decode('call book_appointment {"service": "haircut", "when": "2pm"}', few)
    turn = parse_turn(line, few)
    assert (
        turn.tool in ("end_call", "check_availability")
        if isinstance(turn, Call)
        else "again" in turn.text
    )
    line, _ = decode('call get_business_info {"topic": "parking"}')
    topic = json.loads(line.split(" ", 2)[2])["topic"]
    assert topic in ("hours", "hours_today", "address", "prices", "services", "all")


def test_a_value_cut_short_becomes_a_polite_re_ask():
    rambling = 'call take_message {"message": "' + "la " * 200
    line, _ = decode(rambling)
    turn = parse_turn(line, TOOLS)
    assert isinstance(turn, Say) and "again" in turn.text.lower()
    ended = 'call take_message {"message": "please call'  # the turn ends inside the value
    line, _ = decode(ended)
    turn = parse_turn(line, TOOLS)
    assert isinstance(turn, Say) and "again" in turn.text.lower()


def test_fixed_parts_of_a_call_are_fed_in_batches():
    target = 'call check_availability {"service": "haircut", "when": "Friday"}'
    line, model = decode(target)
    assert line == target
    tokens = len(model.tokenize(target))
    assert model.passes < tokens - 10  # one pass per free token, one per forced run


def test_the_routing_choice_lists_say_and_every_enabled_tool():
    names = [t["function"]["name"] for t in TOOLS]
    for name in names:
        line, _ = decode(f"call {name} {{}}")
        assert line.startswith(f"call {name} ")
    line, _ = decode("say: Hi.")
    assert line == "say: Hi."


def test_a_bias_moves_a_close_choice_but_not_a_clear_one():
    def route(bias):
        model = ScriptedModel("say: hello")  # "s" scores 10 logits above "c"
        return Decoder(model, Vocabulary.of(model)).choose(["say:", "call"], bias)

    assert route([0.0, 9.0])[0] == 0
    assert route([0.0, 11.0])[0] == 1
    assert route([0.0, 11.0])[1] == pytest.approx(1 / (1 + math.exp(-1)))


def test_parse_turn_handles_replies_calls_and_garbage():
    assert parse_turn("say: Hello there!", TOOLS).text == "Hello there!"
    call = parse_turn(
        'call check_availability {"service": "haircut", "when": "Friday at 2pm"}', TOOLS
    )
    assert isinstance(call, Call) and call.arguments == {
        "service": "haircut",
        "when": "Friday at 2pm",
    }
    for broken in [
        'call check_availability {"service": "haircut", "when": "Fri',  # truncated
        "call launch_rocket {}",  # not a tool
        "banana",
        "",
        "say:",
    ]:
        turn = parse_turn(broken, TOOLS)
        assert isinstance(turn, Say) and "again" in turn.text.lower()


def test_tool_list_is_rendered_compactly():
    text = render_tools(TOOLS)
    assert "check_availability(service, when)" in text
    assert "book_appointment(service, when, customer_name?, phone?)" in text


class _LineBrain:
    """The policy's view of the model: a line streamed in pieces, priming recorded.

    ``then`` are the lines for the following decodes, if the first is decoded again."""

    def __init__(self, pieces, *then):
        self.pieces = pieces
        self.then = list(then)
        self.primed = []
        self.excluded = []

    async def line(self, messages, tools, excluded):
        self.excluded.append(set(excluded) - set(PREREQUISITES))  # not routable yet
        for piece in self.pieces if len(self.excluded) == 1 else self.then[len(self.excluded) - 2]:
            yield piece

    def prime_later(self, messages, tools):
        self.primed.append(messages)


async def test_the_filler_comes_as_soon_as_the_tool_is_chosen():
    brain = _LineBrain(["call", " check_availability", ' {"service": "', "hair", "cut"])
    brain.pieces += ['", "when": "', "Friday", '"}']
    asked = [{"role": "user", "content": "Could I get a cut on Friday?"}]
    events = [e async for e in respond(brain, asked, TOOLS)]
    assert events[0] == phrases()["filler"]
    assert isinstance(events[1], Call) and events[1].arguments["when"] == "Friday"
    assert brain.excluded == [set()]  # "cut" grounds "haircut": decoded once


async def test_a_service_nobody_mentioned_makes_the_model_choose_again():
    invented = ["call", " check_availability", ' {"service": "haircut", "when": "Sunday"}']
    hours = ["call", " get_business_info", ' {"topic": "hours"}']
    brain = _LineBrain(invented, hours)
    messages = [
        {"role": "assistant", "content": "Thanks for calling Bella Hair Studio."},
        {"role": "user", "content": "Are you open on Sundays?"},
    ]
    events = [e async for e in respond(brain, messages, TOOLS)]
    assert brain.excluded == [set(), {"check_availability"}]
    assert events[0] == phrases()["filler"]  # said once, for the first choice
    assert len(events) == 2 and isinstance(events[1], Call)
    assert events[1].tool == "get_business_info"


def test_grounded_arguments_come_from_the_conversation():
    def check(service, *said):
        call = Call("check_availability", {"service": service, "when": "x"})
        roles = ["assistant", "user", "assistant", "user"]
        messages = [{"role": r, "content": t} for r, t in zip(roles, said, strict=False)]
        return ungrounded_arguments(call, messages)

    greeting = "Thanks for calling Bella Hair Studio, how can I help?"
    assert check("haircut", greeting, "What time do you open tomorrow?") == ["service"]
    assert check("haircut", greeting, "Can I get a cut next week?") == []
    assert check("color", greeting, "I'd like my hair coloured on Monday") == []
    assert check("beard trim", greeting, "Just a trim, Saturday") == []
    # What the bot offered after the caller spoke counts; the greeting alone does not.
    offered = "We do haircuts and colour. Which would you like?"
    assert check("haircut", greeting, "Do you have anything Friday?", offered, "The first") == []
    assert check("haircut", "Hair and beauty, hello!", "Anything Friday?") == ["service"]
    # Other tools and empty values are not checked.
    hours = Call("get_business_info", {"topic": "hours"})
    assert ungrounded_arguments(hours, [{"role": "user", "content": "hi"}]) == []


async def test_a_reply_is_streamed_in_pieces_and_a_broken_line_is_a_re_ask():
    brain = _LineBrain(["say:", " Hello", " there", "!"])
    events = [e async for e in respond(brain, [{"role": "user", "content": "x"}], TOOLS)]
    assert events == ["Hello", " there", "!"]
    assert brain.primed  # the reply is primed into the cache while it plays
    brain = _LineBrain(["call", " take_message", ' {"message": "', "uh"])
    events = [e async for e in respond(brain, [{"role": "user", "content": "x"}], TOOLS)]
    assert len(events) == 1 and "again" in events[0].lower()


async def test_a_shared_goodbye_ends_the_call_and_a_tool_result_is_the_reply():
    brain = _LineBrain(["say:", " Goodbye", ", have a great day!"])
    bye = [{"role": "user", "content": "Thanks, bye!"}]
    events = [e async for e in respond(brain, bye, TOOLS)]
    assert events[:2] == ["Goodbye", ", have a great day!"]
    assert events[2] == Call("end_call", {"reason": "caller said goodbye"})
    result = {"role": "tool", "content": json.dumps({"say": "Friday at two is free."})}
    events = [e async for e in respond(brain, [*bye, result], TOOLS)]
    assert events == ["Friday at two is free."] and len(brain.excluded) == 1  # not decoded


# --- The in-process pipecat service, on a scripted model ---------------------------------------


def _context(utterance: str) -> LLMContext:
    schemas = [
        FunctionSchema(
            name=spec.name,
            description=spec.description,
            properties=spec.parameters["properties"],
            required=spec.parameters["required"],
        )
        for spec in tool_registry().specs.values()
    ]
    return LLMContext(messages=[{"role": "user", "content": utterance}], tools=ToolsSchema(schemas))


def _service(model, stall_secs=5.0):
    brain = LocalBrain(model)
    service = LocalLLMService(
        brain, system_instruction="Facts:\n- Business: Bella.", stall_timeout_secs=stall_secs
    )
    return brain, service


async def test_the_service_streams_a_reply_between_start_and_end_frames():
    _brain, llm = _service(ScriptedModel("say: Hello there! How can I help?"))
    down, up = await run_test(llm, frames_to_send=[LLMContextFrame(_context("hi"))])
    response = _response(down)
    assert isinstance(response[0], LLMFullResponseStartFrame)
    assert isinstance(response[-1], LLMFullResponseEndFrame)
    texts = [f.text for f in response[1:-1]]
    assert len(texts) > 3 and "".join(texts) == "Hello there! How can I help?"
    assert not _errors(up)


async def test_the_service_says_the_filler_then_runs_the_tool_call():
    target = 'call check_availability {"service": "haircut", "when": "Friday"}'
    _brain, llm = _service(ScriptedModel(target))
    called: list[dict] = []

    async def check(params: FunctionCallParams) -> None:
        called.append(dict(params.arguments))
        await params.result_callback({"say": "Friday at two is free."})

    llm.register_function("check_availability", check)
    down, _up = await run_test(
        llm,
        frames_to_send=[LLMContextFrame(_context("A haircut on Friday?")), SleepFrame(0.3)],
    )
    assert called == [{"service": "haircut", "when": "Friday"}]
    texts = [f.text for f in down if isinstance(f, LLMTextFrame)]
    assert texts == [phrases()["filler"]]
    assert any(isinstance(f, FunctionCallResultFrame) for f in down)


async def test_a_stalled_model_is_reported_as_an_error_and_stops():
    model = ScriptedModel("say: " + "la " * 80, pass_secs=1.0)  # a pass outlasts the stall
    brain, llm = _service(model, stall_secs=0.5)
    down, up = await run_test(
        llm, frames_to_send=[LLMContextFrame(_context("hi")), SleepFrame(2.0)]
    )
    errors = _errors(up)
    assert len(errors) == 1 and "timeout" in errors[0].error and llm.is_usable
    assert isinstance(_response(down)[-1], LLMFullResponseEndFrame)
    _assert_released(brain, model)


async def test_an_interruption_stops_the_generation_promptly():
    model = ScriptedModel("say: " + "la " * 80, pass_secs=0.05)
    brain, llm = _service(model)
    down, up = await run_test(
        llm,
        # Long enough for the first words on a busy machine; the whole line takes 12 s.
        frames_to_send=[LLMContextFrame(_context("hi")), SleepFrame(1.5), InterruptionFrame()],
    )
    assert not _errors(up)
    assert 0 < sum(isinstance(f, LLMTextFrame) for f in down) < 60
    _assert_released(brain, model)


async def test_a_failing_model_is_reported_as_an_error():
    model = ScriptedModel("say: Hello.")
    model.failure = RuntimeError("llama_decode returned -3")
    _brain, llm = _service(model)
    down, up = await run_test(llm, frames_to_send=[LLMContextFrame(_context("hi"))])
    errors = _errors(up)
    assert len(errors) == 1 and "llama_decode" in errors[0].error
    assert isinstance(_response(down)[-1], LLMFullResponseEndFrame)


def _response(frames):
    kinds = (LLMFullResponseStartFrame, LLMTextFrame, LLMFullResponseEndFrame)
    return [f for f in frames if isinstance(f, kinds)]


def _errors(frames):
    return [f for f in frames if isinstance(f, ErrorFrame)]


def _assert_released(brain: LocalBrain, model: ScriptedModel) -> None:
    """The model lock is free within a pass or two, and nothing evaluates any more."""
    assert brain._lock.acquire(timeout=1.0), "the model lock is still held"
    brain._lock.release()
    passes = model.passes
    time.sleep(0.4)
    assert model.passes == passes


def test_priming_in_the_background_is_coalesced_and_stopped_by_close():
    # (Another brain in this process, e.g. the session's real one, may be priming too.)
    others = {t for t in threading.enumerate() if t.name == "local-llm-priming"}
    model = ScriptedModel("say: hi", prompt_pass_secs=0.05)
    brain = LocalBrain(model)
    opening = [{"role": "system", "content": "Facts: " + "open daily " * 300}]
    brain.prime_later(opening, TOOLS)
    time.sleep(0.2)
    later = [*opening, {"role": "assistant", "content": "Hello!"}]
    brain.prime_later(later, TOOLS)
    brain.prime_later(later, TOOLS)  # coalesced with the one before
    passes = model.passes
    brain.close()
    assert model.passes - passes <= 1  # the pass under way, not the rest of the prompt
    mine = [t for t in threading.enumerate() if t.name == "local-llm-priming" and t not in others]
    assert not mine
    passes = model.passes
    brain.prime_later(later, TOOLS)  # a closed brain primes no more
    time.sleep(0.2)
    assert model.passes == passes


def test_priming_leaves_the_prompt_cached_for_the_next_request():
    model = ScriptedModel("say: hi")
    brain = LocalBrain(model)
    conversation = [
        {"role": "system", "content": "Facts:\n- Business: Bella Hair Studio."},
        {"role": "assistant", "content": "Thanks for calling. How can I help?"},
    ]
    assert brain.prime(conversation, TOOLS) > 0
    assert brain.prime(conversation, TOOLS) == 0  # already in the cache
    primed = list(model.context)
    asked = [*conversation, {"role": "user", "content": "Anything on Friday?"}]
    request = model.tokenize(build_prompt(asked, TOOLS))
    assert request[: len(primed)] == primed


# --- The real model (slow: loads 1.1 GB once per session; runs in CI) ---------------------------

SALON = [
    {"role": "system", "content": "Bella Hair Studio. Right now it is Sunday November 22, 10 AM."},
    {"role": "assistant", "content": "Thanks for calling Bella Hair Studio. How can I help?"},
]


@pytest.mark.slow
async def test_real_model_routes_an_obvious_booking_to_availability(local_brain):
    asked = [*SALON, {"role": "user", "content": "I'd like to book a haircut on Friday."}]
    events = [e async for e in respond(local_brain, asked, TOOLS)]
    calls = [e for e in events if isinstance(e, Call)]
    assert calls and calls[0].tool == "check_availability", events
    assert "hair" in json.dumps(calls[0].arguments).lower()


@pytest.mark.slow
async def test_real_model_ends_the_call_on_goodbye(local_brain):
    bye = [*SALON, {"role": "user", "content": "Thanks, bye!"}]
    events = [e async for e in respond(local_brain, bye, TOOLS)]
    text = "".join(e for e in events if isinstance(e, str))
    ended = any(isinstance(e, Call) and e.tool == "end_call" for e in events)
    assert ended or is_farewell(text), events


@pytest.mark.slow
async def test_real_model_answers_in_process_through_the_service(local_brain):
    llm = LocalLLMService(
        local_brain, system_instruction="Bella Hair Studio.", stall_timeout_secs=120
    )
    down, up = await run_test(
        llm, frames_to_send=[LLMContextFrame(_context("Hi there, how are you doing today?"))]
    )
    text = "".join(f.text for f in down if isinstance(f, LLMTextFrame))
    assert not _errors(up) and len(text.split()) >= 3 and "{" not in text
    await asyncio.to_thread(local_brain.wait_primed)


@pytest.mark.slow
def test_real_model_priming_leaves_only_the_callers_next_words_to_evaluate(local_brain):
    model = local_brain.model
    conversation = [
        {"role": "system", "content": "Facts:\n- Business: Bella Hair Studio."},
        {"role": "assistant", "content": "Thanks for calling Bella Hair Studio. How can I help?"},
    ]
    local_brain.prime(conversation, TOOLS)
    primed = model.cached()
    words = "Do you have anything on Friday?"
    asked = [*conversation, {"role": "user", "content": words}]
    request = model.tokenize(build_prompt(asked, TOOLS))
    assert request[: len(primed)] == primed  # the request reuses all of it
    # Left: the words and the turn's close ("<|im_end|>\n<|im_start|>assistant\n").
    assert len(request) - len(primed) <= len(model.tokenize(words)) + 5


def test_booking_is_offered_to_the_model_only_after_availability_was_checked():
    def names(messages):
        return {t["function"]["name"] for t in routable_tools(messages, TOOLS)}

    fresh = [{"role": "user", "content": "Can I book a haircut Friday at 2?"}]
    assert "book_appointment" not in names(fresh)
    assert "check_availability" in names(fresh)
    assert len(names(fresh)) == len(TOOLS) - len(PREREQUISITES)
    checked = [
        *fresh,
        {
            "role": "assistant",
            "tool_calls": [
                {"function": {"name": "check_availability", "arguments": "{}"}, "type": "function"}
            ],
        },
        {"role": "tool", "content": '{"say": "Friday I have two or four."}'},
        {"role": "user", "content": "Two, please."},
    ]
    assert "book_appointment" in names(checked)


def test_a_code_is_checked_only_after_one_was_sent():
    def names(messages):
        return {t["function"]["name"] for t in routable_tools(messages, TOOLS)}

    said = [{"role": "user", "content": "My number is one two three four five six."}]
    assert "verify_code" not in names(said) and "send_verification_code" in names(said)
    sent = [
        *said,
        {
            "role": "assistant",
            "tool_calls": [
                {
                    "function": {"name": "send_verification_code", "arguments": "{}"},
                    "type": "function",
                }
            ],
        },
        {"role": "tool", "content": '{"say": "I\'ve texted a code. What is it?"}'},
        {"role": "user", "content": "Four two nine one one eight."},
    ]
    assert "verify_code" in names(sent)


def test_a_choice_is_known_before_its_tokens_are_fed():
    model = ScriptedModel('call check_availability {"service": "cut", "when": "noon"}')
    pieces = decode_line(Decoder(model, Vocabulary.of(model)), TOOLS)
    assert next(pieces) == "call"
    assert model.passes == 0  # decided from the prompt's logits; "call" is not fed yet
    assert next(pieces) == " check_availability"
    # The name is known (so the filler can be said) before its last tokens cost a pass.
    assert model.written().startswith("call") and len(model.written()) < len("call check")


def test_the_history_is_trimmed_in_steps_so_the_cached_prompt_survives_most_turns():
    starts = [history_start(count) for count in range(1, 80)]
    assert starts[:MAX_HISTORY_MESSAGES] == [0] * MAX_HISTORY_MESSAGES  # a short call: all of it
    for count, start in enumerate(starts, 1):
        assert MAX_HISTORY_MESSAGES - HISTORY_STEP < count - start <= MAX_HISTORY_MESSAGES or (
            start == 0
        )
    moves = sum(1 for a, b in itertools.pairwise(starts) if a != b)
    assert (
        moves == (79 - MAX_HISTORY_MESSAGES - 1) // HISTORY_STEP + 1
    )  # once per step, not per turn


# --- The OpenAI-compatible endpoint for other clients ------------------------------------------


async def test_the_endpoint_answers_admin_token_holders_only():
    import httpx
    from fastapi import FastAPI, HTTPException, Request

    from agent.brain.http import build_brain_router

    def require_admin(request: Request) -> None:
        if request.headers.get("authorization") != "Bearer admin":
            raise HTTPException(401, "admin token required")

    app = FastAPI()
    brain = LocalBrain(ScriptedModel("say: Hello there!"))
    app.include_router(build_brain_router(lambda: brain, require_admin))
    body = {"messages": [{"role": "user", "content": "hi"}], "tools": TOOLS}
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://brain") as client:
        refused = await client.post("/v1/chat/completions", json=body)
        assert refused.status_code == 401
        headers = {"Authorization": "Bearer admin"}
        answer = await client.post("/v1/chat/completions", json=body, headers=headers)
        assert answer.status_code == 200
        assert answer.json()["choices"][0]["message"]["content"] == "Hello there!"
        streamed = await client.post(
            "/v1/chat/completions", json={**body, "stream": True}, headers=headers
        )
        events = [line[6:] for line in streamed.text.splitlines() if line.startswith("data: ")]
        assert events[-1] == "[DONE]"
        deltas = [json.loads(e)["choices"][0]["delta"] for e in events[:-1]]
        assert "".join(d.get("content", "") for d in deltas) == "Hello there!"
    brain.close()
