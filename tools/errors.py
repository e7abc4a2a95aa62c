"""ToolError: a failure whose message is written for the caller, raised by the domain and the tools.

It is the lowest layer of tools/: the domain (spoken dates, services, phone numbers) raises it,
the tool registry turns it into the payload the model relays.
"""

from __future__ import annotations

from typing import Any


class ToolError(Exception):
    """A failure whose message is written for the caller ("That time is taken; I have 2:30.")."""

    def __init__(self, say: str, *, code: str = "error", data: dict[str, Any] | None = None):
        super().__init__(say)
        self.say = say
        self.code = code
        self.data = data or {}
