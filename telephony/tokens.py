"""One-time, short-lived tokens that bind a media websocket to the CallSid of its webhook.

A token is ``payload.mac``: ``payload`` is base64url JSON ``{"n": nonce, "e": expiry, "d":
details}`` and mac = HMAC-SHA256(key, call_sid|payload), base64url. It proves the webhook (which
passed Twilio signature validation) issued it for this call, and carries the webhook's details
(From/To, the base URL...) signed, so any worker sharing the key can consume a token another
issued. The details are signed, not hidden: they are Twilio's own data about the call.

The crypto here is pure. Used nonces go to a :class:`NonceLedger` (the app's is the database,
shared by all workers), so a replay is refused everywhere.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
import secrets
import string
import time
from collections.abc import Callable
from typing import Protocol

#: What the key derived from the admin token is the HMAC of (see :func:`derive_key`).
KEY_LABEL = b"frontdesk media stream token key v1"
#: Longer tokens are refused unread (an issued one is a few hundred characters).
MAX_TOKEN_CHARS = 4096
_BASE64URL = frozenset(string.ascii_letters + string.digits + "-_")


class TokenError(Exception):
    """The token is missing, malformed, forged, expired, for another call, or already used."""


class NonceLedger(Protocol):
    """Remembers used tokens' nonces."""

    async def use(self, nonce: str, expires_at: float) -> bool:
        """Record ``nonce`` as used (until ``expires_at``, epoch seconds); False if it was."""
        ...


class MemoryNonces:
    """A :class:`NonceLedger` of one process (tests, tools); the app uses the database's."""

    def __init__(self, clock: Callable[[], float] = time.time) -> None:
        self._clock = clock
        self._used: dict[str, float] = {}

    async def use(self, nonce: str, expires_at: float) -> bool:
        now = self._clock()
        for old in [n for n, exp in self._used.items() if exp < now]:
            del self._used[old]
        if nonce in self._used:
            return False
        self._used[nonce] = expires_at
        return True


def derive_key(secret: str) -> bytes:
    """A token key derived from ``secret`` (the admin token): workers sharing it agree."""
    return hmac.new(secret.encode(), KEY_LABEL, hashlib.sha256).digest()


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).decode().rstrip("=")


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


class StreamTokens:
    """Issues and consumes stream tokens signed with ``key`` (random when None: this instance
    only); used nonces go to ``nonces`` (this process's memory when None)."""

    def __init__(
        self,
        ttl_secs: float = 30.0,
        clock: Callable[[], float] = time.time,
        *,
        key: bytes | None = None,
        nonces: NonceLedger | None = None,
    ) -> None:
        self._key = key or secrets.token_bytes(32)
        self._ttl = ttl_secs
        self._clock = clock
        self._nonces = nonces or MemoryNonces(clock)

    def _mac(self, call_sid: str, payload: str) -> str:
        message = f"{call_sid}|{payload}".encode()
        return _b64(hmac.new(self._key, message, hashlib.sha256).digest())

    def issue(self, call_sid: str, details: dict[str, str] | None = None) -> str:
        """A token for ``call_sid``; ``details`` (e.g. From/To of the signed webhook) come back
        from :meth:`consume`, so nothing the websocket peer sends can change them."""
        body = {
            "n": secrets.token_urlsafe(12),
            "e": int(self._clock() + self._ttl) + 1,
            "d": {str(k): str(v) for k, v in (details or {}).items()},
        }
        payload = _b64(json.dumps(body, separators=(",", ":")).encode())
        return f"{payload}.{self._mac(call_sid, payload)}"

    def verify(self, token: str | None, call_sid: str) -> tuple[str, int, dict[str, str]]:
        """The token's (nonce, expiry, details) if it was issued for ``call_sid`` with this key
        and has not expired (whether it was used is :meth:`consume`'s business); else
        TokenError."""
        if not token:
            raise TokenError("no token")
        parts = token.split(".")
        # Issued tokens are base64url ASCII; anything else is refused before compare_digest
        # (which raises TypeError on non-ASCII text) and before anything is decoded.
        if len(token) > MAX_TOKEN_CHARS or len(parts) != 2 or not all(parts):
            raise TokenError("malformed token")
        if not set(token) - {"."} <= _BASE64URL:
            raise TokenError("malformed token")
        payload, mac = parts
        if not hmac.compare_digest(mac, self._mac(call_sid, payload)):
            raise TokenError("token not issued for this call")
        nonce, expiry, details = _decode(payload)
        if self._clock() > expiry:
            raise TokenError("token expired")
        return nonce, expiry, details

    async def consume(self, token: str | None, call_sid: str) -> dict[str, str]:
        """Accept the token once for ``call_sid`` (in any worker sharing the key and the
        ledger) and return its details; else raise TokenError."""
        nonce, expiry, details = self.verify(token, call_sid)
        if not await self._nonces.use(nonce, float(expiry)):
            raise TokenError("token already used")
        return details


def _decode(payload: str) -> tuple[str, int, dict[str, str]]:
    """A signed payload's fields (only a key holder can have made a bad one: refused anyway)."""
    try:
        body = json.loads(_unb64(payload))
    except (ValueError, binascii.Error):
        raise TokenError("malformed token") from None
    if not isinstance(body, dict):
        raise TokenError("malformed token")
    nonce, expiry, details = body.get("n"), body.get("e"), body.get("d")
    if not isinstance(nonce, str) or not nonce or type(expiry) is not int:
        raise TokenError("malformed token")
    if not isinstance(details, dict) or not all(
        isinstance(k, str) and isinstance(v, str) for k, v in details.items()
    ):
        raise TokenError("malformed token")
    return nonce, expiry, details
