"""The local model: Qwen2.5-Coder-1.5B on llama.cpp, its KV cache, and the one lock over both.

Owns loading the model, :class:`LlamaModel` (the decoder's :class:`~agent.brain.decoding.Model`
over llama-cpp-python, with the one place the cache is matched token by token against a new
prompt), saving and restoring the evaluated prefix on disk, priming the cache in a background
thread that can be stopped, and :class:`LocalBrain`, which decodes one line at a time on a
worker thread and stops promptly when its consumer goes away.
"""

from __future__ import annotations

import asyncio
import ctypes
import hashlib
import threading
import time
from collections.abc import AsyncGenerator, Iterator
from pathlib import Path
from typing import Protocol

import numpy as np
from llama_cpp import Llama, llama_cpp
from loguru import logger

from agent import install
from agent.brain.decoding import Decoder, Model, Vocabulary, decode_line
from agent.brain.prompt import Message, Tool, build_prompt, priming_prompt
from agent.settings import Settings

#: Tokens evaluated per forward pass when a prompt is synced; a stop request is honoured
#: between passes, so a cancelled request or a closing brain waits for one pass at most.
EVAL_CHUNK_TOKENS = 64


class StoppedError(Exception):
    """Evaluation was stopped before the prompt was in the cache."""


class CachingModel(Model, Protocol):
    """A :class:`Model` whose context persists between requests (llama.cpp's KV cache)."""

    identity: str  # what the saved cache depends on besides the prompt (model file, context size)

    def sync(self, tokens: list[int], *, fresh_logits: bool, stop: threading.Event) -> int:
        """Make the context ``tokens``, reusing the longest cached prefix; returns how many
        tokens were evaluated. With ``fresh_logits`` the last token is evaluated even when
        cached, so the next-token logits are its. Raises :class:`StoppedError` if ``stop`` is
        set before the context is complete."""
        ...

    def save_state(self, path: Path) -> None: ...

    def load_state(self, path: Path) -> None:
        """Restore a saved context; raises if it cannot be used."""


def reuse_from(cached: list[int], tokens: list[int], *, fresh_logits: bool) -> int:
    """Where evaluating ``tokens`` starts when the context holds ``cached``: after the longest
    shared prefix (with ``fresh_logits``, before the last token at the latest, so that the
    next-token logits are its). ``len(tokens)`` means nothing is left to evaluate."""
    common = 0
    for a, b in zip(cached, tokens, strict=False):
        if a != b:
            break
        common += 1
    return min(common, len(tokens) - 1) if fresh_logits else common


def eval_in_chunks(model: Model, tokens: list[int], stop: threading.Event) -> None:
    """Evaluate ``tokens`` EVAL_CHUNK_TOKENS per pass; raise StoppedError once ``stop`` is set."""
    for start in range(0, len(tokens), EVAL_CHUNK_TOKENS):
        if stop.is_set():
            raise StoppedError(f"stopped with {len(tokens) - start} prompt tokens left")
        model.eval(tokens[start : start + EVAL_CHUNK_TOKENS])


