"""The offline brain: constrained decoding, parsing of streamed output, and the real model."""

import itertools
import json
import math
import re

import pytest

from agent.brain import parse_turn, render_tools
from agent.decoding import Decoder, Vocabulary, decode_line
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
    assert turn.kind == "call" and f"call {turn.tool} " in target
    assert turn.arguments == json.loads(target.split(" ", 2)[2])


def test_required_arguments_are_always_written():
    # The model wants to close the object early; "when" is required, so it must be written.
    line, _ = decode('call check_availability {"service": "haircut"}')
    assert line.startswith('call check_availability {"service": "haircut", "when": "')


def test_only_enabled_tools_and_known_enum_values_can_be_written():
    few = [t for t in TOOLS if t["function"]["name"] in ("end_call", "check_availability")]
    line, _ = decode('call book_appointment {"service": "haircut", "when": "2pm"}', few)
    assert parse_turn(line, few).tool in ("end_call", "check_availability") or "again" in (
        parse_turn(line, few).text
    )
    line, _ = decode('call get_business_info {"topic": "parking"}')
    topic = json.loads(line.split(" ", 2)[2])["topic"]
    assert topic in ("hours", "hours_today", "address", "prices", "services", "all")


def test_a_value_cut_short_becomes_a_polite_re_ask():
    rambling = 'call take_message {"message": "' + "la " * 200
    line, _ = decode(rambling)
    turn = parse_turn(line, TOOLS)
    assert turn.kind == "say" and "again" in turn.text.lower()
    ended = 'call take_message {"message": "please call'  # the turn ends inside the value
    line, _ = decode(ended)
    turn = parse_turn(line, TOOLS)
    assert turn.kind == "say" and "again" in turn.text.lower()


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
    assert call.kind == "call" and call.arguments == {"service": "haircut", "when": "Friday at 2pm"}
    for broken in [
        'call check_availability {"service": "haircut", "when": "Fri',  # truncated
        "call launch_rocket {}",  # not a tool
        "banana",
        "",
        "say:",
    ]:
        turn = parse_turn(broken, TOOLS)
        assert turn.kind == "say" and "again" in turn.text.lower()


def test_tool_list_is_rendered_compactly():
    text = render_tools(TOOLS)
    assert "check_availability(service, when)" in text
    assert "book_appointment(service, when, customer_name?, phone?)" in text


class _LineBrain:
    """generate_events' view of the brain: a line streamed in pieces, priming recorded.

    ``then`` are the lines for the following decodes, if the first is decoded again."""

    def __init__(self, pieces, *then):
        self.pieces = pieces
        self.then = list(then)
        self.primed = []
        self.excluded = []

    def stream(self, messages, tools, excluded=frozenset()):
        self.excluded.append(set(excluded))
        pieces = self.pieces if len(self.excluded) == 1 else self.then[len(self.excluded) - 2]
        yield from pieces

    def prime_later(self, messages, tools):
        self.primed.append(messages)


async def test_the_filler_comes_as_soon_as_the_tool_is_chosen():
    from agent.brain import generate_events
    from agent.prompts import phrases

    brain = _LineBrain(["call", " check_availability", ' {"service": "', "hair", "cut"])
    brain.pieces += ['", "when": "', "Friday", '"}']
    asked = [{"role": "user", "content": "Could I get a cut on Friday?"}]
    events = [e async for e in generate_events(brain, asked, TOOLS)]
    assert events[0] == ("text", phrases()["filler"])
    assert events[1][0] == "call" and events[1][1].arguments["when"] == "Friday"
    assert brain.excluded == [set()]  # "cut" grounds "haircut": decoded once


async def test_a_service_nobody_mentioned_makes_the_model_choose_again():
    from agent.brain import generate_events
    from agent.prompts import phrases

    invented = ["call", " check_availability", ' {"service": "haircut", "when": "Sunday"}']
    hours = ["call", " get_business_info", ' {"topic": "hours"}']
    brain = _LineBrain(invented, hours)
    messages = [
        {"role": "assistant", "content": "Thanks for calling Bella Hair Studio."},
        {"role": "user", "content": "Are you open on Sundays?"},
    ]
    events = [e async for e in generate_events(brain, messages, TOOLS)]
    assert brain.excluded == [set(), {"check_availability"}]
    assert events[0] == ("text", phrases()["filler"])  # said once, for the first choice
    assert [k for k, _ in events] == ["text", "call"]
    assert events[1][1].tool == "get_business_info"


def test_grounded_arguments_come_from_the_conversation():
    from agent.brain import Turn, ungrounded_arguments

    def check(service, *said):
        turn = Turn("call", tool="check_availability", arguments={"service": service, "when": "x"})
        roles = ["assistant", "user", "assistant", "user"]
        messages = [{"role": r, "content": t} for r, t in zip(roles, said, strict=False)]
        return ungrounded_arguments(turn, messages)

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
    hours = Turn("call", tool="get_business_info", arguments={"topic": "hours"})
    assert ungrounded_arguments(hours, [{"role": "user", "content": "hi"}]) == []


