"""The local brain under calls: stopping at once, requests before priming, several calls on one
model each with its own KV state, interim transcripts primed while the caller speaks, and the
local call limit. Scripted-model tests are fast; the real model's (slow) share the session's
loaded model (tests/conftest.py).

How fast these are is measured by ``bench.brain_calls``, not asserted here.
"""

from __future__ import annotations

import asyncio
import threading
import time

import pytest
from pipecat.frames.frames import InterimTranscriptionFrame, TranscriptionFrame
from pipecat.processors.aggregators.llm_context import LLMContext
from pipecat.tests.utils import run_test

from agent.app import create_app
from agent.brain.model import LlamaModel, LocalBrain, StoppedError
from agent.brain.prompt import build_prompt, interim_prompt
from agent.brain.service import InterimPrimer, LocalLLMService, interim_primers
from agent.settings import Settings
from tests.fakes.scripted_model import ScriptedModel
from tools.catalog import tool_registry

TOOLS = tool_registry().openai_tools()
FACTS = {"role": "system", "content": "Facts:\n- Business: Bella Hair Studio."}
GREETING = {"role": "assistant", "content": "Thanks for calling Bella Hair Studio. How can I help?"}


def _conversation(*words: str) -> list[dict]:
    messages = [FACTS, GREETING]
    for said in words:
        messages.append({"role": "user", "content": said})
        messages.append({"role": "assistant", "content": "Sure."})
    return messages


def _wait(condition, secs: float = 30.0) -> None:
    deadline = time.monotonic() + secs
    while not condition():
        assert time.monotonic() < deadline, "never happened"
        time.sleep(0.01)


# --- Stopping, on a scripted model -------------------------------------------------------------


def test_a_stop_aborts_the_forward_pass_under_way():
    model = ScriptedModel("say: " + "la " * 80, pass_secs=5.0)
    brain = LocalBrain(model)
    stop = threading.Event()
    pieces: list[str] = []
    done = threading.Event()

    def consume() -> None:
        try:
            pieces.extend(brain.stream([FACTS], TOOLS, stop=stop))
        except StoppedError:
            pass
        done.set()

    threading.Thread(target=consume, daemon=True).start()
    _wait(lambda: brain._lock.locked())
    time.sleep(0.2)  # inside the first (five-second) decoding pass
    brain._stop(stop)
    assert done.wait(3.0), "the pass was not aborted"
    # The route and the first token came with the prompt's last pass (its guess of "say:");
    # the pass after them was cut short, and what it held is not in the context.
    assert pieces == ["say:", " "] and model.aborted == 1 and model.written() == "say:"
    assert brain._lock.acquire(timeout=1.0)
    brain._lock.release()


def test_a_request_pre_empts_background_priming():
    model = ScriptedModel("say: Hi.", prompt_pass_secs=5.0)
    brain = LocalBrain(model)
    long_facts = {"role": "system", "content": "Facts: " + "open daily " * 100}
    brain.prime_later([long_facts], TOOLS)  # many passes of five seconds
    _wait(lambda: brain._lock.locked())
    model.prompt_pass_secs = 0.0  # the request's own prompt passes are quick
    line = "".join(brain.stream([FACTS, {"role": "user", "content": "hi"}], TOOLS))
    assert line == "say: Hi." and model.aborted == 1
    brain.close()


def test_priming_asked_before_a_request_is_dropped_once_the_request_ran():
    model = ScriptedModel("say: Hi.")
    brain = LocalBrain(model)
    asked = [*_conversation(), {"role": "user", "content": "Anything on Friday?"}]
    with brain._lock:  # the model is busy: what follows queues up
        brain.prime_interim(_conversation(), TOOLS, "Anything on", call="A")
        request = threading.Thread(target=lambda: list(brain.stream(asked, TOOLS, call="A")))
        request.start()
        _wait(lambda: brain._waiting == 1)
    request.join(5.0)
    brain.wait_primed(5.0)
    # The context is the request's prompt and its line, not the stale interim words.
    assert model.context[: len(model.tokenize(build_prompt(asked, TOOLS)))] == model.tokenize(
        build_prompt(asked, TOOLS)
    )
    brain.close()


# --- Several calls on one model, on a scripted model -------------------------------------------


