"""Constrained decoding of the brain's one-line output, driven token by token from Python.

The line is ``say: <reply>`` or ``call <tool> {json args}``. Instead of a GBNF grammar applied
to the whole vocabulary at every step (slow with Qwen's 152k tokens, and every forced token
still costs a forward pass), the decoder walks the structure itself:

- Choices (``say`` or ``call``, which tool, which argument key comes next, an enumerated value,
  closing the object) are made by comparing the logits of the options' tokens only. As soon as
  one option is left, its remaining tokens are evaluated in one batch.
- Free text (the reply, a string argument) is greedy decoding with a precomputed mask; a reply
  ends at the end of the line, a string value at its closing quote.

Option texts start and end where Qwen's pre-tokenizer splits anyway (between letters and
punctuation), so the tokens fed are the ones the model would have written itself.

Owns the :class:`Model` protocol (what decoding needs from a language model);
``agent.brain.model.LlamaModel`` implements it over llama.cpp, tests use a small scripted model.
"""

from __future__ import annotations

import codecs
import json
from collections.abc import Callable, Generator, Iterator
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np

MAX_REPLY_TOKENS = 90
MAX_VALUE_TOKENS = 40  # a value is a few words; 40 tokens means the model is rambling
# Logit added to "call" against "say:" when the line's route is chosen. A 1.5B model under-calls
# tools: asked for an operator or a message, it leans to chatting (P(say) 0.50-0.57 on the bench),
# while small talk scores P(say) 0.65 and up. 0.4 moves the line to P(say) 0.6. A wrong call is
# answered by the tool itself; a wrong reply may state made-up facts.
CALL_BIAS = 0.4
#: How a reply line starts; the brain guesses it in the prompt's last pass (one pass fewer
#: before the first word of a reply; a tool call rewinds it).
REPLY_ROUTE = "say:"


class Model(Protocol):
    """What the decoder needs from a language model holding a KV cache."""

    def tokenize(self, text: str) -> list[int]: ...

    def eval(self, tokens: list[int]) -> None:
        """Append tokens to the context (one forward pass for the batch)."""

    def eval_outputs(self, tokens: list[int], outputs: int) -> list[np.ndarray]:
        """Append tokens in one forward pass; the next-token logits after each of the last
        ``outputs`` of them."""

    def rewind(self, count: int) -> None:
        """Drop the last ``count`` tokens from the context."""

    def logits(self) -> np.ndarray:
        """Next-token logits after the last evaluated token."""

    def pieces(self) -> list[bytes]:
        """Each token's text (b"" for control tokens); the index is the token id."""

    def end_tokens(self) -> set[int]:
        """Tokens that end a turn (end of text, end of message)."""


@dataclass
class Vocabulary:
    """Masks over the vocabulary, computed once per model."""

    pieces: list[bytes]
    reply_ok: np.ndarray  # tokens allowed in a reply (no newline, no control tokens)
    string_ok: np.ndarray  # tokens allowed inside a JSON string (and its closing quote)

    ends: set[int]

    @classmethod
    def of(cls, model: Model) -> Vocabulary:
        pieces = model.pieces()
        ends = model.end_tokens()
        reply_ok = np.array([bool(p) and b"\n" not in p and b"\r" not in p for p in pieces])
        for token in ends:
            reply_ok[token] = True  # an end token closes a reply (or cuts a value short)
        string_ok = reply_ok & np.array([b"\\" not in p for p in pieces])
        return cls(pieces, reply_ok, string_ok, ends)


