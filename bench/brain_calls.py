"""The local brain under live calls: stopping, per-call state, priming while the caller speaks.

    nice -n 5 .venv/bin/python -m bench.brain_calls [--rounds N]

Loads the local model as the server does (the fixed prefix evaluated once, kept on disk under
bench/results/cache/brain-calls) and prints:

- stop: how long a forward pass runs on after a stop (aborted inside the pass, llama.cpp's abort
  callback), against how long a whole 64-token prompt pass takes (what a stop waited for before);
- call state: size of one call's saved context, ms to park it and to restore it;
- interim priming: for each caller turn of bench/calls.yaml, the request at the turn's end with
  only the conversation primed (as after the bot's reply) and with the caller's words but the
  last two primed too (as interim transcripts do): prompt tokens left at request time, ms to the
  route (first piece: "say:" or "call") and to the next piece (a reply's first word, or the
  tool's name);
- the reply's start guessed: the same requests with "say:" evaluated in the prompt's last pass
  (the default) and without (one more pass before a reply's first word);
- two calls: the same requests when another call used the model in between (its state parked,
  this call's restored) against back to back.

Medians and p90s; rounds are interleaved (with, without, with, ...). Writes
bench/results/brain-calls-*.json.
"""

from __future__ import annotations

import argparse
import statistics
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from agent.brain.model import LlamaModel, LocalBrain, StoppedError, reuse_from
from agent.brain.prompt import Message, build_prompt, interim_prompt, priming_prompt
from agent.settings import Settings
from bench import harness
from tools.catalog import tool_registry

TOOLS = tool_registry().openai_tools()
FACTS: Message = {"role": "system", "content": "Facts:\n- Business: Bella Hair Studio."}
GREETING: Message = {
    "role": "assistant",
    "content": "Thanks for calling Bella Hair Studio. How can I help?",
}


def _stats(values: list[float]) -> dict[str, float]:
    return {
        "p50": statistics.median(values),
        "p90": harness.percentile(values, 0.9),
        "n": float(len(values)),
    }


def _line(label: str, values: list[float], unit: str = "ms") -> dict[str, float]:
    stats = _stats(values)
    print(f"  {label:46s} p50 {stats['p50']:7.1f} {unit}  p90 {stats['p90']:7.1f} {unit}")
    return stats


def _evaluate(model: LlamaModel, words: list[int], ended: list[float]) -> None:
    try:
        model.eval(words)
    except StoppedError:
        pass
    ended.append(time.perf_counter())


def time_stop(brain: LocalBrain, rounds: int) -> dict[str, Any]:
    """ms from abort() to the end of a 64-token prompt pass it interrupts, and a whole pass."""
    model = brain.model
    assert isinstance(model, LlamaModel)
    after: list[float] = []
    whole: list[float] = []
    with brain._lock:
        base = model.cached()
        words = model.tokenize(" Could you tell me more about the colour treatments?" * 4)[:64]
        for i in range(rounds):
            model.llama.n_tokens = len(base)
            started = time.perf_counter()
            model.eval(words)
            whole.append((time.perf_counter() - started) * 1000)
            model.llama.n_tokens = len(base)
            ended: list[float] = []
            worker = threading.Thread(target=_evaluate, args=(model, words, ended))
            worker.start()
            time.sleep(0.02 + 0.04 * (i % 5))
            stopped = time.perf_counter()
            model.abort()
            worker.join()
            model.resume()
            after.append((ended[0] - stopped) * 1000)
        model.llama.n_tokens = len(base)
    print("stop (a 64-token prompt pass):")
    return {
        "whole_pass_ms": _line("a whole pass (a stop waited for it before)", whole),
        "after_abort_ms": _line("runs on after abort()", after),
    }


def time_state(brain: LocalBrain, rounds: int) -> dict[str, Any]:
    model = brain.model
    assert isinstance(model, LlamaModel)
    brain.prime([FACTS, GREETING], TOOLS)
    save: list[float] = []
    restore: list[float] = []
    with brain._lock:
        for _ in range(rounds):
            started = time.perf_counter()
            state = model.snapshot()
            saved = time.perf_counter()
            model.restore(state)
            save.append((saved - started) * 1000)
            restore.append((time.perf_counter() - saved) * 1000)
    size = len(state.data) / 1e6
    print(f"call state ({len(state.tokens)} tokens, {size:.1f} MB):")
    return {
        "tokens": len(state.tokens),
        "megabytes": size,
        "park_ms": _line("park (snapshot)", save),
        "restore_ms": _line("restore", restore),
    }


def request(brain: LocalBrain, messages: list[Message], call: str | None) -> dict[str, float]:
    """One request: prompt tokens left, ms to the route and to the first word of a reply."""
    model = brain.model
    assert isinstance(model, LlamaModel)
    tokens = model.tokenize(build_prompt(messages, TOOLS))
    with brain._lock:
        left = len(tokens) - reuse_from(model.cached(), tokens, fresh_logits=True)
    started = time.perf_counter()
    times: list[float] = []
    for _piece in brain.stream(messages, TOOLS, call=call):
        times.append((time.perf_counter() - started) * 1000)
        if len(times) == 2:
            break
    return {"tokens": float(left), "route": times[0], "word": times[-1]}