def test_each_call_gets_its_own_context_back():
    model = ScriptedModel("say: Hi.")
    brain = LocalBrain(model)
    alice = _conversation("My name is Alice.")
    bob = _conversation("This is Bob, about my colour.")
    assert brain.prime(alice, TOOLS, call="A") > 0
    alice_context = list(model.context)
    assert brain.prime(bob, TOOLS, call="B") > 0
    assert brain.parked_calls() == ["A"]
    assert brain.prime(alice, TOOLS, call="A") == 0  # restored, nothing evaluated again
    assert model.context == alice_context and brain.parked_calls() == ["B"]
    brain.for_call("B").forget()
    assert brain.parked_calls() == []
    assert brain.prime(bob, TOOLS, call="B") > 0  # forgotten: evaluated again


def test_parked_calls_are_few_and_the_least_recent_goes_first(monkeypatch):
    monkeypatch.setattr("agent.brain.model.MAX_PARKED_CALLS", 2)
    brain = LocalBrain(ScriptedModel("say: Hi."))
    for call in ("A", "B", "C", "D"):
        brain.prime(_conversation(f"I am {call}."), TOOLS, call=call)
    assert brain.parked_calls() == ["B", "C"]


def test_a_forgotten_call_primes_no_more():
    model = ScriptedModel("say: Hi.")
    brain = LocalBrain(model)
    call = brain.for_call("A")
    assert brain.for_call("A") is call  # the pipeline's LLM and its priming share the view
    brain.forget("A")  # the call ended
    passes = model.passes
    call.prime_later(_conversation("Hello?"), TOOLS)
    call.prime_interim(_conversation(), TOOLS, "Hello")
    brain.wait_primed(1.0)
    assert model.passes == passes


# --- Interim transcripts primed while the caller speaks ----------------------------------------


async def test_interim_words_are_primed_so_the_request_only_adds_the_last_ones():
    model = ScriptedModel("say: Hi.")
    brain = LocalBrain(model)
    llm = LocalLLMService(brain, system_instruction=FACTS["content"], stall_timeout_secs=5)
    context = LLMContext(messages=[GREETING])
    primer = InterimPrimer(llm, context)
    frames = [
        InterimTranscriptionFrame("I'd like", "caller", "t1"),
        TranscriptionFrame("I'd like to book", "caller", "t2"),  # a segment of the turn
        InterimTranscriptionFrame("a haircut", "caller", "t3"),
    ]
    down, _up = await run_test(primer, frames_to_send=frames)
    assert [f.text for f in down if isinstance(f, InterimTranscriptionFrame)] == [
        "I'd like",
        "a haircut",
    ]
    await asyncio.to_thread(brain.wait_primed, 5.0)
    messages = [FACTS, GREETING]
    no_tools: list[dict] = []  # the context offers none
    primed = model.tokenize(interim_prompt(messages, no_tools, "I'd like to book a haircut"))
    assert model.context == primed
    asked = [*messages, {"role": "user", "content": "I'd like to book a haircut on Friday."}]
    request = model.tokenize(build_prompt(asked, no_tools))
    assert request[: len(primed)] == primed


def test_only_the_local_brain_gets_an_interim_primer():
    brain = LocalBrain(ScriptedModel("say: Hi."))
    llm = LocalLLMService(brain, system_instruction="", stall_timeout_secs=5)
    context = LLMContext(messages=[])
    assert [type(p) for p in interim_primers(llm, context)] == [InterimPrimer]
    assert interim_primers(InterimPrimer(llm, context), context) == []


# --- The local call limit ----------------------------------------------------------------------


async def test_local_calls_are_limited_and_beyond_it_the_app_has_no_room(tmp_path):
    local = Settings.from_env({"FRONTDESK_DATA_DIR": str(tmp_path), "FRONTDESK_DEV": "1"})
    assert local.call_limit == 2
    remote = Settings.from_env({"OPENAI_BASE_URL": "http://llm.test/v1"})
    assert remote.call_limit == 20
    fewer = Settings.from_env({"FRONTDESK_LOCAL_MAX_CALLS": "3", "FRONTDESK_MAX_CALLS": "1"})
    assert fewer.call_limit == 1
    state = create_app(local).state.frontdesk
    await state.db.migrate()
    try:
        first = await state.take_slot()
        assert first and await state.take_slot()
        assert not await state.has_room() and not await state.take_slot()  # the polite answer
        await state.release_slot(first)
        assert await state.has_room()
    finally:
        await state.db.close()


