"""A tiny language model for decoder tests: it "wants" to write a given line, token by token.

It implements agent.decoding.Model over a small vocabulary (every printable ASCII character
plus a few multi-character pieces like Qwen's ``{"`` and ``",``). Its logits favour the longest
token that continues ``target`` from what has been evaluated since the prompt; once the
target is written (or the text has left it) it favours the end token. It counts forward passes.
"""

from __future__ import annotations

import numpy as np

END = "<|im_end|>"
MULTI = ["say", "call", "hair", "cut", ' {"', '":', ' "', '",', '"}', " {}", "_av", "ailability"]


class ScriptedModel:
    def __init__(self, target: str, prompt: str = "PROMPT") -> None:
        self.vocab = [END, *(chr(c) for c in range(32, 127)), "\n", *MULTI]
        self.target = target
        self.context: list[int] = []
        self.passes = 0
        self.prompt_len = len(self.tokenize(prompt))
        self.eval(self.tokenize(prompt))
        self.passes = 0

    def tokenize(self, text: str) -> list[int]:
        tokens, i = [], 0
        while i < len(text):
            best = max(
                (t for t, p in enumerate(self.vocab) if p and text.startswith(p, i)),
                key=lambda t: len(self.vocab[t]),
            )
            tokens.append(best)
            i += len(self.vocab[best])
        return tokens

    def written(self) -> str:
        return "".join(self.vocab[t] for t in self.context[self.prompt_len :])

    def eval(self, tokens: list[int]) -> None:
        assert tokens, "eval of nothing"
        self.passes += 1
        self.context.extend(tokens)

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
