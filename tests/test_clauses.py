"""The first-clause TTS aggregator on replies as the model streams them."""

from __future__ import annotations

import re

import pytest

from agent.clauses import FirstClauseAggregator


async def pieces(reply: str, aggregator: FirstClauseAggregator | None = None) -> list[str]:
    """What the TTS is handed for ``reply`` streamed in small tokens, then flushed."""
    aggregator = aggregator or FirstClauseAggregator()
    out = []
    for token in re.findall(r"\s*\S{1,3}", reply):  # word pieces with their leading space
        out.extend([a.text async for a in aggregator.aggregate(token)])
    rest = await aggregator.flush()
    if rest is not None and rest.text:
        out.append(rest.text)
    return out


@pytest.mark.parametrize(
    ("reply", "expected"),
    [
        # A comma after four words or more: the clause goes at once, then sentences.
        (
            "We are open today until six, and tomorrow from nine. Anything else?",
            ["We are open today until six,", "and tomorrow from nine.", "Anything else?"],
        ),
        # Short openers stay with their sentence.
        ("Sure, Maria, I can book that for you.", ["Sure, Maria, I can book that for you."]),
        ("Yes. We open at nine.", ["Yes.", "We open at nine."]),
        # Only the first clause is cut; later commas wait for the sentence.
        (
            "I have Friday at two thirty, with Maria. Would that work, or is later better?",
            ["I have Friday at two thirty,", "with Maria.", "Would that work, or is later better?"],
        ),
        # A colon and a dash.
        (
            "Here are our hours today: nine to six.",
            ["Here are our hours today:", "nine to six."],
        ),
        (
            "That one is popular with clients — it books out fast.",
            ["That one is popular with clients —", "it books out fast."],
        ),
        (
            "That one is popular with clients—it books out fast.",
            ["That one is popular with clients—", "it books out fast."],
        ),
        # A linking word after six words or more.
        (
            "I can book you in with James on Friday but Maria is off.",
            ["I can book you in with James on Friday", "but Maria is off."],
        ),
        ("I can book you in and send a text.", ["I can book you in and send a text."]),
        (
            "A haircut with Maria is forty dollars and takes about thirty minutes.",
            ["A haircut with Maria is forty dollars", "and takes about thirty minutes."],
        ),
    ],
)
async def test_first_clause_then_sentences(reply: str, expected: list[str]) -> None:
    assert await pieces(reply) == expected


@pytest.mark.parametrize(
    "reply",
    [
        "Our record was 3,500 bookings in one month last year.",  # thousands separator
        "Your appointment is at 2:30 p.m. on Friday the fourth.",  # a time, an abbreviation
        "A full coloring with the wash costs $95.50 on weekdays.",  # a price
        "Please call our front desk on 555-0142 for a follow-up visit.",  # a phone number
        "The treatment takes one hour and fifteen minutes in total.",  # an amount with "and"
        "Coloring with Maria costs ninety five dollars and fifty cents.",
        "Coloring with Maria usually takes about an hour and a half.",
        "Coloring with Maria usually takes about two and a half hours.",
    ],
)
async def test_numbers_times_and_prices_are_never_cut(reply: str) -> None:
    assert await pieces(reply) == [reply]


async def test_every_reply_gets_its_own_first_clause() -> None:
    aggregator = FirstClauseAggregator()
    first = await pieces("Let me check that for you, one moment.", aggregator)
    again = await pieces("Thanks for waiting, Friday at two is free.", aggregator)
    assert first == ["Let me check that for you,", "one moment."]
    assert again == ["Thanks for waiting, Friday at two is free."]  # three words: no cut
    cut = FirstClauseAggregator()
    _ = [a async for a in cut.aggregate("We are open today until")]
    await cut.handle_interruption()  # the caller talked over it: the next reply starts afresh
    assert await pieces("Of course, I can help with that, no problem.", cut) == [
        "Of course, I can help with that,",
        "no problem.",
    ]


async def test_the_pieces_rejoin_into_the_reply() -> None:
    reply = (
        "Thanks for calling Bella's salon today, how can I help? We do cuts, colour and "
        "blow drys: a haircut is $40."
    )
    assert " ".join(await pieces(reply)) == reply