class Decoder:
    """Decodes one line into the model's context; yields the line's text as it is decided."""

    def __init__(self, model: Model, vocabulary: Vocabulary) -> None:
        self.model = model
        self.vocab = vocabulary
        self._token_cache: dict[str, list[int]] = {}
        self._pending: list[int] = []  # decided tokens, evaluated when logits are next needed
        # Guessed tokens already in the context beyond what was decided, and the logits before
        # each of them and after the last (len(_ahead) + 1 rows).
        self._ahead: list[int] = []
        self._ahead_logits: list[np.ndarray] = []

    def assume(self, guess: list[int], logits: list[np.ndarray]) -> None:
        """The context already holds ``guess`` beyond what was decided, with ``logits`` before
        each guessed token and after the last (from one pass, :meth:`Model.eval_outputs`).
        Decisions that follow the guess use them without a pass; one that leaves it rewinds."""
        if len(logits) != len(guess) + 1:
            raise ValueError(f"{len(guess)} guessed tokens need {len(guess) + 1} logits")
        self._ahead, self._ahead_logits = list(guess), list(logits)

    def _logits(self) -> np.ndarray:
        if self._ahead_logits:
            n = min(len(self._pending), len(self._ahead))
            if self._pending[:n] == self._ahead[:n]:  # decided as guessed (so far)
                self._pending = self._pending[n:]
                self._ahead, self._ahead_logits = self._ahead[n:], self._ahead_logits[n:]
                if not self._pending:
                    logits = self._ahead_logits[0]
                    if not self._ahead:
                        self._ahead_logits = []
                    return logits
                self._ahead_logits = []  # decided past the guess: the rest is evaluated
            else:
                self.model.rewind(len(self._ahead))
                self._ahead, self._ahead_logits = [], []
        if self._pending:
            self.model.eval(self._pending)
            self._pending = []
        return self.model.logits()

    def _tokens(self, text: str) -> list[int]:
        if text not in self._token_cache:
            self._token_cache[text] = self.model.tokenize(text)
        return self._token_cache[text]

    def choose(self, options: list[str], bias: list[float] | None = None) -> tuple[int, float]:
        """Pick one option by the model's preference; (index, probability).

        ``bias`` (one logit per option) is added to each option's first token before choosing.

        The chosen option's tokens are fed to the model lazily, in one batch with whatever
        is decided next, so the caller can act on the choice (say a filler) before that pass.

        The probability is the model's share for the first token of the chosen path among the
        options' first tokens (a confidence for routing decisions).
        """
        paths = [self._tokens(o) for o in options]
        alive = [i for i, p in enumerate(paths) if p]
        if not alive:
            raise ValueError("choose() needs at least one non-empty option")
        depth, confidence = 0, 1.0
        while True:
            finished = [i for i in alive if len(paths[i]) == depth]
            if finished:
                chosen = finished[0]
                break
            logits = self._logits()
            candidates = sorted({paths[i][depth] for i in alive})
            scores = np.array([logits[t] for t in candidates], dtype=np.float64)
            if depth == 0 and bias is not None:
                scores += [max(bias[i] for i in alive if paths[i][0] == t) for t in candidates]
            best = candidates[int(scores.argmax())]
            if depth == 0:
                shares = np.exp(scores - scores.max())
                confidence = float(shares.max() / shares.sum())
            alive = [i for i in alive if paths[i][depth] == best]
            if len(alive) == 1:
                chosen = alive[0]
                break
            self._pending.append(best)  # fed before the next step's logits
            depth += 1
        self._pending.extend(paths[chosen][depth:])
        return chosen, confidence

    def free_text(
        self, allowed: np.ndarray, cut: Callable[[bytes], int], max_tokens: int
    ) -> Generator[str, None, str]:
        """Greedy text; returns why it stopped: "stop", "end" or "length".

        ``cut(piece)`` gives the byte offset where the text must stop inside a token, or -1.
        The token holding the cut is not fed; the text before the cut is yielded and fed.
        An end token (or a masked-out best choice) ends the text with "end".
        """
        utf8 = codecs.getincrementaldecoder("utf-8")(errors="replace")
        banned = np.where(allowed, 0.0, -np.inf)
        for _ in range(max_tokens):
            logits = self._logits() + banned
            token = int(logits.argmax())
            if token in self.vocab.ends or not np.isfinite(logits[token]):
                return "end"
            piece = self.vocab.pieces[token]
            at = cut(piece)
            if at >= 0:
                head = utf8.decode(piece[:at], final=True)
                if head:
                    self._pending.extend(self.model.tokenize(head))
                    yield head
                return "stop"
            self._pending.append(token)
            text = utf8.decode(piece)
            if text:
                yield text
        return "length"


