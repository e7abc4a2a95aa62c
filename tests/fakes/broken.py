"""A broken cloud vendor: a websocket/HTTP server that accepts and then errors or never answers.

Not a protocol stand-in (those live beside it): it only has to fail the way real vendors fail.
``mode`` is "hang" (accept, read everything, never send a byte) or "error" (accept, then close
with 1011 internal error; plain HTTP requests get a 500). Connections are counted.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from typing import Any

from fastapi import FastAPI, Request, WebSocket
from fastapi.responses import JSONResponse
from starlette.websockets import WebSocketDisconnect


@dataclass
class BrokenVendor:
    mode: str = "hang"  # hang | error
    connections: int = 0
    received: list[str] = field(default_factory=list)


def build_broken_app(vendor: BrokenVendor) -> FastAPI:
    app = FastAPI()

    @app.websocket("/{path:path}")
    async def socket(websocket: WebSocket, path: str) -> None:
        vendor.connections += 1
        await websocket.accept()
        if vendor.mode == "error":
            await websocket.close(code=1011, reason="internal error")
            return
        try:
            while True:
                message = await websocket.receive_text()
                vendor.received.append(message[:200])
        except (WebSocketDisconnect, RuntimeError):
            return

    @app.api_route("/{path:path}", methods=["GET", "POST"])
    async def http(request: Request, path: str) -> Any:
        vendor.connections += 1
        if vendor.mode == "hang":
            await asyncio.sleep(3600)
        return JSONResponse({"error": "internal error"}, status_code=500)

    return app
