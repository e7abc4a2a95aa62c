"""The local model: Qwen2.5-Coder-1.5B on llama.cpp, its KV cache, and the one lock over both.

Owns loading the model, :class:`LlamaModel` (the decoder's :class:`~agent.brain.decoding.Model`
over llama-cpp-python, with the one place the cache is matched token by token against a new
prompt, and a stop switch llama.cpp checks inside a forward pass), saving and restoring the
evaluated context (on disk for the fixed prefix, in memory for each call), priming the cache in
a background thread that a request pre-empts, and :class:`LocalBrain`, which decodes one line at
a time on a worker thread and stops within a token when its consumer goes away.

Calls share one llama context: each call's KV state is parked in memory while another call uses
the context (:data:`MAX_PARKED_CALLS` of them, least recently used first out) and restored when
it speaks again; :class:`CallBrain` is one call's view.
"""

from __future__ import annotations

import asyncio
import ctypes
import ctypes.util
import hashlib
import threading
import time
from collections import OrderedDict
from collections.abc import AsyncGenerator, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import numpy as np
from llama_cpp import Llama, llama_cpp
from loguru import logger

from agent import install
from agent.brain.decoding import REPLY_ROUTE, Decoder, Model, Vocabulary, decode_line
from agent.brain.prompt import Message, Tool, build_prompt, interim_prompt, priming_prompt
from agent.settings import Settings

#: Tokens evaluated per forward pass when a prompt is synced. A stop request aborts the pass
#: under way (llama.cpp's abort callback), so this no longer bounds how long a stop takes.
EVAL_CHUNK_TOKENS = 64
#: Calls whose KV state is kept in memory while another call uses the context (~28 KB a token,
#: ~46 MB for a 1.6k-token call); the least recently used goes first.
MAX_PARKED_CALLS = 4


class StoppedError(Exception):
    """Evaluation was stopped before the prompt was in the cache."""


@dataclass(frozen=True)
class ContextState:
    """A copy of the whole llama context: the tokens in it and llama.cpp's serialized state."""

    tokens: list[int]
    data: bytes | np.ndarray


class CachingModel(Model, Protocol):
    """A :class:`Model` whose context persists between requests (llama.cpp's KV cache)."""

    identity: str  # what the saved cache depends on besides the prompt (model file, context size)

    def sync(self, tokens: list[int], *, fresh_logits: bool, stop: threading.Event) -> int:
        """Make the context ``tokens``, reusing the longest cached prefix; returns how many
        tokens were evaluated. With ``fresh_logits`` the last token is evaluated even when
        cached, so the next-token logits are its. Raises :class:`StoppedError` if ``stop`` is
        set before the context is complete."""
        ...

    def cached(self) -> list[int]:
        """The tokens in the context now."""
        ...

    def abort(self) -> None:
        """Make the forward pass under way (or the next one) raise :class:`StoppedError` at
        once; it leaves the context as it was before that pass."""

    def resume(self) -> None:
        """Let forward passes run again after :meth:`abort`."""

    def snapshot(self) -> ContextState: ...

    def restore(self, state: ContextState) -> None:
        """Make the context ``state``; raises (leaving an empty context) if it cannot."""

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


def sync_with_guess(
    model: CachingModel, tokens: list[int], guess: list[int], stop: threading.Event
) -> tuple[int, list[np.ndarray]]:
    """Make the context ``tokens`` + ``guess``, the guess evaluated in the prompt's last pass.

    Returns how many prompt tokens were evaluated, and the logits after the prompt and after
    each guessed token (for :meth:`~agent.brain.decoding.Decoder.assume`)."""
    start = reuse_from(model.cached(), tokens, fresh_logits=True)
    last = start + (len(tokens) - 1 - start) // EVAL_CHUNK_TOKENS * EVAL_CHUNK_TOKENS
    model.sync(tokens[:last], fresh_logits=False, stop=stop)  # whole chunks before the last
    model.rewind(len(model.cached()) - last)
    if stop.is_set():
        raise StoppedError("stopped before the prompt's last pass")
    logits = model.eval_outputs([*tokens[last:], *guess], len(guess) + 1)
    return len(tokens) - start, logits


