"""Call ids as Twilio and the browser demo make them, checked before one names a file or a record.

Twilio's CallSid is ``CA`` and 32 lowercase hex digits (Twilio issues them lower case; its API
reference types them ``^CA[0-9a-fA-F]{32}$``, but no real sid has upper-case digits, so one that
does is not from Twilio). The browser demo makes its own: ``BR`` and 32 lowercase hex digits,
valid on that path only. Stream sids (``MZ...``, UUIDs in older traces) are not checked: they
name nothing.
"""

from __future__ import annotations

import re

_CALL_SID = re.compile(r"CA[0-9a-f]{32}")
_BROWSER_CALL_SID = re.compile(r"BR[0-9a-f]{32}")


def is_call_sid(value: str) -> bool:
    """Whether ``value`` is a Twilio CallSid (``CA`` + 32 lowercase hex digits, nothing else)."""
    return _CALL_SID.fullmatch(value) is not None


def is_browser_call_sid(value: str) -> bool:
    """Whether ``value`` is a browser demo call's id (``BR`` + 32 lowercase hex digits)."""
    return _BROWSER_CALL_SID.fullmatch(value) is not None


def shown_sid(value: str) -> str:
    """A refused sid as it may appear in a log line: its first 8 characters (escaped) and its
    length, never the whole of what a peer sent."""
    head = repr(value[:8])  # control characters escaped
    return f"{head}... ({len(value)} chars)" if len(value) > 8 else head