async def test_a_reply_is_streamed_in_pieces_and_a_broken_line_is_a_re_ask():
    from agent.brain import generate_events

    brain = _LineBrain(["say:", " Hello", " there", "!"])
    events = [e async for e in generate_events(brain, [{"role": "user", "content": "x"}], TOOLS)]
    assert events == [("text", "Hello"), ("text", " there"), ("text", "!")]
    assert brain.primed  # the reply is primed into the cache while it plays
    brain = _LineBrain(["call", " take_message", ' {"message": "', "uh"])
    events = [e async for e in generate_events(brain, [{"role": "user", "content": "x"}], TOOLS)]
    assert [k for k, _ in events] == ["text"] and "again" in events[-1][1].lower()


# --- The real model (slow: loads 1.1 GB; runs in CI) -------------------------------------------

ROUTING = [
    (
        "Do you have any openings for a haircut tomorrow afternoon?",
        "check_availability",
        {"service": "haircut"},
    ),
    ("What time do you close on Saturday?", "get_business_info", {}),
    ("I need to cancel my appointment on Friday.", "cancel_appointment", {}),
    ("Can I talk to a real person please?", "transfer_to_human", {}),
    ("Is there somewhere to park?", "search_knowledge_base", {}),
    ("Okay, that's everything, goodbye.", "end_call", {}),
]


@pytest.fixture(scope="module")
def brain(tmp_path_factory):
    from agent.brain import LocalBrain
    from agent.settings import Settings
    from tests.conftest import LOCAL_MODEL

    loaded = LocalBrain.load(Settings.from_env({"FRONTDESK_LLM_MODEL_PATH": str(LOCAL_MODEL)}))
    loaded.warm_up(
        TOOLS,
        [{"role": "system", "content": "Facts:\n- Business: Bella Hair Studio."}],
        tmp_path_factory.mktemp("prompt-cache"),
    )
    return loaded


@pytest.mark.slow
@pytest.mark.parametrize(("utterance", "tool", "arguments"), ROUTING)
async def test_real_model_routes_to_the_right_tool(brain, utterance, tool, arguments):
    from agent.brain import generate_events

    messages = [
        {
            "role": "system",
            "content": "Bella Hair Studio. Right now it is Sunday November 22, 10 AM.",
        },
        {"role": "assistant", "content": "Thanks for calling Bella Hair Studio. How can I help?"},
        {"role": "user", "content": utterance},
    ]
    events = [e async for e in generate_events(brain, messages, TOOLS)]
    calls = [value for kind, value in events if kind == "call"]
    assert calls, f"expected a call to {tool}, got {events}"
    assert calls[0].tool == tool
    for value in arguments.values():
        assert re.search(value, json.dumps(calls[0].arguments), re.I)


@pytest.mark.slow
async def test_real_model_answers_small_talk_in_words(brain):
    from agent.brain import generate_events

    messages = [
        {"role": "system", "content": "Bella Hair Studio."},
        {"role": "user", "content": "Hi there, how are you doing today?"},
    ]
    events = [e async for e in generate_events(brain, messages, TOOLS)]
    assert events and all(kind == "text" for kind, _ in events)
    text = "".join(value for _, value in events)
    assert len(text.split()) >= 3 and "{" not in text


@pytest.mark.slow
def test_priming_leaves_only_the_callers_next_words_to_evaluate(brain):
    def tokens(text):
        return list(brain.llama.tokenize(text.encode(), add_bos=False, special=True))

    conversation = [
        {"role": "system", "content": "Facts:\n- Business: Bella Hair Studio."},
        {"role": "assistant", "content": "Thanks for calling Bella Hair Studio. How can I help?"},
    ]
    brain.prime(conversation, TOOLS)
    primed = list(brain.llama.input_ids[: brain.llama.n_tokens])
    words = "Do you have anything on Friday?"
    request = tokens(brain.build_prompt([*conversation, {"role": "user", "content": words}], TOOLS))
    assert request[: len(primed)] == primed  # the request reuses all of it
    # Left: the words and the turn's close ("<|im_end|>\n<|im_start|>assistant\n").
    assert len(request) - len(primed) <= len(tokens(words)) + 5


def test_booking_is_offered_to_the_model_only_after_availability_was_checked():
    from agent.brain import routable_tools

    def names(messages):
        return {t["function"]["name"] for t in routable_tools(messages, TOOLS)}

    fresh = [{"role": "user", "content": "Can I book a haircut Friday at 2?"}]
    assert "book_appointment" not in names(fresh)
    assert "check_availability" in names(fresh) and len(names(fresh)) == len(TOOLS) - 1
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


def test_a_choice_is_known_before_its_tokens_are_fed():
    model = ScriptedModel('call check_availability {"service": "cut", "when": "noon"}')
    pieces = decode_line(Decoder(model, Vocabulary.of(model)), TOOLS)
    assert next(pieces) == "call"
    assert model.passes == 0  # decided from the prompt's logits; "call" is not fed yet
    assert next(pieces) == " check_availability"
    # The name is known (so the filler can be said) before its last tokens cost a pass.
    assert model.written().startswith("call") and len(model.written()) < len("call check")


def test_the_history_is_trimmed_in_steps_so_the_cached_prompt_survives_most_turns():
    from agent.brain import HISTORY_STEP, MAX_HISTORY_MESSAGES, history_start

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
