"""The offline brain: Qwen2.5-Coder-1.5B on llama.cpp, served in process to the call pipeline.

- :mod:`agent.brain.decoding`: constrained decoding of the one-line output (``say: …`` or
  ``call tool {json}``) from the model's logits.
- :mod:`agent.brain.model`: llama.cpp, its KV cache (matched, saved, restored, primed, each
  call's parked while another call uses it) and the lock over it; a stop aborts the forward
  pass under way; :class:`~agent.brain.model.LocalBrain` and one call's view of it,
  :class:`~agent.brain.model.CallBrain`.
- :mod:`agent.brain.prompt`: the ChatML prompt, tool list and trimmed history.
- :mod:`agent.brain.policy`: routing policy (prerequisites, grounded arguments, filler,
  farewell) and parsing of the model's line.
- :mod:`agent.brain.service`: the pipecat LLM service the pipeline uses, and the processor that
  primes the caller's words while they speak.
- :mod:`agent.brain.http`: the optional OpenAI-compatible endpoint for other clients.
"""