def prime_exactly(brain: LocalBrain, prompt: str, call: str) -> None:
    """Make ``call``'s context ``prompt`` and nothing more (an earlier round's request for the
    same words would otherwise still be cached beyond it)."""
    brain._prime_text(prompt, call, brain._closed)
    tokens = brain.model.tokenize(prompt)
    with brain._lock:
        model = brain.model
        assert isinstance(model, LlamaModel)
        model.rewind(len(model.cached()) - len(tokens))


def turns() -> list[str]:
    calls, _barge = harness.load_calls()
    return [t.say for c in calls for t in c.turns]


def time_interim(brain: LocalBrain, rounds: int) -> dict[str, Any]:
    rows: dict[str, list[dict[str, float]]] = {"without": [], "with": []}
    conversation = [FACTS, GREETING]
    said = turns()[:rounds]
    for i, words in enumerate(said):
        asked = [*conversation, {"role": "user", "content": words}]
        order = ("with", "without") if i % 2 else ("without", "with")
        heard = " ".join(words.split()[:-2])
        for label in order:
            if label == "with":
                prime_exactly(brain, interim_prompt(conversation, TOOLS, heard), "bench")
            else:
                prime_exactly(brain, priming_prompt(conversation, TOOLS), "bench")
            rows[label].append(request(brain, asked, "bench"))
    out: dict[str, Any] = {}
    print(f"request at the turn's end ({len(said)} caller turns):")
    for label in ("without", "with"):
        name = "interim words primed" if label == "with" else "conversation primed only"
        out[label] = {
            key: _line(f"{name}: {what}", [r[key] for r in rows[label]], unit)
            for key, what, unit in (
                ("tokens", "prompt tokens left", "tok"),
                ("route", "route", "ms"),
                ("word", "first word", "ms"),
            )
        }
    brain.forget("bench")
    return out


def time_guess(brain: LocalBrain, rounds: int) -> dict[str, Any]:
    rows: dict[str, list[dict[str, float]]] = {"guessed": [], "not guessed": []}
    conversation = [FACTS, GREETING]
    said = turns()[:rounds]
    for i, words in enumerate(said):
        asked = [*conversation, {"role": "user", "content": words}]
        order = ("guessed", "not guessed") if i % 2 else ("not guessed", "guessed")
        for label in order:
            prime_exactly(brain, priming_prompt(conversation, TOOLS), "bench")
            brain.guess_reply = label == "guessed"
            rows[label].append(request(brain, asked, "bench"))
    brain.guess_reply = True
    print(f"the reply's start guessed in the prompt's last pass ({len(said)} caller turns):")
    out = {
        label: {
            "route": _line(f"{label}: route", [r["route"] for r in rows[label]]),
            "word": _line(f"{label}: first word", [r["word"] for r in rows[label]]),
        }
        for label in ("not guessed", "guessed")
    }
    brain.forget("bench")
    return out


def time_two_calls(brain: LocalBrain, rounds: int) -> dict[str, Any]:
    rows: dict[str, list[dict[str, float]]] = {"alone": [], "switched": []}
    said = turns()[:rounds]
    other = [FACTS, GREETING, {"role": "user", "content": "Do you do beard trims?"}]
    for i, words in enumerate(said):
        mine = [FACTS, GREETING, {"role": "user", "content": words}]
        order = ("switched", "alone") if i % 2 else ("alone", "switched")
        for label in order:
            prime_exactly(brain, priming_prompt(mine[:-1], TOOLS), "mine")
            if label == "switched":
                brain.prime(other, TOOLS, call="other")  # "mine" parked meanwhile
            rows[label].append(request(brain, mine, "mine"))
    print(f"a call's request ({len(said)} turns), back to back or after another call's:")
    out = {
        label: _line(f"{label}: first word", [r["word"] for r in rows[label]])
        for label in ("alone", "switched")
    }
    brain.forget("mine")
    brain.forget("other")
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=12, help="trials per figure")
    args = parser.parse_args()
    harness.print_machine(harness.machine(), "machine at start")
    settings = Settings.from_env({"FRONTDESK_LLM_MODEL_PATH": str(harness.LOCAL_MODEL)})
    brain = LocalBrain.load(settings)
    cache = Path(harness.RESULTS) / "cache" / "brain-calls"
    brain.warm_up(TOOLS, [FACTS], cache)
    figures: dict[str, Callable[[LocalBrain, int], dict[str, Any]]] = {
        "stop": time_stop,
        "state": time_state,
        "interim": time_interim,
        "guess": time_guess,
        "two_calls": time_two_calls,
    }
    results = {name: run(brain, args.rounds) for name, run in figures.items()}
    brain.close()
    harness.print_machine(harness.machine(), "machine at end")
    print(f"written {harness.write_results('brain-calls', results)}")


if __name__ == "__main__":
    main()
