"""The TTS text aggregator that hands over a reply's first clause, not its first sentence.

A reply's first audio waits for the text handed to the TTS. pipecat's aggregator waits for a
whole sentence; on the local model (~15 tokens a second) a 15-word sentence is a second of
generation. :class:`FirstClauseAggregator` hands over the first clause as soon as it is long
enough to sound natural on its own, and everything after it sentence by sentence:

- at a comma, colon, semicolon or dash followed by a space, once the clause has at least
  :data:`MIN_CLAUSE_WORDS` words ("Sure, Maria," stays; "We are open today until six," goes);
- before a linking word ("and", "but", "so", ...) once the clause has at least
  :data:`MIN_LINKED_WORDS` words, judged when the word after it is complete: not inside an
  amount ("two and a half", "an hour and a half", "forty dollars and fifty cents").

Punctuation inside a token never cuts: "3,500", "2:30", "$40.50", "follow-up", "a.m." and
"555-0142" are whole, so the words-for-numbers rewriting before hibari sees them whole.
"""

from __future__ import annotations

import re
from collections.abc import AsyncIterator

from pipecat.utils.text.base_text_aggregator import Aggregation, TextType
from pipecat.utils.text.simple_text_aggregator import SimpleTextAggregator, _LookaheadState

MIN_CLAUSE_WORDS = 4
MIN_LINKED_WORDS = 6
LINKING_WORDS = frozenset(
    "and but so or because then which while although though since unless until".split()
)
_CLAUSE_END = re.compile(r"(?:[,;:]|\s[-–—]|[–—])$")
# "and" after a number, or between a unit and a number, joins an amount, not two clauses.
_NUMBER = re.compile(
    r"^(?:\$?\d[\d,.:]*|zero|one|two|three|four|five|six|seven|eight|nine|ten|eleven|twelve|"
    r"\w+teen|twenty|thirty|forty|fifty|sixty|seventy|eighty|ninety|hundred|thousand|million|"
    r"half|a)$",
    re.I,
)
_UNITS = frozenset("hour hours minute minutes dollar dollars cent cents".split())


def first_clause_end(text: str) -> int | None:
    """Where the first clause of ``text`` (the reply so far, its last character just arrived)
    ends, or None if it does not end here. The clause is ``text[:end]``; the rest stays."""
    if len(text) < 2:
        return None
    last = text[-1]
    if text[-2] in "–—" and not last.isspace():
        return _long_enough(text, len(text) - 1, MIN_CLAUSE_WORDS)  # "today—we"
    if not last.isspace():
        return None
    body = text.rstrip()
    if _CLAUSE_END.search(body):
        return _long_enough(text, len(body), MIN_CLAUSE_WORDS)
    words = body.split()
    # A linking word is judged once the word after it is complete.
    if len(words) >= MIN_LINKED_WORDS + 2 and words[-2].lower() in LINKING_WORDS:
        before, after = words[-3].strip(",.").lower(), words[-1].strip(",.")
        if _NUMBER.match(before) or (before in _UNITS and _NUMBER.match(after)):
            return None  # "two and a half", "forty dollars and fifty cents"
        linking = re.search(r"\S+\s+\S+$", body)
        return linking.start() if linking else None
    return None


def _long_enough(text: str, end: int, minimum: int) -> int | None:
    return end if len(text[:end].split()) >= minimum else None


class FirstClauseAggregator(SimpleTextAggregator):
    """pipecat's sentence aggregator, except that each reply's first clause goes on its own
    (:func:`first_clause_end`). A reply is the text between flushes (pipecat flushes at the end
    of each LLM response); an interruption or reset starts a new one."""

    def __init__(self) -> None:
        super().__init__(aggregation_type=TextType.SENTENCE)
        self._first = True  # the reply's first clause has not been handed over yet

    async def aggregate(self, text: str) -> AsyncIterator[Aggregation]:
        for char in text:
            self._text += char
            sentence = await self._check_sentence_with_lookahead(char)
            if sentence is not None:
                self._first = False
                yield sentence
                continue
            end = first_clause_end(self._text) if self._first else None
            if end is not None:
                clause, self._text = self._text[:end].strip(), self._text[end:].lstrip()
                self._first = False
                self._lookahead_state = _LookaheadState.IDLE
                yield Aggregation(text=clause, type=TextType.SENTENCE)

    async def flush(self) -> Aggregation | None:
        self._first = True
        return await super().flush()

    async def handle_interruption(self) -> None:
        self._first = True
        await super().handle_interruption()

    async def reset(self) -> None:
        self._first = True
        await super().reset()
