"""Benchmark the offline brain: tool choice, arguments and time to first words.

    .venv/bin/python -m bench.brain [--scenarios bench/brain_scenarios.yaml] [--limit N]
    .venv/bin/python -m bench.brain --scenarios bench/brain_scenarios.yaml \
        --scenarios bench/brain_heldout.yaml   # and the held-out phrasings, each scored apart

By default it runs bench/brain_scenarios.yaml and bench/brain_routing.yaml (the routing cases
the test suite used to assert). A plain reply only counts as right when it is spoken words
(three or more, no JSON).

Loads the local model as the server does (prefix evaluated at start-up), then for each scenario
primes the conversation so far (as a live call does while the bot is talking) and times the
reply from the moment the caller's transcript is final. Prints accuracy of tool choice and of
arguments, and the median and p90 of: time to first token, time to the first sentence of a
plain reply (or to the tool call), time to the filler of a tool turn, and time to the tool
call itself, its arguments complete (when pipecat starts the tool; the filler comes before it).
It also times the filler from the moment the model commits to a tool call (its first decoded
piece is "call"): the delay the filler exists to hide.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import re
import statistics
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import yaml

from agent.brain.model import LocalBrain
from agent.brain.policy import Call, respond
from agent.prompts import build_system_prompt
from agent.settings import Settings
from tools.catalog import tool_registry
from tools.store.business import load_business, seed_business
from tools.store.db import Database

ROOT = Path(__file__).resolve().parent.parent


def load_scenarios(path: Path) -> list[dict[str, Any]]:
    return list(yaml.safe_load(path.read_text()))


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    if not ordered:
        return float("nan")
    index = min(len(ordered) - 1, max(0, round(q * (len(ordered) - 1))))
    return ordered[index]


GREETING = {"role": "assistant", "content": "Thanks for calling Bella Hair Studio. How can I help?"}


@dataclass
class Answer:
    """One scenario's answer and when its parts came (seconds from the caller's last words)."""

    text: str = ""
    call: Call | None = None
    first: float | None = None
    sentence: float | None = None
    filler: float | None = None
    filler_after_decision: float | None = None  # from the model committing to "call"
    call_at: float | None = None  # the tool call, its arguments complete


@dataclass
class Figures:
    """What the run measured, per file (accuracy) and over all scenarios (times)."""

    counts: dict[str, list[int]] = field(default_factory=dict)  # [scenarios, tool ok, args, ok]
    first_token: list[float] = field(default_factory=list)
    first_sentence: list[float] = field(default_factory=list)
    filler: list[float] = field(default_factory=list)
    call_ready: list[float] = field(default_factory=list)  # a tool turn's call, arguments whole
    filler_after_decision: list[float] = field(default_factory=list)
    failures: list[str] = field(default_factory=list)

    def add_times(self, answer: Answer) -> None:
        if answer.first is not None:
            self.first_token.append(answer.first)
        if answer.sentence is not None and not answer.call:
            self.first_sentence.append(answer.sentence)
        if answer.filler is not None:
            self.filler.append(answer.filler)
        if answer.filler_after_decision is not None:
            self.filler_after_decision.append(answer.filler_after_decision)
        if answer.call_at is not None:
            self.call_ready.append(answer.call_at)


def conversation(scenario: dict[str, Any], system: str) -> list[dict[str, Any]]:
    """The scenario's conversation before the caller's last words, as LLM messages."""
    messages: list[dict[str, Any]] = [{"role": "system", "content": system}, GREETING]
    for role, *rest in scenario.get("history") or []:
        if role != "tool":
            messages.append(
                {"role": "user" if role == "caller" else "assistant", "content": rest[0]}
            )
            continue
        name, arguments, say = rest  # [tool, name, arguments, the sentence it returned]
        function = {"name": name, "arguments": json.dumps(arguments)}
        messages.append(
            {
                "role": "assistant",
                "content": None,
                "tool_calls": [{"id": "c1", "type": "function", "function": function}],
            }
        )
        messages.append({"role": "tool", "tool_call_id": "c1", "content": json.dumps({"say": say})})
        messages.append({"role": "assistant", "content": say})
    return messages


async def timed_answer(
    brain: LocalBrain,
    messages: list[dict[str, Any]],
    tools: list[dict[str, Any]],
    decided_at: list[float],
) -> Answer:
    """The brain's answer to ``messages``, timed from now."""
    decided_at.clear()
    answer = Answer()
    t0 = time.perf_counter()
    async for value in respond(brain, messages, tools):
        now = time.perf_counter() - t0
        answer.first = answer.first if answer.first is not None else now
        if isinstance(value, Call):
            answer.call, answer.call_at = value, now
            answer.sentence = answer.sentence if answer.sentence is not None else now
            continue
        answer.text += value
        if value.startswith("One moment"):
            answer.filler = now
            if decided_at:
                answer.filler_after_decision = t0 + now - decided_at[0]
        elif answer.sentence is None and re.search(r"[.!?]", answer.text):
            answer.sentence = now
    return answer


