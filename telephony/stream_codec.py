"""What the Twilio and browser wire codecs share; pure, no I/O.

The error every malformed frame raises (:class:`ProtocolError`), the states a stream goes through,
bounded decoding of a JSON text frame, the tally of frames a stream refused
(:class:`FrameErrors`), and :class:`StreamParser`, the skeleton of both stateful parsers: it
keeps the start event, counts what it refuses and stays usable after an error.
"""

from __future__ import annotations

import enum
import json
from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import Generic, TypeVar

#: A decoded JSON object (keys are always strings; values are checked where they are read).
JsonObject = dict[str, object]


class ProtocolError(ValueError):
    """A frame that breaks its wire format; the message says what was expected and what came."""


class StreamState(enum.Enum):
    AWAITING_START = "awaiting_start"
    STREAMING = "streaming"
    STOPPED = "stopped"


def decode_json_object(text: str, *, max_chars: int, what: str) -> JsonObject:
    """``text`` as a JSON object of at most ``max_chars`` characters; ProtocolError otherwise.

    ``what`` names the frame in the error ("frame", "text frame").
    """
    if len(text) > max_chars:
        raise ProtocolError(f"{what} of {len(text)} characters exceeds {max_chars}")
    try:
        message = json.loads(text)
    except (json.JSONDecodeError, RecursionError) as exc:
        raise ProtocolError(f"{what} is not JSON: {exc}") from None
    if not isinstance(message, dict):
        raise ProtocolError(f"{what} must be a JSON object, got {type(message).__name__}")
    return message


#: Longest error text a :class:`FrameErrors` keeps (an error may quote what the peer sent).
MAX_ERROR_CHARS = 200


@dataclass
class FrameErrors:
    """The frames a stream refused: how many, and the first and the latest error."""

    count: int = 0
    first: str = ""
    latest: str = ""

    def add(self, error: ProtocolError) -> None:
        self.count += 1
        text = str(error)
        self.latest = text if len(text) <= MAX_ERROR_CHARS else text[: MAX_ERROR_CHARS - 1] + "…"
        if self.count == 1:
            self.first = self.latest

    def __str__(self) -> str:
        summary = f"{self.count} malformed frame(s) ignored; first: {self.first}"
        return summary if self.count == 1 else f"{summary}; latest: {self.latest}"


StartT = TypeVar("StartT")
EventT = TypeVar("EventT")


class StreamParser(ABC, Generic[StartT, EventT]):
    """A stream's ordering rules over a stateless frame parser.

    :meth:`receive` returns the next event or raises ProtocolError; a refused frame is counted in
    :attr:`errors` and changes nothing else, so one bad frame does not end a call. Subclasses
    enforce their order in :meth:`_receive` and call :meth:`_started` on the start event.
    """

    def __init__(self) -> None:
        self.state = StreamState.AWAITING_START
        self.start: StartT | None = None
        self.errors = FrameErrors()

    def receive(self, data: str | bytes) -> EventT:
        try:
            return self._receive(data)
        except ProtocolError as exc:
            self.errors.add(exc)
            raise

    @abstractmethod
    def _receive(self, data: str | bytes) -> EventT:
        """Parse ``data`` and apply the ordering rules; raise ProtocolError to refuse it."""

    def _started(self, start: StartT) -> None:
        self.start = start
        self.state = StreamState.STREAMING
