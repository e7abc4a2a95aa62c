"""Call ids as Twilio and the browser demo make them, checked before one names a file or a record.

Twilio's CallSid is ``CA`` and 32 hex digits: its API reference types them ``^CA[0-9a-fA-F]{32}$``
(issued in lower case; either case is accepted, since refusing a real call costs a caller and
neither case can name a path outside the recordings folder). The browser demo makes its own:
``BR`` and 32 lowercase hex digits, valid on that path only. Stream sids (``MZ...``, UUIDs in
older traces) are not checked: they name nothing.
"""

from __future__ import annotations

import re

_CALL_SID = re.compile(r"CA[0-9a-fA-F]{32}")
_BROWSER_CALL_SID = re.compile(r"BR[0-9a-f]{32}")


def is_call_sid(value: str) -> bool:
    """Whether ``value`` is a Twilio CallSid (``CA`` + 32 hex digits, nothing else)."""
    return _CALL_SID.fullmatch(value) is not None


def is_browser_call_sid(value: str) -> bool:
    """Whether ``value`` is a browser demo call's id (``BR`` + 32 lowercase hex digits)."""
    return _BROWSER_CALL_SID.fullmatch(value) is not None


def shown_sid(value: str) -> str:
    """A refused sid as it may appear in a log line: its first 8 characters (escaped) and its
    length, never the whole of what a peer sent."""
    head = repr(value[:8])  # control characters escaped
    return f"{head}... ({len(value)} chars)" if len(value) > 8 else head