def save_npz(state: ContextState, path: Path) -> None:
    """Write ``state`` to ``path`` (atomically: a partial file is renamed into place)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_suffix(".partial.npz")
    data = np.frombuffer(state.data, dtype=np.uint8)
    np.savez(partial, ids=np.asarray(state.tokens, dtype=np.int32), state=data)
    partial.replace(path)


def load_npz(path: Path) -> ContextState:
    with np.load(path, allow_pickle=False) as data:
        return ContextState([int(t) for t in data["ids"]], data["state"].tobytes())


class AbortSwitch:
    """A flag llama.cpp reads between the compute graph's nodes, without Python's GIL.

    llama.cpp calls ``bool abort_callback(void *data)`` on its computing thread after every
    node (~1000 a pass). A Python callback would take the GIL each time and wait for it while
    the event loop runs; the callback here is libc's ``strlen`` over a two-byte buffer instead:
    ``b"\0\0"`` reads as 0 (go on) and ``b"\1\0"`` as 1 (abort), which is how a C ``bool``
    comes back from a call (x86-64 and arm64 read the low byte of the return register).
    """

    def __init__(self) -> None:
        self.buffer = ctypes.create_string_buffer(2)
        libc = ctypes.CDLL(ctypes.util.find_library("c"))
        address = ctypes.cast(libc.strlen, ctypes.c_void_p).value
        if address is None:
            raise RuntimeError("libc's strlen not found")
        self.callback = llama_cpp.ggml_abort_callback(address)

    def attach(self, ctx: llama_cpp.llama_context_p) -> None:
        llama_cpp.llama_set_abort_callback(
            ctx, self.callback, ctypes.cast(self.buffer, ctypes.c_void_p)
        )

    def set(self, on: bool) -> None:
        self.buffer[0] = b"\x01" if on else b"\x00"

    def is_set(self) -> bool:
        return self.buffer.raw[0] == 1


class LlamaModel:
    """:class:`CachingModel` over llama-cpp-python's ``Llama`` (its KV cache and token history)."""

    def __init__(self, llama: Llama, path: str = "") -> None:
        self.llama = llama
        self.identity = f"{path}|{llama.n_ctx()}"
        self.switch = AbortSwitch()
        self.switch.attach(llama._ctx.ctx)
        self.aborted = 0  # forward passes cut short by abort()

    def tokenize(self, text: str) -> list[int]:
        return list(self.llama.tokenize(text.encode(), add_bos=False, special=True))

    def eval(self, tokens: list[int]) -> None:
        if self.switch.is_set():
            raise StoppedError("stopped before a forward pass")
        try:
            self.llama.eval(tokens)
        except RuntimeError as exc:
            if "returned 2" in str(exc):  # llama_decode: aborted (the pass's cells removed)
                self.aborted += 1
                raise StoppedError("forward pass aborted") from exc
            raise

    def eval_outputs(self, tokens: list[int], outputs: int) -> list[np.ndarray]:
        llama = self.llama
        if self.switch.is_set():
            raise StoppedError("stopped before a forward pass")
        llama._ctx.kv_cache_seq_rm(-1, llama.n_tokens, -1)
        n_past, count = llama.n_tokens, len(tokens)
        llama._batch.set_batch(batch=tokens, n_past=n_past, logits_all=False)
        for i in range(count - outputs, count):
            llama._batch.batch.logits[i] = True
        try:
            llama._ctx.decode(llama._batch)
        except RuntimeError as exc:
            if "returned 2" in str(exc):
                self.aborted += 1
                raise StoppedError("forward pass aborted") from exc
            raise
        llama.input_ids[n_past : n_past + count] = tokens
        llama.n_tokens += count
        ctx, vocab = llama._ctx.ctx, llama.n_vocab()
        return [
            np.ctypeslib.as_array(llama_cpp.llama_get_logits_ith(ctx, i), shape=(vocab,)).copy()
            for i in range(count - outputs, count)
        ]

    def rewind(self, count: int) -> None:
        self.llama.n_tokens -= count

    def abort(self) -> None:
        self.switch.set(True)

    def resume(self) -> None:
        self.switch.set(False)

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

    def snapshot(self) -> ContextState:
        ctx = self.llama._ctx.ctx
        size = int(llama_cpp.llama_state_get_size(ctx))
        data = np.empty(size, dtype=np.uint8)
        pointer = data.ctypes.data_as(ctypes.POINTER(ctypes.c_uint8))
        written = int(llama_cpp.llama_state_get_data(ctx, pointer, size))
        return ContextState(self.cached(), data[:written])

    def restore(self, state: ContextState) -> None:
        try:
            data = np.frombuffer(state.data, dtype=np.uint8)
            pointer = data.ctypes.data_as(ctypes.POINTER(ctypes.c_uint8))
            read = llama_cpp.llama_state_set_data(self.llama._ctx.ctx, pointer, len(data))
            if read != len(data):
                raise RuntimeError("llama.cpp refused the saved state")
            self.llama.input_ids[: len(state.tokens)] = state.tokens
            self.llama.n_tokens = len(state.tokens)
        except Exception:
            self.llama.n_tokens = 0
            raise

    def save_state(self, path: Path) -> None:
        save_npz(self.snapshot(), path)

    def load_state(self, path: Path) -> None:
        try:
            state = load_npz(path)
        except Exception:
            self.llama.n_tokens = 0
            raise
        self.restore(state)


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