class LlamaModel:
    """:class:`CachingModel` over llama-cpp-python's ``Llama`` (its KV cache and token history)."""

    def __init__(self, llama: Llama, path: str = "") -> None:
        self.llama = llama
        self.identity = f"{path}|{llama.n_ctx()}"

    def tokenize(self, text: str) -> list[int]:
        return list(self.llama.tokenize(text.encode(), add_bos=False, special=True))

    def eval(self, tokens: list[int]) -> None:
        self.llama.eval(tokens)

    def logits(self) -> np.ndarray:
        pointer = llama_cpp.llama_get_logits_ith(self.llama._ctx.ctx, -1)
        return np.ctypeslib.as_array(pointer, shape=(self.llama.n_vocab(),)).copy()

    def pieces(self) -> list[bytes]:
        vocab = self.llama._model.vocab
        buffer = ctypes.create_string_buffer(256)
        out = []
        for token in range(self.llama.n_vocab()):
            n = llama_cpp.llama_token_to_piece(vocab, token, buffer, 256, 0, False)
            out.append(buffer.raw[: max(n, 0)])
        return out

    def end_tokens(self) -> set[int]:
        ends = {int(self.llama.token_eos())}
        ends.update(self.tokenize("<|im_end|>")[:1])
        return ends

    def cached(self) -> list[int]:
        """The tokens in the context now."""
        return [int(t) for t in self.llama.input_ids[: self.llama.n_tokens]]

    def sync(self, tokens: list[int], *, fresh_logits: bool, stop: threading.Event) -> int:
        start = reuse_from(self.cached(), tokens, fresh_logits=fresh_logits)
        if start == len(tokens):
            return 0  # all cached (and perhaps more, kept for later)
        self.llama.n_tokens = start
        eval_in_chunks(self, tokens[start:], stop)
        return len(tokens) - start

    def save_state(self, path: Path) -> None:
        ctx = self.llama._ctx.ctx
        size = llama_cpp.llama_state_get_size(ctx)
        buffer = (ctypes.c_uint8 * int(size))()
        written = llama_cpp.llama_state_get_data(ctx, buffer, size)
        ids = np.asarray(self.cached(), dtype=np.int32)
        state = np.frombuffer(bytes(buffer)[: int(written)], dtype=np.uint8)
        path.parent.mkdir(parents=True, exist_ok=True)
        partial = path.with_suffix(".partial.npz")
        np.savez(partial, ids=ids, state=state)
        partial.replace(path)

    def load_state(self, path: Path) -> None:
        try:
            with np.load(path, allow_pickle=False) as data:
                ids, state = data["ids"], data["state"]
            buffer = (ctypes.c_uint8 * len(state)).from_buffer_copy(state.tobytes())
            if llama_cpp.llama_state_set_data(self.llama._ctx.ctx, buffer, len(state)) != len(
                state
            ):
                raise RuntimeError("llama.cpp refused the saved state")
            self.llama.input_ids[: len(ids)] = ids
            self.llama.n_tokens = len(ids)
        except Exception:
            self.llama.n_tokens = 0
            raise


def load_llama(settings: Settings) -> LlamaModel:
    """The configured GGUF model (FRONTDESK_LLM_MODEL_PATH, else the packaged one, assembled
    into the user cache first if missing), loaded."""
    if settings.llm_model_path:
        path = Path(settings.llm_model_path)
        if not path.is_file():
            raise FileNotFoundError(f"FRONTDESK_LLM_MODEL_PATH {path} is not a file")
    else:
        path = install.ensure_model()
    started = time.perf_counter()
    llama = Llama(
        model_path=str(path),
        n_ctx=settings.llm_context_tokens,
        n_threads=settings.llm_threads,
        n_threads_batch=settings.llm_threads,
        n_batch=512,
        verbose=False,
    )
    logger.info(f"loaded local LLM {path.name} in {time.perf_counter() - started:.1f}s")
    return LlamaModel(llama, str(path))