def score(scenario: dict[str, Any], answer: Answer, figures: Figures) -> bool:
    """Count the scenario's tool choice and arguments; note what went wrong."""
    call, text = answer.call, answer.text
    expected = scenario["tool"]
    got = call.tool if call else "none"
    ok = got == expected and (call is not None or _is_spoken(text))
    count = figures.counts.setdefault(scenario["file"], [0, 0, 0, 0])
    count[0] += 1
    count[1] += ok
    wanted = scenario.get("args") or {}
    if ok and expected != "none":
        count[2] += 1
        arguments = call.arguments if call else {}
        good = all(re.search(p, str(arguments.get(k, "")), re.I) for k, p in wanted.items())
        count[3] += good
        if not good:
            figures.failures.append(f"ARGS  {scenario['say']!r}: {json.dumps(arguments)}")
    elif not ok:
        detail = json.dumps(call.arguments) if call else repr(text[:60])
        figures.failures.append(
            f"TOOL  {scenario['say']!r}: expected {expected}, got {got} {detail}"
        )
    return ok


def print_figures(figures: Figures, settings: Settings) -> None:
    print()
    for line in figures.failures:
        print(line)
    print()
    load = " ".join(f"{x:.1f}" for x in os.getloadavg())
    print(
        f"machine: {platform.machine()}, {os.cpu_count()} cpus, "
        f"llm threads={settings.llm_threads}, load average {load}"
    )
    for name, (total, tool_ok, args_total, args_ok) in figures.counts.items():
        print(f"{name}: {total} scenarios")
        print(f"  tool choice accuracy: {tool_ok}/{total} = {100 * tool_ok / total:.1f}%")
        if args_total:
            print(
                f"  argument accuracy:    {args_ok}/{args_total} = "
                f"{100 * args_ok / args_total:.1f}%"
            )
    for name, values in (
        ("first token", figures.first_token),
        ("first sentence (plain replies)", figures.first_sentence),
        ("filler (tool turns)", figures.filler),
        ("filler after the call decision", figures.filler_after_decision),
        ("tool call ready (tool turns)", figures.call_ready),
    ):
        if values:
            print(
                f"{name:32s} median {statistics.median(values):5.2f}s  "
                f"p90 {percentile(values, 0.9):5.2f}s  (n={len(values)})"
            )


async def run(args: argparse.Namespace) -> None:
    files = args.scenarios or [
        str(ROOT / "bench" / "brain_scenarios.yaml"),
        str(ROOT / "bench" / "brain_routing.yaml"),
    ]
    scenarios = [
        {**scenario, "file": Path(name).name}
        for name in files
        for scenario in load_scenarios(Path(name))[: args.limit or None]
    ]
    tmp = Path(tempfile.mkdtemp(prefix="frontdesk-bench-"))
    db = Database(f"sqlite+aiosqlite:///{tmp / 'bench.db'}")
    await db.migrate()
    await seed_business(db, ROOT / "tools" / "business.yaml")
    business = await load_business(db)
    # A fixed moment, so runs compare: the model's choices move with every token of its prompt.
    moment = datetime.fromisoformat(args.now).replace(tzinfo=business.tz)
    system = build_system_prompt(business, None, True, now=moment)
    tools = tool_registry().openai_tools()
    env = {"FRONTDESK_DATA_DIR": str(ROOT / "data")}
    if args.threads:
        env["FRONTDESK_LLM_THREADS"] = str(args.threads)
    settings = Settings.from_env(env)
    started = time.perf_counter()
    brain = LocalBrain.load(settings)
    cache = Path(args.prompt_cache) if args.prompt_cache else None
    brain.warm_up(tools, [{"role": "system", "content": system}], cache)
    decided_at = _time_decisions(brain)
    print(f"model loaded and prefix evaluated in {time.perf_counter() - started:.1f}s")

    figures = Figures()
    for scenario in scenarios:
        messages = conversation(scenario, system)
        await asyncio.to_thread(brain.wait_primed)  # the last reply's priming (it was playing)
        await asyncio.to_thread(brain.prime, messages, tools)  # as a live call does meanwhile
        messages.append({"role": "user", "content": scenario["say"]})
        answer = await timed_answer(brain, messages, tools, decided_at)
        ok = score(scenario, answer, figures)
        figures.add_times(answer)
        if args.verbose:
            got = answer.call.tool if answer.call else "none"
            print(
                f"{'ok ' if ok else 'BAD'} {answer.first or 0:5.2f}s {scenario['say'][:60]!r} "
                f"-> {got}"
            )
    print_figures(figures, settings)
    brain.close()
    await db.close()


def _is_spoken(reply: str) -> bool:
    """A plain reply the caller can hear: three words or more, no JSON."""
    return len(reply.split()) >= 3 and "{" not in reply


def _time_decisions(brain: LocalBrain) -> list[float]:
    """Note when each decoded line's first piece ("say:" or "call") comes out of the model.

    Returns the list the times are appended to (perf_counter seconds); the caller clears it.
    """
    times: list[float] = []
    stream = brain.stream

    def timed(*args: Any, **kwargs: Any) -> Iterator[str]:
        first = True
        for piece in stream(*args, **kwargs):
            if first:
                times.append(time.perf_counter())
                first = False
            yield piece

    brain.stream = timed  # type: ignore[method-assign]
    return times


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--scenarios",
        action="append",
        help="scenario file (repeatable; default brain_scenarios.yaml and brain_routing.yaml)",
    )
    parser.add_argument("--limit", type=int, default=0)
    parser.add_argument(
        "--now",
        default="2026-11-24T10:30",
        help="the moment the prompt says it is, business time (default: a Tuesday morning)",
    )
    parser.add_argument("--threads", type=int, default=0, help="llama.cpp threads (default 2)")
    parser.add_argument("--prompt-cache", default="", help="directory to keep the evaluated prefix")
    parser.add_argument("-v", "--verbose", action="store_true")
    asyncio.run(run(parser.parse_args()))


if __name__ == "__main__":
    main()
