"""The provider stand-ins in their own process, for the benches.

    python -m bench.standins CONFIG.json

CONFIG holds the ports, the latencies (seconds: STT final after the end of an utterance, LLM
first token, TTS first audio), the Deepgram scripts and the LLM rules (see bench/harness.py).
The LLM stand-in also answers ``GET /healthz`` so the bench knows the process is up.
"""

from __future__ import annotations

import asyncio
import json
import sys
from pathlib import Path
from typing import Any

import uvicorn

from tests.fakes import deepgram, elevenlabs, llm


async def serve(config: dict[str, Any]) -> None:
    stt = deepgram.DeepgramStandIn(scripts=config["scripts"], latency=config["stt_latency"])
    brain = llm.ScriptedLLM(
        rules=[llm.Rule(**rule) for rule in config["rules"]],
        first_token_delay=config["llm_latency"],
        token_interval=config.get("token_interval", 0.0),
    )
    tts = elevenlabs.ElevenLabsStandIn(first_audio_latency=config["tts_latency"])
    llm_app = llm.build_app(brain)

    @llm_app.get("/healthz")
    async def healthz() -> dict[str, str]:
        return {"status": "ok"}

    ports = config["ports"]
    servers = [
        uvicorn.Server(
            uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning", ws="websockets")
        )
        for app, port in (
            (deepgram.build_app(stt), ports["deepgram"]),
            (llm_app, ports["llm"]),
            (elevenlabs.build_app(tts), ports["elevenlabs"]),
        )
    ]
    await asyncio.gather(*(s.serve() for s in servers))


def main() -> None:
    config = json.loads(Path(sys.argv[1]).read_text())
    asyncio.run(serve(config))


if __name__ == "__main__":
    main()
