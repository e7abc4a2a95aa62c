"""A tiny language model for decoder and service tests: it "wants" to write a given line.

It implements agent.brain.model.CachingModel over a small vocabulary (every printable ASCII
character plus a few multi-character pieces like Qwen's ``{"`` and ``",``). Its logits favour
the longest token that continues ``target`` from what has been evaluated since the prompt; once
the target is written (or the text has left it) it favours the end token. It counts forward
passes; ``pass_secs`` makes each decoding pass take that long (``prompt_pass_secs`` each pass
over a prompt), and ``failure`` makes them raise. :meth:`abort` cuts a pass short the way
llama.cpp's abort callback does: the pass raises StoppedError and its tokens are not kept.
"""

from __future__ import annotations

import threading
from pathlib import Path

import numpy as np

from agent.brain.model import ContextState, StoppedError, eval_in_chunks, reuse_from

END = "<|im_end|>"
MULTI = ["say", "call", "hair", "cut", ' {"', '":', ' "', '",', '"}', " {}", "_av", "ailability"]


class ScriptedModel:
    identity = "scripted"

    def __init__(
        self,
        target: str,
        prompt: str = "PROMPT",
        pass_secs: float = 0.0,
        prompt_pass_secs: float = 0.0,
    ) -> None:
        self.vocab = [END, *(chr(c) for c in range(32, 127)), "\n", *MULTI]
        self.target = target
        self.pass_secs = pass_secs
        self.prompt_pass_secs = prompt_pass_secs
        self._in_prompt = False
        self.failure: Exception | None = None
        self.context: list[int] = []
        self.passes = 0
        self.aborted = 0
        self._abort = threading.Event()
        self.prompt_len = len(self.tokenize(prompt))
        self.eval(self.tokenize(prompt))
        self.passes = 0

    def tokenize(self, text: str) -> list[int]:
        tokens, i = [], 0
        unknown = self.vocab.index("?")
        while i < len(text):
            best = max(
                (t for t, p in enumerate(self.vocab) if p and text.startswith(p, i)),
                key=lambda t: len(self.vocab[t]),
                default=unknown,
            )
            tokens.append(best)
            i += len(self.vocab[best]) if best != unknown or text[i] == "?" else 1
        return tokens

    def written(self) -> str:
        return "".join(self.vocab[t] for t in self.context[self.prompt_len :])

    def _pass(self) -> None:
        """One forward pass's time (and failure, or abort)."""
        if self.failure is not None:
            raise self.failure
        if self._abort.wait(self.prompt_pass_secs if self._in_prompt else self.pass_secs):
            self.aborted += 1
            raise StoppedError("forward pass aborted")
        self.passes += 1

    def eval(self, tokens: list[int]) -> None:
        assert tokens, "eval of nothing"
        self._pass()
        self.context.extend(tokens)

    def eval_outputs(self, tokens: list[int], outputs: int) -> list[np.ndarray]:
        """One pass, timed as a prompt's: the brain sends a prompt's last tokens and a guess
        at the line's start (``outputs - 1`` tokens), so the prompt ends before the guess."""
        self._in_prompt = True
        try:
            self._pass()
        finally:
            self._in_prompt = False
        self.context.extend(tokens[: len(tokens) - outputs])
        self.prompt_len = len(self.context) + 1
        out = []
        for token in tokens[len(tokens) - outputs :]:
            self.context.append(token)
            out.append(self.logits())
        return out

    def rewind(self, count: int) -> None:
        del self.context[len(self.context) - count :]

    def cached(self) -> list[int]:
        return list(self.context)

    def abort(self) -> None:
        self._abort.set()

    def resume(self) -> None:
        self._abort.clear()

    def snapshot(self) -> ContextState:
        return ContextState(list(self.context), b"")

    def restore(self, state: ContextState) -> None:
        self.context = list(state.tokens)

    def logits(self) -> np.ndarray:
        logits = np.zeros(len(self.vocab), dtype=np.float32)
        written = self.written()
        rest = self.target[len(written) :] if self.target.startswith(written) else ""
        matches = [t for t, p in enumerate(self.vocab) if t and rest.startswith(p)]
        best = max(matches, key=lambda t: len(self.vocab[t])) if matches else 0
        logits[best] = 10.0
        return logits

    def pieces(self) -> list[bytes]:
        return [b"" if p == END else p.encode() for p in self.vocab]

    def end_tokens(self) -> set[int]:
        return {0}

    def sync(self, tokens: list[int], *, fresh_logits: bool, stop: threading.Event) -> int:
        """The context becomes ``tokens`` (the new prompt), evaluated as llama.cpp's is."""
        start = reuse_from(self.context, tokens, fresh_logits=fresh_logits)
        if start == len(tokens):
            return 0
        del self.context[start:]
        self.prompt_len = len(tokens)
        self._in_prompt = True
        try:
            eval_in_chunks(self, tokens[start:], stop)
        finally:
            self._in_prompt = False
        return len(tokens) - start

    def save_state(self, path: Path) -> None:
        path.write_text(" ".join(map(str, self.context)))

    def load_state(self, path: Path) -> None:
        self.context = [int(t) for t in path.read_text().split()]