# --- The real model (slow: loaded once per session) --------------------------------------------


@pytest.mark.slow
def test_real_model_an_aborted_pass_leaves_the_context_as_it_was(local_brain):
    model = local_brain.model
    assert isinstance(model, LlamaModel)
    with local_brain._lock:
        before = model.cached()
        words = model.tokenize(" Could you tell me more about the colour treatments?" * 4)[:64]
        failed: list[BaseException] = []

        def evaluate() -> None:
            try:
                model.eval(words)
            except BaseException as exc:
                failed.append(exc)

        worker = threading.Thread(target=evaluate)
        aborted = model.aborted
        worker.start()
        time.sleep(0.05)  # inside the 64-token pass
        model.abort()
        worker.join(30.0)
        model.resume()
        assert failed and isinstance(failed[0], StoppedError)
        assert model.aborted == aborted + 1 and model.cached() == before
        model.eval(words)  # the context goes on from where it was
        assert model.cached() == before + words


@pytest.mark.slow
async def test_real_model_barge_in_stops_decoding_within_one_token(local_brain):
    model = local_brain.model
    assert isinstance(model, LlamaModel)
    call = local_brain.for_call("barge-in")
    asked = [
        *_conversation(),
        {"role": "user", "content": "Tell me everything about your salon and what you offer."},
    ]
    pieces = call.line(asked, TOOLS, frozenset())
    got = [await anext(pieces), await anext(pieces), await anext(pieces)]
    at_stop = len(model.cached())
    await pieces.aclose()  # the caller barged in
    acquired = await asyncio.to_thread(local_brain._lock.acquire, True, 30.0)
    assert acquired, "the model is still held"
    after = len(model.cached())
    local_brain._lock.release()
    assert got and after - at_stop <= 1, (got, at_stop, after)
    call.forget()


@pytest.mark.slow
def test_real_model_two_calls_keep_their_own_state_and_answer_as_if_fresh(local_brain):
    alice = [
        *_conversation("Hi, this is Alice."),
        {"role": "user", "content": "What time do you open on Saturday?"},
    ]
    bob = [
        *_conversation("Hello, Bob here."),
        {"role": "user", "content": "Do you do beard trims?"},
    ]
    local_brain.prime(alice[:-1], TOOLS, call="alice")
    local_brain.prime(bob[:-1], TOOLS, call="bob")  # Alice's state is parked
    assert "alice" in local_brain.parked_calls()
    restored = "".join(local_brain.stream(alice, TOOLS, call="alice"))
    # Alice's turn only costs her new words: her conversation came back with her state.
    model = local_brain.model
    assert isinstance(model, LlamaModel)
    assert model.cached()[: len(model.tokenize(build_prompt(alice, TOOLS)))] == model.tokenize(
        build_prompt(alice, TOOLS)
    )
    assert local_brain.parked_calls()[-1] == "bob"
    bob_line = "".join(local_brain.stream(bob, TOOLS, call="bob"))
    assert bob_line.startswith(("say:", "call"))
    # The same request evaluated afresh (Alice forgotten: her part of the prompt evaluated
    # again from the shared prefix) gives the same line.
    local_brain.forget("alice")
    fresh = "".join(local_brain.stream(alice, TOOLS, call="alice"))
    assert restored == fresh
    local_brain.forget("alice")
    local_brain.forget("bob")


# --- The reply's start guessed in the prompt's last pass ---------------------------------------


def test_a_replys_route_and_first_word_come_with_the_prompts_last_pass():
    model = ScriptedModel("say: Hello there.")
    brain = LocalBrain(model)
    asked = [FACTS, {"role": "user", "content": "hi"}]
    brain.prime(asked, TOOLS)  # only the turn's close is left for the request
    passes = model.passes
    pieces = brain.stream(asked, TOOLS)
    assert [next(pieces), next(pieces)] == ["say:", " "]
    assert model.passes - passes == 1
    assert "".join(pieces) == "Hello there."


def test_a_tool_call_takes_the_guess_back():
    target = 'call check_availability {"service": "haircut", "when": "Friday"}'
    model = ScriptedModel(target)
    brain = LocalBrain(model)
    line = "".join(brain.stream([FACTS, {"role": "user", "content": "a cut on Friday?"}], TOOLS))
    assert line == target
    assert model.written() == target[: len(model.written())]  # no "say:" left in the context