def _newline(piece: bytes) -> int:
    return min((i for i in (piece.find(b"\n"), piece.find(b"\r")) if i >= 0), default=-1)


def _quote(piece: bytes) -> int:
    return piece.find(b'"')


def _not_number(piece: bytes) -> int:
    return 0 if piece.strip(b"0123456789.-") else -1


def decode_line(
    decoder: Decoder, tools: list[dict[str, Any]], confidences: list[float] | None = None
) -> Iterator[str]:
    """Yield the pieces of one line: ``say: ...`` or ``call NAME {...}``.

    A value cut short (too long, or the turn ended inside it) leaves the line unfinished; the
    caller's parser turns that into a polite re-ask. ``confidences`` collects the routing
    probabilities (say/call, then which tool) for logging.
    """
    names = [t["function"]["name"] for t in tools]
    route, confidence = decoder.choose(
        [REPLY_ROUTE, "call"] if names else [REPLY_ROUTE], [0.0, CALL_BIAS] if names else None
    )
    if confidences is not None:
        confidences.append(confidence)
    if route == 0:
        yield REPLY_ROUTE
        yield from decoder.free_text(decoder.vocab.reply_ok, _newline, MAX_REPLY_TOKENS)
        return
    yield "call"
    index, confidence = decoder.choose([f" {name}" for name in names])
    if confidences is not None:
        confidences.append(confidence)
    yield f" {names[index]}"
    yield from _arguments(decoder, tools[index]["function"].get("parameters") or {})


def _arguments(decoder: Decoder, params: dict[str, Any]) -> Iterator[str]:
    """The JSON object, keys in schema order: required ones always, optional ones by choice."""
    properties: list[tuple[str, dict[str, Any]]] = list((params.get("properties") or {}).items())
    required = set(params.get("required") or [])

    def next_keys(position: int, lead: str, close: str) -> list[tuple[str, int]]:
        """Options from ``position``: each key up to the first required one, or closing."""
        options = []
        for i in range(position, len(properties)):
            key, schema = properties[i]
            options.append((f'{lead}"{key}": {_opening(schema)}', i))
            if key in required:
                return options
        return [*options, (close, -1)]

    options = next_keys(0, " {", " {}")
    chosen, _ = decoder.choose([text for text, _ in options])
    text, current = options[chosen]
    yield text
    while current >= 0:
        _key, schema = properties[current]
        quote = '"' if _is_string(schema) else ""
        if "enum" in schema or schema.get("type") == "boolean":
            # Value and what follows are one choice: "hours" and "hours_today" differ late.
            values = [_enum_text(v) for v in schema.get("enum") or [True, False]]
            after = next_keys(current + 1, quote + ", ", quote + "}")
            combos = [(value + text, i) for value in values for text, i in after]
            chosen, _ = decoder.choose([text for text, _ in combos])
            text, current = combos[chosen]
            yield text
            continue
        number = schema.get("type") in ("integer", "number")
        why = yield from decoder.free_text(
            decoder.vocab.reply_ok if number else decoder.vocab.string_ok,
            _not_number if number else _quote,
            MAX_VALUE_TOKENS,
        )
        if why != "stop":
            return  # cut short: the line stays unfinished
        options = next_keys(current + 1, quote + ", ", quote + "}")
        chosen, _ = decoder.choose([text for text, _ in options])
        text, current = options[chosen]
        yield text


def _is_string(schema: dict[str, Any]) -> bool:
    if "enum" in schema:
        return all(isinstance(v, str) for v in schema["enum"])
    return bool(schema.get("type", "string") == "string")


def _opening(schema: dict[str, Any]) -> str:
    """What follows ``"key": `` before the value's own words: the quote of a string."""
    return '"' if _is_string(schema) else ""


def _enum_text(value: Any) -> str:
    text = json.dumps(value)
    return text[1:-1] if text.startswith('"') else text  # quotes come from key and closer