@dataclass
class _Priming:
    """A prompt waiting to be evaluated for ``call``; ``after`` is the call's request count when
    it was asked for (a request made since has evaluated more, so it is dropped)."""

    call: str | None
    prompt: str
    after: int


class LocalBrain:
    """Owns one model and its cache; one evaluation at a time (two cores).

    Implements :class:`agent.brain.policy.LineSource` for requests that belong to no call
    (``call`` None: the HTTP endpoint, benches); :meth:`for_call` gives a call's own view.
    A request pre-empts background priming: the priming pass under way is aborted and queued
    priming waits until the request has the model. :meth:`close` stops background priming and
    waits for it; a closed brain primes no more.
    """

    #: Guess that a line is a reply (:data:`~agent.brain.decoding.REPLY_ROUTE`) in the prompt's
    #: last pass; off only to measure what it saves (bench.brain_calls).
    guess_reply = True

    def __init__(self, model: CachingModel) -> None:
        self.model = model
        self._lock = threading.Lock()  # the model and its cache
        self._vocabulary: Vocabulary | None = None
        self._closed = threading.Event()
        # Who may abort the pass under way: the stop event of the work holding the lock.
        self._abort_guard = threading.Lock()
        self._current: threading.Event | None = None
        # Background priming and the requests that pre-empt it.
        self._priming_guard = threading.Condition()  # the fields below
        self._priming: threading.Thread | None = None
        self._pending: OrderedDict[str | None, _Priming] = OrderedDict()  # one per call
        self._priming_stop: threading.Event | None = None  # the priming under way
        self._waiting = 0  # requests waiting for the model
        self._requests: dict[str | None, int] = {}  # requests started, per call
        # Whose conversation the context holds, and the others' parked states.
        self._calls_guard = threading.Lock()
        self._owner: str | None = None
        self._parked: OrderedDict[str, ContextState] = OrderedDict()
        self._views: dict[str, CallBrain] = {}

    @classmethod
    def load(cls, settings: Settings) -> LocalBrain:
        return cls(load_llama(settings))

    def for_call(self, call: str) -> CallBrain:
        """The view of this brain for the call ``call`` (its own KV state and priming); the
        same view until :meth:`forget`."""
        with self._calls_guard:
            view = self._views.get(call)
            if view is None:
                view = self._views[call] = CallBrain(self, call)
            return view

    def _decoder(self) -> Decoder:
        if self._vocabulary is None:
            self._vocabulary = Vocabulary.of(self.model)
        return Decoder(self.model, self._vocabulary)

    # --- holding the model, and stopping whoever holds it --------------------------------------

    @contextmanager
    def _holding(
        self, stop: threading.Event, call: str | None, *, request: bool = False
    ) -> Iterator[None]:
        """The model lock, with ``stop`` able to abort a pass, and ``call``'s context in it.

        A ``request`` pre-empts background priming: the priming pass under way is aborted, and
        queued priming waits until the request holds the lock."""
        if request:
            self._announce(call)
        try:
            self._lock.acquire()
        finally:
            if request:
                self._announced()
        try:
            with self._abort_guard:
                self._current = stop
                self.model.resume()
            if stop.is_set():
                raise StoppedError("stopped before it started")
            self._switch_to(call)
            yield
        finally:
            with self._abort_guard:
                self._current = None
                self.model.resume()
            self._lock.release()

    def _stop(self, stop: threading.Event) -> None:
        """Set ``stop``; if its work holds the model, abort the forward pass under way."""
        stop.set()
        with self._abort_guard:
            if self._current is stop:
                self.model.abort()

    # --- one context, several calls ------------------------------------------------------------

    def _switch_to(self, call: str | None) -> None:
        """Make the context ``call``'s (holding the model lock): park the owner's state, restore
        ``call``'s if parked. A call with nothing parked starts from whatever the context
        holds; the fixed prefix every call shares is reused from there."""
        with self._calls_guard:
            owner = self._owner
            if call == owner:
                return
            parked = self._parked.pop(call, None) if call is not None else None
        if owner is not None:
            state = self.model.snapshot()
            with self._calls_guard:
                if self._owner == owner:  # not forgotten meanwhile
                    self._parked[owner] = state
                    while len(self._parked) > MAX_PARKED_CALLS:
                        self._parked.popitem(last=False)
        if parked is not None:
            self.model.restore(parked)
        with self._calls_guard:
            self._owner = call

    def forget(self, call: str) -> None:
        """The call ended: drop its parked state and its queued priming; its view primes no
        more."""
        with self._calls_guard:
            view = self._views.pop(call, None)
            if view is not None:
                view.ended = True
            self._parked.pop(call, None)
            if self._owner == call:
                self._owner = None  # what it left in the context is anybody's to reuse
        with self._priming_guard:
            self._pending.pop(call, None)
            self._requests.pop(call, None)

    def parked_calls(self) -> list[str]:
        """The calls whose state is parked, least recently used first."""
        with self._calls_guard:
            return list(self._parked)

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
            with self._holding(threading.Event(), None):
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
            with self._holding(threading.Event(), None):
                self.model.load_state(path)
            return True
        except Exception as exc:
            logger.warning(f"ignoring the saved prompt cache {path.name}: {exc}")
            return False

    def prime(self, messages: list[Message], tools: list[Tool], call: str | None = None) -> int:
        """Evaluate the conversation so far into the KV cache while nobody waits for it.

        Called at call start (during the greeting) and after each reply (while it plays), so
        the next request only evaluates the caller's new words (after a reply, the opening of
        the caller's turn is evaluated too). Returns tokens evaluated.
        """
        return self._prime_text(priming_prompt(messages, tools), call, self._closed)

    def _prime_text(self, prompt: str, call: str | None, stop: threading.Event) -> int:
        tokens = self.model.tokenize(prompt)
        with self._holding(stop, call):
            return self.model.sync(tokens, fresh_logits=False, stop=stop)

    def prime_later(
        self, messages: list[Message], tools: list[Tool], call: str | None = None
    ) -> None:
        """Prime in a background thread; the model lock orders it before the next request.

        Requests made while one is being evaluated are coalesced per call: only the newest is
        primed next (it extends the others)."""
        self._queue(call, priming_prompt(messages, tools))

    def prime_interim(
        self, messages: list[Message], tools: list[Tool], words: str, call: str | None = None
    ) -> None:
        """Prime the caller's words so far (an interim transcript) in the background, so that
        at the turn's end only its last words are left to evaluate."""
        if words.strip():
            self._queue(call, interim_prompt(messages, tools, words))

    def _queue(self, call: str | None, prompt: str) -> None:
        with self._priming_guard:
            if self._closed.is_set():
                return
            self._pending.pop(call, None)
            self._pending[call] = _Priming(call, prompt, self._requests.get(call, 0))
            if self._priming is None:
                self._priming = threading.Thread(
                    target=self._prime_pending, name="local-llm-priming", daemon=True
                )
                self._priming.start()

    def _next_priming(self) -> tuple[_Priming, threading.Event] | None:
        """The next queued priming that no request has overtaken, once no request waits."""
        with self._priming_guard:
            while True:
                while self._waiting and not self._closed.is_set():
                    self._priming_guard.wait()
                if not self._pending or self._closed.is_set():
                    self._priming = None
                    return None
                _call, job = self._pending.popitem(last=False)
                if job.after >= self._requests.get(job.call, 0):
                    self._priming_stop = stop = threading.Event()
                    return job, stop

    def _prime_pending(self) -> None:
        while (job := self._next_priming()) is not None:
            priming, stop = job
            try:
                self._prime_text(priming.prompt, priming.call, stop)
            except StoppedError:
                pass
            except Exception as exc:  # priming is an optimisation; never fail a call over it
                logger.warning(f"local LLM priming failed: {exc}")
            finally:
                with self._priming_guard:
                    self._priming_stop = None

    def _announce(self, call: str | None) -> None:
        """A request for ``call`` waits for the model: stop the priming under way, hold back
        queued priming, and drop what was queued for ``call`` before it."""
        with self._priming_guard:
            self._waiting += 1
            self._requests[call] = self._requests.get(call, 0) + 1
            if self._priming_stop is not None:
                self._stop(self._priming_stop)

    def _announced(self) -> None:
        with self._priming_guard:
            self._waiting -= 1
            self._priming_guard.notify_all()

    def wait_primed(self, timeout: float | None = None) -> None:
        """Wait for background priming (a caller's next turn comes after it in a real call)."""
        with self._priming_guard:
            thread = self._priming
        if thread is not None:
            thread.join(timeout)

    def close(self) -> None:
        """Stop background priming (within a forward pass) and wait for it."""
        with self._priming_guard:
            self._stop(self._closed)
            if self._priming_stop is not None:
                self._stop(self._priming_stop)
            self._priming_guard.notify_all()
        self.wait_primed()

    # --- generation --------------------------------------------------------------------------

    def stream(
        self,
        messages: list[Message],
        tools: list[Tool],
        excluded: frozenset[str] = frozenset(),
        stop: threading.Event | None = None,
        call: str | None = None,
    ) -> Iterator[str]:
        """Blocking generator of the model's line, piece by piece (holding the model lock).

        ``excluded`` tools stay in the prompt (its cached prefix is unchanged) but cannot be
        chosen. Setting ``stop`` through :meth:`_stop` aborts the forward pass under way."""
        stop = stop or threading.Event()
        prompt = build_prompt(messages, tools)
        choosable = [t for t in tools if t["function"]["name"] not in excluded]
        tokens = self.model.tokenize(prompt)
        asked = time.perf_counter()
        with self._holding(stop, call, request=True):
            started = time.perf_counter()
            decoder = self._decoder()
            guess = self.model.tokenize(REPLY_ROUTE) if self.guess_reply else []
            evaluated, logits = sync_with_guess(self.model, tokens, guess, stop)
            decoder.assume(guess, logits)
            synced = time.perf_counter()
            confidences: list[float] = []
            line, first = "", 0.0
            for piece in decode_line(decoder, choosable, confidences):
                if stop.is_set():
                    raise StoppedError(f"stopped after {line[:80]!r}")
                first = first or time.perf_counter()
                line += piece
                yield piece
            logger.debug(
                f"local LLM: waited {started - asked:.3f}s, {evaluated} prompt tokens in "
                f"{synced - started:.3f}s, first piece at {first - asked:.3f}s, line "
                f"{line[:80]!r}, confidence {', '.join(f'{c:.2f}' for c in confidences)}, "
                f"{time.perf_counter() - started:.2f}s"
            )

    async def line(
        self,
        messages: list[Message],
        tools: list[Tool],
        excluded: frozenset[str],
        call: str | None = None,
    ) -> AsyncGenerator[str, None]:
        """:meth:`stream` on a worker thread; closing this iterator stops the generation
        within a forward pass."""
        loop = asyncio.get_running_loop()
        queue: asyncio.Queue[str | BaseException | None] = asyncio.Queue()
        stop = threading.Event()

        def deliver(item: str | BaseException | None) -> None:
            try:
                loop.call_soon_threadsafe(queue.put_nowait, item)
            except RuntimeError:  # the loop is closed: nobody is listening any more
                self._stop(stop)

        def produce() -> None:
            try:
                for piece in self.stream(messages, tools, excluded, stop, call):
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
            self._stop(stop)


class CallBrain:
    """One call's view of a :class:`LocalBrain` (a :class:`~agent.brain.policy.LineSource`):
    its requests and priming run on the call's own KV state. :meth:`forget` when the call
    ends; after that it primes no more."""

    def __init__(self, brain: LocalBrain, call: str) -> None:
        self.brain = brain
        self.call = call
        self.ended = False

    def line(
        self, messages: list[Message], tools: list[Tool], excluded: frozenset[str]
    ) -> AsyncGenerator[str, None]:
        return self.brain.line(messages, tools, excluded, self.call)

    def prime_later(self, messages: list[Message], tools: list[Tool]) -> None:
        if not self.ended:
            self.brain.prime_later(messages, tools, self.call)

    def prime_interim(self, messages: list[Message], tools: list[Tool], words: str) -> None:
        if not self.ended:
            self.brain.prime_interim(messages, tools, words, self.call)

    def forget(self) -> None:
        self.ended = True
        self.brain.forget(self.call)
