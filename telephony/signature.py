"""Twilio request validation (X-Twilio-Signature) with the URL as Twilio saw it."""

from __future__ import annotations

from collections.abc import Mapping

from twilio.request_validator import RequestValidator


def public_request_url(public_base: str, path: str, query: str, fallback_url: str) -> str:
    """The URL Twilio signed: the configured public base (behind proxies) or the request's own."""
    if not public_base:
        return fallback_url
    return public_base.rstrip("/") + path + (f"?{query}" if query else "")


def is_valid_twilio_request(
    auth_token: str, url: str, params: Mapping[str, str], signature: str | None
) -> bool:
    if not signature:
        return False
    return bool(RequestValidator(auth_token).validate(url, dict(params), signature))


def sign_twilio_request(auth_token: str, url: str, params: Mapping[str, str]) -> str:
    """Compute X-Twilio-Signature as Twilio does (used by the replay client and tests)."""
    return str(RequestValidator(auth_token).compute_signature(url, dict(params)))
