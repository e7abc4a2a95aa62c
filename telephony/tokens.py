"""One-time, short-lived tokens that bind a media websocket to the CallSid of its webhook.

A token is ``nonce.expiry.mac`` where mac = HMAC-SHA256(key, call_sid|nonce|expiry). It proves
the webhook (which passed Twilio signature validation) issued it for this call; the nonce is
remembered once used, so a replay is refused.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets
import time
from collections.abc import Callable


class TokenError(Exception):
    """The token is missing, malformed, forged, expired, for another call, or already used."""


class StreamTokens:
    def __init__(self, ttl_secs: float = 30.0, clock: Callable[[], float] = time.time) -> None:
        self._key = secrets.token_bytes(32)
        self._ttl = ttl_secs
        self._clock = clock
        self._used: dict[str, float] = {}
        self._details: dict[str, tuple[float, dict[str, str]]] = {}

    def _mac(self, call_sid: str, nonce: str, expiry: int) -> str:
        message = f"{call_sid}|{nonce}|{expiry}".encode()
        digest = hmac.new(self._key, message, hashlib.sha256).digest()
        return base64.urlsafe_b64encode(digest).decode().rstrip("=")

    def issue(self, call_sid: str, details: dict[str, str] | None = None) -> str:
        """A token for ``call_sid``; ``details`` (e.g. From/To of the signed webhook) come back
        from :meth:`consume`, so nothing the websocket peer sends can change them."""
        nonce = secrets.token_urlsafe(12)
        expiry = int(self._clock() + self._ttl) + 1
        self._details[nonce] = (expiry, dict(details or {}))
        return f"{nonce}.{expiry}.{self._mac(call_sid, nonce, expiry)}"

    def consume(self, token: str | None, call_sid: str) -> dict[str, str]:
        """Accept the token once for ``call_sid`` and return its details; else raise TokenError."""
        if not token:
            raise TokenError("no token")
        parts = token.split(".")
        # Issued tokens are ASCII; anything else is refused here, before compare_digest (which
        # raises TypeError on non-ASCII text) and int() (which takes other scripts' digits).
        if len(parts) != 3 or not token.isascii() or not parts[1].isdigit():
            raise TokenError("malformed token")
        nonce, expiry_text, mac = parts
        expiry = int(expiry_text)
        if not hmac.compare_digest(mac, self._mac(call_sid, nonce, expiry)):
            raise TokenError("token not issued for this call")
        now = self._clock()
        if now > expiry:
            raise TokenError("token expired")
        self._forget_expired(now)
        if nonce in self._used:
            raise TokenError("token already used")
        self._used[nonce] = expiry
        return self._details.pop(nonce, (0, {}))[1]

    def _forget_expired(self, now: float) -> None:
        for nonce in [n for n, exp in self._used.items() if exp < now]:
            del self._used[nonce]
        for nonce in [n for n, (exp, _) in self._details.items() if exp < now]:
            del self._details[nonce]
