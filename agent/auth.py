"""Bearer tokens: the one place an ``Authorization`` header is read and a token compared.

Used by the call-record API, the admin console (token sign-in and API calls) and the local
LLM's OpenAI-compatible endpoint. Comparisons are constant-time.
"""

from __future__ import annotations

import secrets
from collections.abc import Callable

from fastapi import HTTPException, Request

from agent.settings import Secret


def bearer_token(authorization: str) -> str:
    """The token of an ``Authorization: Bearer <token>`` header; "" for anything else."""
    scheme, _, token = authorization.partition(" ")
    return token.strip() if scheme.lower() == "bearer" else ""


def token_matches(given: str, *expected: Secret | str) -> bool:
    """Whether ``given`` is one of the ``expected`` tokens (empty ones never match)."""
    wanted = [e.reveal() if isinstance(e, Secret) else e for e in expected]
    return bool(given) and any(
        secrets.compare_digest(given.encode(), token.encode()) for token in wanted if token
    )


def require_bearer(*expected: Secret | str) -> Callable[[Request], None]:
    """A FastAPI dependency: 401 unless the request carries one of ``expected`` as a bearer
    token."""

    def check(request: Request) -> None:
        token = bearer_token(request.headers.get("authorization", ""))
        if not token:
            raise HTTPException(401, "admin token required (Authorization: Bearer …)")
        if not token_matches(token, *expected):
            raise HTTPException(401, "invalid admin token")

    return check