class LocalBrain:
    """Owns one model and its cache; one evaluation at a time (two cores).

    Implements :class:`agent.brain.policy.LineSource`. :meth:`close` stops background priming
    and waits for it; a closed brain primes no more.
    """

    def __init__(self, model: CachingModel) -> None:
        self.model = model
        self._lock = threading.Lock()  # the model and its cache
        self._vocabulary: Vocabulary | None = None
        self._priming_guard = threading.Lock()  # the fields below
        self._priming: threading.Thread | None = None
        self._pending: tuple[list[Message], list[Tool]] | None = None
        self._closed = threading.Event()

    @classmethod
    def load(cls, settings: Settings) -> LocalBrain:
        return cls(load_llama(settings))

    def _decoder(self) -> Decoder:
        if self._vocabulary is None:
            self._vocabulary = Vocabulary.of(self.model)
        return Decoder(self.model, self._vocabulary)

    # --- the cache ---------------------------------------------------------------------------

    def warm_up(
        self, tools: list[Tool], opening: list[Message], cache_dir: Path | None = None
    ) -> None:
        """Evaluate the fixed prefix (and a typical call opening) now, not on the first call.

        With ``cache_dir``, the evaluated KV cache is saved there and reused at the next start
        when the prompt is the same, so a restart does not pay for the prefix again.
        """
        started = time.perf_counter()
        prompt = build_prompt(opening, tools, open_reply=False)
        key = hashlib.sha256(f"{self.model.identity}|{prompt}".encode()).hexdigest()[:16]
        cached = cache_dir / f"prefix-{key}.npz" if cache_dir else None
        loaded = cached is not None and cached.exists() and self._load_state(cached)
        evaluated = self.prime(opening, tools)
        if cached is not None and not loaded:
            with self._lock:
                self.model.save_state(cached)
            for stale in cached.parent.glob("prefix-*.npz"):  # an older config's prefix
                if stale != cached:
                    stale.unlink(missing_ok=True)
        with self._lock:
            self._decoder()  # the vocabulary masks, computed once
        source = "restored from cache" if loaded else f"{evaluated} tokens evaluated"
        logger.info(
            f"local LLM prompt prefix ready ({source}) in {time.perf_counter() - started:.1f}s"
        )

    def _load_state(self, path: Path) -> bool:
        try:
            with self._lock:
                self.model.load_state(path)
            return True
        except Exception as exc:
            logger.warning(f"ignoring the saved prompt cache {path.name}: {exc}")
            return False

    def prime(self, messages: list[Message], tools: list[Tool]) -> int:
        """Evaluate the conversation so far into the KV cache while nobody waits for it.

        Called at call start (during the greeting) and after each reply (while it plays), so
        the next request only evaluates the caller's new words (after a reply, the opening of
        the caller's turn is evaluated too). Returns tokens evaluated.
        """
        tokens = self.model.tokenize(priming_prompt(messages, tools))
        with self._lock:
            return self.model.sync(tokens, fresh_logits=False, stop=self._closed)

    def prime_later(self, messages: list[Message], tools: list[Tool]) -> None:
        """Prime in a background thread; the model lock orders it before the next request.

        Requests made while one is being evaluated are coalesced: only the newest is primed
        next (it extends the others)."""
        with self._priming_guard:
            if self._closed.is_set():
                return
            self._pending = (messages, tools)
            if self._priming is None:
                self._priming = threading.Thread(
                    target=self._prime_pending, name="local-llm-priming", daemon=True
                )
                self._priming.start()

    def _prime_pending(self) -> None:
        while True:
            with self._priming_guard:
                request, self._pending = self._pending, None
                if request is None or self._closed.is_set():
                    self._priming = None
                    return
            try:
                self.prime(*request)
            except StoppedError:
                pass
            except Exception as exc:  # priming is an optimisation; never fail a call over it
                logger.warning(f"local LLM priming failed: {exc}")

    def wait_primed(self, timeout: float | None = None) -> None:
        """Wait for background priming (a caller's next turn comes after it in a real call)."""
        with self._priming_guard:
            thread = self._priming
        if thread is not None:
            thread.join(timeout)

    def close(self) -> None:
        """Stop background priming (within one forward pass) and wait for it."""
        self._closed.set()
        self.wait_primed()

    # --- generation --------------------------------------------------------------------------

    def stream(
        self,
        messages: list[Message],
        tools: list[Tool],
        excluded: frozenset[str] = frozenset(),
        stop: threading.Event | None = None,
    ) -> Iterator[str]:
        """Blocking generator of the model's line, piece by piece (holding the model lock).

        ``excluded`` tools stay in the prompt (its cached prefix is unchanged) but cannot be
        chosen. Setting ``stop`` ends the line after the current forward pass."""
        stop = stop or threading.Event()
        prompt = build_prompt(messages, tools)
        choosable = [t for t in tools if t["function"]["name"] not in excluded]
        with self._lock:
            started = time.perf_counter()
            decoder = self._decoder()
            evaluated = self.model.sync(self.model.tokenize(prompt), fresh_logits=True, stop=stop)
            confidences: list[float] = []
            line = ""
            for piece in decode_line(decoder, choosable, confidences):
                if stop.is_set():
                    raise StoppedError(f"stopped after {line[:80]!r}")
                line += piece
                yield piece
            logger.debug(
                f"local LLM: {evaluated} prompt tokens, line {line[:80]!r}, "
                f"confidence {', '.join(f'{c:.2f}' for c in confidences)}, "
                f"{time.perf_counter() - started:.2f}s"
            )

    async def line(
        self, messages: list[Message], tools: list[Tool], excluded: frozenset[str]
    ) -> AsyncGenerator[str, None]:
        """:meth:`stream` on a worker thread; closing this iterator stops the generation."""
        loop = asyncio.get_running_loop()
        queue: asyncio.Queue[str | BaseException | None] = asyncio.Queue()
        stop = threading.Event()

        def deliver(item: str | BaseException | None) -> None:
            try:
                loop.call_soon_threadsafe(queue.put_nowait, item)
            except RuntimeError:  # the loop is closed: nobody is listening any more
                stop.set()

        def produce() -> None:
            try:
                for piece in self.stream(messages, tools, excluded, stop):
                    deliver(piece)
            except StoppedError:
                pass
            except BaseException as exc:  # delivered to the consumer
                deliver(exc)
            finally:
                deliver(None)

        threading.Thread(target=produce, name="local-llm", daemon=True).start()
        try:
            while (piece := await queue.get()) is not None:
                if isinstance(piece, BaseException):
                    raise piece
                yield piece
        finally:
            stop.set()
